"""Lab 14's checks decide both ways on wrong answers, not only on the untouched copy.

The sensor and validation checks run real Dagster sensors and jobs (seconds). The replay checks read
what the real pipeline recorded: one replay of the bootstrap batch and three months (``replayed``,
about a minute) is shared by every test that needs it.
"""

from __future__ import annotations

import time

import dagster as dg
import mlflow
import pandas as pd
import pytest

from mlops_lab import config, datasets, quality
from mlops_lab.grading import retraining as checks
from mlops_lab.pipeline import definitions, workflow


def is_ready(path):
    return path.is_file() and path.suffix in (".parquet", ".csv") and not path.name.startswith(".") \
        and path.stat().st_size > 0


def run_key(path):
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def untouched(*args, **kwargs):
    raise NotImplementedError("Complete this task, then run the check below.")


# -- task 1: the sensor ------------------------------------------------------------------------------

@pytest.mark.unit
def test_a_sound_condition_passes_and_each_wrong_one_fails_with_what_it_let_through():
    assert checks.ready_files({"is_ready": is_ready, "run_key": run_key}).passed
    by_suffix = checks.ready_files({"is_ready": lambda p: p.suffix in (".parquet", ".csv"), "run_key": run_key})
    assert not by_suffix.passed
    for name in (".2011-05.parquet", "empty.parquet", "archive.parquet"):
        assert name in by_suffix.detail
    assert "2011-05.parquet.tmp" not in by_suffix.detail  # its suffix already keeps it out
    only_parquet = checks.ready_files({"is_ready": lambda p: is_ready(p) and p.suffix == ".parquet", "run_key": run_key})
    assert "starts no run for 2011-04.csv" in only_parquet.detail
    assert "NotImplementedError" in checks.ready_files({"is_ready": untouched, "run_key": untouched}).detail
    missing = checks.ready_files({})
    assert not missing.passed and "define `is_ready" in missing.detail and "path.is_file()" in missing.hint


@pytest.mark.unit
def test_run_keys_must_stay_while_a_file_is_unchanged_and_change_when_it_is_dropped_again():
    assert checks.run_keys({"is_ready": is_ready, "run_key": run_key}).passed
    by_name = checks.run_keys({"is_ready": is_ready, "run_key": lambda p: p.name})
    assert "dropped into the inbox again" in by_name.detail
    by_content = checks.run_keys({"is_ready": is_ready, "run_key": lambda p: str(hash(p.read_bytes()))})
    assert "dropped into the inbox again" in by_content.detail
    by_clock = checks.run_keys({"is_ready": is_ready, "run_key": lambda p: f"{p.name}:{time.time_ns()}"})
    assert "changed although no file did" in by_clock.detail
    constant = checks.run_keys({"is_ready": is_ready, "run_key": lambda p: "batch"})
    assert "same run key" in constant.detail
    not_text = checks.run_keys({"is_ready": is_ready, "run_key": lambda p: p.stat().st_mtime_ns})
    assert not not_text.passed  # Dagster refuses a run key that is not a string
    assert not checks.run_keys({"is_ready": is_ready, "run_key": untouched}).passed


@pytest.mark.unit
def test_the_student_functions_run_inside_a_real_sensor_of_the_retraining_job(tmp_path):
    inbox = checks.sample_inbox(tmp_path / "inbox")
    sensor = checks.inbox_sensor(is_ready, run_key, inbox)
    assert isinstance(sensor, dg.SensorDefinition) and sensor.job_name == definitions.retrain_job.name
    with dg.build_sensor_context() as context:
        data = sensor.evaluate_tick(context)
    batches = sorted(r.run_config["ops"]["ingest"]["config"]["batch"] for r in data.run_requests)
    assert batches == [str(inbox / "2011-03.parquet"), str(inbox / "2011-04.csv")]
    assert workflow.read_batch(batches[1])["timestamp"].dt.month.eq(4).all()  # a real batch the job can read
    with dg.build_sensor_context() as context:
        assert sensor.evaluate_tick(context).skip_message is None
    empty = checks.inbox_sensor(is_ready, run_key, tmp_path / "nowhere")
    with dg.build_sensor_context() as context:
        assert "No batch ready" in empty.evaluate_tick(context).skip_message


# -- task 2: a bad batch stops the run ---------------------------------------------------------------

@dg.op(name="validate_batch")
def with_report(frame: pd.DataFrame) -> pd.DataFrame:
    report = quality.contract(checks.CONTRACT).validate(frame)
    if not report.passed:
        raise dg.Failure(description=report.verdict(), metadata={"report": dg.MetadataValue.md(report.to_markdown())})
    return frame


@dg.op(name="validate_batch")
def accepting(frame: pd.DataFrame) -> pd.DataFrame:
    return quality.accept_batch(frame, checks.CONTRACT, name="batch")  # BatchRejected carries the verdict


@dg.op(name="validate_batch")
def looks_only(frame: pd.DataFrame) -> pd.DataFrame:
    quality.contract(checks.CONTRACT).validate(frame)
    return frame


@dg.op(name="validate_batch")
def says_nothing(frame: pd.DataFrame) -> pd.DataFrame:
    if not quality.contract(checks.CONTRACT).validate(frame).passed:
        raise ValueError("bad batch")
    return frame


@dg.op(name="validate_batch")
def returns_nothing(frame: pd.DataFrame):
    quality.accept_batch(frame, checks.CONTRACT, name="batch")


@dg.op(name="validate_batch")
def refuses_everything(frame: pd.DataFrame) -> pd.DataFrame:
    raise dg.Failure(description="no")


@dg.op(name="validate_batch")
def not_implemented(frame: pd.DataFrame) -> pd.DataFrame:
    untouched()


@pytest.mark.unit
def test_an_op_that_stops_a_bad_batch_with_its_report_passes():
    assert checks.bad_batch_stopped({"validate_batch": with_report}).passed
    assert checks.bad_batch_stopped({"validate_batch": accepting}).passed


@pytest.mark.unit
@pytest.mark.parametrize("op, words", [
    (looks_only, "went through: training ran on it"),
    (says_nothing, "does not say what is wrong"),
    (returns_nothing, "return the frame unchanged"),
    (refuses_everything, "a good batch (April, which keeps the contract) failed at 'validate_batch'"),
    (not_implemented, "NotImplementedError"),
    (lambda frame: frame, "should be a Dagster op"),
    (None, "define the op `validate_batch`"),
], ids=["looks-only", "says-nothing", "returns-nothing", "refuses-everything", "untouched", "plain-function", "missing"])
def test_ops_that_let_a_bad_batch_through_hide_why_or_stop_a_good_one_fail(op, words):
    result = checks.bad_batch_stopped({"validate_batch": op} if op is not None else {})
    assert not result.passed and words in result.detail, result.detail
    assert "dg.Failure" in result.hint


@pytest.mark.unit
def test_try_batch_says_which_steps_ran_and_why_the_run_stopped():
    frame = next(b.frame for b in datasets.monthly_batches() if b.name == "March")
    good = checks.try_batch(with_report, frame)
    assert good["success"] and good["ran"] == ["load_batch", "validate_batch", "train_on_batch"]
    assert good["rows_trained"] == len(frame) and good["error"] is None
    bad = checks.try_batch(with_report, checks.spoiled(frame))
    assert not bad["success"] and bad["failed_step"] == "validate_batch" and "train_on_batch" not in bad["ran"]
    assert "4 violations" in bad["error"] and "| 3 | temp | normalised_weather |" in bad["message"]


# -- task 3: the replay and the explanations ---------------------------------------------------------

@pytest.mark.unit
def test_a_number_counts_as_quoted_at_the_precision_written():
    mentions = checks._mentions
    assert mentions("MAE 17.6 vs 19.7", 17.562) and mentions("about 18 riders", 17.562)
    assert mentions("17.56", 17.562) and not mentions("17.5", 17.562) and not mentions("MAE 20", 17.562)
    assert not mentions("anything", None) and not mentions("nan", float("nan"))


@pytest.mark.unit
def test_replay_batches_clears_only_the_lab_model_and_writes_the_four_batches(home):
    config.use_workspace(checks.EXPERIMENT)
    for name in (checks.MODEL, "bike-demand"):
        workflow.ensure_model(name)
        mlflow.MlflowClient().set_registered_model_tag(name, f"{workflow.MONTH_TAG}2011-01", "abc")
    paths = checks.replay_batches()
    assert [p.name for p in paths] == ["2011-01..2011-02.parquet", "2011-03.parquet", "2011-04.parquet", "2011-05.parquet"]
    assert all(p.parent == home / "lab-14" / "batches" for p in paths)
    assert workflow.ledger(checks.MODEL) == {} and workflow.ledger("bike-demand") == {"2011-01": "abc"}
    assert checks.replay_batches(home / "elsewhere")[0].parent == home / "elsewhere"  # no model left: no error


@pytest.mark.unit
def test_before_any_replay_both_replay_checks_fail_with_hints(home):
    config.use_workspace(checks.EXPERIMENT)
    replayed = checks.months_replayed({})
    assert not replayed.passed and "has no record of ['2011-01'" in replayed.detail
    assert "checks.replay_batches()" in replayed.hint
    explained = checks.decisions_explained({"explained": {"2011-03": ("kept", "MAE 1 vs 2")}})
    assert not explained.passed and "replay the three months first" in explained.detail


@pytest.mark.unit
def test_months_that_were_held_rather_than_retrained_on_fail(monkeypatch):
    monkeypatch.setattr(checks.workflow, "ledger", lambda name: {m: "d" for m in ("2011-01", "2011-02", *checks.MONTHS)})
    held = {"decision": "held", "reason": "retrain policy 'never': the month is stored, the champion stays"}
    monkeypatch.setattr(checks, "recorded", lambda: {label: {**held, "decision": "promoted", "registry": "x"}
                                                     if label == checks.BOOTSTRAP else held
                                                     for label in (checks.BOOTSTRAP, *checks.MONTHS)})
    result = checks.months_replayed({})
    assert not result.passed and "2011-03 was held" in result.detail and "retrain_when='always'" in result.detail


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """The bootstrap batch and the three months through the real pipeline, once for this module."""
    root = tmp_path_factory.mktemp("lab14-replay")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_LAB_HOME", str(root))
        patch.delenv("MLOPS_LAB_TRACKING_URI", raising=False)
        config.use_workspace(checks.EXPERIMENT)
        summaries = {}
        for path in checks.replay_batches():
            summary = definitions.run(path, settings=checks.SETTINGS)
            summaries[summary["label"]] = summary
    return {"home": root, "summaries": summaries}


@pytest.fixture
def in_replay(replayed, monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_HOME", str(replayed["home"]))
    config.use_workspace(checks.EXPERIMENT)
    yield replayed["summaries"]
    mlflow.set_tracking_uri(None)


def explanations(summaries) -> dict:
    """Right answers in a student's words, built from the summaries as a student would."""
    mar, apr, may = (summaries[m]["scores"] for m in checks.MONTHS)
    return {
        "2011-03": ("kept", f"only {1 - mar['challenger_mae'] / mar['champion_mae']:.0%} better: "
                            f"{mar['challenger_mae']:.1f} against {mar['champion_mae']:.1f}"),
        "2011-04": ("refused", f"MAE {apr['challenger_mae']:.1f} is over the gate's limit of 45"),
        "2011-05": ("promoted", f"{may['challenger_mae']:.2f} beats the stale champion's {may['champion_mae']:.0f}"),
    }


@pytest.mark.integration
def test_the_replay_makes_one_decision_of_each_kind_and_the_registry_agrees(in_replay):
    decisions = {label: s["decision"] for label, s in in_replay.items()}
    assert decisions == {checks.BOOTSTRAP: "promoted", "2011-03": "kept", "2011-04": "refused", "2011-05": "promoted"}
    assert in_replay["2011-04"]["failing"] == ["metric_mean_absolute_error"]
    assert checks.months_replayed({}).passed
    found = checks.recorded()
    for label, summary in in_replay.items():
        entry = found[label]
        assert (entry["decision"], entry["reason"], entry["version"]) == (summary["decision"], summary["reason"],
                                                                          summary["version"])
        assert entry["challenger_mae"] == summary["scores"]["challenger_mae"]
        assert entry["champion_mae"] == summary["scores"].get("champion_mae")
    assert found["2011-03"]["registry"].startswith("kept:")
    assert found["2011-05"]["registry"].startswith("pipeline 2011-05:")
    assert found["2011-04"]["registry"] is None and found["2011-04"]["gate"]["metric_mean_absolute_error"] > 45


@pytest.mark.integration
def test_right_explanations_pass_in_either_form(in_replay):
    answers = explanations(in_replay)
    assert checks.decisions_explained({"explained": answers}).passed
    as_dicts = {m: {"decision": d.upper(), "reason": r} for m, (d, r) in answers.items()}
    first = in_replay[checks.BOOTSTRAP]["scores"]["challenger_mae"]
    as_dicts[checks.BOOTSTRAP] = {"decision": "promoted", "reason": f"the first model, MAE {first:.1f}"}
    assert checks.decisions_explained({"explained": as_dicts}).passed


@pytest.mark.integration
def test_wrong_or_unexplained_decisions_fail_with_what_is_missing(in_replay):
    answers = explanations(in_replay)
    mar, apr = in_replay["2011-03"]["scores"], in_replay["2011-04"]["scores"]

    def detail(**changes):
        result = checks.decisions_explained({"explained": {**answers, **changes}})
        assert not result.passed and "summary['failing']" in result.hint
        return result.detail

    assert "you wrote 'promoted', the pipeline recorded 'kept'" in detail(**{"2011-03": ("promoted", answers["2011-03"][1])})
    assert "quote the champion's MAE" in detail(**{"2011-03": ("kept", f"the challenger had {mar['challenger_mae']:.1f}")})
    assert "say which check failed" in detail(**{"2011-04": ("refused", f"it had {apr['challenger_mae']:.1f}")})
    assert "quote the value the gate measured" in detail(**{"2011-04": ("refused", "its MAE was too high")})
    assert "the pipeline's own reason copied" in detail(**{"2011-05": ("promoted", in_replay["2011-05"]["reason"])})
    assert "one line" in detail(**{"2011-05": ("promoted", answers["2011-05"][1] + "\nand more")})
    assert "should be (decision, reason)" in detail(**{"2011-05": "promoted"})
    result = checks.decisions_explained({"explained": {k: v for k, v in answers.items() if k != "2011-04"}})
    assert "no entry for ['2011-04']" in result.detail
    assert "should be a dict" in checks.decisions_explained({}).detail
    wrong_first = checks.decisions_explained({"explained": {**answers, checks.BOOTSTRAP: ("promoted", "it was first")}})
    assert "quote the first champion's MAE" in wrong_first.detail
