"""The steps of the retraining workflow, as plain functions the Dagster ops call (lesson 14).

One run takes a batch of Bikeshare months (or none: "retrain on what we have", when an alert asks
for it) through ingest -> validate -> features -> retrain -> evaluate -> gate -> decide -> record.
Dagster (:mod:`mlops_lab.pipeline.definitions`) orders, triggers and records the steps; what each
step *does* lives here, so it reads as a short function and is tested on its own.

The rules that make a run safe to repeat and to kill:

* **The registry is the ledger.** Every processed month is a tag on the registered model
  (``pipeline.month.2011-05 = <batch digest>``), written by the last step only. A batch whose
  months are all recorded with the same digest is *already processed*: the run does nothing. A
  month recorded with another digest, a month that skips one, or a month older than the last one
  is refused with a message before anything is trained.
* **A trained window is found again.** The challenger version carries the digest of the window it
  was trained on and the settings (``pipeline.window``); a rerun after a crash reuses that version
  instead of registering a second one, and a version that already holds the champion alias is not
  promoted twice.
* **Only the decide step moves the champion alias**, through :func:`mlops_lab.registry.promote`
  (recorded, then moved). A crash anywhere else leaves it where it was.

Each step is an MLflow run under one parent run per pipeline run; both carry the Dagster run id
(``dagster_run_id``) so the tracking UI and Dagster's UI point at each other.
"""

from __future__ import annotations

import functools
import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from mlops_lab.config import SEED

MODEL_NAME = "bike-demand"
EXPERIMENT = "retraining"
POLICY = "bikeshare_demand"
DATASET = "bikeshare_hourly_2011"
SEARCH_SPACE: dict[str, tuple] = {
    "learning_rate": (0.05, 0.3),
    "max_leaf_nodes": (15, 63),
    "min_samples_leaf": (10, 40),
}
"""The production search space: the few histogram-gradient-boosting settings that mattered, in the
ranges where good trials fell. Production retraining searches only this, with a handful of trials;
wide searches belong to experiments (lesson 04)."""
INTENDED_USE = ("Hourly bike-rental demand for Washington DC's fleet planning; retrained every month "
                "by the pipeline, not for decisions about individual riders.")
MONTH_TAG = "pipeline.month."
WINDOW_TAG = "pipeline.window"
RETRAIN_WHEN = {"always": "retrain on every new month", "drift": "retrain when the monitor raises an alarm",
                "never": "keep the first champion"}
STEPS = ("ingest", "validate", "features", "retrain", "evaluate", "gate", "decide", "record")


class PipelineError(RuntimeError):
    """The batch cannot be processed as given (order, duplicates, shape); nothing was changed."""


@dataclass(frozen=True)
class Settings:
    """What a pipeline run retrains and how it decides (the Dagster resource carries the same fields).

    ``window_months``: months of data the model is trained on (the newest ones); ``holdout_days``:
    the newest days of the window, kept out of training and used to compare champion and
    challenger; ``trials``: tuning trials over :data:`SEARCH_SPACE`; ``min_improvement``: the share by
    which the challenger's mean absolute error must beat the champion's to replace it;
    ``retrain_when``: after a new month is stored, retrain ``"always"``, only on ``"drift"`` (the
    monitor of lesson 13 raises an alarm for the month against the champion's holdout days: data,
    predictions or error), or ``"never"`` (the month is validated and stored, the champion stays).
    A run an alert requested always retrains.
    """

    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT
    policy: str = POLICY
    window_months: int = 3
    holdout_days: int = 7
    trials: int = 3
    min_improvement: float = 0.02
    retrain_when: str = "always"
    seed: int = SEED
    actor: str = "pipeline"

    def __post_init__(self) -> None:
        problems = []
        if self.retrain_when not in RETRAIN_WHEN:
            problems.append(f"retrain_when must be one of {list(RETRAIN_WHEN)}, not {self.retrain_when!r}")
        if self.window_months < 1:
            problems.append(f"window_months must be at least 1, not {self.window_months}")
        if not 1 <= self.holdout_days <= 14:
            problems.append(f"holdout_days must be between 1 and 14, not {self.holdout_days}")
        if self.trials < 1:
            problems.append(f"trials must be at least 1, not {self.trials}")
        if not 0 <= self.min_improvement < 1:
            problems.append(f"min_improvement is a share in [0, 1), not {self.min_improvement}")
        if problems:
            raise PipelineError("; ".join(problems))

    def fingerprint(self) -> str:
        """What changes the trained model: part of the window key, so new settings retrain."""
        keys = ("window_months", "holdout_days", "trials", "seed", "policy")
        return json.dumps({k: getattr(self, k) for k in keys} | {"space": SEARCH_SPACE}, sort_keys=True)


@dataclass
class State:
    """What one run knows so far; every step reads it and adds to it."""

    label: str
    trigger: str
    dagster_run_id: str
    parent_run_id: str | None = None
    batch: str | None = None
    months: list[str] = field(default_factory=list)
    digest: str | None = None
    frame: pd.DataFrame | None = None
    skip: str | None = None  # why the remaining steps have nothing to do (already processed)
    hold: str | None = None  # why this new month is stored but not retrained on (the retrain policy)
    drift: dict[str, Any] = field(default_factory=dict)
    window_months: list[str] = field(default_factory=list)
    window_key: str | None = None
    train: pd.DataFrame | None = None
    holdout: pd.DataFrame | None = None
    model_uri: str | None = None
    train_run_id: str | None = None
    reused_version: str | None = None
    version: str | None = None
    gate: str | None = None
    failing: list[str] = field(default_factory=list)
    gate_failures: list[str] = field(default_factory=list)  # each failing check with its value and threshold
    champion_before: str | None = None
    champion_after: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    decision: str | None = None
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        """The run in one row: what came in, what was decided and why."""
        keep = ("label", "trigger", "months", "digest", "window_months", "version", "gate", "failing",
                "champion_before", "champion_after", "decision", "reason", "scores", "drift", "dagster_run_id",
                "parent_run_id")
        out = {k: v for k, v in asdict(self).items() if k in keep}
        return out


# -- batches and the ledger ------------------------------------------------------------------------

def month_key(timestamp) -> str:
    return pd.Timestamp(timestamp).strftime("%Y-%m")


def read_batch_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame as :func:`read_batch` would return it from a file: times parsed, categories as text,
    in time order."""
    frame = frame.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    return frame.sort_values("timestamp").reset_index(drop=True)


def read_batch(path: str | Path) -> pd.DataFrame:
    """A batch file (Parquet or CSV) as a frame with the same types wherever it came from.

    Category columns become plain text, so a month read from CSV and from Parquet has one digest.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"No batch file {path}")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise PipelineError(f"{path.name}: a batch is a .parquet or .csv file")
    if "timestamp" not in frame.columns:
        raise PipelineError(f"{path.name} has no 'timestamp' column: the pipeline cannot tell which month it is")
    if frame.empty:
        raise PipelineError(f"{path.name} is empty")
    try:
        return read_batch_frame(frame)
    except (ValueError, TypeError) as exc:
        raise PipelineError(f"{path.name}: the 'timestamp' column is not a date and time ({exc})") from None


def batch_digest(frame: pd.DataFrame) -> str:
    from mlops_lab import datasets

    return datasets.digest(frame.reset_index(drop=True))


def batch_months(frame: pd.DataFrame) -> list[str]:
    """The calendar months a batch covers, checked to be consecutive."""
    months = sorted({month_key(t) for t in frame["timestamp"].dropna()})
    periods = [pd.Period(m, "M") for m in months]
    gaps = [str(b) for a, b in zip(periods, periods[1:]) if (b - a).n != 1]
    if gaps:
        raise PipelineError(f"The batch covers months {months}, which are not consecutive (a gap before {gaps[0]})")
    return months


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _missing(exc: Exception) -> bool:
    """True for MLflow's "does not exist"; anything else (a 403, a server error) is not an answer."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def ensure_model(name: str) -> None:
    """Create the registered model the ledger lives on, if it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        _client().get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        _client().create_registered_model(name, description="Hourly bike demand, retrained by the pipeline (lesson 14).")


def ledger(name: str) -> dict[str, str]:
    """Processed month -> digest of the batch it came from, read from the registered model's tags.

    A model that does not exist has processed nothing; any other error is raised, never read as
    "nothing processed" (which would make every month look new)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = _client().get_registered_model(name).tags
    except MlflowException as exc:
        if not _missing(exc):
            raise
        return {}
    return {k.removeprefix(MONTH_TAG): v for k, v in sorted(tags.items()) if k.startswith(MONTH_TAG)}


def check_order(months: list[str], digest: str, done: dict[str, str]) -> str | None:
    """``None`` if the months are new and next in line; "already processed" if they were, with this
    digest; else :class:`PipelineError` saying what is out of order or duplicated."""
    seen = [m for m in months if m in done]
    if seen:
        if len(seen) == len(months) and all(done[m] == digest for m in months):
            return f"already processed: {', '.join(months)} (batch {digest})"
        other = {m: done[m] for m in seen if done[m] != digest}
        if other:
            first = next(iter(other))
            raise PipelineError(f"{first} was already processed from batch {other[first]}; this batch ({digest}) "
                                "holds different data for it. A month is retrained on once: send the next month.")
        raise PipelineError(f"The batch covers {months}, of which {seen} were already processed: "
                            "send only the new months")
    if done:
        last = pd.Period(max(done), "M")
        expected = str(last + 1)
        if months[0] != expected:
            if months[0] < expected:
                raise PipelineError(f"{months[0]} is older than the last processed month {last}: batches arrive "
                                    "in time order")
            gap = f"{expected} is" if str(pd.Period(months[0], "M") - 1) == expected else \
                f"{expected} to {pd.Period(months[0], 'M') - 1} are"
            raise PipelineError(f"Expected {expected} next, got {months[0]}: {gap} missing")
    return None


# -- tracking ----------------------------------------------------------------------------------------

def experiment_id(name: str) -> str:
    """The pipeline's experiment, created on first use (artifacts in the workspace for a local store)."""
    import mlflow

    from mlops_lab import config

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        ident = found.experiment_id
    else:
        uri = mlflow.get_tracking_uri()
        location = (config.artifact_root() / name).as_uri() if uri.startswith(("sqlite:", "file:")) else None
        ident = mlflow.create_experiment(name, artifact_location=location)
    # the active experiment too: runs nested without an experiment id (the gate's) land here,
    # not in the store's default experiment, whose artifacts would go to ./mlruns
    mlflow.set_experiment(experiment_id=ident)
    return ident


def start_parent(state: State, settings: Settings) -> str:
    """The pipeline run's parent MLflow run (left open until :func:`finish`).

    Under ``mlflow run -e retrain`` (the MLproject), MLflow hands its own run over in
    ``MLFLOW_RUN_ID``: the pipeline's run becomes its child (``mlflow.parentRunId``) instead of the
    first step quietly resuming it."""
    import os

    tags = {"dagster_run_id": state.dagster_run_id, "pipeline_trigger": state.trigger,
            "pipeline_batch": state.digest or "none", "pipeline_months": ",".join(state.months) or "stored window"}
    project = os.environ.pop("MLFLOW_RUN_ID", None)
    if project:
        tags |= {"mlflow.parentRunId": project, "mlflow_project_run": project}
    run = _client().create_run(experiment_id(settings.experiment), run_name=f"pipeline-{state.label}", tags=tags)
    return run.info.run_id


def close_stale(state: State, settings: Settings) -> list[str]:
    """Mark earlier runs of this same batch that never finished (a killed process), and their open
    steps, as KILLED."""
    import mlflow

    if not state.digest:
        return []
    found = mlflow.search_runs([experiment_id(settings.experiment)], output_format="list",
                               filter_string=f"tags.pipeline_batch = '{state.digest}' and attributes.status = 'RUNNING'")
    closed = []
    for run in found:
        if run.info.run_id != state.parent_run_id:
            steps = mlflow.search_runs([run.info.experiment_id], output_format="list", filter_string=(
                f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'"))
            for stale in [*steps, run]:
                _client().set_terminated(stale.info.run_id, "KILLED")
                closed.append(stale.info.run_id)
    return closed


@contextmanager
def step_run(state: State, step: str) -> Iterator[Any]:
    """A child MLflow run for one step, tagged with the Dagster run id."""
    import mlflow

    with mlflow.start_run(run_name=step, parent_run_id=state.parent_run_id,
                          experiment_id=_client().get_run(state.parent_run_id).info.experiment_id,
                          tags={"dagster_run_id": state.dagster_run_id, "pipeline_step": step}) as run:
        yield run


def finish(state: State, status: str = "FINISHED") -> None:
    """Close the parent run with the run's summary as tags."""
    if not state.parent_run_id:
        return
    client = _client()
    for key in ("decision", "version", "champion_after"):
        value = getattr(state, key)
        if value is not None:
            client.set_tag(state.parent_run_id, f"pipeline_{key}", str(value))
    if state.reason:
        client.set_tag(state.parent_run_id, "pipeline_reason", state.reason[:500])
    client.set_terminated(state.parent_run_id, status)


def fail_open_runs(dagster_run_id: str, experiment: str = EXPERIMENT, status: str = "FAILED") -> list[str]:
    """Close the MLflow runs a failed Dagster run left open (its parent and the step that raised)."""
    import mlflow

    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = mlflow.search_runs([found.experiment_id], output_format="list",
                              filter_string=f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'")
    for run in runs:
        _client().set_terminated(run.info.run_id, status)
    return [run.info.run_id for run in runs]


# -- the steps -------------------------------------------------------------------------------------

def ingest(batch: str | None, settings: Settings, *, trigger: str, dagster_run_id: str) -> State:
    """Read the batch, check it is the next in line (or already processed), open the parent run."""
    ensure_model(settings.model_name)
    done = ledger(settings.model_name)
    if batch:
        frame = read_batch(batch)
        months = batch_months(frame)
        digest = batch_digest(frame)
        skip = check_order(months, digest, done)
        label = months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"
        state = State(label, trigger, dagster_run_id, batch=str(batch), months=months, digest=digest,
                      frame=None if skip else frame, skip=skip)
    else:
        if not done:
            raise PipelineError("Nothing to retrain on: no month has been processed yet. Send a batch first.")
        state = State(f"retrain-{max(done)}", trigger, dagster_run_id)
    state.parent_run_id = start_parent(state, settings)
    close_stale(state, settings)
    with step_run(state, "ingest"):
        import mlflow

        mlflow.log_params({"batch": state.batch or "none", "months": ",".join(state.months) or "stored",
                           "trigger": trigger})
        if state.frame is not None:
            mlflow.log_metric("rows", len(state.frame))
        mlflow.set_tag("outcome", state.skip or "new")
    return state


def store_dir() -> Path:
    """Where accepted months are kept, one Parquet file per month: ``<workspace>/pipeline/data``."""
    from mlops_lab.config import workspace

    return workspace() / "pipeline" / "data"


def validate(state: State) -> State:
    """The data contract of lesson 01-02 (pandera): a bad batch is quarantined and the run stops."""
    from mlops_lab import quality

    if state.skip or state.frame is None:
        return state
    with step_run(state, "validate") as run:
        import mlflow

        report = quality.contract(DATASET).validate(state.frame, name=Path(state.batch).name)
        mlflow.log_dict(report.to_dict(), "validation/report.json")
        mlflow.set_tag("contract_passed", str(report.passed).lower())
        if not report.passed:
            path = quality.quarantine(report)
            mlflow.set_tag("quarantined", str(path))
            raise quality.BatchRejected(report, path)
    return state


def assemble(state: State, settings: Settings) -> State:
    """Store the new months; take the newest ``window_months`` months; split off the holdout days."""
    from mlops_lab import datasets

    folder = store_dir()
    if state.skip:
        return state
    if state.frame is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for month in state.months:
            part = state.frame[state.frame["timestamp"].map(month_key) == month]
            tmp = folder / f".{month}.parquet.tmp"
            part.to_parquet(tmp, index=False)
            tmp.replace(folder / f"{month}.parquet")
    stored = sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []
    newest = max(state.months) if state.months else max(ledger(settings.model_name))
    stored = [m for m in stored if m <= newest]
    state.window_months = stored[-settings.window_months:]
    window = pd.concat([pd.read_parquet(folder / f"{m}.parquet") for m in state.window_months], ignore_index=True)
    cut = window["timestamp"].max().normalize() - pd.Timedelta(days=settings.holdout_days - 1)
    state.train, state.holdout = window[window["timestamp"] < cut], window[window["timestamp"] >= cut]
    if len(state.train) < 24 * 7:
        raise PipelineError(f"The window {state.window_months} leaves {len(state.train)} training hours after "
                            f"the {settings.holdout_days} holdout days; at least a week is needed")
    key = hashlib.sha256((datasets.digest(window) + settings.fingerprint()).encode()).hexdigest()[:16]
    state.window_key = key
    with step_run(state, "features"):
        import mlflow

        from mlops_lab import features

        mlflow.log_params({"window": ",".join(state.window_months), "window_key": key,
                           "train_rows": len(state.train), "holdout_rows": len(state.holdout),
                           "holdout_from": str(cut.date())})
        mlflow.log_table(features.rules_table(DATASET), "features/rules.json")
        watch(state, settings)
        if state.drift:
            mlflow.log_metrics({k: v for k, v in state.drift.items() if isinstance(v, float)})
            mlflow.set_tag("drift", state.drift["summary"][:500])
        if state.hold:
            mlflow.set_tag("hold", state.hold)
    return state


def watch(state: State, settings: Settings) -> None:
    """The champion on the new month: its error (what production saw) and the monitor's verdict,
    against the champion's own holdout days; then the retrain policy decides whether to go on."""
    from mlops_lab import monitoring, training

    champion = _champion(settings.model_name)
    if champion is None or state.frame is None:
        return  # no champion yet (train the first), or an alert's retrain on the stored window
    import mlflow

    model = load_model(f"models:/{settings.model_name}/{champion.version}")
    new = state.frame
    X, y = _model_frame(new)
    state.scores["production_mae"] = round(float((model.predict(X) - y).abs().mean()), 3)
    months = champion.tags.get("pipeline.months", "").split(",")
    stored = [m for m in months if (store_dir() / f"{m}.parquet").is_file()]
    if stored:
        seen = pd.concat([pd.read_parquet(store_dir() / f"{m}.parquet") for m in stored], ignore_index=True)
        cut = seen["timestamp"].max().normalize() - pd.Timedelta(days=settings.holdout_days - 1)
        reference = seen[seen["timestamp"] >= cut]
        rX, ry = _model_frame(reference)
        numeric = [c for c in training.BIKE_FEATURES if c not in training.BIKE_CATEGORICAL]
        # the alarm of a batch pipeline: most features drifted at once (a dataset drift, not the
        # season moving one or two of them), or the error over 1.5 x the champion's own
        monitor = monitoring.Monitor(rX.assign(prediction=model.predict(rX), bikers=ry.to_numpy()), numeric=numeric,
                                     categorical=training.BIKE_CATEGORICAL, prediction="prediction", target="bikers",
                                     metric="mae", any_feature=False)
        check = monitor.check(X.assign(prediction=model.predict(X), bikers=y.to_numpy()), name=state.label)
        alarm = bool(check.drift.alarm or check.performance == "degraded")
        state.drift = {"alarm": alarm, "summary": f"{check.drift.summary()}; MAE {check.error:.1f} vs "
                                                  f"{check.baseline_error:.1f} on the champion's holdout: {check.performance}",
                       "drifted_share": float(check.drift.share), "error": float(check.error),
                       "baseline_error": float(check.baseline_error)}
    if state.trigger.startswith("alert:"):
        return
    if settings.retrain_when == "never":
        state.hold = "retrain policy 'never': the month is stored, the champion stays"
    elif settings.retrain_when == "drift" and state.drift and not state.drift["alarm"]:
        state.hold = f"no alarm from the monitor ({state.drift['summary']}): the champion stays"


def existing_version(name: str, window_key: str):
    """The version already trained on this window (a rerun after a crash), or ``None``."""
    for version in _client().search_model_versions(f"name = '{name}'"):
        if version.tags.get(WINDOW_TAG) == window_key:
            return version
    return None


def _model_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    from mlops_lab import training

    return training.model_input(frame[training.BIKE_ENGINEERED_INPUT]), frame[training.BIKE_TARGET]


def retrain(state: State, settings: Settings) -> State:
    """Tune over :data:`SEARCH_SPACE` on the window, fit the best settings, log the model."""
    import mlflow
    import optuna

    from mlops_lab import datasets, training
    from mlops_lab.config import code_version

    if state.skip or state.hold:
        return state
    found = existing_version(settings.model_name, state.window_key)
    if found is not None:
        state.reused_version, state.version = str(found.version), str(found.version)
        state.model_uri, state.train_run_id = found.source, found.run_id
        return state
    X, y = _model_frame(state.train)
    inner = state.train["timestamp"] >= state.train["timestamp"].max().normalize() - pd.Timedelta(days=settings.holdout_days - 1)
    fit_X, fit_y, val_X, val_y = X[~inner.values], y[~inner.values], X[inner.values], y[inner.values]

    def objective(trial):
        params = {"learning_rate": trial.suggest_float("learning_rate", *SEARCH_SPACE["learning_rate"], log=True),
                  "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", *SEARCH_SPACE["max_leaf_nodes"]),
                  "min_samples_leaf": trial.suggest_int("min_samples_leaf", *SEARCH_SPACE["min_samples_leaf"])}
        model = training.bike_pipeline("hist_gradient_boosting", seed=settings.seed, engineered=True, **params)
        model.fit(fit_X, fit_y)
        return float((model.predict(val_X) - val_y).abs().mean())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    with step_run(state, "retrain") as run:
        study.optimize(objective, n_trials=settings.trials)
        best = study.best_params
        pipeline = training.bike_pipeline("hist_gradient_boosting", seed=settings.seed, engineered=True, **best)
        pipeline.fit(X, y)
        mlflow.log_params({"model": "hist_gradient_boosting", "seed": settings.seed, "trials": settings.trials,
                           **best, "train_rows": len(X)})
        mlflow.log_metric("tuning_best_mae", round(study.best_value, 4))
        mlflow.set_tags({"problem": "bikeshare", "code_version": code_version(), "intended_use": INTENDED_USE,
                         WINDOW_TAG: state.window_key})
        datasets.log_dataset(state.train, context="training", name=f"bikeshare-{state.window_months[0]}..{state.window_months[-1]}",
                             targets=training.BIKE_TARGET)
        info = training.log_sklearn_model(pipeline, X, contract=DATASET)
        state.model_uri, state.train_run_id = info.model_uri, run.info.run_id
    return state


@functools.lru_cache(maxsize=8)
def _cached_model(tracking_uri: str, model_uri: str):
    import mlflow

    return mlflow.sklearn.load_model(model_uri)


def load_model(model_uri: str):
    """A logged scikit-learn model, loaded once per run's process (``models:/name/N`` and
    ``models:/m-...`` never change; the cache is keyed by tracking store too)."""
    import mlflow

    return _cached_model(mlflow.get_tracking_uri(), model_uri)


def _champion(name: str):
    from mlops_lab import registry

    model = _client().get_registered_model(name)
    version = model.aliases.get(registry.CHAMPION)
    return None if version is None else _client().get_model_version(name, version)


def evaluate(state: State, settings: Settings) -> State:
    """Champion and challenger on the same held-out recent days (mean absolute error and more)."""
    import mlflow

    from mlops_lab import evaluation

    if state.skip or state.hold:
        return state
    champion = _champion(settings.model_name)
    state.champion_before = None if champion is None else str(champion.version)
    X, y = _model_frame(state.holdout)
    with step_run(state, "evaluate"):
        challenger = load_model(state.model_uri)
        scores = {f"challenger_{k}": v for k, v in evaluation.regression_metrics(y, challenger.predict(X)).items()}
        if champion is not None:
            model = load_model(f"models:/{settings.model_name}/{champion.version}")
            scores |= {f"champion_{k}": v for k, v in evaluation.regression_metrics(y, model.predict(X)).items()}
        scores = {k: round(float(v), 3) for k, v in scores.items()}
        state.scores.update(scores)
        mlflow.log_metrics(scores)
    return state


def gate(state: State, settings: Settings) -> State:
    """The validation gate (policy :data:`POLICY`); registers the challenger only if it passes."""
    import mlflow

    from mlops_lab import governance, validation

    if state.skip or state.hold:
        return state
    if state.reused_version:
        state.gate = "passed"
        return state
    candidate = validation.Candidate(f"bike-demand-{state.label}", state.model_uri, state.train_run_id)
    data = state.holdout.copy()
    data["mnth"] = data["mnth"].astype(str)
    with step_run(state, "gate"):
        result = governance.gate(candidate, None, settings.policy, data, registered_name=settings.model_name,
                                 limitations="Trained on the newest months of Washington DC's 2011 rentals; "
                                             "another city or year needs new validation.",
                                 version_tags={WINDOW_TAG: state.window_key, "pipeline.months": ",".join(state.window_months),
                                               "dagster_run_id": state.dagster_run_id})
        state.gate = "passed" if result.passed else "failed"
        state.failing = list(result.report.failing)
        state.gate_failures = [f"{c.name} {str(c.value).strip()} (needs {c.threshold})"
                               for c in result.report.checks if not c.passed]
        state.version = None if result.version is None else str(result.version.version)
        mlflow.set_tag("gate", state.gate)
    return state


def decide(state: State, settings: Settings) -> State:
    """Champion against challenger on the holdout: promote through the registry, or keep, with the reason."""
    from mlops_lab import registry

    if state.skip or state.hold:
        return state
    champion = _champion(settings.model_name)
    current = None if champion is None else str(champion.version)
    with step_run(state, "decide"):
        import mlflow

        new, old = state.scores.get("challenger_mae"), state.scores.get("champion_mae")
        if state.gate != "passed":
            state.decision = "refused"
            state.reason = f"the challenger failed the gate: {'; '.join(state.gate_failures or state.failing)}; champion kept"
        elif current == state.version:
            state.decision = "promoted"
            state.reason = f"version {state.version} already holds the champion alias"
        elif current is None:
            state.decision = "promoted"
            state.reason = f"first champion: MAE {new:.1f} on the holdout days; passed the gate"
        elif new <= old * (1 - settings.min_improvement):
            state.decision = "promoted"
            state.reason = (f"MAE {new:.1f} vs the champion's {old:.1f} on the newest {settings.holdout_days} days "
                            f"({(old - new) / old:.1%} better; at least {settings.min_improvement:.0%} needed)")
        else:
            state.decision = "kept"
            state.reason = (f"MAE {new:.1f} vs the champion's {old:.1f} on the newest {settings.holdout_days} days: "
                            f"not {settings.min_improvement:.0%} better; champion {current} kept")
        if state.decision == "promoted" and current != state.version:
            registry.promote(settings.model_name, state.version, reason=f"pipeline {state.label}: {state.reason}",
                             actor=f"{settings.actor}/{state.dagster_run_id[:8]}")
        aliases = _client().get_registered_model(settings.model_name).aliases
        if state.decision == "promoted" and str(aliases.get("challenger")) == state.version:
            _client().delete_registered_model_alias(settings.model_name, "challenger")  # it is the champion now
        if state.version is not None:
            _client().set_model_version_tag(settings.model_name, state.version, "pipeline.decision",
                                            f"{state.decision}: {state.reason}"[:500])
        mlflow.set_tags({"decision": state.decision, "reason": state.reason[:500]})
        after = _champion(settings.model_name)
        state.champion_after = None if after is None else str(after.version)
    return state


def record(state: State, settings: Settings) -> State:
    """Write the months to the ledger (last, so a crash before this retries the batch) and close the run."""
    if not state.skip:
        client = _client()
        for month in state.months:
            client.set_registered_model_tag(settings.model_name, f"{MONTH_TAG}{month}", state.digest)
    if state.skip or state.hold:
        state.decision, state.reason = ("skipped", state.skip) if state.skip else ("held", state.hold)
        champion = _champion(settings.model_name)
        state.champion_after = None if champion is None else str(champion.version)
    finish(state)
    return state
