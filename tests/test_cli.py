"""The command line's small commands."""

import subprocess
import sys

import pytest

from mlops_lab import cli

pytestmark = pytest.mark.unit


def test_info_prints_workspace_and_versions(home, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(home.resolve()) in out and "mlflow" in out and "tracking_uri" in out


def test_notebooks_check_passes_on_the_committed_notebooks():
    assert cli.main(["notebooks", "check"]) == 0


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "course" in result.stdout and "grade" in result.stdout


def test_unwritable_workspace_is_one_clear_line(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    monkeypatch.setenv("MLOPS_LAB_HOME", str(blocker / "home"))
    assert cli.main(["info"]) == 2
    assert "cannot be written" in capsys.readouterr().err
