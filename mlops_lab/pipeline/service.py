"""Dagster's daemon and web UI as managed processes, with the workspace as Dagster's home.

``mlops-lab pipeline up`` starts ``dagster-webserver`` (the UI, on a free loopback port) and
``dagster-daemon run`` (sensors, schedules and the run queue) as two process groups of
:mod:`mlops_lab.processes`, both loading :mod:`mlops_lab.pipeline.definitions`; ``down`` stops
both groups. Two processes rather than ``dagster dev``: ``dagster dev`` did not exit within 40 s of
SIGTERM here, while each of these stops on its own signal (with SIGKILL after a grace period as
the fallback every managed process has).

Dagster's home (``DAGSTER_HOME``) is ``<workspace>/pipeline/dagster``: its ``dagster.yaml`` turns
telemetry off and lets one run go at a time (``run_queue.max_concurrent_runs: 1``), so months
dropped together are processed one after the other, in the order they were requested.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mlops_lab.processes import (LOOPBACK, ManagedProcess, ProcessError, free_port, group_runs, http_ok,
                                 read_state, stop_group, write_state)

MODULE = "mlops_lab.pipeline.definitions"
COMPONENTS = ("daemon", "webserver")
DAGSTER_YAML = """\
# Written by mlops_lab.pipeline.service: Dagster's settings for this workspace.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 1
"""


class ServiceError(RuntimeError):
    """The Dagster service cannot start, or is in a state that needs `mlops-lab pipeline down` first."""


def dagster_home(home: Path | None = None) -> Path:
    """``<workspace>/pipeline/dagster``, created with its ``dagster.yaml`` on first use."""
    from mlops_lab.config import workspace

    path = (home or workspace()) / "pipeline" / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    settings = path / "dagster.yaml"
    if not settings.is_file() or settings.read_text() != DAGSTER_YAML:
        settings.write_text(DAGSTER_YAML)
    return path


@contextlib.contextmanager
def instance(home: Path | None = None) -> Iterator[Any]:
    """The workspace's persistent Dagster instance (what the UI shows), closed after the block."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home(home))) as found:
        yield found


def _env(home: Path | None, settings=None) -> dict[str, str]:
    import json
    from dataclasses import asdict

    from mlops_lab.config import HOME_ENV, workspace
    from mlops_lab.pipeline.definitions import SETTINGS_ENV

    env = {"DAGSTER_HOME": str(dagster_home(home)), HOME_ENV: str(home or workspace()),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    if settings is not None:
        env[SETTINGS_ENV] = json.dumps(asdict(settings))
    return env


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ServiceError(f"{name} is not installed next to {sys.executable}: run `make setup`")
    return str(path)


def _daemon_ready(home: Path | None):
    def ready() -> bool:
        with instance(home) as found:
            beats = found.get_daemon_heartbeats()
        return "SENSOR" in beats and "QUEUED_RUN_COORDINATOR" in beats
    return ready


@dataclass
class Service:
    """A running daemon and web UI (``url``); ``stop()`` stops both groups."""

    url: str
    home: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def stop(self) -> None:
        errors = []
        for name in COMPONENTS:
            process = self.processes.pop(name, None)
            if process is not None:
                try:
                    process.stop(grace=10)
                except ProcessError as exc:
                    errors.append(str(exc))
        if errors:
            raise ServiceError("; ".join(errors))

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(*, home: Path | None = None, port: int | None = None, settings=None, timeout: float = 120.0) -> Service:
    """Start the daemon, then the web UI on ``port`` (a free one by default); ready when both answer.

    ``settings`` (:class:`~mlops_lab.pipeline.workflow.Settings`) replace the defaults of the runs
    the daemon launches."""
    from mlops_lab.config import workspace

    home = home or workspace()
    port = port or free_port()
    env = _env(home, settings)
    logs = home / "pipeline" / "logs"  # not under DAGSTER_HOME: Dagster owns that folder's "logs"
    service = Service(f"http://{LOOPBACK}:{port}", home)
    with instance(home):  # create Dagster's storage now: two processes creating it at once race
        pass
    try:
        service.processes["daemon"] = ManagedProcess(
            [_tool("dagster-daemon"), "run", "-m", MODULE], name="dagster-daemon", env=env,
            ready=_daemon_ready(home), timeout=timeout, log_path=logs / "daemon.log", cwd=dagster_home(home)).start()
        service.processes["webserver"] = ManagedProcess(
            [_tool("dagster-webserver"), "-h", LOOPBACK, "-p", str(port), "-m", MODULE], name="dagster-webserver",
            port=port, health_url=f"{service.url}/server_info", env=env, timeout=timeout,
            log_path=logs / "webserver.log", cwd=dagster_home(home)).start()
    except BaseException:
        service.stop()
        raise
    return service


def state_path(home: Path | None = None) -> Path:
    from mlops_lab.config import workspace

    return (home or workspace()) / "pipeline" / "service.json"


def _expect(name: str, known: dict) -> list[str]:
    return ["dagster-daemon", MODULE] if name == "daemon" else ["dagster-webserver", f"-p {known['port']}"]


def _alive(name: str, known: dict) -> bool:
    return group_runs(known["pgid"], lambda line: all(w in " ".join(line) for w in _expect(name, known)))


def up(*, home: Path | None = None, port: int | None = None) -> dict[str, Any]:
    """Start the service so that it outlives this call (``down`` stops it); if it is up, say where."""
    path = state_path(home)
    state = read_state(path)
    if state:
        alive = {name: name in state and _alive(name, state[name]) for name in COMPONENTS}
        if all(alive.values()):
            return state
        if any(alive.values()):
            raise ServiceError("the pipeline service is only partly running; run `mlops-lab pipeline down`, then up")
        write_state(path, {})
    service = start(home=home, port=port)
    new_state: dict[str, Any] = {"url": service.url, "dagster_home": str(dagster_home(home)),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in COMPONENTS:
        new_state[name] = service.processes.pop(name).detach()
    write_state(path, new_state)
    return new_state


def down(home: Path | None = None) -> list[str]:
    """Stop what :func:`up` started (web UI first); the components stopped."""
    path = state_path(home)
    state = read_state(path)
    stopped, errors = [], []
    for name in reversed(COMPONENTS):
        known = state.get(name)
        if not known or not _alive(name, known):
            continue
        try:
            stop_group(known["pgid"], port=known.get("port"), expect=_expect(name, known), name=f"dagster {name}")
            stopped.append(name)
        except ProcessError as exc:
            errors.append(str(exc))
        with contextlib.suppress(OSError):
            os.waitpid(known["pid"], os.WNOHANG)
    if errors:
        raise ServiceError("; ".join(errors))
    write_state(path, {})
    return stopped


def status(home: Path | None = None) -> dict[str, Any]:
    """The service's components (up, dead or down), its URL and the latest runs."""
    state = read_state(state_path(home))
    components = []
    for name in COMPONENTS:
        known = state.get(name)
        if not known:
            components.append({"component": name, "status": "down"})
        elif name == "webserver":
            components.append({"component": name, "status": "up" if http_ok(state["url"] + "/server_info") else "dead"})
        else:
            components.append({"component": name, "status": "up" if _alive(name, known) else "dead"})
    return {"url": state.get("url", ""), "components": components, "runs": recent_runs(home)}


def recent_runs(home: Path | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """The newest Dagster runs of this workspace: id, status, trigger and batch."""
    import dagster as dg

    with instance(home) as found:
        records = found.get_run_records(dg.RunsFilter(job_name="retrain_job"), limit=limit)
    return [{"run_id": r.dagster_run.run_id, "status": r.dagster_run.status.value,
             "trigger": r.dagster_run.tags.get("trigger", "manual"), "batch": r.dagster_run.tags.get("batch", ""),
             "created": r.create_timestamp.strftime("%Y-%m-%d %H:%M:%S")} for r in records]


def wait_for_runs(count: int, *, home: Path | None = None, timeout: float = 180.0,
                  statuses: tuple[str, ...] = ("SUCCESS", "FAILURE", "CANCELED")) -> list[dict[str, Any]]:
    """Wait until ``count`` runs have ended (the daemon launches them); the runs, newest first."""
    deadline = time.monotonic() + timeout
    while True:
        runs = recent_runs(home, limit=max(count, 10))
        ended = [r for r in runs if r["status"] in statuses]
        if len(ended) >= count:
            return ended
        if time.monotonic() > deadline:
            raise ServiceError(f"{len(ended)} of {count} pipeline runs ended within {timeout:.0f} s: {runs}")
        time.sleep(1.0)
