"""The retraining workflow against an environment of lesson 09, signed in as the deployer bot.

The same Dagster job as :func:`mlops_lab.pipeline.definitions.run`, pointed at one environment's
authenticated MLflow server (``prod`` above all) instead of the workspace store. The run is made as
the deployer bot (:data:`mlops_lab.promotion.DEPLOYER`), the one identity the course's policy lets
write prod's experiments and registry (:mod:`mlops_lab.auth`); data scientists have no access to
prod, and their run is refused before anything is created::

    with environments.running("prod") as envs:
        summary = production.run_in(envs["prod"], "2011-01..02.parquet",
                                    settings=workflow.Settings(trials=1, window_months=2))

    mlops-lab pipeline run --env prod --batch 2011-03.parquet

What a fresh prod server needs, and who creates it:

* **The deployer bot's account**: created by the environment's admin on first use (or its password
  reset when it exists on the server but is not stored here: :func:`mlops_lab.delivery.account`).
* **The pipeline's experiment** (``retraining``): created by the admin, as the ``promotions``
  experiment is when a server starts. The bot has EDIT on prod's experiments: it writes runs into
  it but, not owning it, cannot delete prod's retraining history. Its artifact location is the
  server's (``mlflow-artifacts:``, served by ``mlflow server --artifacts-destination``), so model
  files land in ``<workspace>/environments/prod/artifacts``, never in the client's ``./mlruns``.
* **The registered model** (``bike-demand``): created by the bot in the run's first step (it has
  MANAGE on every registered model in prod; the decide step deletes the challenger alias, which
  takes MANAGE).

Before the run, the signed-in user's access is checked with reads only (who am I, the registered
model, the experiment): a 401 or 403 from the server becomes :class:`AccessDenied`, one line that
names the missing permission and what the user holds. A permission refused half-way (a role that
can read but not write) is turned into the same error, and a registered model the refused run had
just created (with no version) is deleted again.

The months a run accepts are kept beside the environment's server, not in the client's
workspace: ``<workspace>/environments/<env>/retraining/pipeline/data`` (and a rejected batch in
``.../retraining/quarantine``), so the ledger in prod's registry and prod's month store describe
the same data, and ``mlops-lab env down --purge`` removes both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mlops_lab import auth
from mlops_lab.auth import Credentials
from mlops_lab.pipeline import workflow

NEEDS = {"experiment": "EDIT", "registered_model": "MANAGE"}
"""What the pipeline's identity needs in the environment: runs and tags in its experiment (EDIT),
versions, tags and aliases on its registered model, including deleting the challenger alias (MANAGE)."""


class AccessDenied(auth.AuthError):
    """The signed-in user may not run the pipeline in that environment; nothing was changed."""


def deployer(environment) -> Credentials:
    """The deployer bot's working credentials in ``environment`` (created by its admin if needed)."""
    from mlops_lab import delivery, promotion

    return delivery.account(environment, promotion.DEPLOYER, "deployer")


def store_home(environment) -> Path:
    """The workspace a run in ``environment`` uses for its month store and quarantine:
    ``<workspace>/environments/<env>/retraining`` (beside the server's stores)."""
    return Path(environment.folder) / "retraining"


def _held(url: str, credentials: Credentials) -> str:
    """What the user holds, as the server lists it (``/users/current/permissions``), in a few words."""
    import requests

    try:
        listed = requests.get(f"{url}/api/3.0/mlflow/users/current/permissions", auth=credentials.pair,
                              timeout=30).json()
    except (requests.RequestException, ValueError):
        return "unknown"
    if listed.get("is_admin"):
        return "admin"
    rows = [r for r in listed.get("permissions", []) if r.get("resource_type") in NEEDS]
    if not rows:
        return "no permission on experiments or registered models"
    roles = sorted({r.get("role_name", "") for r in rows if not str(r.get("role_name", "")).startswith("__")})
    grants = ", ".join(sorted({f"{r['permission']} on {r['resource_type'].replace('_', ' ')}s "
                               f"{r['resource_pattern']!r}" for r in rows}))
    return grants + (f" (role {', '.join(roles)})" if roles else "")


def _refusal(environment, credentials: Credentials, status: int, what: str) -> AccessDenied:
    from mlops_lab import promotion

    needs = " and ".join(f"{level} on {kind.replace('_', ' ')}s" for kind, level in NEEDS.items())
    return AccessDenied(
        f"{environment.name} refused {credentials.username!r} ({status} Permission denied) {what}: the pipeline "
        f"needs {needs} in {environment.name}, which the deployer role has (sign in as {promotion.DEPLOYER!r}); "
        f"{credentials.username!r} holds {_held(environment.url, credentials)}. Nothing was changed.")


def check_access(environment, credentials: Credentials, settings: workflow.Settings) -> dict[str, bool]:
    """Reads only, as ``credentials``: may they use ``environment``'s registered model and experiment?

    Returns which of the two exist already (``{"model": ..., "experiment": ...}``); raises
    :class:`AccessDenied` for wrong credentials (401) or a refused read (403), and
    :class:`~mlops_lab.environments.EnvError` when the server does not answer.
    """
    import requests

    from mlops_lab import access, environments

    try:
        status = auth.whoami(environment.url, credentials)
        if status == 401:
            raise AccessDenied(f"{environment.name} refused the credentials of {credentials.username!r} (401): "
                               "wrong username or password. Nothing was changed.")
        model = access.request(environment.url, credentials, "GET", "registered-models/get", name=settings.model_name)
        if model.status_code in (401, 403):
            raise _refusal(environment, credentials, model.status_code,
                           f"reading the registered model {settings.model_name!r}")
        experiment = access.request(environment.url, credentials, "GET", "experiments/get-by-name",
                                    experiment_name=settings.experiment)
        if experiment.status_code in (401, 403):
            raise _refusal(environment, credentials, experiment.status_code,
                           f"reading the experiment {settings.experiment!r}")
    except requests.RequestException as exc:
        raise environments.EnvError(f"{environment.name} does not answer at {environment.url} "
                                    f"({type(exc).__name__})") from None
    for response, kind in ((model, "registered model"), (experiment, "experiment")):
        if response.status_code not in (200, 404):
            raise environments.EnvError(f"{environment.name} answered {response.status_code} for the {kind}: "
                                        f"{response.text[:200]}")
    return {"model": model.status_code == 200, "experiment": experiment.status_code == 200}


def ensure_experiment(environment, name: str) -> str:
    """The pipeline's experiment in ``environment``, created by its admin when missing (the bot
    writes runs into it but cannot delete it); its artifacts are served by the server."""
    import mlflow

    with environment.as_admin():
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else client.create_experiment(name)


def _is_refusal(exc: BaseException) -> bool:
    """A 401 or 403 from the server: MLflow's REST client raises MlflowException, its artifact client
    (uploads to ``mlflow-artifacts:``) a plain HTTPError."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED")
    response = getattr(exc, "response", None)
    return isinstance(exc, requests.HTTPError) and response is not None and response.status_code in (401, 403)


def _undo_model(name: str) -> None:
    """Delete ``name`` if it has no version (a refused run created it); the creator owns it."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        if not client.search_model_versions(f"name = '{name}'"):
            client.delete_registered_model(name)
    except Exception:  # noqa: BLE001 (best effort: the refusal is the error to report)
        pass


def run_in(environment, batch: str | Path | None, *, credentials: Credentials | None = None,
           settings: workflow.Settings | None = None, trigger: str = "manual", instance=None,
           log_level: str = "WARNING") -> dict[str, Any]:
    """Run the retraining workflow on ``batch`` against ``environment``'s server as ``credentials``.

    ``environment``: a running :class:`~mlops_lab.environments.Environment` (``prod``, usually);
    ``credentials``: who runs it, the deployer bot by default (its account is created by the admin
    when needed). The actor recorded with a promotion is the signed-in user. MLflow's tracking URI,
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` and the workspace (:func:`store_home`) are set for the
    run and restored after it. Returns the summary of :func:`~mlops_lab.pipeline.definitions.run`;
    raises :class:`AccessDenied` (nothing changed) when the server refuses the user.
    """
    from mlops_lab.config import HOME_ENV, environment_variables
    from mlops_lab.pipeline import definitions

    credentials = credentials or deployer(environment)
    settings = dataclasses.replace(settings or workflow.Settings(), actor=credentials.username)
    existed = check_access(environment, credentials, settings)
    if not existed["experiment"]:
        ensure_experiment(environment, settings.experiment)
    home = store_home(environment)
    home.mkdir(parents=True, exist_ok=True)
    with environment.signed_in(credentials), environment_variables({HOME_ENV: str(home)}):
        try:
            return definitions.run(batch, settings=settings, trigger=trigger, instance=instance, log_level=log_level)
        except Exception as exc:
            if not _is_refusal(exc):
                raise
            if not existed["model"]:
                _undo_model(settings.model_name)
            message = " ".join(str(getattr(exc, "message", exc)).split())[:200]
            raise AccessDenied(f"{environment.name} refused {credentials.username!r} during the run ({message}); "
                               f"the pipeline needs {NEEDS['experiment']} on experiments and {NEEDS['registered_model']} "
                               f"on registered models there; {credentials.username!r} holds "
                               f"{_held(environment.url, credentials)}. The registry was left as it was.") from None


def run_cli(env: str, batch: str | Path | None, *, settings: workflow.Settings, trigger: str = "manual",
            user: str | None = None) -> dict[str, Any]:
    """``mlops-lab pipeline run --env ENV [--user NAME]``: the environment that ``mlops-lab env up``
    left running (else started for the run and stopped after it), the deployer bot unless ``user``
    names another account with stored credentials; the run shows in the workspace's Dagster UI."""
    from mlops_lab import delivery
    from mlops_lab.pipeline import service

    with delivery.open_environments([env]) as envs, service.instance() as dagster_instance:
        environment = envs[env]
        credentials = environment.credentials(user) if user else None
        return run_in(environment, batch, credentials=credentials, settings=settings, trigger=trigger,
                      instance=dagster_instance)
