"""Workspace, tracking and seeds: where the course keeps its state, resolved lazily.

The workspace (``MLOPS_LAB_HOME``) holds the embedded MLflow store (``mlflow.db``), the run
artifacts, server logs and anything else a lesson writes. By default it is the git-ignored folder
``.mlops_lab`` at the root of the repository; the notebook runner and the tests point it at a fresh
temporary folder for every notebook. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SEED = 42
"""The course-wide random seed. Functions that draw random numbers take ``seed=SEED``."""

HOME_ENV = "MLOPS_LAB_HOME"
TRACKING_ENV = "MLOPS_LAB_TRACKING_URI"


class WorkspaceError(RuntimeError):
    """The workspace folder cannot be created or written to."""


def repo_root() -> Path | None:
    """The root of the workbook checkout this package was installed from, or None.

    Found by walking up from this file to the folder holding ``pyproject.toml`` and ``notebooks/``;
    None when the package was installed from a wheel outside a checkout.
    """
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def workspace(create: bool = True) -> Path:
    """The workspace folder: ``$MLOPS_LAB_HOME``, else ``<repo>/.mlops_lab``, else ``~/.mlops_lab``.

    With ``create=True`` (the default) the folder is created if needed and checked for write access;
    a folder that cannot be written raises :class:`WorkspaceError` naming the folder and the fix.
    """
    configured = os.environ.get(HOME_ENV)
    if configured:
        home = Path(configured).expanduser()
    else:
        root = repo_root()
        home = (root / ".mlops_lab") if root else Path.home() / ".mlops_lab"
    home = home.resolve()
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
            # a probe file of its own: threads and processes may check the same folder at once
            with tempfile.NamedTemporaryFile(dir=home, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise WorkspaceError(
                f"The workspace {home} cannot be written ({exc.strerror or exc}). "
                f"Point {HOME_ENV} at a folder you can write to, e.g. "
                f"`export {HOME_ENV}=$HOME/mlops_lab_home`."
            ) from exc
    return home


def tracking_uri(home: Path | None = None) -> str:
    """The MLflow tracking URI the course uses.

    ``$MLOPS_LAB_TRACKING_URI`` when set (e.g. a tracking server's ``http://127.0.0.1:PORT``),
    otherwise the embedded store ``sqlite:///<workspace>/mlflow.db``.
    """
    configured = os.environ.get(TRACKING_ENV)
    if configured:
        return configured
    home = home or workspace()
    return f"sqlite:///{home / 'mlflow.db'}"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What an ``mlflow`` command run in a child process needs on top of this environment.

    The tracking URI in use here (so ``models:/name@alias`` resolves to the same registry), this
    Python's tools on ``PATH`` (``mlflow models serve`` starts ``uvicorn`` by name) and no progress
    bars in logs.
    """
    return {
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri(),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        **(extra or {}),
    }


def artifact_root(home: Path | None = None) -> Path:
    """The folder where runs of the embedded store keep their artifacts (``<workspace>/artifacts``)."""
    return (home or workspace()) / "artifacts"


@contextlib.contextmanager
def environment_variables(values: dict[str, str | None]) -> Iterator[None]:
    """Set each variable (or unset it, for ``None``) for the ``with`` block, then restore them all."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def quiet_logs() -> None:
    """Silence MLflow's and Alembic's INFO chatter (database creation, migrations) in notebooks.

    Also stops MLflow printing a "View run at http://..." link after every run on a server (the
    notebooks print the server's URL once instead) and its artifact-download progress bars.
    """
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def set_seeds(seed: int = SEED) -> int:
    """Seed Python's and NumPy's global random generators; returns the seed for logging."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    return seed


def code_version() -> str:
    """The git commit of the checkout (with ``-dirty`` if it has uncommitted changes), or ``unversioned``.

    Runs record it as the tag ``code_version`` so a model can be traced to the code that trained it.
    """
    import subprocess

    root = repo_root()
    if root is None or not (root / ".git").exists():
        return "unversioned"
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unversioned"
    return f"{commit}-dirty" if dirty else commit


@dataclass(frozen=True)
class Workspace:
    """What :func:`use_workspace` set up: the folder, the tracking URI and the active experiment."""

    home: Path
    tracking_uri: str
    experiment_name: str
    experiment_id: str


def use_workspace(experiment: str) -> Workspace:
    """Point MLflow at the course workspace and make ``experiment`` the active experiment.

    The experiment is created on first use with its artifacts under ``<workspace>/artifacts``
    (never a stray ``./mlruns`` in the current folder). Returns what it configured, so a
    notebook can print it.
    """
    import mlflow

    quiet_logs()
    home = workspace()
    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            location = (artifact_root(home) / experiment).as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return Workspace(home, uri, experiment, experiment_id)


def environment_report() -> dict[str, str]:
    """Versions and locations a student checks first: Python, key packages, kernel, workspace, URI."""
    from importlib.metadata import PackageNotFoundError, version

    report = {"python": platform.python_version(), "executable": sys.executable}
    for package in ("mlflow", "pandas", "scikit-learn", "matplotlib", "papermill"):
        try:
            report[package] = version(package)
        except PackageNotFoundError:
            report[package] = "not installed"
    home = workspace()
    report["workspace"] = str(home)
    report["tracking_uri"] = tracking_uri(home)
    return report
