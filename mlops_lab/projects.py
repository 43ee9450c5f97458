"""The entry points of the workbook's MLflow Project (``MLproject`` at the root of the repository).

An MLflow Project is a folder with an ``MLproject`` file: named entry points, each a command with
typed parameters. ``mlflow run`` creates a run, logs the parameters to it, and starts the command
with ``MLFLOW_RUN_ID`` set, so everything the command logs lands in that run::

    mlflow run . -e train    --env-manager local -P model=random_forest -P n_estimators=20
    mlflow run . -e evaluate --env-manager local -P model_uri=runs:/<run id>/model
    mlflow run . -e validate --env-manager local -P model_uri=models:/m-<id>

Each entry point is a thin command over the course's own functions (``python -m mlops_lab.projects
train ...``): :func:`train` (``training.fit_and_log_credit``), :func:`evaluate`
(``evaluation.evaluate``) and :func:`validate` (``governance.gate`` with the ``credit_risk``
policy against the registered champion, registering the candidate as challenger only on a pass;
a refusal exits with status 1 and names the failing checks).

MLflow 3.17 checks only ``path`` and ``uri`` parameters itself (a ``path`` that does not exist is
refused before anything runs); ``int`` and ``float`` are documentation to MLflow, so the argument
parser here refuses ``-P seed=abc`` with a clear message (exit status 2). Use
``--env-manager local``: without it MLflow builds a virtualenv in ``~/.mlflow/envs`` (downloading
a Python and packages as needed, which fails offline; with no ``python_env.yaml`` the environment
is empty and the run fails with ``No module named 'mlflow'``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_lab.config import SEED

INTENDED_USE = "Pre-screening of consumer credit applications; a credit officer reviews every refusal."
TREE_MODELS = ("random_forest", "gradient_boosting")
ENTRY_POINTS = ("train", "evaluate", "validate", "retrain")


class ProjectError(RuntimeError):
    """An entry point cannot run: an unknown model URI, no MLproject file, a run that failed to start."""


def _tracking() -> None:
    """Use the tracking URI ``mlflow run`` passed down, else the course's store."""
    import mlflow

    from mlops_lab import config

    config.quiet_logs()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or config.tracking_uri())


def _split(seed: int, test_size: float):
    from mlops_lab import datasets, training

    return training.credit_split(datasets.load_german_credit(), test_size=test_size, seed=seed)


def model_uri_of(value: str) -> str:
    """``value`` as a logged model's URI (``models:/m-...``): a run id or ``runs:/<id>/<name>`` is
    resolved to the model that run logged (``model`` by default); other URIs are kept as they are.

    The validation record names the model by this URI, and a registered version's source is it.
    """
    import mlflow

    value = value.strip()
    found = re.fullmatch(r"(?:runs:/)?([0-9a-f]{32})(?:/([\w.-]+))?", value)
    if found is None:
        if ":/" in value:
            return value
        raise ProjectError(f"{value!r} is neither a model URI (models:/..., runs:/<id>/model) nor a run id")
    run_id, name = found.group(1), found.group(2) or "model"
    try:
        experiment = mlflow.get_run(run_id).info.experiment_id
    except mlflow.exceptions.MlflowException:
        raise ProjectError(f"no run {run_id} in {mlflow.get_tracking_uri()}") from None
    models = [m for m in mlflow.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'",
                                                     output_format="list") if m.name == name]
    if not models:
        raise ProjectError(f"run {run_id} logged no model named {name!r}")
    return models[0].model_uri


def train(model: str = "logistic_regression", *, seed: int = SEED, test_size: float = 0.3, drop: str = "sex",
          n_estimators: int = 50, intended_use: str = INTENDED_USE):
    """Train a credit model with ``training.fit_and_log_credit`` in the active (or a new) run.

    ``drop``: comma-separated columns the model does not use (``"none"`` keeps them all; keeping
    ``sex`` fails the gate's fairness checks). ``n_estimators`` is used by tree models only.
    Returns the :class:`~mlops_lab.training.TrackedModel`.
    """
    from mlops_lab import training

    dropped = [] if drop.strip().lower() in ("", "none") else [c.strip() for c in drop.split(",")]
    features = [f for f in training.CREDIT_FEATURES if f not in dropped] if dropped else None
    params = {"n_estimators": n_estimators} if model in TREE_MODELS else {}
    return training.fit_and_log_credit(model, _split(seed, test_size), run_name=f"train-{model}", seed=seed,
                                       features=features, intended_use=intended_use or None, **params)


def evaluate(model_uri: str, *, seed: int = SEED, test_size: float = 0.3) -> dict[str, float]:
    """``evaluation.evaluate`` of a logged model on the test split; returns its metrics, rounded."""
    import mlflow

    from mlops_lab import evaluation, training

    uri = model_uri_of(model_uri)
    with mlflow.start_run(run_name="evaluate"):
        mlflow.set_tag("evaluated_model", uri)
        result = evaluation.evaluate(uri, _split(seed, test_size).frame("test"), training.CREDIT_TARGET,
                                     "classifier", extra_metrics=[evaluation.credit_cost_metric()])
    return {k: round(float(v), 4) for k, v in result.metrics.items() if isinstance(v, (int, float))}


def _champion(name: str):
    """The registered champion of ``name`` as a baseline candidate, or None."""
    from mlops_lab import registry, validation

    try:
        version = registry.version_for(name, registry.CHAMPION)
    except registry.RegistryError:
        return None
    return validation.Candidate("champion", f"models:/{name}/{version.version}", version.run_id)


def validate(model_uri: str, *, name: str = "credit-risk", policy: str = "credit_risk", seed: int = SEED,
             test_size: float = 0.3):
    """Run the validation gate on a logged model against ``name``'s champion (if any).

    Registers it as ``name`` with the alias ``challenger`` only if it passes. Returns the
    :class:`~mlops_lab.governance.GateResult`.
    """
    import mlflow

    from mlops_lab import governance, validation

    uri = model_uri_of(model_uri)
    info = mlflow.models.get_model_info(uri)
    candidate = validation.Candidate(mlflow.get_run(info.run_id).info.run_name if info.run_id else "candidate",
                                     uri, info.run_id)
    return governance.gate(candidate, _champion(name), policy, _split(seed, test_size).frame("test"),
                           registered_name=name)


# -- the command line that the MLproject entry points call ---------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlops_lab.projects",
                                description="The entry points of the workbook's MLproject.")
    sub = p.add_subparsers(dest="entry_point", required=True)
    for name in ("train", "evaluate", "validate"):
        e = sub.add_parser(name)
        e.add_argument("--seed", type=int, default=SEED)
        e.add_argument("--test-size", type=float, default=0.3)
        if name == "train":
            e.add_argument("--model", default="logistic_regression")
            e.add_argument("--drop", default="sex", help="columns left out, comma-separated, or 'none'")
            e.add_argument("--n-estimators", type=int, default=50, help="tree models only")
            e.add_argument("--intended-use", default=INTENDED_USE)
        else:
            e.add_argument("--model-uri", required=True, help="a logged model's URI or a training run id")
        if name == "validate":
            e.add_argument("--name", default="credit-risk", help="the registered model")
            e.add_argument("--policy", default="credit_risk", help="a policy in mlops_lab/policies or a file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlops_lab.projects ENTRY_POINT [options]``: 0 on success, 1 when the gate refuses."""
    args = _parser().parse_args(argv)
    _tracking()
    common = {"seed": args.seed, "test_size": args.test_size}
    if args.entry_point == "train":
        tracked = train(args.model, drop=args.drop, n_estimators=args.n_estimators,
                        intended_use=args.intended_use, **common)
        print(f"trained {args.model}: run {tracked.run_id}, model {tracked.model_uri}")
        print({k: round(v, 4) for k, v in tracked.metrics.items()})
        return 0
    try:
        if args.entry_point == "evaluate":
            print(evaluate(args.model_uri, **common))
            return 0
        result = validate(args.model_uri, name=args.name, policy=args.policy, **common)
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.passed:
        print(f"REFUSED by the validation gate: failing checks {', '.join(result.report.failing)}")
        for check in result.report.checks:
            if not check.passed:
                print(f"  {check.name}: {check.value} (threshold {check.threshold}) {check.reason}".rstrip())
        return 1
    print(f"PASSED: registered {args.name} version {result.version.version} as challenger")
    return 0


# -- running the project (what a notebook or CI calls) -------------------------------------------
@dataclass
class ProjectRun:
    """One ``mlflow run``: the command, its exit status, the run it created and its output."""

    entry_point: str
    command: list[str]
    returncode: int
    run_id: str | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def project_dir() -> Path:
    """The folder holding ``MLproject`` (the root of the checkout)."""
    from mlops_lab import config

    root = config.repo_root()
    if root is None or not (root / "MLproject").is_file():
        raise ProjectError("No MLproject file found: run from a checkout of the workbook")
    return root


def entry_points_table(root: Path | None = None):
    """The MLproject's entry points as MLflow reads them: one row per parameter (type, default)."""
    import pandas as pd
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(root or project_dir()))
    rows = [{"entry point": name, "parameter": key, "type": p.type, "default": p.default}
            for name, entry in project._entry_points.items() for key, p in entry.parameters.items()]
    return pd.DataFrame(rows).set_index(["entry point", "parameter"])


def command(entry_point: str, parameters: dict[str, object] | None = None, *,
            experiment_id: str | None = None) -> list[str]:
    """The ``mlflow run . -e ENTRY_POINT --env-manager local -P k=v ...`` command line."""
    argv = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "-e", entry_point, "--env-manager", "local"]
    if experiment_id is not None:
        argv += ["--experiment-id", str(experiment_id)]
    for key, value in (parameters or {}).items():
        argv += ["-P", f"{key}={value}"]
    return argv


def run(entry_point: str, parameters: dict[str, object] | None = None, *, experiment_id: str | None = None,
        timeout: float = 600) -> ProjectRun:
    """Run an entry point with ``mlflow run`` in a child process and return what happened.

    The child uses this process's tracking URI (``config.child_env``) and this Python's tools. It
    never raises for a failed run: check ``.ok``, ``.returncode`` and ``.output`` (MLflow's and
    the entry point's, together).
    """
    from mlops_lab.config import child_env

    argv = command(entry_point, parameters, experiment_id=experiment_id)
    child = subprocess.Popen(argv, cwd=project_dir(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **child_env()}, start_new_session=True)  # its own group
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # mlflow, the shell and the entry point together
        child.communicate()
        raise ProjectError(f"`mlflow run -e {entry_point}` did not finish within {timeout:.0f} s; it was stopped") from None
    output = stdout + stderr
    found = re.findall(r"Run \(ID '([0-9a-f]{32})'\)", output) or re.findall(r"with ID '([0-9a-f]{32})'", output)
    return ProjectRun(entry_point, ["mlflow", *argv[1:]], child.returncode, found[-1] if found else None, output)


if __name__ == "__main__":
    sys.exit(main())
