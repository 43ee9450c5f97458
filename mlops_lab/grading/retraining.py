"""Checks for ``labs/14_retraining.ipynb``: the inbox sensor's condition, a bad batch that stops the
run, three months replayed through the real pipeline and each decision explained.

The checks measure what a student's code does: their condition and run key inside a real Dagster
sensor evaluated on a real inbox folder (:func:`inbox_sensor`), their validation op inside a real
Dagster job run on a spoiled and a good batch (:func:`batch_job`), and their explanations against
what the pipeline recorded in the registry and the tracking store (:func:`recorded`), never against
what a variable claims.

The lab's pipeline runs with :data:`SETTINGS`: its own registered model and experiment, one tuning
trial, a two-month window, a challenger that must be 15 % better to replace the champion, and the
lab's gate (``mlops_lab/policies/bikeshare_demand_lab14.yaml``: the planners' limit of 45 riders
per hour on the mean absolute error). Over March, April and May that makes one decision of each
kind worth explaining.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from mlops_lab.grading import Lab
from mlops_lab.pipeline import workflow

EXPERIMENT = "lab-14-retraining"
MODEL = "lab14-bike-demand"
POLICY = "bikeshare_demand_lab14"
CONTRACT = workflow.DATASET
BOOTSTRAP = "2011-01..2011-02"
"""The label of the first batch (January and February: the first champion needs a window)."""
MONTHS = ("2011-03", "2011-04", "2011-05")
"""The three months replayed after the bootstrap batch, one file each."""
SETTINGS = workflow.Settings(model_name=MODEL, experiment=EXPERIMENT, policy=POLICY, window_months=2, trials=1,
                             min_improvement=0.15)
"""What the lab's pipeline runs with (small: each run takes seconds)."""
DECIDED = ("promoted", "kept", "refused")
_METRIC_WORDS = {"metric_mean_absolute_error": ("mean_absolute_error", "mae", "mean absolute error"),
                 "metric_r2_score": ("r2_score", "r2", "r²", "r^2", "r-squared")}
"""The gate's check names, and the words that name them in an explanation."""
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

LAB = Lab("14_retraining", "Retraining: the sensor's condition, a bad batch stopped, three months explained")


# -- task 1: the inbox sensor ----------------------------------------------------------------------

_INBOX = {
    "2011-03.parquet": (True, "a complete Parquet batch"),
    "2011-04.csv": (True, "a complete CSV batch"),
    ".2011-05.parquet": (False, "a hidden file: a copy still in progress writes under a dot name"),
    "2011-05.parquet.tmp": (False, "a partial file: its suffix is .tmp, not .parquet"),
    "2011-06.csv.part": (False, "a partial download (.part)"),
    "empty.parquet": (False, "an empty file: created, nothing written yet"),
    "README.txt": (False, "not a batch: batches are .parquet or .csv files"),
    "archive.parquet": (False, "a folder, not a file"),
}
"""The sample inbox: each entry's name -> (whether it must start a run, why)."""


def sample_inbox(folder: str | Path | None = None) -> Path:
    """Write the sample inbox (see :data:`_INBOX`: complete batches, hidden, partial and empty files,
    a note, a folder) into ``folder`` (default ``<workspace>/lab-14/inbox``) and return it."""
    from mlops_lab import config, datasets

    folder = Path(folder) if folder is not None else config.workspace() / "lab-14" / "inbox"
    folder.mkdir(parents=True, exist_ok=True)
    months = list(datasets.monthly_batches())
    day = {name: months[int(name[5:7]) - 1].frame.head(24) for name in ("2011-03", "2011-04", "2011-05")}
    day["2011-03"].to_parquet(folder / "2011-03.parquet", index=False)
    day["2011-04"].to_csv(folder / "2011-04.csv", index=False)
    day["2011-05"].to_parquet(folder / ".2011-05.parquet", index=False)
    (folder / "2011-05.parquet.tmp").write_bytes((folder / ".2011-05.parquet").read_bytes()[:100])
    (folder / "2011-06.csv.part").write_text("timestamp,season\n2011-06-01 00:00:00,2\n")
    (folder / "empty.parquet").touch()
    (folder / "README.txt").write_text("Drop monthly batches here.\n")
    (folder / "archive.parquet").mkdir(exist_ok=True)
    day["2011-03"].to_parquet(folder / "archive.parquet" / "part-0.parquet", index=False)
    return folder


def inbox_sensor(is_ready: Callable[[Path], bool], run_key: Callable[[Path], str], folder: str | Path):
    """A real Dagster sensor for the retraining job, built on your condition and run key: for each
    entry of ``folder`` that ``is_ready`` accepts, a ``RunRequest`` with ``run_key(path)``."""
    import dagster as dg

    from mlops_lab.pipeline import definitions

    folder = Path(folder)

    @dg.sensor(name="lab14_inbox", job=definitions.retrain_job, minimum_interval_seconds=5,
               description="Lab 14: a new batch in the inbox requests a run.")
    def lab14_inbox(context):
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        ready = [path for path in entries if is_ready(path)]
        if not ready:
            return dg.SkipReason(f"No batch ready in {folder}")
        return [dg.RunRequest(run_key=run_key(path), tags={"trigger": "sensor:lab14", "batch": path.name},
                              run_config={"ops": {"ingest": {"config": {"batch": str(path), "trigger": "sensor:lab14"}}}})
                for path in ready]

    return lab14_inbox


def try_sensor(is_ready: Callable[[Path], bool], run_key: Callable[[Path], str], folder: str | Path) -> dict[str, str]:
    """Evaluate :func:`inbox_sensor` once, as Dagster's daemon would: file name -> run key of each
    run it requests (empty when it skips)."""
    import dagster as dg

    sensor = inbox_sensor(is_ready, run_key, folder)
    with dg.build_sensor_context() as context:
        data = sensor.evaluate_tick(context)
    return {Path(r.run_config["ops"]["ingest"]["config"]["batch"]).name: r.run_key for r in data.run_requests or []}


def _functions(ns: dict) -> tuple[Callable, Callable]:
    is_ready, run_key = ns.get("is_ready"), ns.get("run_key")
    assert callable(is_ready), "define `is_ready(path) -> bool`"
    assert callable(run_key), "define `run_key(path) -> str`"
    return is_ready, run_key


@LAB.check(
    "ready_files",
    hint="`is_ready(path)` is True only for a file (`path.is_file()`) whose suffix is .parquet or .csv, whose "
    "name does not start with '.', and which is not empty (`path.stat().st_size > 0`). "
    "`checks.try_sensor(is_ready, run_key, checks.sample_inbox())` shows which files start a run.",
)
def ready_files(ns: dict) -> None:
    is_ready, _ = _functions(ns)
    with tempfile.TemporaryDirectory(prefix="lab14-inbox-") as folder:
        requested = set(try_sensor(is_ready, lambda path: path.name, sample_inbox(folder)))
    wrong = [f"{name} ({why})" for name, (ready, why) in _INBOX.items() if not ready and name in requested]
    missed = [f"{name} ({why})" for name, (ready, why) in _INBOX.items() if ready and name not in requested]
    assert not wrong, f"your condition starts a run for {'; '.join(wrong)}"
    assert not missed, f"your condition starts no run for {'; '.join(missed)}"


@LAB.check(
    "run_keys",
    hint="Dagster starts one run per run key: `run_key(path)` must stay the same while a file is unchanged and "
    "change when the file is dropped again (a new copy, even of the same bytes). Build it from the name, "
    "the size and the modification time (`path.stat().st_mtime_ns`), as a string.",
)
def run_keys(ns: dict) -> None:
    _, run_key = _functions(ns)
    with tempfile.TemporaryDirectory(prefix="lab14-inbox-") as folder:
        _run_keys(run_key, sample_inbox(folder))


def _run_keys(run_key: Callable[[Path], str], folder: Path) -> None:
    batches = [name for name, (ready, _) in _INBOX.items() if ready]
    first = try_sensor(lambda path: path.name in batches, run_key, folder)
    assert sorted(first) == sorted(batches), f"the sensor requested {sorted(first)}, expected {batches}"
    assert len(set(first.values())) == len(first), f"two different files got the same run key: {first}"
    again = try_sensor(lambda path: path.name in batches, run_key, folder)
    assert again == first, ("the run keys changed although no file did: Dagster would start a second run "
                            f"for the same file on every tick ({first} then {again})")
    path = folder / batches[0]
    content, stat = path.read_bytes(), path.stat()
    path.unlink()
    path.write_bytes(content)  # the same file dropped again, a little later
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 60 * 10**9))
    dropped = try_sensor(lambda path: path.name in batches, run_key, folder)
    assert dropped[path.name] != first[path.name], (
        f"{path.name} was dropped into the inbox again but its run key stayed {first[path.name]!r}: Dagster "
        "would never start a run for it (the pipeline itself answers a repeated batch 'already processed')")
    unchanged = [name for name in batches if name != path.name]
    assert all(dropped[n] == first[n] for n in unchanged), "the run key of a file that did not change, changed"


# -- task 2: a bad batch stops the run -------------------------------------------------------------

def spoiled(frame, changes: dict | None = None):
    """``frame`` with a few cells broken (:func:`mlops_lab.quality.spoil`): by default a temperature
    out of range, an unknown weather and a negative count that no longer adds up."""
    from mlops_lab import quality

    changes = changes or {(3, "temp"): 7.5, (10, "weathersit"): "tornado", (20, "bikers"): -4}
    return quality.spoil(frame, changes)


def batch_job(validate_op):
    """A small real Dagster job around your op: ``load_batch`` (reads the file named in its config) ->
    ``validate_op`` -> ``train_on_batch`` (stands for everything downstream: returns the rows it got)."""
    import dagster as dg
    import pandas as pd

    assert isinstance(validate_op, dg.OpDefinition), (
        f"`validate_batch` should be a Dagster op (decorate the function with `@dg.op`), not {type(validate_op).__name__}")

    @dg.op(config_schema={"path": str}, description="Read the batch file the run was asked for.")
    def load_batch(context):
        return workflow.read_batch(context.op_config["path"])

    @dg.op(description="Stands for features, retrain and the rest: what must never see a bad batch.")
    def train_on_batch(frame):
        return len(frame) if isinstance(frame, pd.DataFrame) else None

    @dg.job(name="lab14_batch", executor_def=dg.in_process_executor)
    def lab14_batch():
        train_on_batch(validate_op(load_batch()))

    return lab14_batch


def try_batch(validate_op, frame, name: str = "batch.parquet") -> dict:
    """Run :func:`batch_job` on ``frame`` (written as ``name``): ``{"success", "failed_step", "ran",
    "rows_trained", "error", "message"}``; ``error`` is the failure in one line, ``message`` everything
    it says (each error and its cause, the failure's description and metadata)."""
    import dagster as dg

    job = batch_job(validate_op)
    with tempfile.TemporaryDirectory(prefix="lab14-batch-") as folder:
        path = Path(folder) / name
        frame.to_parquet(path, index=False)
        with warnings.catch_warnings():  # in a notebook's kernel, Dagster's cleanup of its own event loop warns
            warnings.filterwarnings("ignore", message="coroutine .*shutdown_asyncgens.* never awaited")
            result = job.execute_in_process(run_config={"ops": {"load_batch": {"config": {"path": str(path)}}}, **_QUIET},
                                            raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    ran = [e.step_key for e in result.all_events if e.is_step_start]
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    errors, lines = [], []
    if failure is not None:
        data = failure.step_failure_data
        error = data.error
        while error is not None:  # the error and what caused it, without the stack traces
            errors.append(error.message.strip())
            error = error.cause or error.context
        lines = list(errors)
        if data.user_failure_data is not None:
            lines.append(data.user_failure_data.description or "")
            lines += [f"{k}: {v.value}" for k, v in (data.user_failure_data.metadata or {}).items()]
    return {"success": result.success, "failed_step": failure.step_key if failure else None, "ran": ran,
            "rows_trained": result.output_for_node("train_on_batch") if result.success else None,
            "error": errors[-1].splitlines()[0] if errors else None,
            "message": "\n".join(line for line in lines if line)}


@LAB.check(
    "bad_batch_stopped",
    hint="`@dg.op` `def validate_batch(frame: pd.DataFrame) -> pd.DataFrame`: validate with "
    f"`quality.contract({CONTRACT!r}).validate(frame)` (or `quality.accept_batch`), and when the report does not "
    "pass raise `dg.Failure(description=report.verdict(), metadata={'report': dg.MetadataValue.md(report.to_markdown())})`; "
    "otherwise return the frame unchanged. Try it with `checks.try_batch(validate_batch, frame)`.",
)
def bad_batch_stopped(ns: dict) -> None:
    from mlops_lab import datasets, quality

    op = ns.get("validate_batch")
    assert op is not None, "define the op `validate_batch`"
    month = list(datasets.monthly_batches())[3].frame  # April: not the month the notebook spoils
    bad = spoiled(month, {(5, "hum"): 1.7, (40, "weathersit"): "sandstorm", (70, "casual"): -3})
    rules = set(quality.contract(CONTRACT).validate(bad).errors["rule"])
    good = try_batch(op, month, "2011-04.parquet")
    assert good["success"], (f"a good batch (April, which keeps the contract) failed at {good['failed_step']!r}: "
                             f"{good['error']}")
    assert good["rows_trained"] == len(month), (f"the good batch reached training with {good['rows_trained']} rows, not "
                                                f"its {len(month)}: return the frame unchanged")
    stopped = try_batch(op, bad, "2011-04-bad.parquet")
    assert not stopped["success"], "a batch that breaks the contract went through: training ran on it"
    assert stopped["failed_step"] == op.name, (f"the bad batch failed at {stopped['failed_step']!r}, not in your op "
                                               f"{op.name!r}")
    assert "train_on_batch" not in stopped["ran"], "a step after validation ran on the bad batch"
    missing = sorted(rule for rule in rules if rule not in stopped["message"])
    assert not missing, (f"the run stopped, but its failure does not say what is wrong: it names no violation of "
                         f"{missing}. Put the report (its verdict or its table) into the failure")


# -- task 3: three months replayed and explained ---------------------------------------------------

def _tracking() -> None:
    """Read and write where the pipeline does: the workspace's store unless the environment names another."""
    import mlflow

    from mlops_lab import config

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(config.tracking_uri())


def replay_batches(folder: str | Path | None = None) -> list[Path]:
    """Start the lab's replay from nothing and write its batch files: the bootstrap batch (January
    and February) and one file each for :data:`MONTHS`. The paths, in the order they must be run.

    Deletes the lab's registered model :data:`MODEL` first (its versions and its ledger), so the
    replay can be run again in a used workspace. Other models are not touched; the months the runs
    accept go to the pipeline's store (``<workspace>/pipeline/data``) as every run's do, the same
    shipped data whichever model they were run for."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlops_lab import config, datasets
    from mlops_lab.pipeline import replay

    _tracking()
    try:
        mlflow.MlflowClient().delete_registered_model(MODEL)
    except MlflowException:
        pass  # nothing to clear
    folder = Path(folder) if folder is not None else config.workspace() / "lab-14" / "batches"
    months = list(datasets.monthly_batches())[: 2 + len(MONTHS)]
    return replay.write_batches(months, folder)


def recorded() -> dict[str, dict]:
    """What the pipeline recorded for the lab's model since it was created: month label -> decision,
    the pipeline's reason, the version, the challenger's and champion's MAE, the gate's failing checks
    and their measured values. Read from the tracking store (each run's parent and step runs) and
    checked against the registry (promotions in ``registry.history``, kept versions' tags)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlops_lab import registry

    _tracking()
    client = mlflow.MlflowClient()
    try:
        model = client.get_registered_model(MODEL)
    except MlflowException:
        return {}
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {}
    parents = mlflow.search_runs([experiment.experiment_id], output_format="list", order_by=["attributes.start_time ASC"],
                                 filter_string=f"attributes.status = 'FINISHED' and attributes.start_time >= "
                                               f"{model.creation_timestamp} and tags.pipeline_decision != 'skipped'")
    history = registry.history(MODEL).to_dict("records")
    out: dict[str, dict] = {}
    for parent in parents:
        tags = parent.data.tags
        if tags.get("pipeline_decision") not in (*DECIDED, "held"):
            continue
        months = tags.get("pipeline_months", "").split(",")
        label = months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"
        steps = {run.data.tags.get("pipeline_step"): run for run in mlflow.search_runs(
            [experiment.experiment_id], output_format="list",
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
        scores = steps["evaluate"].data.metrics if "evaluate" in steps else {}
        gate_values, failing = {}, []
        if "gate" in steps:
            for run in mlflow.search_runs([experiment.experiment_id], output_format="list", filter_string=(
                    f"tags.mlflow.parentRunId = '{steps['gate'].info.run_id}'")):
                failing = [c for c in run.data.tags.get("validation_failed_checks", "none").split(",") if c != "none"]
                gate_values = {k.removeprefix("gate_"): v for k, v in run.data.metrics.items() if k.startswith("gate_")}
        version = tags.get("pipeline_version")
        entry = {"months": months, "decision": tags["pipeline_decision"], "reason": tags.get("pipeline_reason", ""),
                 "version": version, "champion_after": tags.get("pipeline_champion_after"),
                 "challenger_mae": scores.get("challenger_mae"), "champion_mae": scores.get("champion_mae"),
                 "failing": failing, "gate": gate_values}
        if entry["decision"] == "promoted":
            entry["registry"] = next((e["reason"] for e in history if e["action"] == "promote" and str(e["to"]) == version
                                      and str(e["reason"]).startswith(f"pipeline {label}:")), None)
        elif entry["decision"] == "kept" and version:
            entry["registry"] = client.get_model_version(MODEL, version).tags.get("pipeline.decision")
        else:
            entry["registry"] = None
        out[label] = entry
    return out


@LAB.check(
    "months_replayed",
    hint="`paths = checks.replay_batches()`, then `definitions.run(path, settings=checks.SETTINGS)` for each path "
    "in order (the bootstrap batch first); keep the summaries it returns.",
)
def months_replayed(ns: dict) -> None:
    expected = ["2011-01", "2011-02", *MONTHS]
    _tracking()
    done = workflow.ledger(MODEL)
    missing = [m for m in expected if m not in done]
    assert not missing, (f"the registry's ledger of {MODEL!r} has no record of {missing}: run the bootstrap batch "
                         "and the three months through the pipeline")
    found = recorded()
    for label in (BOOTSTRAP, *MONTHS):
        assert label in found, f"no finished pipeline run for {label} in experiment {EXPERIMENT!r}"
        entry = found[label]
        assert entry["decision"] in DECIDED, (f"{label} was {entry['decision']} ({entry['reason']}), not retrained on: "
                                              "run it with `settings=checks.SETTINGS` (retrain_when='always')")
        if entry["decision"] == "promoted":
            assert entry["registry"], f"{label} was promoted, but registry.history({MODEL!r}) has no such promotion"


def _answer(value) -> tuple[str | None, str | None]:
    if isinstance(value, dict):
        return value.get("decision"), value.get("reason")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    return None, None


def _mentions(text: str, value: float | None) -> bool:
    """Whether ``text`` quotes ``value`` as written to some number of decimals (17.6 or 18 for 17.562)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    for number in re.findall(r"\d+(?:\.\d+)?", text):
        decimals = len(number.split(".")[1]) if "." in number else 0
        if decimals <= 3 and math.isclose(round(value, decimals), float(number), abs_tol=1e-9):
            return True
    return False


def _explains(label: str, entry: dict, reason: str) -> str | None:
    """Why ``reason`` does not explain ``entry``'s decision, or ``None`` when it does."""
    lowered = reason.lower()
    if entry["decision"] == "refused":
        named = [c for c in entry["failing"] if any(w in lowered for w in _METRIC_WORDS.get(c, (c.removeprefix("metric_").lower(),)))]
        if not named:
            return f"{label} was refused by the gate: say which check failed ({', '.join(entry['failing'])})"
        if not any(_mentions(reason, entry["gate"].get(c)) for c in named):
            values = ", ".join(f"{c} {entry['gate'].get(c, float('nan')):.1f}" for c in named)
            return f"{label}: quote the value the gate measured for the failing check ({values})"
        return None
    if entry["champion_mae"] is None:  # the first champion
        if not _mentions(reason, entry["challenger_mae"]):
            return f"{label}: quote the first champion's MAE on the holdout days"
        return None
    absent = [what for what, value in (("the challenger's", entry["challenger_mae"]), ("the champion's", entry["champion_mae"]))
              if not _mentions(reason, value)]
    if absent:
        return f"{label} was {entry['decision']}: quote {' and '.join(absent)} MAE on the holdout days, the numbers that decided it"
    return None


@LAB.check(
    "decisions_explained",
    hint="`explained = {'2011-03': ('promoted' | 'kept' | 'refused', 'one line in your words'), ...}` for the three "
    "months. The decision is what the registry recorded; the line quotes the numbers that drove it: the "
    "challenger's and the champion's MAE (`summary['scores']`), or the gate check that failed and the value it "
    "measured (`summary['failing']`, the gate's report).",
)
def decisions_explained(ns: dict) -> None:
    explained = ns.get("explained")
    assert isinstance(explained, dict) and explained, "`explained` should be a dict: month -> (decision, reason)"
    found = recorded()
    assert all(label in found for label in MONTHS), "replay the three months first (the check above)"
    missing = [m for m in MONTHS if m not in explained]
    assert not missing, f"`explained` has no entry for {missing}"
    for label in MONTHS + ((BOOTSTRAP,) if BOOTSTRAP in explained else ()):
        entry = found[label]
        decision, reason = _answer(explained[label])
        assert decision is not None, f"explained[{label!r}] should be (decision, reason)"
        assert str(decision).strip().lower() == entry["decision"], (
            f"{label}: you wrote {decision!r}, the pipeline recorded {entry['decision']!r}")
        assert isinstance(reason, str) and reason.strip(), f"{label}: give the reason in one line"
        assert "\n" not in reason.strip(), f"{label}: keep the reason to one line"
        assert reason.strip() != entry["reason"].strip(), (
            f"{label}: that is the pipeline's own reason copied; say in your words what decided it")
        problem = _explains(label, entry, reason)
        assert problem is None, problem
