"""A throwaway PostgreSQL server for the tests (the ``postgres`` fixture).

The session's first test that asks for ``postgres`` creates a fresh cluster in a temporary folder
and starts it on a free loopback port; the cluster is stopped and deleted when the session ends.

* Binaries: ``initdb``, ``postgres`` and ``pg_ctl`` are looked for on ``PATH``, in
  ``pg_config --bindir`` and in ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql``
  package). If they are missing the tests that need them are skipped, unless
  ``MLOPS_LAB_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which turns the skip into a failure.
* Root: ``initdb`` refuses to run as root. As root (a CI machine) the cluster belongs to the
  ``postgres`` system user and ``initdb``/``postgres`` run through ``runuser -u postgres --``.
* Access: password authentication (``scram-sha-256``) for a superuser with a random password, TCP
  on ``127.0.0.1`` only, the unix socket inside the temporary folder (no system path is touched).
* Stopping: the server runs as a :class:`~mlops_lab.processes.ManagedProcess` (its own process
  group). PostgreSQL's SIGTERM is a *smart* shutdown that waits for every client, and ``runuser``
  answers SIGTERM by killing its child after 2 s, so the fixture first asks for a *fast* shutdown
  (``pg_ctl stop -m fast``: clients are disconnected, the postmaster waits for its backends and
  exits), then stops the group, then checks that no process of the cluster is left (backends run
  in their own sessions, outside the group).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest

from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

REQUIRE_ENV = "MLOPS_LAB_REQUIRE_POSTGRES"
BINARIES = ("initdb", "postgres", "pg_ctl")
SUPERUSER = "mlops_lab"
SYSTEM_USER = "postgres"  # who runs the cluster when the tests run as root


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL installation on this machine."""


def _has_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in BINARIES)


def _version_key(folder: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", Path(folder).parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``postgres`` and ``pg_ctl`` (the newest version), or None."""
    candidates: list[Path] = []
    found = shutil.which("initdb")
    if found:  # /usr/local/bin/initdb may be a link into the real bin folder
        candidates += [Path(os.path.realpath(found)).parent, Path(found).parent]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key,
                                           reverse=True)]
    for folder in candidates:
        if _has_binaries(folder):
            return folder
    return None


def required() -> bool:
    """True when a missing PostgreSQL must fail the run instead of skipping (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _as_cluster_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner: nothing, or runuser as root."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root, and initdb refuses root, but there is no {SYSTEM_USER!r} system user "
            "to own the cluster (the Debian package 'postgresql' creates it)") from exc
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.access(runuser, os.X_OK):
        raise PostgresUnavailable("running as root, and initdb refuses root, but runuser is missing")
    return [runuser, "-u", SYSTEM_USER, "--"]


class PostgresServer:
    """A PostgreSQL cluster of our own: ``start()``, ``create_database()``, ``stop()``."""

    def __init__(self, bindir: Path, folder: Path | None = None) -> None:
        self.bindir = Path(bindir)
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="mlops-lab-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "sockets"
        self.user = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.host = LOOPBACK
        self.port: int | None = None
        self.process: ManagedProcess | None = None
        self._prefix = _as_cluster_owner()

    def __repr__(self) -> str:  # never print the password
        return f"PostgresServer(port={self.port}, folder={str(self.folder)!r})"

    # -- lifecycle ------------------------------------------------------------------------
    def _owned(self, *paths: Path) -> None:
        if self._prefix:
            import pwd

            owner = pwd.getpwnam(SYSTEM_USER)
            for path in paths:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def _run(self, args: list[str], what: str, timeout: float = 120) -> None:
        result = subprocess.run([*self._prefix, *args], capture_output=True, text=True,
                                timeout=timeout, cwd=self.folder)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{what} failed ({result.returncode}):\n"
                                      f"{(result.stdout + result.stderr)[-2000:]}")

    def initdb(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        pwfile = self.folder / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password + "\n")
        self._owned(self.folder, self.sockets, pwfile)
        try:
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                       f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                       "--locale=C", "--no-sync", "--no-instructions"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        if not self.data.exists():
            self.initdb()
        self.port = free_port()
        args = [*self._prefix, str(self.bindir / "postgres"), "-D", str(self.data),
                "-c", f"listen_addresses={self.host}", "-p", str(self.port),
                "-c", f"unix_socket_directories={self.sockets}",
                "-c", "max_connections=300",
                # a test cluster: durability is not needed, speed is
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.process = ManagedProcess(args, name="postgres", port=self.port, ready=self._accepts,
                                      timeout=timeout, log_path=self.folder / "postgres.log",
                                      cwd=self.folder)
        self.process.start()
        return self

    def _connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, connect_timeout=3)

    def _accepts(self) -> bool:
        try:
            self._connect().close()
        except Exception:  # noqa: BLE001 (starting up, not listening yet, ...)
            return False
        return True

    def _cluster_pids(self) -> list[psutil.Process]:
        """Live processes whose command line names this cluster's data folder (runuser, postmaster)."""
        data = str(self.data)
        found = []
        for proc in psutil.process_iter(["pid", "status", "ppid"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                line = " ".join(proc.cmdline())
                if data in line:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        """Fast shutdown, then stop the process group; raises if anything of the cluster is left."""
        if self.process is None:
            return
        if not self.process.running:
            self.process.stop()
            return
        started = psutil.Process(self.process.process.pid)  # runuser, or the postmaster itself
        members = [started, *_safe_children(started)]  # backends: children, but own sessions
        try:
            self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w",
                       "-t", "30"], "pg_ctl stop -m fast", timeout=60)
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass  # the group's SIGTERM, then SIGKILL, still follow
        self.process.stop()
        _, alive = psutil.wait_procs(members, timeout=10)
        left = {p.pid for p in alive} | {p.pid for p in self._cluster_pids()}
        if left:
            raise RuntimeError(f"postgres processes {sorted(left)} did not stop")

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------
    def uri(self, dbname: str, driver: str | None = None) -> str:
        """``postgresql://user:password@127.0.0.1:port/dbname`` (``dbname`` may hold ``{env}``).

        ``driver="psycopg2"`` gives ``postgresql+psycopg2://...``: SQLAlchemy 2.1 reads a plain
        ``postgresql://`` as psycopg (version 3), which the workbook does not install.
        """
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return (f"{scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{dbname}")

    def create_database(self, name: str | None = None, driver: str | None = None) -> str:
        """Create an empty database (a fresh unique name when ``name`` is None); its URI."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        connection = self._connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.uri(name, driver)

    def create_databases(self, template: str, names: Iterable[str], driver: str | None = None) -> str:
        """Create ``template`` with ``{env}`` filled by each of ``names``; the template's URI.

        ``create_databases("mlflow_{env}", ENVIRONMENTS)`` makes mlflow_dev, mlflow_staging and
        mlflow_prod and returns the URI to give ``environments.running(backend=...)``.
        """
        for name in names:
            self.create_database(template.replace("{env}", name))
        return self.uri(template, driver)

    def databases(self) -> list[str]:
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
                return [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()

    def tables(self, dbname: str) -> list[str]:
        connection = self._connect(dbname)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                return [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()


def _safe_children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason} (install the 'postgresql' package; "
                f"{REQUIRE_ENV}=1 makes this a failure)")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of our own for a test module; ``create_database()`` gives a fresh URI.

    Module-scoped, so that it is stopped before other modules run (their tests check that no
    process of this Python is left; a few seconds of initdb per module is the price)."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable(f"no {', '.join(BINARIES)} found on PATH, in `pg_config --bindir` or in "
                     "/usr/lib/postgresql/*/bin")
    try:
        server = PostgresServer(bindir)
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    try:
        try:
            server.start()
        except PostgresUnavailable as exc:
            _unavailable(str(exc))
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.cleanup()
