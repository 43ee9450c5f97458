"""Managed subprocesses: servers that start in their own process group and leave nothing behind.

``mlflow server`` alone spawns uvicorn workers, a job runner and several huey consumers; stopping
only the process we started would orphan them, still holding the port. Every server the course
starts therefore runs in a new process group (a new session), is declared ready only when its
health endpoint answers, and is stopped by signalling the whole group, then waiting until no member
is alive and the port is free again.

    with mlflow_server() as server:
        mlflow.set_tracking_uri(server.url)
        ...
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"

_started_groups: set[int] = set()
_started_ports: set[int] = set()


class ProcessError(RuntimeError):
    """A managed process could not be started, did not become ready, or did not stop."""


class PortInUseError(ProcessError):
    """The requested port is already bound by another process."""


def read_state(path: Path) -> dict:
    """The JSON state file of processes that outlive a command (``env up``, ``monitor up``); {} if none
    or unreadable."""
    import json

    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def write_state(path: Path, state: dict, *, remove_empty: bool = False) -> None:
    """Write ``state`` to ``path`` atomically (a reader sees the old file or the new one, never half);
    with ``remove_empty``, an empty state removes the file."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    if remove_empty and not state:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


PORT_RANGE = (20000, 32767)
"""Where :func:`free_port` picks: below the ephemeral range (Linux 32768-60999, macOS 49152-65535),
from which the OS hands out ports to outgoing connections and to servers that bind port 0 (a Spark
JVM, py4j). A port the OS chose could be handed to one of them between our check and our server's
bind; one from this range cannot."""


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing is listening on right now, outside the ephemeral range.

    Picked at random from :data:`PORT_RANGE` (below the OS's ephemeral ports, see there) and checked
    by binding it; if that range is full, or overlaps the ephemeral one, the OS chooses."""
    import random

    low, high = PORT_RANGE[0], min(PORT_RANGE[1], _ephemeral_low() - 1)
    draw = random.SystemRandom()  # not the seeded global generator: two notebooks must not pick alike
    for _ in range(50 if high > low else 0):
        port = draw.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when ``port`` on ``host`` cannot be bound because something else holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def group_runs(pgid: int, matches: Callable[[list[str]], bool]) -> bool:
    """True when a live member of process group ``pgid`` has a command line that ``matches``: the
    recorded group still runs what was recorded, not another program that reused the id."""
    for proc in group_members(pgid):
        try:
            if matches(proc.cmdline()):
                return True
        except (psutil.Error, OSError):  # gone meanwhile
            continue
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ManagedProcess:
    """A subprocess in its own process group, ready when a check passes, stopped as a group.

    Args:
        args: the command line.
        name: a short name for messages and the log file.
        port: the port the process will listen on (checked free before start), or None.
        health_url: a URL that answers 2xx once the process is ready, or None.
        ready: a callable returning True once ready (used when there is no health URL).
        timeout: seconds to wait for readiness before giving up (the log tail is in the error).
        env: extra environment variables on top of the current environment.
        log_path: where stdout and stderr go (default: a temporary file, removed after a clean stop).
        cwd: the working directory of the process.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        name: str,
        port: int | None = None,
        health_url: str | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.name = name
        self.port = port
        self.health_url = health_url
        self._ready = ready
        self.timeout = timeout
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self._temporary_log = log_path is None  # removed after a clean stop
        if log_path is None:
            fd, raw = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            os.close(fd)
            log_path = Path(raw)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.pgid: int | None = None
        self._stall_cancelled = threading.Event()
        self._stalls: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "ManagedProcess":
        """Start the process in a new process group and wait until it is ready."""
        if self.port is not None and port_in_use(self.port):
            raise PortInUseError(
                f"{self.name}: port {self.port} on {LOOPBACK} is already in use by another "
                "process. Stop that process or let the course pick a free port (port=None)."
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        try:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            raise ProcessError(f"{self.name}: cannot start {self.args[0]!r}: {exc}") from exc
        self._log = log
        self.pgid = self.process.pid  # a new session's leader is its group's leader
        _started_groups.add(self.pgid)
        if self.port is not None:
            _started_ports.add(self.port)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _is_ready(self) -> bool:
        if self.health_url is not None:
            return http_ok(self.health_url)
        if self._ready is not None:
            return bool(self._ready())
        return True

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise ProcessError(
                    f"{self.name} exited with code {code} before it was ready.\n"
                    f"Command: {' '.join(self.args)}\nLast lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name} was not ready after {self.timeout:.0f} s "
                    f"(waited for {self.health_url or 'its readiness check'}).\n"
                    f"Command: {' '.join(self.args)}\nLast lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process of the group: SIGTERM, then SIGKILL after ``grace`` seconds.

        Returns once no member of the group is alive and the port (if any) can be bound again;
        raises :class:`ProcessError` if that does not happen. Safe to call twice.
        """
        if self.process is None or self.pgid is None:
            return
        pgid = self.pgid
        self._stall_cancelled.set()  # end any stall now, and let none begin
        for thread in self._stalls:
            thread.join(timeout=5)
        self._stalls.clear()
        process = self.process
        _signal_group(pgid, grace, lambda: process.poll() is not None)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        left = group_members(pgid)
        if left:
            raise ProcessError(f"{self.name}: processes {[p.pid for p in left]} did not stop")
        if self.port is not None:
            deadline = time.monotonic() + 10
            while port_in_use(self.port):
                if time.monotonic() > deadline:
                    raise ProcessError(f"{self.name}: port {self.port} is still bound after the group stopped")
                time.sleep(0.1)
            _started_ports.discard(self.port)
        _started_groups.discard(pgid)
        if self._temporary_log:
            self.log_path.unlink(missing_ok=True)
        self.process = None

    def detach(self) -> dict[str, object]:
        """Let the process outlive this Python process (``mlops-lab env up``).

        It is no longer stopped by the exit hook nor counted by :func:`leftovers`; whoever detaches
        it must record what :func:`stop_group` needs (returned here) and stop it later.
        """
        if self.process is None or self.pgid is None:
            raise ProcessError(f"{self.name} is not running")
        info = {"pgid": self.pgid, "pid": self.process.pid, "port": self.port, "log": str(self.log_path)}
        _started_groups.discard(self.pgid)
        if self.port is not None:
            _started_ports.discard(self.port)
        self._log.close()
        self.process = None
        self.pgid = None
        return info

    def stall(self, seconds: float, after: float = 0.0) -> threading.Thread:
        """Freeze the whole group for ``seconds`` (SIGSTOP, then SIGCONT), starting ``after`` seconds
        from now, in a background thread; returns the thread (``join()`` it to wait).

        A real stall, like a long garbage-collection pause or a noisy neighbour: the process keeps
        its sockets, and requests queue in the kernel until it runs again.
        """
        if self.pgid is None or not self.running:
            raise ProcessError(f"{self.name} is not running")
        if seconds <= 0 or after < 0:
            raise ValueError(f"stall needs seconds > 0 and after >= 0, got {seconds}, {after}")
        pgid, cancelled = self.pgid, self._stall_cancelled

        def freeze() -> None:
            if cancelled.wait(after) or not self.running:
                return  # stopped before the stall began: never signal a group that may be gone
            try:
                os.killpg(pgid, signal.SIGSTOP)
                cancelled.wait(seconds)
            except ProcessLookupError:
                pass
            finally:
                try:
                    os.killpg(pgid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

        thread = threading.Thread(target=freeze, name=f"stall-{self.name}", daemon=True)
        thread.start()
        self._stalls.append(thread)
        return thread

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's log (stdout and stderr together)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    @property
    def running(self) -> bool:
        """True while the started process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MlflowServer(ManagedProcess):
    """A real ``mlflow server`` on loopback; ``url`` is its tracking URI once started."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def mlflow_server(
    home: Path | None = None,
    *,
    port: int | None = None,
    backend_store_uri: str | None = None,
    workers: int = 1,
    app_name: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    extra_args: Sequence[str] = (),
    host: str = LOOPBACK,
    artifacts: Path | None = None,
) -> MlflowServer:
    """A tracking server on ``127.0.0.1`` with its store in ``home`` (default: the workspace).

    The backend is ``sqlite:///<home>/mlflow.db`` unless ``backend_store_uri`` is given; artifacts
    are proxied by the server and kept in ``<home>/artifacts``. A free port is chosen unless ``port``
    is given (a port already in use raises :class:`PortInUseError`). Use it as a context manager:
    on exit the server and all its children are stopped. ``host="0.0.0.0"`` serves other machines
    too (a class server); readiness is still checked on loopback.
    """
    from mlops_lab import config

    home = Path(home) if home else config.workspace()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend = backend_store_uri or f"sqlite:///{home / 'mlflow.db'}"
    args = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts or home / "artifacts"),
    ]
    if app_name:
        args += ["--app-name", app_name]
    args += list(extra_args)
    return MlflowServer(
        args,
        name="mlflow-server",
        port=port,
        health_url=f"http://{LOOPBACK}:{port}/health",
        timeout=timeout,
        # MLflow's job runner (seven huey consumers, for GenAI scorers and trace rollups the course
        # does not use) costs about half a core per idle server; three environments would take a
        # 2-core machine's spare capacity. A caller can turn it back on through ``env``.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
        log_path=home / "logs" / f"mlflow-server-{port}.log",
    )


def _signal_group(pgid: int, grace: float, leader_gone: Callable[[], bool]) -> None:
    """SIGCONT (a stalled group cannot act on SIGTERM), SIGTERM, then SIGKILL after ``grace`` s."""
    try:
        os.killpg(pgid, signal.SIGCONT)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        orphaned_since = None
        while time.monotonic() < deadline:
            if leader_gone():
                if not group_members(pgid):
                    return
                # the leader has exited; what it left behind (mlflow server's job consumers ignore
                # SIGTERM) gets a second, then the next signal
                orphaned_since = orphaned_since or time.monotonic()
                if time.monotonic() - orphaned_since > 1.0:
                    break
            time.sleep(0.1)


def stop_group(pgid: int, *, port: int | None = None, expect: Sequence[str] = (), grace: float = 10.0,
               name: str = "process group") -> bool:
    """Stop a group started earlier (maybe by another Python process); False if it was gone already.

    ``expect``: words that a member's command line must contain (say ``mlflow`` and the port), so
    that a group id reused by the system after a reboot is never signalled. Waits until no member is
    alive and ``port`` can be bound again; raises :class:`ProcessError` otherwise.
    """
    members = group_members(pgid)
    if not members:
        return False
    if expect:
        def matches(proc: psutil.Process) -> bool:
            try:
                line = " ".join(proc.cmdline())
            except psutil.Error:
                return False
            return all(word in line for word in expect)

        if not any(matches(p) for p in members):
            raise ProcessError(f"{name}: process group {pgid} is not what was started (no member runs "
                               f"{' '.join(expect)!r}); not stopping it")

    def leader_gone() -> bool:
        try:
            return psutil.Process(pgid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    _signal_group(pgid, grace, leader_gone)
    left = group_members(pgid)
    if left:
        raise ProcessError(f"{name}: processes {[p.pid for p in left]} did not stop")
    if port is not None:
        deadline = time.monotonic() + 10
        while port_in_use(port):
            if time.monotonic() > deadline:
                raise ProcessError(f"{name}: port {port} is still bound after the group stopped")
            time.sleep(0.1)
    return True


@atexit.register
def _stop_started_groups() -> None:
    """When Python exits normally (a notebook kernel shut down or restarted with a server still
    running), stop the groups it started. A process killed outright (SIGKILL, out of memory) runs
    no exit hooks: its servers keep running until stopped by their process group."""
    for pgid in list(_started_groups):
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_members(pgid) for pgid in _started_groups):
        time.sleep(0.1)
    for pgid in list(_started_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def leftovers() -> dict[str, list[int]]:
    """What this Python process started and is still alive: group members and bound ports."""
    pids = [p.pid for pgid in sorted(_started_groups) for p in group_members(pgid)]
    ports = [port for port in sorted(_started_ports) if port_in_use(port)]
    return {"pids": pids, "ports": ports}
