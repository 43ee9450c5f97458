"""Batch inference on Spark: parity with pandas, partitioned Parquet, every bad input, nothing left behind.

One Spark session (``local[2]``) and one workspace with both champions serve the whole module; the
last test stops the session and checks that no JVM is left. Java is faked with scripts in
``tmp_path`` (no real Java is touched by those tests).
"""

from __future__ import annotations

import stat

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_lab import config, datasets, prerequisites, spark, training

OLD_JAVA = 'openjdk version "11.0.2" 2019-01-15\nOpenJDK Runtime Environment 18.9 (build 11.0.2+9)\n'


def fake_java(folder, printed: str):
    """A ``bin/java`` in ``folder`` that prints ``printed`` on stderr, as ``java -version`` does."""
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"echo '{line}' >&2\n" for line in printed.splitlines())  # builtins only: PATH may be empty
    java.write_text(f"#!/bin/sh\n{lines}")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return folder


# -- Java, without Spark ------------------------------------------------------------------------

@pytest.mark.unit
def test_java_too_old_is_refused_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "jdk11", OLD_JAVA)))
    found = spark.java_version()
    assert (found.major, found.path) == (11, str(tmp_path / "jdk11" / "bin" / "java"))
    with pytest.raises(spark.SparkSetupError, match=r"Found Java 11 .*Spark 4 needs Java 17 or newer") as error:
        spark.check_java()
    assert "openjdk-17-jre-headless" in str(error.value) and "JAVA_HOME" in str(error.value)
    before = {p.pid for p in spark.java_children()}
    with pytest.raises(spark.SparkSetupError, match="Found Java 11"):
        spark.session().start()  # refused before any JVM is launched
    assert {p.pid for p in spark.java_children()} == before


@pytest.mark.unit
@pytest.mark.parametrize("printed, major", [('java version "1.8.0_292"\n', 8), ('openjdk version "17.0.15" 2025-04-15\n', 17),
                                            ('openjdk version "21" 2023-09-19\n', 21)])
def test_java_versions_are_read_the_way_java_prints_them(tmp_path, monkeypatch, printed, major):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path / "jdk", printed)))
    assert spark.java_version().major == major
    if major >= 17:
        assert spark.check_java().major == major


@pytest.mark.unit
def test_missing_java_is_refused_with_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(spark.SparkSetupError, match="No java found") as error:
        spark.check_java()
    assert spark.JAVA_HELP in str(error.value)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "empty"))
    with pytest.raises(spark.SparkSetupError, match=r"JAVA_HOME is set to .*empty, which has no bin/java"):
        spark.check_java()
    monkeypatch.setenv("PATH", str(fake_java(tmp_path / "on-path", OLD_JAVA) / "bin"))
    monkeypatch.delenv("JAVA_HOME")
    with pytest.raises(spark.SparkSetupError, match="Found Java 11"):
        spark.check_java()


# -- data helpers, without Spark ------------------------------------------------------------------

@pytest.mark.unit
def test_enlarge_is_deterministic_and_keeps_types():
    credit = datasets.load_german_credit()
    big = spark.enlarge(credit, 2500, seed=7)
    assert len(big) == 2500 and big["row_id"].tolist() == list(range(2500))
    assert big.equals(spark.enlarge(credit, 2500, seed=7)) and not big.equals(spark.enlarge(credit, 2500, seed=8))
    assert big.drop(columns="row_id").dtypes.equals(credit.dtypes)
    with pytest.raises(ValueError, match="at least 1"):
        spark.enlarge(credit, 0)


@pytest.mark.unit
def test_parity_matches_rows_by_id_and_counts_what_is_missing():
    left = pd.DataFrame({"row_id": [2, 0, 1], "prediction": [1.0, 0.5, 2.0]})
    right = pd.DataFrame({"row_id": [0, 1, 2], "prediction": [0.5, 2.0, 1.0]})
    same = spark.parity(left, right)
    assert same.equal and same.identical and same.rows == 3 and same.missing == 0
    off = spark.parity(left, right.assign(prediction=[0.5, 2.0, 1.0 + 1e-6]))
    assert not off.equal and off.max_abs_diff == pytest.approx(1e-6)
    short = spark.parity(left, right.head(2))
    assert short.missing == 1 and not short.equal
    assert spark.parity(left, pd.Series([0.5, 2.0, 1.0], index=[0, 1, 2])).identical
    one_nan = spark.parity(left.assign(prediction=[1.0, np.nan, 2.0]), right)
    assert not one_nan.equal and one_nan.max_abs_diff == np.inf  # a missing prediction never passes
    assert spark.parity(left.assign(prediction=[1.0, np.nan, 2.0]), right.assign(prediction=[np.nan, 2.0, 1.0])).identical
    doubled = pd.concat([left, left])
    with pytest.raises(spark.SparkScoringError, match="repeat 3 row id"):
        spark.parity(doubled, pd.concat([right, right]))


# -- one session for the module --------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A workspace with the credit and demand champions, and a running local[2] session."""
    root = tmp_path_factory.mktemp("spark-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_LAB_HOME", str(root))
        patch.delenv("MLOPS_LAB_TRACKING_URI", raising=False)
        config.use_workspace("test-spark")
        credit, demand = prerequisites.champion(), prerequisites.demand_champion()
        handle = spark.session("local[2]", "test-spark")
        session = handle.start()
    try:
        yield {"spark": session, "handle": handle, "credit": credit, "demand": demand, "root": root,
               "tracking_uri": mlflow.get_tracking_uri(), "applications": spark.enlarge(datasets.load_german_credit(), 3000)}
    finally:
        handle.stop()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def store(ctx):
    mlflow.set_tracking_uri(ctx["tracking_uri"])  # another test may have reset it
    return ctx


@pytest.mark.integration
def test_credit_predictions_on_spark_equal_pandas_exactly(store):
    frame = store["applications"]
    scored = spark.score(store["spark"], store["credit"], frame, partitions=4)
    assert scored.rdd.getNumPartitions() == 4
    assert dict(scored.dtypes)["prediction"] == "bigint"
    result = spark.parity(scored, spark.pandas_predictions(store["credit"], frame))
    assert result.identical and result.rows == len(frame)


@pytest.mark.integration
def test_bikeshare_year_on_spark_equals_pandas(store):
    year = spark.with_row_id(datasets.load_bikeshare()[["mnth", *training.BIKE_FEATURES]])
    scored = spark.score(store["spark"], store["demand"], year)
    assert dict(scored.dtypes)["prediction"] == "double"
    result = spark.parity(scored, spark.pandas_predictions(store["demand"], year))
    assert result.rows == len(year) == 8645 and result.equal and result.max_abs_diff <= 1e-9


@pytest.mark.integration
def test_partitioned_parquet_is_written_read_back_and_replaced(store, tmp_path):
    frame = store["applications"]
    scored = spark.score(store["spark"], store["credit"], frame)
    path = spark.write_predictions(scored, tmp_path / "predictions", partition_by=["purpose"])
    assert path == str(tmp_path / "predictions") and (tmp_path / "predictions" / "_SUCCESS").exists()
    folders = spark.partitions_written(path)
    assert set(folders["value"]) == set(frame["purpose"].unique()) and "purpose=radio%2FTV" in set(folders["partition"])
    assert (folders["files"] > 0).all()
    back = spark.read_predictions(path)
    assert len(back) == len(frame) and set(back.columns) == {*frame.columns, "prediction"}
    assert back["purpose"].tolist() == frame["purpose"].astype(str).tolist()
    assert spark.parity(back, spark.pandas_predictions(store["credit"], frame)).identical
    spark.write_predictions(spark.score(store["spark"], store["credit"], frame.head(100)), path)  # a re-run replaces
    assert len(spark.read_predictions(path)) == 100 and not spark.partitions_written(path).shape[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"], "no temporary folder left"
    with pytest.raises(spark.SparkScoringError, match="exists already"):
        spark.write_predictions(scored, path, overwrite=False)


@pytest.mark.integration
def test_bad_inputs_are_refused_before_scoring_with_what_is_wrong(store):
    session, credit, frame = store["spark"], store["credit"], store["applications"].head(50)
    cases = {
        "missing": (frame.drop(columns=["age", "purpose"]), r"lacks the column\(s\) \['age', 'purpose'\]"),
        "mistyped": (frame.assign(age=frame["age"].astype(str)), r"column 'age' should be long but is string"),
        "empty pandas": (frame.head(0), "has no rows: nothing to score"),
        "empty spark": (session.createDataFrame(training.model_input(frame)).limit(0), "has no rows"),
        "double for long": (frame.assign(duration=frame["duration"] + 0.5), "column 'duration' should be long but is double"),
    }
    for name, (data, words) in cases.items():
        with pytest.raises(spark.SparkScoringError, match=words):
            spark.score(session, credit, data)
    assert spark.score(session, credit, frame.assign(job=frame["job"].astype("int32"))).count() == 50  # int fits long
    hours = spark.with_row_id(datasets.load_bikeshare()[training.BIKE_FEATURES].head(20))
    with pytest.raises(spark.SparkScoringError, match="column 'temp' should be double but is bigint"):
        spark.score(session, store["demand"], hours.assign(temp=(hours["temp"] * 100).astype("int64")))  # MLflow refuses it
    for uri, words in {"models:/no-such-model@champion": r"No registered model 'no-such-model'; registered models: \[",
                       "models:/credit-risk@gold": r"has no alias 'gold'; aliases: \{",
                       "runs:/0123456789abcdef/model": "no such model"}.items():
        with pytest.raises(spark.SparkScoringError, match=words):
            spark.score(session, uri, frame)
        with pytest.raises(spark.SparkScoringError, match="Cannot score with"):
            spark.champion_udf(session, uri)


@pytest.mark.integration
def test_a_job_that_fails_midway_leaves_nothing_and_keeps_the_previous_output(store, tmp_path):
    from pyspark.sql import functions as F

    session, credit = store["spark"], store["credit"]
    frame = spark.with_row_id(store["applications"].head(1200).drop(columns="row_id"))
    sdf = session.createDataFrame(frame)
    broken = sdf.withColumn("age", F.when(F.col("row_id") == 900, F.lit(None)).otherwise(F.col("age")).cast("bigint"))
    with pytest.raises(spark.SparkScoringError, match="nothing was written") as error:
        spark.write_predictions(spark.score(session, credit, broken, partitions=2), tmp_path / "out",
                                partition_by=["purpose"])
    assert "Traceback" not in str(error.value) and len(str(error.value)) < 600
    assert list(tmp_path.iterdir()) == [], "neither the output nor a temporary folder"
    spark.write_predictions(spark.score(session, credit, sdf.limit(10)), tmp_path / "out")
    with pytest.raises(spark.SparkScoringError):
        spark.write_predictions(spark.score(session, credit, broken), tmp_path / "out")
    assert len(spark.read_predictions(tmp_path / "out")) == 10, "the last good output is intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.integration
def test_the_spark_submit_job_scores_like_pandas_and_refuses_bad_input(store, tmp_path):
    frame = store["applications"].head(1200)
    training.model_input(frame).to_parquet(tmp_path / "applications.parquet", index=False)
    uri = store["tracking_uri"]
    done = spark.submit(store["credit"], tmp_path / "applications.parquet", tmp_path / "predictions",
                        partition_by=["purpose"], tracking_uri=uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored 1200 rows with models:/credit-risk@champion on local[2]" in done.stdout and not done.error
    assert done.command[:4] == ["spark-submit", "--master", "local[2]", "scripts/spark_batch_score.py"]
    back = spark.read_predictions(tmp_path / "predictions")
    assert spark.parity(back, spark.pandas_predictions(store["credit"], frame)).identical
    assert set(spark.partitions_written(tmp_path / "predictions")["value"]) == set(frame["purpose"].unique())

    # One refusal through spark-submit (each run starts a JVM): the exit code, the one-line error and
    # nothing written. The other refusals (unknown model, empty input) are the same check in process,
    # in test_bad_inputs_are_refused_before_scoring_with_what_is_wrong.
    training.model_input(frame).drop(columns=["age"]).to_csv(tmp_path / "no-age.csv", index=False)
    refused = spark.submit(store["credit"], "no-age.csv", "out-no-age", tracking_uri=uri, cwd=tmp_path)
    assert refused.returncode == 2 and r"lacks the column(s) ['age']" in refused.error, refused.stderr[-1500:]
    assert not (tmp_path / "out-no-age").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"


@pytest.mark.integration
def test_a_second_session_is_refused_while_one_runs(store):
    with pytest.raises(spark.SparkSetupError, match="already running"):
        spark.session("local[1]").start()


@pytest.mark.integration
def test_stopping_the_session_leaves_no_jvm(ctx):
    """Runs last in this module: the session's JVM is a child of this process until it stops."""
    from pyspark import SparkContext

    assert spark.java_children(), "a running session has its JVM as a child of this process"
    spark.session("local[1]", "test-spark").stop()  # a handle that never started (a cell run twice): it
    # stops the running session too, and pyspark's record of it, or no session could start again
    assert spark.java_children() == [] and SparkContext._gateway is None and SparkContext._active_spark_context is None
    with spark.session("local[1]", "test-spark-again") as again:
        assert again.range(3).count() == 3
    assert spark.java_children() == []
    ctx["handle"].stop()  # stopping twice is harmless
    assert spark.java_children() == []
