"""Checks for ``labs/00_warmup.ipynb``: track a run, then find it again by search."""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-00-warmup"

LAB = Lab("00_warmup", "Warm-up: track a run and find it again")


def _run(ns: dict):
    from mlflow import MlflowClient

    from mlops_lab.config import tracking_uri

    run_id = ns.get("run_id")
    assert run_id, "there is no variable `run_id` holding your run's id"
    run = MlflowClient(tracking_uri()).get_run(run_id)
    return run


@LAB.check(
    "run_logged",
    hint="Open a run with `with mlflow.start_run(run_name=...) as run:` in the lab's experiment "
    "and keep `run_id = run.info.run_id`.",
)
def run_logged(ns: dict) -> None:
    from mlflow import MlflowClient

    from mlops_lab.config import tracking_uri

    run = _run(ns)
    experiment = MlflowClient(tracking_uri()).get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT, (
        f"the run is in experiment {experiment.name!r}, not {EXPERIMENT!r}"
    )
    assert run.info.status == "FINISHED", f"the run's status is {run.info.status}, not FINISHED"


@LAB.check(
    "param_logged",
    hint="Inside the run, log a parameter: `mlflow.log_param(\"learning_rate\", 0.1)`.",
)
def param_logged(ns: dict) -> None:
    run = _run(ns)
    assert run.data.params, "the run has no parameter"


@LAB.check(
    "metric_logged",
    hint="Inside the run, log a metric: `mlflow.log_metric(\"accuracy\", 0.9)`.",
)
def metric_logged(ns: dict) -> None:
    run = _run(ns)
    assert run.data.metrics, "the run has no metric"


@LAB.check(
    "artifact_logged",
    hint="Inside the run, log a file: `mlflow.log_text(\"my notes\", \"notes.txt\")` "
    "(or write a file and `mlflow.log_artifact(path)`).",
)
def artifact_logged(ns: dict) -> None:
    from mlflow import MlflowClient

    from mlops_lab.config import tracking_uri

    run = _run(ns)
    artifacts = MlflowClient(tracking_uri()).list_artifacts(run.info.run_id)
    assert artifacts, "the run has no artifact"


@LAB.check(
    "found_by_search",
    hint="Use `mlflow.search_runs(experiment_names=[...], filter_string=\"params.learning_rate = '0.1'\")` "
    "and set `found_run_id` to the `run_id` of the row you found.",
)
def found_by_search(ns: dict) -> None:
    import pandas as pd

    found = ns.get("found")
    assert isinstance(found, pd.DataFrame), "`found` should be the DataFrame that mlflow.search_runs returned"
    assert "run_id" in found.columns and len(found) >= 1, "`found` holds no runs: loosen the filter"
    assert ns.get("found_run_id") == ns.get("run_id"), (
        "`found_run_id` is not the id of the run you logged"
    )
    assert ns.get("found_run_id") in set(found["run_id"]), "`found_run_id` is not in `found`"
