"""The retraining workflow (lesson 14): the ledger's rules, the triggers, and whole runs in process.

The runs are real: the Dagster job executed in process against a real MLflow store, real training,
the real validation gate and registry. One workspace per module (``world``) holds the year as it
is processed, so the tests below run in order, each from where the previous one left the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from mlops_lab import datasets, quality, registry, validation
from mlops_lab.monitoring import receiver
from mlops_lab.pipeline import definitions, workflow
from mlops_lab.pipeline.workflow import PipelineError, Settings

FAST = Settings(trials=2, window_months=2)


@pytest.fixture(scope="module")
def bikes() -> pd.DataFrame:
    return datasets.load_bikeshare()


def month(bikes, *names) -> pd.DataFrame:
    return bikes[bikes["mnth"].isin(names)]


# -- unit: the ledger's rules ----------------------------------------------------------------------

@pytest.mark.unit
def test_a_new_month_next_in_line_is_accepted_and_the_first_batch_may_span_months():
    assert workflow.check_order(["2011-01", "2011-02"], "abc", {}) is None
    assert workflow.check_order(["2011-03"], "def", {"2011-01": "abc", "2011-02": "abc"}) is None


@pytest.mark.unit
def test_the_same_batch_again_is_already_processed():
    done = {"2011-01": "abc", "2011-02": "abc"}
    assert workflow.check_order(["2011-01", "2011-02"], "abc", done).startswith("already processed")


@pytest.mark.unit
@pytest.mark.parametrize("months, digest, words", [
    (["2011-04"], "x", "Expected 2011-03 next, got 2011-04: 2011-03 is missing"),
    (["2011-06"], "x", "2011-03 to 2011-05 are missing"),
    (["2011-02"], "other", "2011-02 was already processed from batch abc"),
    (["2011-02", "2011-03"], "abc", "of which ['2011-02'] were already processed"),
])
def test_out_of_order_or_duplicated_months_are_refused_with_a_message(months, digest, words):
    with pytest.raises(PipelineError, match=words.replace("[", r"\[").replace("]", r"\]")):
        workflow.check_order(months, digest, {"2011-01": "abc", "2011-02": "abc"})


@pytest.mark.unit
def test_a_month_older_than_the_last_one_is_refused():
    with pytest.raises(PipelineError, match="older than the last processed month 2011-02"):
        workflow.check_order(["2010-12"], "x", {"2011-01": "a", "2011-02": "b"})


@pytest.mark.unit
def test_a_batch_with_a_gap_between_its_months_is_refused(bikes):
    with pytest.raises(PipelineError, match="not consecutive"):
        workflow.batch_months(month(bikes, "Jan", "March"))


@pytest.mark.unit
def test_a_month_read_from_csv_or_parquet_has_one_digest(bikes, tmp_path):
    part = month(bikes, "Jan")
    part.to_csv(tmp_path / "jan.csv", index=False)
    part.to_parquet(tmp_path / "jan.parquet", index=False)
    digests = {workflow.batch_digest(workflow.read_batch(tmp_path / name)) for name in ("jan.csv", "jan.parquet")}
    assert len(digests) == 1
    spoiled = quality.spoil(part, {(0, "temp"): 0.99})
    spoiled.to_parquet(tmp_path / "other.parquet", index=False)
    assert workflow.batch_digest(workflow.read_batch(tmp_path / "other.parquet")) not in digests


@pytest.mark.unit
@pytest.mark.parametrize("name, content, words", [
    ("missing.parquet", None, "No batch file"),
    ("jan.json", "{}", "a .parquet or .csv file"),
    ("no-time.csv", "a,b\n1,2\n", "no 'timestamp' column"),
    ("bad-time.csv", "timestamp,a\nyesterday,2\n", "not a date and time"),
    ("empty.csv", "timestamp,a\n", "is empty"),
])
def test_unreadable_batches_get_a_clear_error(tmp_path, name, content, words):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(PipelineError, match=words):
        workflow.read_batch(tmp_path / name)


@pytest.mark.unit
@pytest.mark.parametrize("field, value", [("window_months", 0), ("holdout_days", 30), ("trials", 0),
                                          ("min_improvement", 1.5)])
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(PipelineError, match=field):
        Settings(**{field: value})


@pytest.mark.unit
def test_the_bike_policy_is_a_regressors_and_classifier_sections_are_refused_for_it():
    policy = validation.load_policy("bikeshare_demand")
    assert policy["model_type"] == "regressor"
    assert validation.load_policy("credit_risk")["model_type"] == "classifier"
    with pytest.raises(validation.PolicyError, match="measure a classifier"):
        validation.load_policy({**policy, "checks": {**policy["checks"], "robustness": {"noise_level": 0.1}}})
    with pytest.raises(validation.PolicyError, match="Unknown metric 'roc_auc' for a regressor"):
        validation.load_policy({**policy, "checks": {"metrics": [{"metric": "roc_auc", "min": 0.5}]}})
    with pytest.raises(validation.PolicyError, match="model_type must be one of"):
        validation.load_policy({**policy, "model_type": "ranker"})


# -- unit: the triggers ----------------------------------------------------------------------------

@pytest.mark.unit
def test_the_inbox_sensor_requests_one_run_per_file_and_a_file_dropped_again_anew(bikes, home):
    with dg.build_sensor_context() as context:
        assert isinstance(definitions.inbox(context), dg.SkipReason)
    inbox = definitions.inbox_dir()
    inbox.mkdir(parents=True)
    month(bikes, "Jan").to_parquet(inbox / "jan.parquet", index=False)
    (inbox / "notes.txt").write_text("not a batch")
    (inbox / ".partial.parquet").write_text("being copied")
    (inbox / "empty.csv").write_text("")
    with dg.build_sensor_context() as context:
        [request] = definitions.inbox(context)
    assert request.run_config["ops"]["ingest"]["config"] == {"batch": str(inbox / "jan.parquet"), "trigger": "sensor:inbox"}
    with dg.build_sensor_context() as context:
        [same] = definitions.inbox(context)
    assert same.run_key == request.run_key  # Dagster runs a run key once
    stat = (inbox / "jan.parquet").stat()
    import os

    os.utime(inbox / "jan.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with dg.build_sensor_context() as context:
        [again] = definitions.inbox(context)
    assert again.run_key != request.run_key


@pytest.mark.unit
def test_the_monthly_schedule_takes_the_oldest_waiting_batch(bikes, home):
    with dg.build_schedule_context() as context:
        assert isinstance(definitions.monthly(context), dg.SkipReason)
    inbox = definitions.inbox_dir()
    inbox.mkdir(parents=True)
    for i, name in enumerate(["Feb", "Jan"]):
        path = inbox / f"{name}.parquet"
        month(bikes, name).to_parquet(path, index=False)
        import os

        os.utime(path, ns=(10**18 + i, 10**18 + i))  # Feb first, then Jan: the order they arrived
    with dg.build_schedule_context() as context:
        request = definitions.monthly(context)
    assert request.run_config["ops"]["ingest"]["config"]["batch"].endswith("Feb.parquet")
    assert request.tags["trigger"] == "schedule:monthly"


def _notify(store: receiver.AlertStore, alertname: str, status: str = "firing") -> None:
    store.add(receiver.parse_notification(receiver.notification(alertname, status, {"feature": "temp"})))


@pytest.mark.unit
def test_the_daemons_settings_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.delenv(definitions.SETTINGS_ENV, raising=False)
    assert definitions.configured_settings().trials == Settings().trials
    monkeypatch.setenv(definitions.SETTINGS_ENV, json.dumps({"trials": 1, "window_months": 2}))
    assert definitions.configured_settings().settings() == Settings(trials=1, window_months=2)
    for raw, words in (("{", "is not JSON"), ('{"trails": 1}', "unknown settings"), ('{"trials": 0}', "trials must be")):
        monkeypatch.setenv(definitions.SETTINGS_ENV, raw)
        with pytest.raises(PipelineError, match=words):
            definitions.configured_settings()


@pytest.mark.unit
def test_a_firing_drift_alert_requests_one_retrain_and_other_alerts_none(home):
    store = receiver.AlertStore(receiver.store_path()).create()
    assert definitions.alert_requests(0) == ([], 0)
    _notify(store, "MonitorDown")
    _notify(store, "FeatureDrift", status="resolved")
    requests, cursor = definitions.alert_requests(0)
    assert requests == [] and cursor == 1  # resolved rows are not read; a monitor down is no reason to retrain
    _notify(store, "FeatureDrift")
    [request], cursor = definitions.alert_requests(cursor)
    assert request.run_config["ops"]["ingest"]["config"] == {"batch": "", "trigger": "alert:FeatureDrift"}
    assert definitions.alert_requests(cursor) == ([], cursor)  # the same notification is taken once
    with dg.build_sensor_context(cursor=str(cursor)) as context:
        assert isinstance(definitions.alerts(context), dg.SkipReason)


# -- integration: whole runs in process ------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, bikes):
    """A workspace where Jan-Feb were processed (the first champion) and the files of later months."""
    root = tmp_path_factory.mktemp("pipeline-world")
    files = root / "batches"
    files.mkdir()
    for name, frame in (("q1", month(bikes, "Jan", "Feb")), ("march", month(bikes, "March")),
                        ("april", month(bikes, "April")), ("may", month(bikes, "May"))):
        frame.to_parquet(files / f"{name}.parquet", index=False)
    return {"home": root / "home", "files": files, "first": None}


@pytest.fixture
def in_world(world, monkeypatch):
    world["home"].mkdir(exist_ok=True)
    monkeypatch.setenv("MLOPS_LAB_HOME", str(world["home"]))
    mlflow.set_tracking_uri(f"sqlite:///{world['home'] / 'mlflow.db'}")
    if world["first"] is None:
        world["first"] = definitions.run(world["files"] / "q1.parquet", settings=FAST)
    yield world
    mlflow.set_tracking_uri(None)


def versions() -> list[str]:
    return sorted(str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name = '{workflow.MODEL_NAME}'"))


def champion() -> str | None:
    found = mlflow.MlflowClient().get_registered_model(workflow.MODEL_NAME).aliases.get("champion")
    return None if found is None else str(found)


@pytest.mark.integration
def test_the_first_batch_makes_the_first_champion_with_every_step_tracked(in_world):
    first = in_world["first"]
    assert first["decision"] == "promoted" and first["gate"] == "passed", first
    assert first["reason"].startswith("first champion")
    assert champion() == first["version"] == "1"
    assert workflow.ledger(workflow.MODEL_NAME) == {"2011-01": first["digest"], "2011-02": first["digest"]}
    parent = mlflow.get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["dagster_run_id"] == first["dagster_run_id"]
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{first['parent_run_id']}'")
    steps = {run.data.tags["pipeline_step"] for run in children}
    assert steps == set(workflow.STEPS) - {"record"}
    assert all(run.data.tags["dagster_run_id"] == first["dagster_run_id"] for run in children)
    version = mlflow.MlflowClient().get_model_version(workflow.MODEL_NAME, "1")
    assert version.tags["validation_status"] == "passed" and version.tags[workflow.WINDOW_TAG]
    [event] = registry.history(workflow.MODEL_NAME).to_dict("records")
    assert event["by"].startswith("pipeline/") and "first champion" in event["reason"]


@pytest.mark.integration
def test_the_same_batch_again_changes_nothing(in_world):
    history = len(registry.history(workflow.MODEL_NAME))
    again = definitions.run(in_world["files"] / "q1.parquet", settings=FAST)
    assert again["decision"] == "skipped" and again["reason"].startswith("already processed")
    assert versions() == ["1"] and champion() == "1"
    assert len(registry.history(workflow.MODEL_NAME)) == history


@pytest.mark.integration
def test_a_month_out_of_order_or_with_other_data_is_refused_and_nothing_changes(in_world, bikes):
    with pytest.raises(PipelineError, match="Expected 2011-03 next, got 2011-04"):
        definitions.run(in_world["files"] / "april.parquet", settings=FAST)
    changed = quality.spoil(month(bikes, "Jan", "Feb"), {(0, "bikers"): 17, (0, "casual"): 0, (0, "registered"): 17})
    changed.to_parquet(in_world["files"] / "q1-changed.parquet", index=False)
    with pytest.raises(PipelineError, match="2011-01 was already processed from batch"):
        definitions.run(in_world["files"] / "q1-changed.parquet", settings=FAST)
    assert versions() == ["1"] and champion() == "1"
    assert sorted(workflow.ledger(workflow.MODEL_NAME)) == ["2011-01", "2011-02"]


@pytest.mark.integration
def test_a_bad_batch_is_quarantined_the_run_stops_and_the_next_good_one_goes_through(in_world, bikes):
    bad = quality.spoil(month(bikes, "March"), {(3, "temp"): 7.5, (10, "weathersit"): "tornado"})
    bad.to_parquet(in_world["files"] / "march-bad.parquet", index=False)
    with pytest.raises(quality.BatchRejected, match="quarantined") as rejected:
        definitions.run(in_world["files"] / "march-bad.parquet", settings=FAST)
    kept = json.loads((rejected.value.path / "report.json").read_text())
    assert {e["column"] for e in kept["failures"]} >= {"temp", "weathersit"}
    assert versions() == ["1"] and champion() == "1"
    assert "2011-03" not in workflow.ledger(workflow.MODEL_NAME)
    failed = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.pipeline_step = 'validate'")
    assert [run.info.status for run in failed] == ["FAILED"] or "FAILED" in {r.info.status for r in failed}
    summary = definitions.run(in_world["files"] / "march-bad.parquet", settings=FAST, raise_on_error=False)
    assert summary["decision"] == "failed" and summary["step"] == "validate"
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="attributes.status = 'RUNNING'")

    good = definitions.run(in_world["files"] / "march.parquet", settings=FAST)
    assert good["months"] == ["2011-03"] and good["window_months"] == ["2011-02", "2011-03"]
    assert good["decision"] in ("promoted", "kept", "refused") and good["reason"]
    assert "2011-03" in workflow.ledger(workflow.MODEL_NAME)
    in_world["march"] = good


class Crash(RuntimeError):
    pass


@pytest.mark.integration
def test_a_crash_in_any_step_keeps_the_registry_consistent_and_the_rerun_completes(in_world, monkeypatch):
    """April crashes three times, before the registry changes, after the challenger is registered
    and after it is promoted; every rerun picks up without a second version or promotion."""
    before = {"versions": versions(), "champion": champion(), "history": len(registry.history(workflow.MODEL_NAME))}
    april = in_world["files"] / "april.parquet"
    real = {name: getattr(workflow, name) for name in ("retrain", "gate", "decide")}

    def crash_after(name):
        def step(*args, **kwargs):
            real[name](*args, **kwargs)
            raise Crash(f"killed after {name}")
        return step

    monkeypatch.setattr(workflow, "retrain", lambda *a, **k: (_ for _ in ()).throw(Crash("killed in retrain")))
    with pytest.raises(Crash):
        definitions.run(april, settings=FAST)
    assert versions() == before["versions"] and champion() == before["champion"]
    assert "2011-04" not in workflow.ledger(workflow.MODEL_NAME)
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="attributes.status = 'RUNNING'")

    monkeypatch.setattr(workflow, "retrain", real["retrain"])
    monkeypatch.setattr(workflow, "gate", crash_after("gate"))
    with pytest.raises(Crash):
        definitions.run(april, settings=FAST)
    registered = versions()
    assert champion() == before["champion"]
    new = sorted(set(registered) - set(before["versions"]))
    [new_version] = new  # it passed the gate: registered with its window key, alias challenger, not champion
    version = mlflow.MlflowClient().get_model_version(workflow.MODEL_NAME, new_version)
    assert version.tags["validation_status"] == "passed" and version.tags[workflow.WINDOW_TAG]
    assert version.aliases == ["challenger"]

    monkeypatch.setattr(workflow, "gate", real["gate"])
    monkeypatch.setattr(workflow, "decide", crash_after("decide"))
    with pytest.raises(Crash):
        definitions.run(april, settings=FAST)
    assert versions() == registered  # the rerun reused the version trained on this window
    assert "2011-04" not in workflow.ledger(workflow.MODEL_NAME)
    after_decide = {"champion": champion(), "history": len(registry.history(workflow.MODEL_NAME))}

    monkeypatch.setattr(workflow, "decide", real["decide"])
    done = definitions.run(april, settings=FAST)
    assert versions() == registered and champion() == after_decide["champion"]
    assert len(registry.history(workflow.MODEL_NAME)) == after_decide["history"]  # no second promotion
    assert done["months"] == ["2011-04"] and "2011-04" in workflow.ledger(workflow.MODEL_NAME)
    again = definitions.run(april, settings=FAST)
    assert again["decision"] == "skipped" and versions() == registered


@pytest.mark.integration
def test_an_alert_retrains_on_the_stored_window_without_a_second_version(in_world):
    store = receiver.AlertStore(receiver.store_path()).create()
    _notify(store, "DatasetDrift")
    [request], cursor = definitions.alert_requests(0)
    trigger = request.run_config["ops"]["ingest"]["config"]["trigger"]
    before = versions()
    first = definitions.run(None, settings=FAST, trigger=trigger)
    assert first["window_months"] == ["2011-03", "2011-04"] and first["months"] == []
    assert versions() == before  # the same window as April's run: that version is reused, not retrained
    parent = mlflow.get_run(first["parent_run_id"])
    assert parent.data.tags["pipeline_trigger"] == "alert:DatasetDrift"
    assert first["decision"] in ("promoted", "kept", "refused")


@pytest.mark.unit
def test_retraining_before_any_month_is_refused(home):
    mlflow.set_tracking_uri(f"sqlite:///{Path(home) / 'mlflow.db'}")
    try:
        with pytest.raises(PipelineError, match="no month has been processed yet"):
            definitions.run(None, settings=FAST)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.unit
def test_the_dagster_resource_has_the_settings_fields_and_defaults():
    assert definitions.PipelineSettings().settings() == Settings()
    assert set(definitions.PipelineSettings.model_fields) == set(Settings.__dataclass_fields__)
