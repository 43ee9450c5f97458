"""Who can do what: users, roles and permissions on MLflow's basic-auth servers.

Each environment (dev, staging, prod; see :mod:`mlops_lab.environments`) runs its own
``mlflow server --app-name basic-auth`` with its own user store. This module puts the course's
access policy on those servers with MLflow's own auth API (``AuthServiceClient``): one MLflow role
per course role, holding a permission on every experiment and every registered model (``*``), and
one user per person or bot, assigned to a role.

    =============== ============== ============== ==============
    role            dev            staging        prod
    =============== ============== ============== ==============
    data_scientist  EDIT / EDIT    READ / none    none / none
    ml_engineer     MANAGE/MANAGE  EDIT / none    none / none
    deployer (bot)  READ / READ    EDIT / MANAGE  EDIT / MANAGE
    admin           everything (an MLflow admin user)
    =============== ============== ============== ==============

    (experiments / registered models; runs follow their experiment, versions and aliases their model)

Two MLflow 3.17 facts shape the mapping (checked on real servers, see ``tests/test_auth.py``):

* Without workspaces, any signed-in user may *create* a new experiment or registered model (and
  owns what they create) unless a ``DENY`` grant vetoes it. ``NO_PERMISSIONS`` (no grant at all)
  therefore does not keep a data scientist out of prod; the course maps "none" to ``DENY`` on every
  experiment and registered model, which refuses reads, writes and creation alike.
* ``READ`` refuses every change to existing experiments, runs, models, versions and aliases, but
  not the creation of a new, separate experiment or model, which its creator then owns (MANAGE).
  On a registry that would let someone claim a model name before the pipeline first uses it, so
  in staging and prod nobody but the deployer bot (and the admin) has any permission on registered
  models, and the pipeline's own experiment is created by the admin when the server starts.

The servers run with ``default_permission = NO_PERMISSIONS``: a user without a role sees nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

ENVIRONMENTS = ("dev", "staging", "prod")
LEVELS = ("NO_PERMISSIONS", "READ", "EDIT", "MANAGE")
RESOURCES = ("experiment", "registered_model")

#: role -> environment -> (experiments, registered models)
POLICY: dict[str, dict[str, tuple[str, str]]] = {
    "data_scientist": {"dev": ("EDIT", "EDIT"), "staging": ("READ", "NO_PERMISSIONS"),
                       "prod": ("NO_PERMISSIONS", "NO_PERMISSIONS")},
    "ml_engineer": {"dev": ("MANAGE", "MANAGE"), "staging": ("EDIT", "NO_PERMISSIONS"),
                    "prod": ("NO_PERMISSIONS", "NO_PERMISSIONS")},
    "deployer": {"dev": ("READ", "READ"), "staging": ("EDIT", "MANAGE"), "prod": ("EDIT", "MANAGE")},
}
ROLE_DESCRIPTIONS = {
    "data_scientist": "develops models in dev; reads staging; no access to prod",
    "ml_engineer": "owns dev, runs integration tests in staging; no access to prod",
    "deployer": "the CI/CD bot: reads dev, the only writer of the staging and prod registries",
    "admin": "manages users and permissions; can do everything",
}
ROLES = (*POLICY, "admin")
ADMIN = "admin"
_STORE_LOCK = threading.Lock()  # environments start side by side and each stores its admin


class AuthError(RuntimeError):
    """A user, role or permission request was refused or is invalid."""


@dataclass(frozen=True)
class Credentials:
    """A username and password for one environment's server."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print a password in a notebook or a log
        return f"Credentials(username={self.username!r}, password='***')"

    @property
    def pair(self) -> tuple[str, str]:
        """``(username, password)``, the ``auth=`` argument of :mod:`requests`."""
        return (self.username, self.password)


def new_password() -> str:
    """A random password (24 URL-safe characters)."""
    return secrets.token_urlsafe(18)


# -- the local credentials file ---------------------------------------------------------------
def credentials_path(home: Path | None = None) -> Path:
    """Where generated passwords are kept: ``<workspace>/environments/credentials.json`` (mode 600).

    The workspace is git-ignored; the file is readable by its owner only. It is never committed.
    """
    from mlops_lab import config

    return (home or config.workspace()) / "environments" / "credentials.json"


def _read_store(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AuthError(f"{path} is not valid JSON ({exc}); remove it and the environments' stores "
                        "(`mlops-lab env down --purge`) to start again") from exc


def _write_store(path: Path, store: dict) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")  # created with mode 600
    with os.fdopen(fd, "w") as handle:
        json.dump(store, handle, indent=2, sort_keys=True)
    os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time, across threads (the lock) and processes (flock on a lock file):
    a notebook and ``mlops-lab env`` may store a password at the same moment."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with _STORE_LOCK, open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remember(env: str, credentials: Credentials, home: Path | None = None) -> Path:
    """Store ``credentials`` for ``env`` in the local credentials file; returns its path."""
    path = credentials_path(home)
    with _locked(path):
        store = _read_store(path)
        store.setdefault(env, {})[credentials.username] = credentials.password
        _write_store(path, store)
    return path


def forget(env: str, username: str, home: Path | None = None) -> None:
    """Remove a stored password (after the user was deleted)."""
    path = credentials_path(home)
    with _locked(path):
        store = _read_store(path)
        if store.get(env, {}).pop(username, None) is not None:
            _write_store(path, store)


def forget_environment(env: str, home: Path | None = None) -> None:
    """Remove every stored password of ``env`` (its user store was deleted)."""
    path = credentials_path(home)
    with _locked(path):
        store = _read_store(path)
        if store.pop(env, None) is not None:
            _write_store(path, store)


def stored(env: str, username: str, home: Path | None = None) -> Credentials:
    """The stored credentials of ``username`` in ``env``."""
    path = credentials_path(home)
    password = _read_store(path).get(env, {}).get(username)
    if password is None:
        raise AuthError(f"No stored password for {username!r} in {env}; known users: "
                        f"{sorted(_read_store(path).get(env, {})) or 'none'} ({path})")
    return Credentials(username, password)


# -- talking to a server ------------------------------------------------------------------------
@contextlib.contextmanager
def signed_in(credentials: Credentials | None, tracking_uri: str | None = None) -> Iterator[None]:
    """Make MLflow's client (and helpers built on it) act as ``credentials`` on ``tracking_uri``.

    MLflow reads ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` from the environment;
    this sets them (and the tracking URI) for the block and restores what was there before.
    ``credentials=None`` signs out (anonymous requests).
    """
    import mlflow

    from mlops_lab.config import environment_variables

    values: dict[str, str | None] = {
        "MLFLOW_TRACKING_USERNAME": credentials.username if credentials else None,
        "MLFLOW_TRACKING_PASSWORD": credentials.password if credentials else None,
    }
    if tracking_uri:
        values["MLFLOW_TRACKING_URI"] = tracking_uri
    saved_uri = mlflow.get_tracking_uri() if tracking_uri else None
    with environment_variables(values):
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            yield
        finally:
            if saved_uri:
                mlflow.set_tracking_uri(saved_uri)


def client(url: str, admin: Credentials):
    """MLflow's ``AuthServiceClient`` for the server at ``url``, acting as ``admin``.

    MLflow's own client reads the credentials from environment variables; this one carries them,
    so several servers (and threads) can be administered side by side.
    """
    import warnings

    with warnings.catch_warnings():  # importing mlflow.server warns about Starlette internals
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    class _Client(AuthServiceClient):
        def _request(self, endpoint, method, *, expected_status: int = 200, **kwargs):
            creds = MlflowHostCreds(url, username=admin.username, password=admin.password)
            resp = verify_rest_response(http_request(creds, endpoint, method, **kwargs), endpoint,
                                        expected_status=expected_status)
            return {} if resp.status_code == 204 or not resp.content else resp.json()

    return _Client(url)


def _call(url: str, admin: Credentials, fn, *args, **kwargs):
    from mlflow.exceptions import MlflowException

    try:
        return fn(client(url, admin), *args, **kwargs)
    except MlflowException as exc:
        raise AuthError(f"{fn.__name__.strip('_')} refused by {url}: {exc.message}") from exc


def _named(name: str, fn):
    """``fn`` called ``name`` in :func:`_call`'s error messages (a lambda's name says nothing)."""
    fn.__name__ = name
    return fn


def _role_name(role: str) -> str:
    return role.replace("_", "-")


def _level_to_mlflow(level: str) -> str:
    if level not in LEVELS:
        raise AuthError(f"Unknown permission level {level!r}; use one of {LEVELS}")
    return "DENY" if level == "NO_PERMISSIONS" else level


def apply_policy(env: str, url: str, admin: Credentials) -> dict[str, int]:
    """Create (or bring up to date) the course's roles on ``env``'s server; returns role ids.

    Idempotent: a role that exists keeps its id and gets exactly the permissions of :data:`POLICY`.
    """
    if env not in ENVIRONMENTS:
        raise AuthError(f"Unknown environment {env!r}; use one of {ENVIRONMENTS}")

    def run(c):
        existing = {r.name: r for r in c.list_roles("default")}
        ids = {}
        for role, per_env in POLICY.items():
            name = _role_name(role)
            found = existing.get(name) or c.create_role("default", name, ROLE_DESCRIPTIONS[role])
            ids[role] = found.id
            have = {(p.resource_type, p.resource_pattern): p for p in c.list_role_permissions(found.id)}
            grants = list(zip(RESOURCES, per_env[env]))
            if per_env[env][1] == "NO_PERMISSIONS":
                # a prompt is a registered model with a tag, checked as its own type on creation:
                # without this, "none" could still create (and own) a prompt under a model's name
                grants.append(("prompt", "NO_PERMISSIONS"))
            for resource, level in grants:
                want = _level_to_mlflow(level)
                current = have.get((resource, "*"))
                if current is None:
                    c.add_role_permission(found.id, resource, "*", want)
                elif current.permission != want:
                    c.update_role_permission(current.id, want)
        return ids

    run.__name__ = "apply_policy"
    return _call(url, admin, run)


def create_user(env: str, url: str, admin: Credentials, username: str, role: str,
                password: str | None = None, home: Path | None = None) -> Credentials:
    """Create ``username`` on ``env``'s server with ``role`` and remember the password locally.

    ``role`` is one of :data:`ROLES`; ``admin`` makes an MLflow admin. The password is generated
    when not given. Raises :class:`AuthError` if the user exists or the role is unknown.
    """
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; use one of {ROLES}")
    password = password or new_password()

    def run(c):
        c.create_user(username, password)
        if role == ADMIN:
            c.update_user_admin(username, True)
        else:
            ids = {r.name: r.id for r in c.list_roles("default")}
            if _role_name(role) not in ids:
                raise AuthError(f"{env} has no role {role!r}: apply the policy first (apply_policy)")
            c.assign_role(username, ids[_role_name(role)])

    run.__name__ = "create_user"
    _call(url, admin, run)
    creds = Credentials(username, password)
    remember(env, creds, home)
    return creds


def delete_user(env: str, url: str, admin: Credentials, username: str, home: Path | None = None) -> None:
    """Delete ``username`` from ``env``'s server and forget its stored password."""
    _call(url, admin, _named("delete_user", lambda c: c.delete_user(username)))
    forget(env, username, home)


def roles_of(url: str, admin: Credentials, username: str) -> list[str]:
    """The course roles of ``username`` (``admin`` for an MLflow admin)."""
    def run(c):
        user = c.get_user(username)
        names = [r.name.replace("-", "_") for r in c.list_user_roles(username)]
        return ([ADMIN] if user.is_admin else []) + names

    run.__name__ = "roles_of"
    return _call(url, admin, run)


def grant(url: str, admin: Credentials, username: str, resource_type: str, resource_id: str,
          level: str) -> None:
    """Give ``username`` ``level`` on one experiment (by id) or registered model (by name)."""
    if resource_type not in RESOURCES:
        raise AuthError(f"Unknown resource type {resource_type!r}; use one of {RESOURCES}")
    mlflow_level = _level_to_mlflow(level)
    _call(url, admin, _named("grant", lambda c: c.grant_user_permission(
        username, resource_type, str(resource_id), mlflow_level)))


def revoke(url: str, admin: Credentials, username: str, resource_type: str, resource_id: str) -> None:
    """Remove what :func:`grant` gave ``username`` on that resource."""
    _call(url, admin, _named("revoke", lambda c: c.revoke_user_permission(
        username, resource_type, str(resource_id))))


def permission(url: str, admin: Credentials, username: str, resource_type: str, resource_id: str) -> str:
    """The permission ``username`` has on one resource, as MLflow resolves it (roles included)."""
    result = _call(url, admin, _named("permission", lambda c: c.get_user_permission(
        username, resource_type, str(resource_id))))
    return getattr(result, "permission", None) or str(result)


def whoami(url: str, credentials: Credentials | None) -> int:
    """The HTTP status a signed-in request gets on ``url``: 200, or 401 for bad credentials."""
    response = requests.get(f"{url}/api/2.0/mlflow/users/current",
                            auth=credentials.pair if credentials else None, timeout=60)
    return response.status_code


# -- what the policy says --------------------------------------------------------------------------
def level(role: str, env: str, resource: str) -> str:
    """The policy's level for ``role`` in ``env`` on ``experiment`` or ``registered_model``."""
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; use one of {ROLES}")
    if env not in ENVIRONMENTS:
        raise AuthError(f"Unknown environment {env!r}; use one of {ENVIRONMENTS}")
    if resource not in RESOURCES:
        raise AuthError(f"Unknown resource type {resource!r}; use one of {RESOURCES}")
    if role == ADMIN:
        return "MANAGE"
    return POLICY[role][env][RESOURCES.index(resource)]


def policy_table():
    """The policy as a table: one row per role, one column per environment."""
    import pandas as pd

    rows = {}
    for role in ROLES:
        rows[role] = {env: ("admin" if role == ADMIN else " / ".join(
            "none" if lv == "NO_PERMISSIONS" else lv for lv in POLICY[role][env])) for env in ENVIRONMENTS}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "role (experiments / models)"
    return table
