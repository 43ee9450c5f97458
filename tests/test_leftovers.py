"""The suite's leftover check can fail: a test session that leaks a server is marked failed."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

LEAKY = '''
import subprocess, sys, pathlib

def test_leaks_a_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    pathlib.Path(__file__).with_name("pid.txt").write_text(str(proc.pid))
'''

TIDY = '''
import subprocess, sys

def test_stops_what_it_starts():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    proc.kill()
    proc.wait()
'''


def run_session(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )


def test_leaked_process_fails_the_session_and_is_stopped(tmp_path):
    result = run_session(tmp_path, LEAKY)
    assert result.returncode == 1, result.stdout
    assert "LEFTOVER PROCESSES" in result.stdout
    pid = int((tmp_path / "pid.txt").read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the leaked process was not stopped"
        time.sleep(0.1)


def test_tidy_session_passes(tmp_path):
    result = run_session(tmp_path, TIDY)
    assert result.returncode == 0, result.stdout
    assert "LEFTOVER" not in result.stdout


def test_each_notebook_gets_its_own_workspace_under_nbval(tmp_path):
    """nbval runs every notebook in a fresh MLOPS_LAB_HOME, and its cells carry the notebooks marker."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    for name in ("a", "b"):
        code = f"import os; open({str(tmp_path / name)!r} + '.home', 'w').write(os.environ['MLOPS_LAB_HOME'])"
        nb = new_notebook(cells=[new_code_cell(code)],
                          metadata={"kernelspec": {"name": "mlops-lab", "display_name": "x", "language": "python"}})
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "-m", "notebooks", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout
    homes = {(tmp_path / f"{name}.home").read_text() for name in ("a", "b")}
    assert len(homes) == 2 and all("mlops-lab-home-" in h for h in homes)
