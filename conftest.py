"""Test-suite plumbing: a fresh workspace per test and per notebook, tiers, and a leftover check.

Every process the suite starts (servers, kernels, their children) inherits the environment
variable ``MLOPS_LAB_TEST_SESSION``. When the session ends, any live process that still carries
this session's value is a leftover: the run fails and names it (then stops its group, so one bad
test does not poison the machine).

Under ``make test`` (pytest-xdist, ``--dist loadfile``) the two workers share the files longest
first, by the seconds ``tests/durations.json`` records for each (a file's module-scoped servers
stay on one worker; the lab solutions and the benchmarks, which share nothing, go one by one), so
that no worker is left with a long notebook while the other idles. A file the record does not
know counts as ``DEFAULT_SCOPE_S``. ``make durations`` measures the record again; a stale one only
makes the split less even.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent
SESSION_ENV = "MLOPS_LAB_TEST_SESSION"
DURATIONS = ROOT / "tests" / "durations.json"
DEFAULT_SCOPE_S = 30.0
_ONE_BY_ONE = ("tests/test_labs.py", "tests/test_benchmarks.py")  # no module-scoped fixtures
_notebook_homes: dict[str, str] = {}
_measured: dict[str, float] = {}
_session_home: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_ENV] = uuid.uuid4().hex
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.pop("MLOPS_LAB_TRACKING_URI", None)
    # Nothing the suite does may fall back to the repository's own workspace.
    _session_home.append(tempfile.mkdtemp(prefix="mlops-lab-home-"))
    os.environ["MLOPS_LAB_HOME"] = _session_home[0]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true",
                     help="write the seconds each scheduling unit took to tests/durations.json")


def scope(nodeid: str) -> str:
    """The unit a worker runs whole: the file, or the test itself in the files that share nothing."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in _ONE_BY_ONE else path


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` with the units (see :func:`scope`) handed out longest first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}

    class LongestFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_ordered", False):  # the queue is complete at the first assignment
                units = sorted(self.workqueue.items(), key=lambda unit: -known.get(unit[0], DEFAULT_SCOPE_S))
                self.workqueue.clear()
                self.workqueue.update(units)
                self._ordered = True
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    unit = scope(report.nodeid)
    _measured[unit] = _measured.get(unit, 0.0) + report.duration


def _is_nbval(item: pytest.Item) -> bool:
    from nbval.plugin import IPyNbCell

    return isinstance(item, IPyNbCell)


JAVA_REQUIRE_ENV = "MLOPS_LAB_REQUIRE_JAVA"
_NEEDS_JAVA = ("notebooks/15_batch_inference_on_spark.ipynb", "tests/test_spark.py", "tests/test_lab15_checks.py",
               "tests/test_labs.py::", "tests/test_benchmarks.py::test_spark_benchmark")


def _needs_java(item: pytest.Item) -> bool:
    """Spark's tests, lesson 15 and lab 15 (pure unit tests with a fake ``java`` do not need one)."""
    node = item.nodeid
    if not node.startswith(_NEEDS_JAVA):
        return False
    if node.startswith("tests/test_labs.py::"):
        return "15_spark_batch_inference" in node
    return _is_nbval(item) or item.get_closest_marker("unit") is None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_nbval(item):
            item.add_marker(pytest.mark.notebooks)
    spark_items = [item for item in items if _needs_java(item)]
    if spark_items and os.environ.get(JAVA_REQUIRE_ENV, "").strip().lower() not in ("1", "true", "yes"):
        from mlops_lab import spark

        try:
            spark.check_java()
        except spark.SparkSetupError as error:  # skipped here, required in CI (.ci/run sets the variable)
            skip = pytest.mark.skip(reason=f"Java 17+ not available: {error} ({JAVA_REQUIRE_ENV}=1 makes this a failure)")
            for item in spark_items:
                item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Give each notebook under nbval its own fresh workspace before its kernel starts."""
    if _is_nbval(item):
        key = str(item.parent.nodeid)
        if key not in _notebook_homes:
            _notebook_homes[key] = tempfile.mkdtemp(prefix="mlops-lab-home-")
        os.environ["MLOPS_LAB_HOME"] = _notebook_homes[key]


@pytest.fixture(autouse=True)
def home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """A fresh, empty workspace (``MLOPS_LAB_HOME``) for every test."""
    path = Path(tempfile.mkdtemp(prefix="mlops-lab-home-", dir=tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("MLOPS_LAB_HOME", str(path))
    monkeypatch.delenv("MLOPS_LAB_TRACKING_URI", raising=False)
    return path


def session_processes(marker: str) -> list[psutil.Process]:
    """Live processes other than this one whose environment carries ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(SESSION_ENV) == marker:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("store_durations") and not hasattr(session.config, "workerinput"):
        record = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
        record.update({unit: round(seconds, 1) for unit, seconds in _measured.items()})
        DURATIONS.write_text(json.dumps(dict(sorted(record.items())), indent=0) + "\n")
    marker = os.environ.get(SESSION_ENV, "")
    # Give kernels and servers that are shutting down a moment to exit.
    left = []
    for _ in range(50):
        left = session_processes(marker)
        if not left:
            break
        psutil.wait_procs(left, timeout=0.2)
    if left:
        lines = []
        for proc in left:
            try:
                lines.append(f"  pid {proc.pid}: {' '.join(proc.cmdline())[:160]}")
                pgid = os.getpgid(proc.pid)
                if pgid == os.getpgid(0):  # never signal the group pytest itself runs in
                    proc.kill()
                else:
                    os.killpg(pgid, signal.SIGKILL)
            except (psutil.Error, OSError):
                continue
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("LEFTOVER PROCESSES after the test session:\n" + "\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for path in [*_notebook_homes.values(), *_session_home]:
        shutil.rmtree(path, ignore_errors=True)
