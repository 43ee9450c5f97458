"""Checks for ``labs/09_authentication.ipynb``: sign in, create a user, grant and revoke, prove it.

Every check asks the running server itself (as the admin, or as the student's new user), so a
variable that merely holds the right number does not pass.
"""

from __future__ import annotations

from mlops_lab.grading import Lab

ENVIRONMENT = "staging"
EXPERIMENT = "lab-09-team"
USERNAME = "lab-analyst"

LAB = Lab("09_authentication", "Authentication: sign in, create a user, grant and revoke a permission")


def _env(ns: dict):
    from mlops_lab.environments import Environment

    env = ns.get("env")
    assert isinstance(env, Environment), "there is no variable `env` (the environment started at the top)"
    return env


def _status(env, who, method: str, path: str, **payload) -> int:
    from mlops_lab import access

    return access.request(env.url, who, method, path, **payload).status_code


def _analyst(ns: dict):
    from mlops_lab.auth import Credentials

    analyst = ns.get("analyst")
    assert isinstance(analyst, Credentials), "there is no variable `analyst` holding the new user's Credentials"
    assert analyst.username == USERNAME, f"the new user is {analyst.username!r}, not {USERNAME!r}"
    return analyst


def _read(env, who, experiment_id) -> int:
    return _status(env, who, "GET", "experiments/get", experiment_id=experiment_id)


def _write(env, who, experiment_id) -> int:
    return _status(env, who, "POST", "experiments/set-experiment-tag", experiment_id=experiment_id,
                   key="checked_by", value="grader")


@LAB.check(
    "signed_in",
    hint="Inside `with env.signed_in(env.admin):` call `mlflow.MlflowClient().create_experiment(checks.EXPERIMENT)` "
    "and keep the id in `experiment_id`.",
)
def signed_in(ns: dict) -> None:
    from mlops_lab import access

    env = _env(ns)
    assert env.healthy, "the environment's server is not running (did you stop it early?)"
    experiment_id = ns.get("experiment_id")
    assert experiment_id, "there is no variable `experiment_id`"
    response = access.request(env.url, env.admin, "GET", "experiments/get", experiment_id=str(experiment_id))
    assert response.status_code == 200, f"the server has no experiment {experiment_id!r}"
    name = response.json()["experiment"]["name"]
    assert name == EXPERIMENT, f"experiment {experiment_id} is named {name!r}, not {EXPERIMENT!r}"
    assert _read(env, None, str(experiment_id)) == 401, "an anonymous request should get 401"


@LAB.check(
    "user_created",
    hint="`analyst = auth.Credentials(checks.USERNAME, auth.new_password())`, then "
    "`auth.client(env.url, env.admin).create_user(analyst.username, analyst.password)` (no role: "
    "a new user starts with no permissions).",
)
def user_created(ns: dict) -> None:
    from mlops_lab import auth

    env, analyst = _env(ns), _analyst(ns)
    assert auth.whoami(env.url, analyst) == 200, "the server does not accept the `analyst` credentials"
    assert auth.ADMIN not in auth.roles_of(env.url, env.admin, analyst.username), "the new user must not be an admin"
    assert ns.get("before_status") == 403, ("`before_status` should hold the 403 the analyst got reading the "
                                            "experiment before any grant")


@LAB.check(
    "permission_granted",
    hint="`auth.grant(env.url, env.admin, analyst.username, \"experiment\", experiment_id, \"READ\")`; then, as "
    "the analyst, read the experiment (`read_status`, 200) and try to tag it (`write_status`, 403).",
)
def permission_granted(ns: dict) -> None:
    env, analyst = _env(ns), _analyst(ns)
    experiment_id = str(ns.get("experiment_id"))
    assert _read(env, analyst, experiment_id) == 200, "the analyst still cannot read the experiment: grant READ"
    assert _write(env, analyst, experiment_id) == 403, "the analyst may change the experiment: grant READ, not more"
    assert (ns.get("read_status"), ns.get("write_status")) == (200, 403), (
        f"`read_status`, `write_status` are {ns.get('read_status')}, {ns.get('write_status')}; the server "
        "answers 200 and 403")


@LAB.check(
    "permission_revoked",
    hint="`auth.revoke(env.url, env.admin, analyst.username, \"experiment\", experiment_id)`, then read it "
    "again as the analyst into `after_revoke_status`.",
)
def permission_revoked(ns: dict) -> None:
    env, analyst = _env(ns), _analyst(ns)
    assert _read(env, analyst, str(ns.get("experiment_id"))) == 403, "the analyst can still read the experiment"
    assert ns.get("after_revoke_status") == 403, "`after_revoke_status` should hold the 403 the server answered"


@LAB.check(
    "stopped",
    hint="`env.stop()` stops the server and all its workers.",
)
def stopped(ns: dict) -> None:
    from mlops_lab.processes import port_in_use

    env = _env(ns)
    assert env.server is not None and not env.server.running, "the server is still running"
    assert not port_in_use(int(env.url.rsplit(":", 1)[1])), "the server's port is still bound"
