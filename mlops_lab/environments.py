"""Three environments, dev, staging and prod, each with its own authenticated MLflow server.

Every environment is a real ``mlflow server --app-name basic-auth`` on a free loopback port with
its own backend store, its own user store and its own artifact root, all under
``<workspace>/environments/<name>/``. The course's access policy (:mod:`mlops_lab.auth`) is put on
each server when it starts.

From a notebook or a test (the servers stop when the block ends)::

    with environments.running() as envs:          # dev, staging and prod
        alice = envs["dev"].create_user("alice", "data_scientist")
        with envs["dev"].signed_in(alice):
            mlflow.start_run() ...

From a terminal (the servers keep running until ``env down``)::

    mlops-lab env up all        # or dev, staging, prod
    mlops-lab env status
    mlops-lab env down

Admin passwords: MLflow 3.17 has no default admin password. ``MLFLOW_AUTH_ADMIN_PASSWORD`` is used
when set; otherwise a random one is generated per environment. Either way it is kept, with every
password the course generates, in ``<workspace>/environments/credentials.json`` (mode 600, in the
git-ignored workspace). A store keeps the admin password it was created with: change it with
MLflow's update-password API, not the variable.

Self-hosting for a class: ``backend="postgresql://user:pw@host:5432/mlflow_{env}"`` keeps runs,
models and users in PostgreSQL (``{env}`` becomes the environment's name, so each has its own
database); artifacts are still served by the server itself (``--artifacts-destination``), so
students need nothing but the URL and their credentials.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlops_lab import auth
from mlops_lab.auth import ENVIRONMENTS, Credentials
from mlops_lab.processes import (LOOPBACK, MlflowServer, ProcessError, group_runs, http_ok, mlflow_server, read_state,
                                 stop_group, write_state)


class EnvError(RuntimeError):
    """An environment cannot be started, found or stopped."""


def root(home: Path | None = None) -> Path:
    """``<workspace>/environments``: one folder per environment, the state and credentials files."""
    from mlops_lab import config

    return (home or config.workspace()) / "environments"


def _check_name(name: str) -> str:
    if name not in ENVIRONMENTS:
        raise EnvError(f"Unknown environment {name!r}; use one of {', '.join(ENVIRONMENTS)} (or 'all')")
    return name


def names(which: str | Iterable[str] = "all") -> tuple[str, ...]:
    """``"all"`` or one or several environment names, checked and in dev, staging, prod order."""
    wanted = [which] if isinstance(which, str) else list(which)
    if "all" in wanted:
        wanted = list(ENVIRONMENTS)
    for name in wanted:
        _check_name(name)
    return tuple(n for n in ENVIRONMENTS if n in wanted)


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for logs, state files and tables)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backend_for(name: str, backend: str | None, home: Path) -> str:
    """The backend store URI of ``name``: SQLite in its folder, or ``backend`` with ``{env}`` filled."""
    if backend in (None, "", "sqlite"):
        return f"sqlite:///{home / 'mlflow.db'}"
    if not backend.startswith(("postgresql://", "postgresql+psycopg2://", "sqlite:///")):
        raise EnvError(f"Unsupported backend {redact(backend)!r}: use 'sqlite' or a postgresql:// URI")
    backend = backend.replace("{env}", name)
    if backend.startswith("postgresql://"):  # SQLAlchemy 2.1 would pick psycopg 3; the lock has psycopg2
        backend = "postgresql+psycopg2://" + backend[len("postgresql://"):]
    return backend


def _without_password(uri: str) -> tuple[str, str | None]:
    """``uri`` without its password, and the password (a command line is visible to every user)."""
    from urllib.parse import unquote

    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def _secret_file(path: Path) -> str:
    """A random secret kept in ``path`` (mode 600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def admin_credentials(name: str, home: Path | None = None) -> Credentials:
    """The admin of ``name``: stored, else from ``MLFLOW_AUTH_ADMIN_PASSWORD``, else generated."""
    try:
        return auth.stored(name, auth.ADMIN, home)
    except auth.AuthError:
        pass
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or auth.new_password()
    creds = Credentials(auth.ADMIN, password)
    auth.remember(name, creds, home)
    return creds


@dataclass
class Environment:
    """One running environment: its server's URL, its admin, and helpers to act as its users."""

    name: str
    url: str
    admin: Credentials
    folder: Path
    backend: str
    home: Path
    server: MlflowServer | None = field(default=None, repr=False)

    # -- users --------------------------------------------------------------------------------
    def create_user(self, username: str, role: str, password: str | None = None) -> Credentials:
        """Create ``username`` with a course role (see :data:`mlops_lab.auth.POLICY`)."""
        return auth.create_user(self.name, self.url, self.admin, username, role, password, self.home)

    def delete_user(self, username: str) -> None:
        auth.delete_user(self.name, self.url, self.admin, username, self.home)

    def credentials(self, username: str) -> Credentials:
        """The stored credentials of ``username`` in this environment."""
        return auth.stored(self.name, username, self.home)

    def signed_in(self, credentials: Credentials | None):
        """MLflow's client acts as ``credentials`` on this environment for the ``with`` block."""
        return auth.signed_in(credentials, self.url)

    def as_admin(self):
        return self.signed_in(self.admin)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return http_ok(f"{self.url}/health")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "Environment":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _auth_ini(folder: Path, backend: str, cache_ttl: int) -> Path:
    database = backend if backend.startswith("postgresql") else f"sqlite:///{folder / 'auth.db'}"
    ini = folder / "auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "# Written by mlops_lab.environments; no password in here (see credentials.json).\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database.replace('%', '%%')}\n"  # the ini is read with interpolation
        f"admin_username = {auth.ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {int(cache_ttl)}\n"
    )
    return ini


PIPELINE_EXPERIMENT = "promotions"
"""Where the deployer bot records promotions and champion decisions. The admin creates it, so no
other user can own it (and delete the audit trail)."""


def _ensure_pipeline_experiment(url: str, admin: Credentials) -> None:
    import requests

    api = f"{url}/api/2.0/mlflow/experiments"
    found = requests.get(f"{api}/get-by-name", params={"experiment_name": PIPELINE_EXPERIMENT},
                         auth=admin.pair, timeout=60)
    if found.status_code == 200:
        return
    created = requests.post(f"{api}/create", json={"name": PIPELINE_EXPERIMENT}, auth=admin.pair, timeout=60)
    if created.status_code != 200:
        raise EnvError(f"could not create the {PIPELINE_EXPERIMENT!r} experiment: {created.status_code} "
                       f"{created.text[:200]}")


def start(name: str, *, home: Path | None = None, backend: str | None = None, port: int | None = None,
          host: str = LOOPBACK, workers: int = 1, auth_cache_ttl: int = 60,
          allowed_hosts: Iterable[str] = (), apply_policy: bool = True) -> Environment:
    """Start ``name``'s authenticated server and put the course's roles on it.

    ``backend``: ``None``/``"sqlite"`` (a file in the environment's folder) or a PostgreSQL URI
    (``{env}`` is replaced by the name). ``auth_cache_ttl``: seconds MLflow may cache a verified
    password. MLflow's default, 0, checks a slow password hash on every request (about 0.35 s of
    CPU each, ``make bench``); the course caches for 60 s. With one worker a password change or a
    deleted user takes effect at once; with several, other workers may accept the old password
    until the time runs out. ``allowed_hosts``: the names or addresses (``host`` or ``host:port``,
    ``*`` wildcards) students use to reach a class server; MLflow refuses any other ``Host`` header
    (a DNS-rebinding guard) except localhost and private IP addresses. Use the result as a
    context manager.
    """
    from mlops_lab import config

    _check_name(name)
    home = Path(home) if home else config.workspace()
    folder = root(home) / name
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    store, db_password = _without_password(backend_for(name, backend, folder))
    admin = admin_credentials(name, home)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(_auth_ini(folder, store, auth_cache_ttl)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret_file(folder / ".flask_secret"),
    }
    if db_password is not None:  # to the driver through its environment, never on a command line
        env["PGPASSWORD"] = db_password
    extra = []
    if allowed_hosts:  # replaces MLflow's defaults, so loopback (the readiness check) is added back
        loopback = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*"]
        extra = ["--allowed-hosts", ",".join([*allowed_hosts, *loopback])]
    server = mlflow_server(folder, port=port, backend_store_uri=store, workers=workers,
                           app_name="basic-auth", env=env, host=host, timeout=180, extra_args=extra)
    server.name = f"mlflow-{name}"
    server.start()
    environment = Environment(name, server.url, admin, folder, redact(store), home, server)
    try:
        if auth.whoami(server.url, admin) != 200:
            raise EnvError(
                f"{name}: the stored admin password does not open its user store ({folder}). "
                "The store keeps the password it was created with; if MLFLOW_AUTH_ADMIN_PASSWORD "
                "changed since, unset it, or remove the environment (`mlops-lab env down --purge`).")
        if apply_policy:
            auth.apply_policy(name, server.url, admin)
            _ensure_pipeline_experiment(server.url, admin)
    except BaseException:
        server.stop()
        raise
    return environment


class Environments(dict):
    """The running environments by name; stopping it stops them all."""

    def stop(self) -> None:
        """Stop every environment (side by side: an ``mlflow server`` group takes seconds to stop)."""
        from concurrent.futures import ThreadPoolExecutor

        if not self:
            return
        errors = []
        with ThreadPoolExecutor(max_workers=len(self)) as pool:
            for future in [pool.submit(env.stop) for env in self.values()]:
                try:
                    future.result()
                except ProcessError as exc:
                    errors.append(str(exc))
        if errors:
            raise EnvError("; ".join(errors))

    def __enter__(self) -> "Environments":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_all(which: str | Iterable[str] = "all", **options) -> Environments:
    """Start environments side by side (most of a start is waiting); all of them or none.

    The result maps names to running environments; ``.stop()`` (or a ``with`` block) stops them.
    """
    from concurrent.futures import ThreadPoolExecutor

    wanted = names(which)
    started = Environments()
    if not wanted:
        return started
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {name: pool.submit(start, name, **options) for name in wanted}
    errors = []
    for name, future in futures.items():
        try:
            started[name] = future.result()
        except Exception as exc:  # noqa: BLE001 (the first is raised once the others are stopped)
            errors.append(exc)
    if errors:
        started.stop()
        raise errors[0]
    return started


@contextlib.contextmanager
def running(which: str | Iterable[str] = "all", **options) -> Iterator[Environments]:
    """Start the environments (``"all"``, a name or names) for a ``with`` block, then stop them.

    ``options`` go to :func:`start` (``home``, ``backend``, ``auth_cache_ttl`` ...). They start side
    by side; if one fails, those already started are stopped before the error is raised.
    """
    started = start_all(which, **options)
    try:
        yield started
    finally:
        started.stop()


# -- servers that outlive the command: mlops-lab env up / status / down ---------------------------
def state_path(home: Path | None = None) -> Path:
    return root(home) / "state.json"


def _read_state(home: Path | None) -> dict:
    return read_state(state_path(home))


def _write_state(home: Path | None, state: dict) -> None:
    write_state(state_path(home), state)


def up(which: str | Iterable[str] = "all", **options) -> list[Environment]:
    """Start environments that keep running after this call; ``down`` stops them.

    An environment already up (and answering) is left as it is.
    """
    home = options.get("home")
    state = _read_state(home)
    wanted = names(which)
    already = []
    for n in wanted:
        if n not in state:
            continue
        if http_ok(f"{state[n]['url']}/health", timeout=10):
            already.append(n)
        elif _alive(state[n]):
            raise EnvError(f"{n} is running (process group {state[n]['pgid']}) but does not answer "
                           f"{state[n]['url']}; stop it with `mlops-lab env down {n}`, then start it again")
    started = start_all([n for n in wanted if n not in already], **options)
    for name, environment in started.items():
        info = environment.server.detach()
        environment.server = None
        state[name] = {"url": environment.url, "port": info["port"], "pgid": info["pgid"],
                       "log": info["log"], "backend": environment.backend,
                       "folder": str(environment.folder), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_state(home, state)
    return [started[n] if n in started else connect(n, home) for n in wanted]


def _alive(known: dict) -> bool:
    """True when the recorded server's process group still runs that server."""
    return group_runs(known["pgid"], lambda cmdline: _is_server(cmdline, known["port"]))


def _is_server(cmdline: list[str], port: int) -> bool:
    return "mlflow" in " ".join(cmdline) and any(a == "--port" and b == str(port)
                                                 for a, b in zip(cmdline, cmdline[1:]))


def connect(name: str, home: Path | None = None) -> Environment:
    """The environment ``name`` started by ``mlops-lab env up`` (an error if it is not up)."""
    _check_name(name)
    known = _read_state(home).get(name)
    if not known or not http_ok(f"{known['url']}/health"):
        raise EnvError(f"{name} is not running; start it with `mlops-lab env up {name}`")
    from mlops_lab import config

    home_path = Path(home) if home else config.workspace()
    return Environment(name, known["url"], auth.stored(name, auth.ADMIN, home), Path(known["folder"]),
                       known["backend"], home_path)


def down(which: str | Iterable[str] = "all", home: Path | None = None, purge: bool = False) -> list[str]:
    """Stop environments started by :func:`up`; returns the names stopped.

    ``purge=True`` also deletes their folders (stores, users, artifacts) and stored passwords: the
    next ``up`` starts from nothing. A PostgreSQL database is left for its owner to drop.
    """
    import shutil

    state = _read_state(home)
    stopped = []
    for name in names(which):
        known = state.get(name)
        if known:
            if _alive(known):
                stop_group(known["pgid"], port=known["port"], name=f"mlflow-{name}")
            # else: gone already (or the group id now belongs to something else: never signal it)
            del state[name]
            _write_state(home, state)
            stopped.append(name)
        if purge:
            shutil.rmtree(root(home) / name, ignore_errors=True)
            auth.forget_environment(name, home)
    return stopped


def status(home: Path | None = None) -> list[dict[str, object]]:
    """One row per environment: running or not, URL, backend, folder."""
    state = _read_state(home)
    rows = []
    for name in ENVIRONMENTS:
        known = state.get(name)
        up_now = bool(known) and http_ok(f"{known['url']}/health")
        rows.append({"environment": name, "status": "up" if up_now else ("dead" if known else "down"),
                     "url": known["url"] if known else "", "backend": known["backend"] if known else "",
                     "since": known["started"] if known else ""})
    return rows
