"""The model registry, safely: load by alias, promote and roll back with a history.

MLflow 3 deprecates stages; a registry is organised with **aliases** (``champion``,
``challenger``) and **tags**. These helpers add what a team needs on top:

* :func:`promote` moves an alias only to a version that the validation gate passed (its
  ``validation_run`` says so, for this very model), that is not archived and whose model actually
  loads; it records who, when and why before it moves the alias, and is idempotent;
* :func:`rollback` moves the alias back to the version that held it before (one call; pass
  ``from_version`` to make retries safe);
* :func:`history` reads the record back as a table;
* :func:`version_for` / :func:`load` resolve aliases with errors that list what exists.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone

import pandas as pd

CHAMPION = "champion"
HISTORY_LIMIT = 200  # events kept per alias, as JSON in one registered-model tag (MLflow allows 100,000 characters)
REASON_LIMIT = 500


class RegistryError(RuntimeError):
    """The registry cannot do what was asked: unknown name or alias, unvalidated or broken version."""


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _model(name: str):
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in _client().search_registered_models())
        raise RegistryError(f"No registered model {name!r}; registered models: {names or 'none'}") from None


def version_for(name: str, alias: str):
    """The ``ModelVersion`` an alias points to; a clear error for an unknown model or alias."""
    model = _model(name)
    if alias not in model.aliases:
        raise RegistryError(f"Model {name!r} has no alias {alias!r}; aliases: {dict(model.aliases) or 'none'}")
    return _client().get_model_version(name, model.aliases[alias])


def load(name: str, alias: str = CHAMPION):
    """Load ``models:/<name>@<alias>`` as a pyfunc model, after checking the alias exists."""
    import mlflow

    version = version_for(name, alias)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")


def check_promotable(name: str, version: str | int) -> None:
    """Raise :class:`RegistryError` unless the version may hold a serving alias.

    It must carry ``validation_status=passed`` *and* point (``validation_run``) to a validation run
    that passed this same model (a hand-set tag is not enough), must not be archived, and its model
    must load.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = _client().get_model_version(name, str(version))
    except MlflowException:
        _model(name)
        raise RegistryError(f"Model {name!r} has no version {version}") from None
    status = mv.tags.get("validation_status", "missing")
    if status != "passed":
        raise RegistryError(f"{name} version {version} has validation_status={status!r}; only 'passed' "
                            "versions may be promoted (run the validation gate first)")
    if mv.tags.get("archived") == "true":
        raise RegistryError(f"{name} version {version} is archived and cannot be promoted")
    run_id = mv.tags.get("validation_run")
    try:
        run = mlflow.get_run(run_id) if run_id else None
    except MlflowException:
        run = None
    if run is None or run.data.tags.get("validation_status") != "passed":
        raise RegistryError(f"{name} version {version} has no passing validation run on record "
                            f"(validation_run={run_id!r}); its 'passed' tag cannot be trusted")
    if run.data.tags.get("candidate_model") not in (None, mv.source):
        raise RegistryError(f"{name} version {version}: validation run {run_id} validated "
                            f"{run.data.tags.get('candidate_model')}, not this version's model {mv.source}")
    try:
        mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except Exception as exc:  # a broken or missing artifact must never be promoted
        raise RegistryError(f"{name} version {version} cannot be loaded ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); it was not promoted") from exc


def _events(name: str, alias: str) -> list[dict]:
    raw = _model(name).tags.get(f"history.{alias}")
    return json.loads(raw) if raw else []


def _record(name: str, alias: str, event: dict) -> None:
    events = (_events(name, alias) + [event])[-HISTORY_LIMIT:]
    _client().set_registered_model_tag(name, f"history.{alias}", json.dumps(events))


def _check_reason(reason: str, what: str) -> None:
    if not reason or not reason.strip():
        raise RegistryError(f"A {what} needs a reason (it goes into the audit history)")
    if len(reason) > REASON_LIMIT:
        raise RegistryError(f"The reason is {len(reason)} characters long; keep it under {REASON_LIMIT}")


def promote(name: str, version: str | int, *, alias: str = CHAMPION, reason: str, actor: str | None = None):
    """Point ``alias`` at ``version`` if it passed validation and loads; record who, when and why.

    The record is written before the alias moves, so a failure leaves the alias where it was.
    Promoting the version that already holds the alias changes nothing (idempotent). Returns the
    ``ModelVersion`` now holding the alias.
    """
    _check_reason(reason, "promotion")
    version = str(version)
    model = _model(name)
    current = model.aliases.get(alias)
    if current is not None and str(current) == version:
        return _client().get_model_version(name, version)
    check_promotable(name, version)
    client = _client()
    actor = actor or getpass.getuser()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    client.set_model_version_tag(name, version, f"{alias}.promoted_at", now)
    client.set_model_version_tag(name, version, f"{alias}.promoted_by", actor)
    client.set_model_version_tag(name, version, f"{alias}.reason", reason)
    if current is not None:
        client.set_model_version_tag(name, version, f"{alias}.previous", str(current))
    _record(name, alias, {"at": now, "action": "promote", "from": None if current is None else str(current), "to": version,
                          "by": actor, "reason": reason})
    client.set_registered_model_alias(name, alias, version)  # last: only a recorded move happens
    return client.get_model_version(name, version)


def rollback(name: str, *, alias: str = CHAMPION, reason: str, actor: str | None = None,
             from_version: str | int | None = None, to_version: str | int | None = None):
    """Move ``alias`` back to the version that held it before the current one (or to ``to_version``).

    Idempotent when told what to undo: with ``from_version`` (the bad version) a retry after the
    alias already left it changes nothing; with ``to_version`` a retry finds the alias already
    there. Without either, each call steps one promotion back. The target must pass
    :func:`check_promotable`. Returns the version holding the alias afterwards.
    """
    _check_reason(reason, "rollback")
    current = version_for(name, alias)
    if from_version is not None and str(current.version) != str(from_version):
        return current
    target = str(to_version) if to_version is not None else current.tags.get(f"{alias}.previous")
    if target is None:
        raise RegistryError(f"{name}@{alias} (version {current.version}) has no previous version to roll back to")
    if target == str(current.version):
        return current
    check_promotable(name, target)
    client = _client()
    actor = actor or getpass.getuser()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(current.version), f"{alias}.rolled_back_at", now)
    client.set_model_version_tag(name, target, f"{alias}.restored_at", now)
    client.set_model_version_tag(name, target, f"{alias}.restored_by", actor)
    client.set_model_version_tag(name, target, f"{alias}.restore_reason", reason)
    _record(name, alias, {"at": now, "action": "rollback", "from": str(current.version), "to": target,
                          "by": actor, "reason": reason})
    client.set_registered_model_alias(name, alias, target)  # last: only a recorded move happens
    return client.get_model_version(name, target)


def history(name: str, alias: str = CHAMPION) -> pd.DataFrame:
    """Every promotion and rollback of ``alias`` (most recent last): when, what, from, to, who, why."""
    events = _events(name, alias)
    table = pd.DataFrame(events, columns=["at", "action", "from", "to", "by", "reason"]).astype(object)
    return table.where(table.notna(), None)


def archive(name: str, version: str | int, *, reason: str) -> None:
    """Mark a version archived (tag ``archived``) and drop its aliases (recorded in their history).

    The champion cannot be archived; an archived version cannot be promoted.
    """
    version = str(version)
    model = _model(name)
    holding = [a for a, v in model.aliases.items() if str(v) == version]
    if CHAMPION in holding:
        raise RegistryError(f"{name} version {version} is the champion: promote another version first")
    client = _client()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for alias in holding:
        _record(name, alias, {"at": now, "action": "archive", "from": version, "to": None,
                              "by": getpass.getuser(), "reason": reason})
        client.delete_registered_model_alias(name, alias)
    client.set_model_version_tag(name, version, "archived", "true")
    client.set_model_version_tag(name, version, "archived_reason", reason)
