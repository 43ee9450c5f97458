"""The retraining workflow as Dagster definitions: one job, its triggers, and the daemon's view.

* ``retrain`` (job): ingest -> validate -> features -> retrain -> evaluate -> gate -> decide ->
  record, the ops of :mod:`mlops_lab.pipeline.workflow`, in one process (``in_process_executor``:
  the steps share a loaded model; eight processes would import MLflow eight times).
* ``inbox`` (sensor): a new ``.parquet`` or ``.csv`` in ``<workspace>/pipeline/inbox`` requests a
  run; the run key is the file's name, size and modification time, so a file is taken once and a
  file dropped again is a new request (which the workflow then answers "already processed").
* ``monthly`` (schedule): on the first of each month, the oldest batch still waiting in the inbox.
* ``alerts`` (sensor): a *firing* notification in the monitoring lesson's alert store
  (``<workspace>/monitoring/alerts.db``) for one of :data:`RETRAIN_ON` requests a retrain on the
  stored window, once per notification.

``dagster dev -m mlops_lab.pipeline.definitions`` (or ``mlops-lab pipeline up``) serves them with
the sensor and schedule daemons; :func:`run` executes the job in this process (notebooks, tests,
``mlops-lab pipeline run``). Dagster's step log goes to the console at ``log_level`` (CRITICAL by
default: a failed step raises its own error here, and the run's events are kept by the instance,
which the UI shows).

Written against Dagster 1.13: ops and a job rather than assets, because a run is parameterised by
the batch that arrived (run config) and each step's result is a decision, not a stored table.
"""


import os
import uuid
import warnings
from pathlib import Path

import dagster as dg

from mlops_lab.pipeline import workflow

RETRAIN_ON = ("DatasetDrift", "FeatureDrift", "ModelErrorHigh", "PredictionDrift")
"""Alerts (lesson 13's rules) that ask for a retrain; the others (a monitor down, router latency)
are an operator's job, not a new model's."""
BATCH_SUFFIXES = (".parquet", ".csv")


_DEFAULTS = workflow.Settings()


class PipelineSettings(dg.ConfigurableResource):
    """:class:`~mlops_lab.pipeline.workflow.Settings` as a Dagster resource (settable in the UI's launchpad).

    Dagster reads a resource's fields from its annotations, so they are listed here; their defaults
    are the dataclass's, and :meth:`settings` checks them the same way."""

    model_name: str = _DEFAULTS.model_name
    experiment: str = _DEFAULTS.experiment
    policy: str = _DEFAULTS.policy
    window_months: int = _DEFAULTS.window_months
    holdout_days: int = _DEFAULTS.holdout_days
    trials: int = _DEFAULTS.trials
    min_improvement: float = _DEFAULTS.min_improvement
    retrain_when: str = _DEFAULTS.retrain_when
    seed: int = _DEFAULTS.seed
    actor: str = _DEFAULTS.actor

    @classmethod
    def of(cls, settings: workflow.Settings) -> "PipelineSettings":
        return cls(**{k: getattr(settings, k) for k in workflow.Settings.__dataclass_fields__})

    def settings(self) -> workflow.Settings:
        return workflow.Settings(**{k: getattr(self, k) for k in workflow.Settings.__dataclass_fields__})


class BatchConfig(dg.Config):
    """What to process: a batch file (empty: retrain on the stored window), and why."""

    batch: str = ""
    trigger: str = "manual"


def _tracking() -> None:
    """Point MLflow at the workspace store unless the environment names another (a server)."""
    import mlflow

    from mlops_lab import config

    config.quiet_logs()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(config.tracking_uri())


@dg.failure_hook(required_resource_keys={"settings"})
def close_mlflow_runs(context: dg.HookContext) -> None:
    """A failed step leaves no MLflow run open: the parent and the step are marked FAILED."""
    workflow.fail_open_runs(context.run_id, context.resources.settings.experiment)


@dg.op(description="Read the batch; refuse it if out of order or duplicated; skip it if already processed.")
def ingest(context: dg.OpExecutionContext, config: BatchConfig, settings: PipelineSettings) -> workflow.State:
    _tracking()
    state = workflow.ingest(config.batch or None, settings.settings(), trigger=config.trigger,
                            dagster_run_id=context.run_id)
    context.add_output_metadata({"months": ", ".join(state.months) or "stored window",
                                 "digest": state.digest or "", "outcome": state.skip or "new"})
    return state


@dg.op(description="The data contract (pandera): a bad batch is quarantined and the run stops with the report.")
def validate(context: dg.OpExecutionContext, state: workflow.State) -> workflow.State:
    from mlops_lab import quality

    try:
        return workflow.validate(state)
    except quality.BatchRejected as rejected:
        raise dg.Failure(description=str(rejected), metadata={
            "quarantine": dg.MetadataValue.path(str(rejected.path)),
            "report": dg.MetadataValue.md(rejected.report.to_markdown()),
        }) from rejected


@dg.op(description="Store the new months and assemble the training window and the holdout days.")
def features(state: workflow.State, settings: PipelineSettings) -> workflow.State:
    return workflow.assemble(state, settings.settings())


@dg.op(description="Tune over the production search space and fit the challenger on the window.")
def retrain(context: dg.OpExecutionContext, state: workflow.State, settings: PipelineSettings) -> workflow.State:
    state = workflow.retrain(state, settings.settings())
    if state.reused_version:
        context.log.info(f"Version {state.reused_version} was already trained on this window: reused")
    return state


@dg.op(description="Champion and challenger on the same held-out recent days.")
def evaluate(context: dg.OpExecutionContext, state: workflow.State, settings: PipelineSettings) -> workflow.State:
    state = workflow.evaluate(state, settings.settings())
    if state.scores:
        context.add_output_metadata({k: dg.MetadataValue.float(v) for k, v in state.scores.items()})
    return state


@dg.op(description="The validation gate; the challenger is registered only if it passes.")
def gate(state: workflow.State, settings: PipelineSettings) -> workflow.State:
    return workflow.gate(state, settings.settings())


@dg.op(description="Promote through the registry or keep the champion, with the reason.")
def decide(context: dg.OpExecutionContext, state: workflow.State, settings: PipelineSettings) -> workflow.State:
    state = workflow.decide(state, settings.settings())
    if state.decision:
        context.log.info(f"{state.decision}: {state.reason}")
    return state


@dg.op(description="Write the months to the registry's ledger and close the MLflow run.")
def record(context: dg.OpExecutionContext, state: workflow.State, settings: PipelineSettings) -> dict:
    state = workflow.record(state, settings.settings())
    summary = state.summary()
    context.add_output_metadata({"decision": summary["decision"] or "", "reason": summary["reason"] or "",
                                 "champion": summary["champion_after"] or "none"})
    return summary


@dg.job(executor_def=dg.in_process_executor, hooks={close_mlflow_runs},
        description="Retrain the bike-demand model on a new month (or the stored window) and promote or keep.")
def retrain_job():
    record(decide(gate(evaluate(retrain(features(validate(ingest())))))))


def inbox_dir() -> Path:
    """Where new batches land: ``<workspace>/pipeline/inbox``."""
    from mlops_lab.config import workspace

    return workspace() / "pipeline" / "inbox"


def waiting_batches(folder: Path | None = None) -> list[Path]:
    """Batch files in the inbox, oldest first (by modification time, then name): ``.parquet`` or
    ``.csv``, not hidden (a copy in progress is written under a hidden name, then renamed), not empty."""
    folder = folder or inbox_dir()
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in BATCH_SUFFIXES and not p.name.startswith(".")
             and p.stat().st_size > 0]  # an empty file is a copy that has not started yet
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def run_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _request(path: Path, trigger: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key(path), tags={"trigger": trigger, "batch": path.name},
                         run_config={"ops": {"ingest": {"config": {"batch": str(path), "trigger": trigger}}}})


@dg.sensor(job=retrain_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A new monthly batch in <workspace>/pipeline/inbox requests a run.")
def inbox(context: dg.SensorEvaluationContext):
    batches = waiting_batches()
    if not batches:
        return dg.SkipReason(f"No batch in {inbox_dir()}")
    return [_request(path, "sensor:inbox") for path in batches]


@dg.schedule(job=retrain_job, cron_schedule="0 6 1 * *", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Monthly, on the 1st at 06:00: the oldest batch waiting in the inbox.")
def monthly(context: dg.ScheduleEvaluationContext):
    batches = waiting_batches()
    if not batches:
        return dg.SkipReason(f"No batch waiting in {inbox_dir()}")
    return _request(batches[0], "schedule:monthly")


def alert_requests(cursor: int, store_path: Path | None = None) -> tuple[list[dg.RunRequest], int]:
    """Run requests for firing alerts newer than ``cursor`` (the last notification id seen)."""
    from mlops_lab.monitoring import receiver

    path = store_path or receiver.store_path()
    if not Path(path).is_file():
        return [], cursor
    rows = receiver.AlertStore(path).notifications(status="firing")
    newest, requests = cursor, []
    for row in rows:
        ident = int(row["id"])
        newest = max(newest, ident)
        if ident > cursor and row["alertname"] in RETRAIN_ON:
            trigger = f"alert:{row['alertname']}"
            requests.append(dg.RunRequest(run_key=f"alert-{ident}", tags={"trigger": trigger},
                                          run_config={"ops": {"ingest": {"config": {"batch": "", "trigger": trigger}}}}))
    return requests, newest


@dg.sensor(job=retrain_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A firing drift or error alert (lesson 13's receiver) requests a retrain on the stored window.")
def alerts(context: dg.SensorEvaluationContext):
    requests, newest = alert_requests(int(context.cursor or 0))
    context.update_cursor(str(newest))
    return requests or dg.SkipReason("No new firing alert that asks for a retrain")


SETTINGS_ENV = "MLOPS_LAB_PIPELINE_SETTINGS"
"""JSON of :class:`~mlops_lab.pipeline.workflow.Settings` fields the daemon's runs use instead of the
defaults (``service.start(settings=...)`` sets it for the processes it starts)."""


def configured_settings() -> PipelineSettings:
    """The resource the definitions carry: the defaults, or what :data:`SETTINGS_ENV` says (checked)."""
    import json

    raw = os.environ.get(SETTINGS_ENV)
    fields = workflow.Settings.__dataclass_fields__
    if not raw:
        return PipelineSettings()
    try:
        given = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise workflow.PipelineError(f"{SETTINGS_ENV} is not JSON: {exc}") from None
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise workflow.PipelineError(f"{SETTINGS_ENV} names unknown settings {unknown}; known: {sorted(fields)}")
    return PipelineSettings.of(workflow.Settings(**given))


defs = dg.Definitions(jobs=[retrain_job], sensors=[inbox, alerts], schedules=[monthly],
                      resources={"settings": configured_settings()})


def run(batch: str | Path | None = None, *, settings: workflow.Settings | None = None, trigger: str = "manual",
        instance: dg.DagsterInstance | None = None, raise_on_error: bool = True, log_level: str = "CRITICAL") -> dict:
    """Execute the job in this process on ``batch`` (``None``: retrain on the stored window).

    Returns the run's summary (months, version, gate, decision, reason, champion before and after,
    scores, the Dagster and MLflow run ids). A refused or quarantined batch raises the step's
    error (:class:`~mlops_lab.pipeline.workflow.PipelineError`, :class:`~mlops_lab.quality.BatchRejected`)
    unless ``raise_on_error=False``, which returns ``{"decision": "failed", "reason": ...}``.
    """
    settings = settings or workflow.Settings()
    resource = PipelineSettings.of(settings)
    config = {"ops": {"ingest": {"config": {"batch": str(batch) if batch else "", "trigger": trigger}}},
              "loggers": {"console": {"config": {"log_level": log_level}}}}
    run_id = str(uuid.uuid4())
    try:
        with warnings.catch_warnings():
            # Dagster closes an event loop it did not start when a notebook kernel already runs one
            warnings.filterwarnings("ignore", message="coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited")
            result = retrain_job.execute_in_process(run_config=config, resources={"settings": resource}, run_id=run_id,
                                                    instance=instance, raise_on_error=raise_on_error,
                                                    tags={"trigger": trigger, "batch": Path(batch).name if batch else ""})
    except BaseException as error:
        # raised before the failure hook could run: close what the failed step left open here
        workflow.fail_open_runs(run_id, settings.experiment)
        if isinstance(error, dg.Failure) and error.__cause__ is not None:
            raise error.__cause__ from None  # the step's own error (a quarantined batch) reads better
        raise
    if result.success:
        return result.output_for_node("record")
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    error = failure.step_failure_data.error if failure else None
    return {"decision": "failed", "reason": error.message.strip() if error else "the run failed",
            "step": failure.step_key if failure else None, "dagster_run_id": result.run_id}
