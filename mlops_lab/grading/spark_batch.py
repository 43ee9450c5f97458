"""Checks for ``labs/15_spark_batch_inference.ipynb``: score a file with the champion on Spark, write
partitioned Parquet, prove parity with pandas, find the fastest partition count, stop the session.

The checks measure what a student's code did, never what a variable claims: the predictions in
their Spark DataFrame and in the Parquet folder they wrote are compared with the champion's own
pandas predictions (computed here, :func:`reference`), the partition folders are read from disk,
and "stopped" means no JVM is left as a child of the kernel.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from mlops_lab.grading import Lab

EXPERIMENT = "lab-15-spark-batch"
ROWS = 6000
"""Applications in the lab's file: German Credit resampled (``spark.enlarge``), seed :data:`SEED`."""
SEED = 15
PARTITION_BY = "purpose"
MASTER = "local[2]"

LAB = Lab("15_spark_batch_inference", "Batch inference on Spark: score, partition, prove parity, tune, stop")


def applications(folder: str | Path | None = None) -> Path:
    """Write the lab's input (:data:`ROWS` credit applications with a ``row_id``, as Parquet) into
    ``folder`` (default ``<workspace>/lab-15``) and return the file's path."""
    from mlops_lab import config, datasets, spark, training

    folder = Path(folder) if folder is not None else config.workspace() / "lab-15"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "applications.parquet"
    frame = training.model_input(spark.enlarge(datasets.load_german_credit(), ROWS, SEED))
    frame.to_parquet(path, index=False)
    return path


@functools.lru_cache(maxsize=4)
def _reference(tracking_uri: str, model_uri: str):
    from mlops_lab import datasets, spark

    return spark.pandas_predictions(model_uri, spark.enlarge(datasets.load_german_credit(), ROWS, SEED))


def reference(model_uri: str | None = None):
    """The champion's predictions for the lab's applications with pandas (``row_id``, ``prediction``)."""
    import mlflow

    from mlops_lab import prerequisites

    return _reference(mlflow.get_tracking_uri(), model_uri or f"models:/{prerequisites.CREDIT_MODEL}@champion")


def _session(ns: dict):
    from pyspark.sql import SparkSession

    session = ns.get("session")
    assert isinstance(session, SparkSession), "define `session`: the SparkSession you started (spark.session(...).start())"
    return session


@LAB.check(
    "scored_on_spark",
    hint="Start the session with `session = spark.session('local[2]', 'lab-15').start()`, read the file with "
    "`session.read.parquet(str(applications))` and score it with `scored = spark.score(session, CHAMPION, data)`: "
    "a Spark DataFrame with every input column and a `prediction` column.",
)
def scored_on_spark(ns: dict) -> None:
    from pyspark.sql import DataFrame

    from mlops_lab import spark

    session = _session(ns)
    assert session.sparkContext._jsc is not None, "`session` is stopped: score before you stop it (task 5)"
    assert session.sparkContext.master == MASTER, f"the session runs on {session.sparkContext.master}, not {MASTER}"
    scored = ns.get("scored")
    assert isinstance(scored, DataFrame), "define `scored`: the Spark DataFrame with the predictions"
    assert spark.PREDICTION in scored.columns, f"`scored` has no {spark.PREDICTION!r} column: {scored.columns}"
    assert spark.ROW_ID in scored.columns, "`scored` lost the `row_id` column (keep the input's columns)"
    found = spark.parity(scored, reference())
    assert found.rows == ROWS and found.missing == 0, (
        f"`scored` has {found.rows} of the {ROWS} applications (and {found.missing} unknown or missing row ids)")
    assert found.equal, f"`scored` differs from the champion's predictions (by up to {found.max_abs_diff:g})"


@LAB.check(
    "partitioned_output",
    hint="`output = spark.write_predictions(scored, ws.home / 'lab-15' / 'predictions', partition_by=['purpose'])`: "
    "one folder per purpose (`purpose=car`, ...), written atomically. `spark.partitions_written(output)` lists them.",
)
def partitioned_output(ns: dict) -> None:
    from mlops_lab import spark

    assert ns.get("output"), "define `output`: the folder you wrote the predictions to"
    output = Path(str(ns["output"]))
    assert output.is_dir(), f"no folder at {output.name}: write the predictions there"
    assert (output / "_SUCCESS").exists(), f"{output.name} has no _SUCCESS marker: the job did not finish"
    folders = spark.partitions_written(output)
    expected = set(_applications_purposes()[PARTITION_BY])
    assert len(folders), f"{output.name} is not partitioned: pass partition_by=['{PARTITION_BY}']"
    assert set(folders["partition"].str.split("=").str[0]) == {PARTITION_BY}, (
        f"partitioned by {sorted(set(folders['partition'].str.split('=').str[0]))}, not by {PARTITION_BY!r}")
    assert set(folders["value"]) == expected, f"partitions {sorted(folders['value'])}; expected {sorted(expected)}"
    back = spark.read_predictions(output, columns=[spark.ROW_ID, spark.PREDICTION])
    assert len(back) == ROWS and back[spark.ROW_ID].is_unique, f"{output.name} holds {len(back)} rows, not the {ROWS}"


@functools.lru_cache(maxsize=1)
def _applications_purposes():
    from mlops_lab import datasets, spark

    frame = spark.enlarge(datasets.load_german_credit(), ROWS, SEED)
    return frame[[spark.ROW_ID, PARTITION_BY]].assign(**{PARTITION_BY: frame[PARTITION_BY].astype(str)})


@LAB.check(
    "parity_proved",
    hint="Compute the pandas reference with `spark.pandas_predictions(CHAMPION, pd.read_parquet(applications))`, "
    "read your output back with `spark.read_predictions(output)` and compare them: "
    "`result = spark.parity(read_back, reference)`; `result.equal` must be True.",
)
def parity_proved(ns: dict) -> None:
    from mlops_lab import spark

    result = ns.get("result")
    assert isinstance(result, spark.Parity), "define `result`: what `spark.parity(read_back, reference)` returns"
    assert result.rows == ROWS, f"`result` compared {result.rows} rows, not the {ROWS} applications"
    assert result.equal, (f"`result` says the predictions differ (max difference {result.max_abs_diff:g}, "
                          f"{result.missing} rows on one side only)")
    assert ns.get("output"), "define `output` (task 2): the parity to prove is that of the file you wrote"
    written = spark.read_predictions(Path(str(ns["output"])), columns=[spark.ROW_ID, spark.PREDICTION])
    mine = spark.parity(written, reference())
    assert mine.equal, (f"the predictions in {Path(str(ns['output'])).name} differ from the champion's pandas "
                        f"predictions (max difference {mine.max_abs_diff:g}, {mine.missing} rows missing)")


@LAB.check(
    "fastest_partitions",
    hint="Time the same job at several partition counts, e.g. `timings = {n: spark.spark_rate(session, CHAMPION, data, "
    "partitions=n) for n in (1, 2, 4, 8)}` (rows per second), then `fastest = max(timings, key=timings.get)`.",
)
def fastest_partitions(ns: dict) -> None:
    from mlops_lab import spark

    timings, fastest = ns.get("timings"), ns.get("fastest")
    assert isinstance(timings, dict) and timings, "define `timings`: {partitions: rows per second}"
    counts = sorted(timings)
    assert all(isinstance(n, int) and n >= 1 for n in counts), f"the keys should be partition counts (>= 1): {counts}"
    assert len(counts) >= 3 and 1 in counts and max(counts) > 2, (
        f"measure at least three partition counts, from 1 to more than the session's 2 cores; you measured {counts}")
    rates = list(timings.values())
    assert all(isinstance(r, (int, float)) and math.isfinite(r) and 0 < r < 10_000_000 for r in rates), (
        f"the values should be rows per second (positive numbers, as spark.spark_rate returns): {rates}")
    assert all(any(r == m for m in spark.MEASURED) for r in rates), (
        "the values of `timings` should be what `spark.spark_rate` measured in this session, not typed in")
    assert fastest == max(timings, key=timings.get), (
        f"`fastest` is {fastest!r}, but your timings say {max(timings, key=timings.get)} partitions were fastest")


@LAB.check(
    "session_stopped",
    hint="Stop what you started: `spark.session(...)` returned a handle whose `.stop()` stops the session and the JVM "
    "(or use `with spark.session(...) as session:`). `spark.java_children()` must then be empty.",
)
def session_stopped(ns: dict) -> None:
    from pyspark import SparkContext

    from mlops_lab import spark

    _session(ns)
    assert SparkContext._active_spark_context is None, "a Spark session is still running"
    left = spark.java_children()
    assert not left, f"the session is stopped but its JVM (pid {left[0].pid}) still runs: stop the handle, not only the session"
