"""Move a validated model version from one environment's registry to the next: dev -> staging -> prod.

Each environment has its own server, store and artifacts, so a promotion *copies* the version: its
files (checked byte for byte after the copy), its signature (inside the copied MLmodel file), its
description and its tags, plus lineage tags saying where it came from. It is done as the deployer
bot, the only identity allowed to write the staging and prod registries (:mod:`mlops_lab.auth`).

    result = promotion.promote("credit-risk", "1", envs["dev"], envs["staging"])
    result = promotion.promote("credit-risk", result.version, envs["staging"], envs["prod"])
    promotion.decide_champion("credit-risk", envs["prod"], X_holdout, y_holdout)

The copy is all-or-nothing. The target's run and version are tagged ``promotion.state=copying``
until every step (upload, registration, byte check, load check) is done; then they are marked
``complete`` and, last, the version gets the ``challenger`` alias. If a step fails, the new
version is deleted again and its run marked ``failed`` (runs stay: they are the audit trail). If
the target dies half-way and cannot even be cleaned up, nothing it left carries an alias, and the
next promotion to it removes the leftovers first (:func:`clean_incomplete`). The prod
``champion`` alias is only ever moved by :func:`decide_champion`, after comparing challenger and
champion on held-out data.

What is trusted: the source's validation record (``registry.check_promotable``: a ``passed`` tag
pointing to a validation run that passed this very model) and, from staging on, the sha256 of the
files recorded when the version arrived (a copy whose files changed since is refused). The record
is as trustworthy as the source environment's permissions: in dev a data scientist may write runs
and tags, so a pipeline that cannot trust its developers re-runs the gate as its own identity.
Run one promotion at a time per model and target.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mlops_lab import registry
from mlops_lab.auth import Credentials
from mlops_lab.environments import PIPELINE_EXPERIMENT

DEPLOYER = "deploy-bot"
EXPERIMENT = PIPELINE_EXPERIMENT
CHALLENGER = "challenger"
STATE = "promotion.state"
LINEAGE = ("lineage.source_env", "lineage.source_url", "lineage.source_model", "lineage.source_version",
           "lineage.source_run", "lineage.validation_status", "lineage.validation_run",
           "lineage.promoted_by", "lineage.promoted_at", "lineage.sha256")
STEPS = ("checked", "downloaded", "run_created", "uploaded", "registered", "verified", "completed",
         "aliased")


class PromotionError(RuntimeError):
    """The promotion was refused or failed; nothing half-copied was left behind (see the message)."""


@dataclass
class PromotionResult:
    name: str
    source_env: str
    source_version: str
    target_env: str
    version: str
    run_id: str
    sha256: str


def _fail_fast():
    """MLflow's client retries a dead server for minutes by default; a promotion gives up sooner
    (and cleans up) so a pipeline learns within seconds that a target is down."""
    from mlops_lab.config import environment_variables

    return environment_variables({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"})


# MLflow writes this file into a downloaded registry model (its name and version in *that*
# registry); it is not part of the model and is neither copied nor compared.
REGISTRY_META = "registered_model_meta"


def _manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file of the model under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != REGISTRY_META}


def _digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(manifest.items())).encode()).hexdigest()


def _deployer(environment, deployer: str | Credentials) -> Credentials:
    return deployer if isinstance(deployer, Credentials) else environment.credentials(deployer)


def clean_incomplete(name: str, target, deployer: str | Credentials = DEPLOYER) -> list[str]:
    """Delete versions of ``name`` in ``target`` left ``promotion.state=copying`` (and their runs).

    A version with an alias is never touched. Returns the versions deleted.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    removed = []
    with target.signed_in(_deployer(target, deployer)):
        client = mlflow.MlflowClient()
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            aliased = {str(v) for v in client.get_registered_model(name).aliases.values()}
        except MlflowException:
            versions, aliased = [], set()
        for mv in versions:  # (search results do not carry aliases: ask the model)
            if mv.tags.get(STATE) == "copying" and str(mv.version) not in aliased:
                client.delete_model_version(name, mv.version)
                removed.append(str(mv.version))
        # the runs of interrupted promotions stay, marked, in the audit trail
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            query = f"tags.`{STATE}` = 'copying' and tags.`lineage.source_model` = '{name}'"
            for run in client.search_runs([experiment.experiment_id], query):
                client.set_tag(run.info.run_id, STATE, "abandoned")
                client.set_terminated(run.info.run_id, "FAILED")
    return removed


def promote(name: str, version: str | int, source, target, *, deployer: str | Credentials = DEPLOYER,
            on_step: Callable[[str], None] | None = None) -> PromotionResult:
    """Copy version ``version`` of ``name`` from ``source`` to ``target`` and make it the challenger.

    ``source`` and ``target`` are running :class:`~mlops_lab.environments.Environment` objects;
    ``deployer`` is the deploying identity (a username with stored credentials in both, or
    credentials). Refused (:class:`PromotionError`) unless the source version passed validation
    (``registry.check_promotable`` in the source). ``on_step`` is called with each step's name as
    it completes (for progress, or to stop a server half-way in a test).
    """
    with tempfile.TemporaryDirectory(prefix="promotion-") as workdir:
        return _promote(name, str(version), source, target, deployer, on_step, Path(workdir))


def _promote(name: str, version: str, source, target, deployer, on_step, workdir: Path) -> PromotionResult:
    import mlflow
    from mlflow.exceptions import MlflowException

    version = str(version)
    step = on_step or (lambda _name: None)
    source_bot, target_bot = _deployer(source, deployer), _deployer(target, deployer)

    # 1. the source version must have passed validation, and its files must load
    with source.signed_in(source_bot):
        try:
            registry.check_promotable(name, version)
        except registry.RegistryError as exc:
            raise PromotionError(f"Refused: {source.name} {exc}") from None
        except MlflowException as exc:
            raise PromotionError(f"Refused: {source_bot.username} cannot read {name} v{version} in "
                                 f"{source.name} ({exc.message[:200]})") from None
        client = mlflow.MlflowClient()
        mv = client.get_model_version(name, version)
        source_run = client.get_run(mv.run_id) if mv.run_id else None
        step("checked")
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}",
                                                         dst_path=str(workdir / "model")))
        (local / REGISTRY_META).unlink(missing_ok=True)
        manifest = _manifest(local)
        step("downloaded")
    digest = _digest(manifest)
    recorded = mv.tags.get("lineage.sha256")
    if recorded and recorded != digest:  # files changed since the version arrived in the source
        raise PromotionError(f"Refused: {name} v{version} in {source.name} no longer has the files it was "
                             f"promoted with (sha256 {digest[:12]} != recorded {recorded[:12]})")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lineage = {
        "lineage.source_env": source.name, "lineage.source_url": source.url, "lineage.source_model": name,
        "lineage.source_version": version, "lineage.source_run": mv.run_id or "",
        "lineage.validation_status": mv.tags.get("validation_status", ""),
        "lineage.validation_run": mv.tags.get("validation_run", ""),
        "lineage.promoted_by": target_bot.username, "lineage.promoted_at": now, "lineage.sha256": digest,
    }
    # copy the version's own tags (validation policy ...), but not alias bookkeeping or old lineage
    carried = {k: v for k, v in mv.tags.items()
               if not k.startswith(("lineage.", "champion.", "challenger.", "promotion.", "validation_run"))
               and k != "validation_status"}

    with target.signed_in(target_bot), _fail_fast():
        client = mlflow.MlflowClient()
        try:
            clean_incomplete(name, target, target_bot)
        except MlflowException as exc:
            raise PromotionError(f"{target.name} cannot be written by {target_bot.username}: "
                                 f"{exc.message[:200]}") from None
        run_id = new_version = None
        try:
            experiment = client.get_experiment_by_name(EXPERIMENT)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(EXPERIMENT))
            run = client.create_run(experiment_id, run_name=f"promote-{name}-v{version}-from-{source.name}",
                                    tags={**lineage, STATE: "copying"})
            run_id = run.info.run_id
            if source_run is not None:  # what the model was trained with travels with it
                for key, value in list(source_run.data.params.items())[:100]:
                    client.log_param(run_id, key, value)
            step("run_created")
            client.log_artifacts(run_id, str(local), "model")
            step("uploaded")
            try:
                client.get_registered_model(name)
            except MlflowException:
                client.create_registered_model(name, description=f"Promoted from {source.name}")
            created = client.create_model_version(
                name, source=f"runs:/{run_id}/model", run_id=run_id,
                tags={**carried, **lineage, STATE: "copying"},
                description=mv.description or f"{name} v{version} from {source.name}")
            new_version = str(created.version)
            step("registered")
            check = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{new_version}",
                                                             dst_path=str(workdir / "check")))
            copied = _manifest(check)
            if copied != manifest:
                differ = sorted(k for k in set(copied) | set(manifest) if copied.get(k) != manifest.get(k))
                raise PromotionError(f"the copy in {target.name} differs from the source files: {differ[:5]}")
            mlflow.pyfunc.load_model(f"models:/{name}/{new_version}")
            step("verified")
            # the target's record that this exact model passed validation upstream
            client.set_tag(run_id, "validation_status", "passed")
            client.set_tag(run_id, "candidate_model", client.get_model_version(name, new_version).source)
            client.set_model_version_tag(name, new_version, "validation_status", "passed")
            client.set_model_version_tag(name, new_version, "validation_run", run_id)
            client.set_model_version_tag(name, new_version, STATE, "complete")
            client.set_tag(run_id, STATE, "complete")
            client.set_terminated(run_id, "FINISHED")
            step("completed")
            client.set_registered_model_alias(name, CHALLENGER, new_version)  # last
            step("aliased")
        except BaseException as exc:
            left = _undo(client, name, new_version, run_id)
            detail = exc.message if isinstance(exc, MlflowException) else str(exc)
            raise PromotionError(
                f"Promotion of {name} v{version} from {source.name} to {target.name} failed "
                f"({type(exc).__name__}: {detail[:300]}). "
                + (f"Could not clean up {', '.join(left)} (is {target.name} down?); nothing of it has an alias, "
                   "and the next promotion removes a version still marked 'copying'." if left
                   else "Nothing was left behind.")
            ) from exc
    return PromotionResult(name, source.name, version, target.name, new_version, run_id, digest)


def _undo(client, name: str, version: str | None, run_id: str | None) -> list[str]:
    """Delete the version a failed promotion registered and mark its run failed (the run stays in
    the audit trail); returns what could not be done."""
    left = []
    if version is not None:
        try:
            client.delete_model_version(name, version)
        except Exception:  # noqa: BLE001 (the target may be gone)
            left.append(f"version {version}")
    if run_id is not None:
        try:
            client.set_tag(run_id, STATE, "failed")
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001
            left.append(f"run {run_id}")
    return left


def decide_champion(name: str, target, X: pd.DataFrame, y, *, deployer: str | Credentials = DEPLOYER,
                    metric: Callable | None = None, reason: str = "") -> dict[str, object]:
    """Compare the challenger with the champion on held-out data; promote the challenger if better.

    ``metric(y_true, y_pred)``: lower is better (default: the credit cost of lesson 05). The
    comparison is logged as a run in the target; ties keep the champion. With no champion yet, the
    challenger becomes champion. Returns the scores and the decision.
    """
    import mlflow

    from mlops_lab import evaluation

    metric = metric or evaluation.credit_cost
    bot = _deployer(target, deployer)
    with target.signed_in(bot):
        client = mlflow.MlflowClient()
        aliases = client.get_registered_model(name).aliases
        if CHALLENGER not in aliases:
            raise PromotionError(f"{name} has no challenger in {target.name}: promote a version first")
        challenger = str(aliases[CHALLENGER])
        champion = str(aliases[registry.CHAMPION]) if registry.CHAMPION in aliases else None
        scores = {}
        for role, version in (("challenger", challenger), ("champion", champion)):
            if version is not None:
                model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
                scores[role] = float(metric(y, model.predict(X)))
        better = champion is None or scores["challenger"] < scores["champion"]
        decision = "promote" if (better and challenger != champion) else "keep"
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        run = client.create_run(experiment_id, run_name=f"champion-vs-challenger-{name}",
                                tags={"decision": decision, "challenger_version": challenger,
                                      "champion_version": champion or "none", "decided_by": bot.username})
        for role, score in scores.items():
            client.log_metric(run.info.run_id, f"{role}_score", score)
        client.log_param(run.info.run_id, "holdout_rows", len(X))
        client.set_terminated(run.info.run_id, "FINISHED")
        if decision == "promote":
            why = reason or (f"challenger v{challenger} scored {scores['challenger']:.4f} vs "
                             + (f"champion v{champion} {scores['champion']:.4f}" if champion else "no champion")
                             + f" on {len(X)} held-out rows")
            registry.promote(name, challenger, reason=why, actor=bot.username)
        now_champion = str(client.get_registered_model(name).aliases.get(registry.CHAMPION))
    return {"challenger": challenger, "champion_before": champion, "scores": scores, "decision": decision,
            "champion": now_champion, "run_id": run.info.run_id}


def lineage(name: str, environment, credentials: Credentials | None = None) -> pd.DataFrame:
    """Every version of ``name`` in ``environment`` with its aliases and lineage (the audit trail)."""
    import mlflow

    with environment.signed_in(credentials or environment.admin):
        client = mlflow.MlflowClient()
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        rows = []
        for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda m: int(m.version)):
            row = {"version": mv.version, "aliases": ",".join(sorted(aliases.get(str(mv.version), []))) or "-",
                   "state": mv.tags.get(STATE, "-")}
            row.update({key.split(".", 1)[1]: mv.tags.get(key, "") for key in LINEAGE
                        if key not in ("lineage.source_url",)})
            row["sha256"] = row["sha256"][:12]
            rows.append(row)
    return pd.DataFrame(rows)
