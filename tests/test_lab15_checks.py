"""Lab 15's checks decide both ways on wrong answers, not only on the untouched copy.

The namespace checks run without Spark (seconds). The rest share one real ``local[2]`` session and
one scoring of the lab's file (``solved``); the last test stops it, the way a student might (the
session alone, then the handle) and checks that only the second counts as stopped.
"""

from __future__ import annotations

import pandas as pd
import pytest

from mlops_lab import config, prerequisites, spark
from mlops_lab.grading import spark_batch as checks

ROWS = checks.ROWS


def untouched(*args, **kwargs):
    raise NotImplementedError("Complete this task, then run the check below.")


@pytest.mark.unit
@pytest.mark.parametrize("check, words", [
    (checks.scored_on_spark, "define `session`"),
    (checks.partitioned_output, "define `output`"),
    (checks.parity_proved, "define `result`"),
    (checks.fastest_partitions, "define `timings`"),
    (checks.session_stopped, "define `session`"),
], ids=lambda v: getattr(v, "__name__", v))
def test_an_untouched_namespace_fails_every_check_with_its_hint(check, words):
    result = check({})
    assert not result.passed and words in result.detail and len(result.hint) > 40


@pytest.mark.unit
def test_the_fastest_partition_count_must_come_from_the_timings(monkeypatch):
    timings = {1: 5_000.0, 2: 9_000.0, 4: 8_700.0, 8: 7_900.0}
    typed = checks.fastest_partitions({"timings": timings, "fastest": 2})
    assert not typed.passed and "not typed in" in typed.detail  # spark_rate measured none of them
    monkeypatch.setattr(spark, "MEASURED", list(timings.values()))
    assert checks.fastest_partitions({"timings": timings, "fastest": 2}).passed
    wrong = checks.fastest_partitions({"timings": timings, "fastest": 8})
    assert not wrong.passed and "your timings say 2 partitions were fastest" in wrong.detail
    few = checks.fastest_partitions({"timings": {1: 5e3, 2: 9e3}, "fastest": 2})
    assert "at least three partition counts" in few.detail
    no_single = checks.fastest_partitions({"timings": {2: 9e3, 4: 8e3, 8: 7e3}, "fastest": 2})
    assert not no_single.passed
    negative = checks.fastest_partitions({"timings": {1: -1.0, 2: 9e3, 4: 8e3}, "fastest": 2})
    assert "rows per second" in negative.detail
    text_keys = checks.fastest_partitions({"timings": {"1": 5e3, "2": 9e3, "4": 8e3}, "fastest": "2"})
    assert "partition counts" in text_keys.detail
    assert "spark.spark_rate" in wrong.hint


@pytest.mark.unit
def test_a_parity_result_that_says_different_or_compares_too_little_fails():
    differs = spark.Parity(rows=ROWS, missing=0, max_abs_diff=1.0, tolerance=1e-9)
    assert "says the predictions differ" in checks.parity_proved({"result": differs}).detail
    short = spark.Parity(rows=100, missing=0, max_abs_diff=0.0, tolerance=1e-9)
    assert f"compared 100 rows, not the {ROWS}" in checks.parity_proved({"result": short}).detail
    claimed = spark.Parity(rows=ROWS, missing=0, max_abs_diff=0.0, tolerance=1e-9)
    assert "define `output`" in checks.parity_proved({"result": claimed}).detail
    assert "define `result`" in checks.parity_proved({"result": "equal"}).detail


@pytest.mark.unit
def test_the_lab_file_is_the_same_applications_every_time(tmp_path):
    first = pd.read_parquet(checks.applications(tmp_path / "a"))
    assert len(first) == ROWS and first["row_id"].tolist() == list(range(ROWS))
    assert first.equals(pd.read_parquet(checks.applications(tmp_path / "b")))
    assert first["purpose"].dtype == object  # strings, as a file from another system would hold


# -- with a real session ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """The lab solved once: a session, the file scored with the champion and written partitioned."""
    import mlflow

    root = tmp_path_factory.mktemp("lab15")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_LAB_HOME", str(root))
        patch.delenv("MLOPS_LAB_TRACKING_URI", raising=False)
        config.use_workspace(checks.EXPERIMENT)
        champion = prerequisites.champion()
        path = checks.applications()
        handle = spark.session(checks.MASTER, "test-lab15")
        session = handle.start()
    try:
        data = session.read.parquet(str(path))
        scored = spark.score(session, champion, data)
        output = spark.write_predictions(scored, root / "lab-15" / "predictions", partition_by=["purpose"])
        result = spark.parity(spark.read_predictions(output), spark.pandas_predictions(champion, pd.read_parquet(path)))
        yield {"ns": {"session": session, "scored": scored, "output": output, "result": result, "handle": handle},
               "data": data, "root": root, "tracking_uri": mlflow.get_tracking_uri(), "champion": champion}
    finally:
        handle.stop()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def lab(solved):
    import mlflow

    mlflow.set_tracking_uri(solved["tracking_uri"])
    return solved


@pytest.mark.integration
def test_the_solution_passes_the_scoring_output_and_parity_checks(lab):
    for check in (checks.scored_on_spark, checks.partitioned_output, checks.parity_proved):
        assert check(lab["ns"]).passed, check.__name__
    assert not checks.session_stopped(lab["ns"]).passed  # still running


@pytest.mark.integration
def test_scores_that_are_not_the_champions_or_not_all_rows_fail(lab):
    from pyspark.sql import functions as F

    scored = lab["ns"]["scored"]
    flipped = checks.scored_on_spark({**lab["ns"], "scored": scored.withColumn("prediction", 1 - F.col("prediction"))})
    assert "differs from the champion's predictions" in flipped.detail
    assert f"has 100 of the {ROWS}" in checks.scored_on_spark({**lab["ns"], "scored": scored.limit(100)}).detail
    assert "no 'prediction' column" in checks.scored_on_spark({**lab["ns"], "scored": lab["data"]}).detail
    pandas_only = checks.scored_on_spark({**lab["ns"], "scored": scored.toPandas()})
    assert "the Spark DataFrame" in pandas_only.detail


@pytest.mark.integration
def test_outputs_that_are_flat_partitioned_otherwise_missing_or_tampered_with_fail(lab, tmp_path):
    from pyspark.sql import functions as F

    scored = lab["ns"]["scored"]
    flat = spark.write_predictions(scored, tmp_path / "flat")
    assert "is not partitioned" in checks.partitioned_output({"output": flat}).detail
    by_housing = spark.write_predictions(scored, tmp_path / "by-housing", partition_by=["housing"])
    assert "partitioned by ['housing'], not by 'purpose'" in checks.partitioned_output({"output": by_housing}).detail
    assert "no folder at nowhere" in checks.partitioned_output({"output": tmp_path / "nowhere"}).detail
    part = spark.write_predictions(scored.where("row_id < 500"), tmp_path / "part", partition_by=["purpose"])
    assert "holds 500 rows, not the" in checks.partitioned_output({"output": part}).detail
    tampered = spark.write_predictions(scored.withColumn("prediction", 1 - F.col("prediction")), tmp_path / "tampered",
                                       partition_by=["purpose"])
    assert checks.partitioned_output({"output": tampered}).passed  # the shape is right ...
    claimed = checks.parity_proved({**lab["ns"], "output": tampered})
    assert not claimed.passed and "differ from the champion's pandas predictions" in claimed.detail  # ... the numbers are not


@pytest.mark.integration
def test_a_stopped_session_counts_only_when_its_jvm_is_gone_too(lab):
    """Runs last in this module: it stops the shared session."""
    ns = lab["ns"]
    ns["session"].stop()  # what pyspark offers: the JVM keeps running
    half = checks.session_stopped(ns)
    assert not half.passed and "its JVM" in half.detail and "still runs" in half.detail
    assert "score before you stop it" in checks.scored_on_spark(ns).detail
    ns["handle"].stop()
    assert checks.session_stopped(ns).passed and spark.java_children() == []
