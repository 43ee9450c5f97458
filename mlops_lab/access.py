"""The permission matrix: what each role may do in each environment, asked of the real servers.

Twenty operations (read, create, update, delete on experiments, runs, registered models, model
versions and aliases) are sent over MLflow's REST API as a given user; each answers 200 (done),
401 (who are you?) or 403 (not allowed). :func:`expected` says what the course's policy
(:data:`mlops_lab.auth.POLICY`) promises; :func:`probe` measures what the server does.

    table = access.matrix(envs, users)      # one row per role and environment
    assert (table["observed"] == table["expected"]).all()

Every write is made on objects created for the purpose by the admin (a ``matrix-*`` experiment and
registered model), so probing changes nothing a lesson relies on.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import requests

from mlops_lab import auth
from mlops_lab.auth import Credentials

RESOURCES = ("experiment", "run", "registered_model", "model_version", "alias")
ACTIONS = ("read", "create", "update", "delete")
OPERATIONS = tuple(itertools.product(RESOURCES, ACTIONS))
# which policy resource governs each resource, and which capability each action needs
_GOVERNED_BY = {"experiment": "experiment", "run": "experiment", "registered_model": "registered_model",
                "model_version": "registered_model", "alias": "registered_model"}
_CAPABILITY = {"read": ("READ", "EDIT", "MANAGE"), "update": ("EDIT", "MANAGE"), "delete": ("MANAGE",)}
ANONYMOUS = "anonymous"


def expected(role: str, env: str, resource: str, action: str) -> int:
    """The status the policy promises ``role`` for ``action`` on ``resource`` in ``env``.

    Creating a new experiment or registered model needs only the absence of a veto (MLflow lets any
    signed-in user create one and own it), so READ may create one; "none" (a DENY) may not.
    Creating a run or a version writes into an existing experiment or model: that needs EDIT.
    """
    if resource not in RESOURCES or action not in ACTIONS:
        raise auth.AuthError(f"Unknown operation ({resource!r}, {action!r}); resources: {RESOURCES}, "
                             f"actions: {ACTIONS}")
    if role == ANONYMOUS:
        if env not in auth.ENVIRONMENTS:
            raise auth.AuthError(f"Unknown environment {env!r}; use one of {auth.ENVIRONMENTS}")
        return 401
    level = auth.level(role, env, _GOVERNED_BY[resource])
    if action == "create":
        if resource in ("experiment", "registered_model"):
            return 200 if level != "NO_PERMISSIONS" else 403
        action = "update"
    return 200 if level in _CAPABILITY[action] else 403


def request(url: str, who: Credentials | None, method: str, path: str, **payload) -> requests.Response:
    """One call of MLflow's REST API (``path`` after ``/api/2.0/mlflow/``) as ``who`` (None: anonymous)."""
    body = {"params": payload} if method == "GET" else {"json": payload}
    return requests.request(method, f"{url}/api/2.0/mlflow/{path}", auth=who.pair if who else None,
                            timeout=60, **body)


@dataclass
class _Scene:
    """What the admin prepares in one environment before the probes."""

    url: str
    admin: Credentials
    experiment_id: str = ""
    run_id: str = ""
    model: str = ""

    def call(self, method: str, path: str, who: Credentials | None, **kwargs) -> requests.Response:
        return request(self.url, who, method, path, **kwargs)

    def admin_call(self, method: str, path: str, **kwargs) -> dict:
        response = self.call(method, path, self.admin, **kwargs)
        if response.status_code != 200:
            raise auth.AuthError(f"admin could not {method} {path}: {response.status_code} "
                                 f"{response.text[:200]}")
        return response.json()

    def prepare(self) -> "_Scene":
        tag = uuid.uuid4().hex[:8]
        self.experiment_id = self.admin_call("POST", "experiments/create",
                                             name=f"matrix-{tag}")["experiment_id"]
        self.run_id = self.new_run()
        self.model = f"matrix-{tag}"
        self.admin_call("POST", "registered-models/create", name=self.model)
        version = self.new_version()
        self.admin_call("POST", "registered-models/alias", name=self.model, alias="champion", version=version)
        return self

    def new_run(self) -> str:
        return self.admin_call("POST", "runs/create", experiment_id=self.experiment_id)["run"]["info"]["run_id"]

    def new_version(self) -> str:
        return self.admin_call("POST", "model-versions/create", name=self.model, source=self._source(),
                               run_id=self.run_id)["model_version"]["version"]

    def _source(self) -> str:
        return f"runs:/{self.run_id}/model"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _operation(scene: _Scene, resource: str, action: str) -> Callable[[Credentials | None], requests.Response]:
    """The request for one operation; objects it deletes are created by the admin first."""
    s = scene
    if resource == "experiment":
        if action == "read":
            return lambda who: s.call("GET", "experiments/get", who, experiment_id=s.experiment_id)
        if action == "create":
            return lambda who: s.call("POST", "experiments/create", who, name=_unique("probe"))
        if action == "update":
            return lambda who: s.call("POST", "experiments/set-experiment-tag", who,
                                      experiment_id=s.experiment_id, key="probe", value="1")
        victim = s.admin_call("POST", "experiments/create", name=_unique("victim"))["experiment_id"]
        return lambda who: s.call("POST", "experiments/delete", who, experiment_id=victim)
    if resource == "run":
        if action == "read":
            return lambda who: s.call("GET", "runs/get", who, run_id=s.run_id)
        if action == "create":
            return lambda who: s.call("POST", "runs/create", who, experiment_id=s.experiment_id)
        if action == "update":
            return lambda who: s.call("POST", "runs/log-metric", who, run_id=s.run_id, key="probe",
                                      value=1.0, timestamp=0, step=0)
        victim = s.new_run()
        return lambda who: s.call("POST", "runs/delete", who, run_id=victim)
    if resource == "registered_model":
        if action == "read":
            return lambda who: s.call("GET", "registered-models/get", who, name=s.model)
        if action == "create":
            return lambda who: s.call("POST", "registered-models/create", who, name=_unique("probe"))
        if action == "update":
            return lambda who: s.call("PATCH", "registered-models/update", who, name=s.model,
                                      description="probe")
        victim = _unique("victim")
        s.admin_call("POST", "registered-models/create", name=victim)
        return lambda who: s.call("DELETE", "registered-models/delete", who, name=victim)
    if resource == "model_version":
        if action == "read":
            return lambda who: s.call("GET", "model-versions/get", who, name=s.model, version="1")
        if action == "create":
            return lambda who: s.call("POST", "model-versions/create", who, name=s.model,
                                      source=s._source(), run_id=s.run_id)
        if action == "update":
            return lambda who: s.call("PATCH", "model-versions/update", who, name=s.model, version="1",
                                      description="probe")
        victim = s.new_version()
        return lambda who: s.call("DELETE", "model-versions/delete", who, name=s.model, version=victim)
    # aliases
    if action == "read":
        return lambda who: s.call("GET", "registered-models/alias", who, name=s.model, alias="champion")
    if action == "create":
        return lambda who: s.call("POST", "registered-models/alias", who, name=s.model,
                                  alias=_unique("a").replace("-", "_"), version="1")
    if action == "update":
        return lambda who: s.call("POST", "registered-models/alias", who, name=s.model, alias="champion",
                                  version="1")
    victim = _unique("v").replace("-", "_")
    s.admin_call("POST", "registered-models/alias", name=s.model, alias=victim, version="1")
    return lambda who: s.call("DELETE", "registered-models/alias", who, name=s.model, alias=victim)


def probe(url: str, admin: Credentials, who: Credentials | None,
          operations=OPERATIONS) -> dict[tuple[str, str], int]:
    """The status of each operation sent as ``who`` (``None``: anonymous) to the server at ``url``."""
    scene = _Scene(url, admin).prepare()
    return {(resource, action): _operation(scene, resource, action)(who).status_code
            for resource, action in operations}


def matrix(envs, users: dict[str, dict[str, Credentials]], roles=None, operations=OPERATIONS):
    """Probe every role in every environment; a table with ``expected`` and ``observed`` statuses.

    ``envs``: environment name -> running :class:`~mlops_lab.environments.Environment`.
    ``users``: environment name -> role -> the credentials of a user with that role (``anonymous``
    is added, with no credentials).
    """
    import pandas as pd

    rows = []
    for env_name, environment in envs.items():
        by_role = {**users[env_name], ANONYMOUS: None}
        for role in roles or by_role:
            observed = probe(environment.url, environment.admin, by_role[role], operations)
            for (resource, action), status in observed.items():
                rows.append({"environment": env_name, "role": role, "resource": resource,
                             "action": action, "expected": expected(role, env_name, resource, action),
                             "observed": status})
    return pd.DataFrame(rows)


def grid(table, value: str = "observed"):
    """A matrix table pivoted for reading: roles by rows, (resource, action) by columns."""
    return table.pivot_table(index=["environment", "role"], columns=["resource", "action"],
                             values=value, aggfunc="first")
