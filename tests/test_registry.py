"""Registry helpers: promotion only of validated, loadable versions; rollback; history; clear errors."""

import shutil

import mlflow
import pytest

from mlops_lab import config, datasets, registry, training
from mlops_lab.registry import RegistryError

pytestmark = pytest.mark.integration
NAME = "credit-registry-test"


@pytest.fixture
def versions(home):
    config.use_workspace("registry")
    split = training.credit_split(datasets.load_german_credit())
    models = [training.fit_and_log_credit("logistic_regression", split, run_name=f"m{i}", C=c)
              for i, c in enumerate([1.0, 0.5, 0.1])]
    statuses = ["passed", "passed", "failed"]
    for tracked, status in zip(models, statuses):
        register_validated(tracked.model_uri, status)
    return models


def register_validated(model_uri: str, status: str, validated_uri: str | None = None):
    """Register as the validation gate does: a validation run on record, then the tagged version."""
    with mlflow.start_run(run_name="validate") as run:
        mlflow.set_tags({"validation_status": status, "candidate_model": validated_uri or model_uri})
    return mlflow.register_model(model_uri, NAME, tags={"validation_status": status, "validation_run": run.info.run_id})


def test_promote_records_who_when_why_and_is_idempotent(versions):
    first = registry.promote(NAME, 1, reason="first model", actor="alice")
    assert str(first.version) == "1"
    second = registry.promote(NAME, 2, reason="lower cost", actor="bob")
    assert second.tags["champion.previous"] == "1" and second.tags["champion.promoted_by"] == "bob"
    again = registry.promote(NAME, 2, reason="clicked twice", actor="bob")
    assert str(again.version) == "2"
    table = registry.history(NAME)
    assert table[["action", "from", "to", "by"]].values.tolist() == [
        ["promote", None, "1", "alice"], ["promote", "1", "2", "bob"]]


def test_rollback_retries_are_safe_with_from_version(versions):
    registry.promote(NAME, 1, reason="first")
    registry.promote(NAME, 2, reason="second")
    assert str(registry.rollback(NAME, reason="incident", from_version=2).version) == "1"
    assert str(registry.rollback(NAME, reason="incident (retry)", from_version=2).version) == "1"
    assert list(registry.history(NAME)["action"]) == ["promote", "promote", "rollback"]
    restored = mlflow.MlflowClient().get_model_version(NAME, "1")
    assert restored.tags["champion.restore_reason"] == "incident"


def test_hand_set_or_borrowed_passes_are_not_trusted(versions):
    mlflow.register_model(versions[0].model_uri, NAME, tags={"validation_status": "passed"})  # v4: no run
    with pytest.raises(RegistryError, match="no passing validation run"):
        registry.promote(NAME, 4, reason="tag says passed")
    register_validated(versions[2].model_uri, "passed", validated_uri=versions[0].model_uri)  # v5: another model's run
    with pytest.raises(RegistryError, match="validated .* not this version's model"):
        registry.promote(NAME, 5, reason="borrowed validation")


def test_archived_versions_cannot_come_back_and_failed_writes_do_not_move_the_alias(versions):
    registry.promote(NAME, 1, reason="first")
    registry.archive(NAME, 2, reason="superseded")
    with pytest.raises(RegistryError, match="archived"):
        registry.promote(NAME, 2, reason="revive")
    with pytest.raises(RegistryError, match="under 500"):
        registry.promote(NAME, 2, reason="x" * 600)
    assert str(registry.version_for(NAME, "champion").version) == "1"
    assert len(registry.history(NAME)) == 1


def test_rollback_is_one_call_and_recorded(versions):
    registry.promote(NAME, 1, reason="first")
    registry.promote(NAME, 2, reason="second")
    back = registry.rollback(NAME, reason="incident 42", actor="oncall")
    assert str(back.version) == "1" and str(registry.version_for(NAME, "champion").version) == "1"
    assert registry.history(NAME).iloc[-1].to_dict() | {"at": None} == {
        "at": None, "action": "rollback", "from": "2", "to": "1", "by": "oncall", "reason": "incident 42"}
    assert str(registry.rollback(NAME, reason="again", to_version=1).version) == "1"  # idempotent with a target
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback(NAME, reason="nothing before version 1")


def test_unvalidated_or_broken_versions_never_become_champion(versions, home):
    registry.promote(NAME, 1, reason="first")
    with pytest.raises(RegistryError, match="validation_status='failed'"):
        registry.promote(NAME, 3, reason="looks good to me")
    mlflow.register_model(versions[0].model_uri, NAME)  # version 4, no validation tag
    with pytest.raises(RegistryError, match="validation_status='missing'"):
        registry.promote(NAME, 4, reason="untagged")
    for path in (home / "artifacts").rglob("model.skops"):  # corrupt every stored model file
        path.write_bytes(b"corrupted")
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.promote(NAME, 2, reason="broken")
    assert str(registry.version_for(NAME, "champion").version) == "1"


def test_missing_artifacts_are_refused(versions, home):
    registry.promote(NAME, 1, reason="first")
    for folder in {m.parent for m in (home / "artifacts").rglob("MLmodel")}:  # model folders vanish
        shutil.rmtree(folder, ignore_errors=True)
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.promote(NAME, 2, reason="artifacts gone")
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.rollback(NAME, reason="no", to_version=2)
    assert str(registry.version_for(NAME, "champion").version) == "1"


def test_unknown_names_and_aliases_are_clear(versions):
    with pytest.raises(RegistryError, match="No registered model 'nope'.*credit-registry-test"):
        registry.load("nope")
    with pytest.raises(RegistryError, match="no alias 'champion'; aliases: none"):
        registry.load(NAME)
    registry.promote(NAME, 1, reason="first")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.promote(NAME, 99, reason="typo")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.promote(NAME, 2, reason=" ")


def test_deleted_version_drops_its_alias(versions):
    registry.promote(NAME, 1, reason="first")
    mlflow.MlflowClient().delete_model_version(NAME, "1")
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        registry.load(NAME, "champion")


def test_load_by_alias_predicts(versions):
    registry.promote(NAME, 2, reason="go")
    split = training.credit_split(datasets.load_german_credit())
    assert (registry.load(NAME).predict(split.X_test.head(5)) == versions[1].pipeline.predict(split.X_test.head(5))).all()


def test_archive_refuses_the_champion(versions):
    registry.promote(NAME, 1, reason="first")
    mlflow.MlflowClient().set_registered_model_alias(NAME, "challenger", "2")
    with pytest.raises(RegistryError, match="is the champion"):
        registry.archive(NAME, 1, reason="old")
    registry.archive(NAME, 2, reason="superseded")
    version = mlflow.MlflowClient().get_model_version(NAME, "2")
    assert version.tags["archived"] == "true" and "challenger" not in mlflow.MlflowClient().get_registered_model(NAME).aliases
