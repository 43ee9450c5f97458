"""Workspace, tracking URI, seeds: resolved lazily, with clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlops_lab import config

pytestmark = pytest.mark.unit


def test_workspace_follows_env_and_is_created(home, monkeypatch, tmp_path):
    target = tmp_path / "nested" / "home"
    monkeypatch.setenv(config.HOME_ENV, str(target))
    assert config.workspace() == target.resolve()
    assert target.is_dir()


def test_workspace_defaults_to_git_ignored_folder_in_repo(monkeypatch):
    monkeypatch.delenv(config.HOME_ENV)
    root = config.repo_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert config.workspace(create=False) == root / ".mlops_lab"
    assert ".mlops_lab/" in (root / ".gitignore").read_text()


def test_unwritable_workspace_names_the_folder_and_the_fix(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(config.HOME_ENV, str(blocker / "home"))
    with pytest.raises(config.WorkspaceError) as err:
        config.workspace()
    assert str(blocker / "home") in str(err.value)
    assert config.HOME_ENV in str(err.value)


def test_tracking_uri_is_embedded_sqlite_unless_configured(home, monkeypatch):
    assert config.tracking_uri() == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    monkeypatch.setenv(config.TRACKING_ENV, "http://127.0.0.1:5999")
    assert config.tracking_uri() == "http://127.0.0.1:5999"


def test_use_workspace_creates_experiment_with_artifacts_in_workspace(home):
    first = config.use_workspace("exp-a")
    again = config.use_workspace("exp-a")
    assert first.experiment_id == again.experiment_id
    location = mlflow.get_experiment(first.experiment_id).artifact_location
    assert location.startswith((home.resolve() / "artifacts").as_uri())
    with mlflow.start_run(run_name="r"):
        mlflow.log_text("x", "x.txt")
    assert list((home / "artifacts" / "exp-a").rglob("x.txt"))
    assert not Path("mlruns").exists()


def test_set_seeds_makes_numpy_reproducible():
    config.set_seeds(7)
    a = np.random.rand(3)
    config.set_seeds(7)
    assert np.array_equal(a, np.random.rand(3))


def test_environment_report_has_what_a_student_checks(home):
    report = config.environment_report()
    for key in ("python", "mlflow", "pandas", "scikit-learn", "workspace", "tracking_uri"):
        assert report[key]
    assert report["mlflow"].startswith("3.17.")
    assert report["pandas"].startswith("2.")


def test_importing_the_package_does_no_work(tmp_path):
    """No folder is created and no tracking URI is set just by importing every module."""
    target = tmp_path / "never-created"
    code = (
        "import importlib, pkgutil, mlops_lab\n"
        "for m in pkgutil.walk_packages(mlops_lab.__path__, 'mlops_lab.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    env = {"MLOPS_LAB_HOME": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    assert not target.exists()
    assert not (tmp_path / "mlruns").exists()


def test_child_env_carries_the_tracking_uri_in_use_and_this_pythons_tools(monkeypatch, home):
    import sys
    from pathlib import Path

    from mlops_lab import config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = config.child_env({"EXTRA": "1"})
    assert env["MLFLOW_TRACKING_URI"] == config.tracking_uri()
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["EXTRA"] == "1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert config.child_env()["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"


def test_environment_variables_are_set_unset_and_restored(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_T_KEEP", "before")
    monkeypatch.delenv("MLOPS_LAB_T_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with config.environment_variables({"MLOPS_LAB_T_KEEP": None, "MLOPS_LAB_T_NEW": "during"}):
            assert "MLOPS_LAB_T_KEEP" not in os.environ and os.environ["MLOPS_LAB_T_NEW"] == "during"
            raise RuntimeError("the block fails")
    assert os.environ["MLOPS_LAB_T_KEEP"] == "before" and "MLOPS_LAB_T_NEW" not in os.environ
