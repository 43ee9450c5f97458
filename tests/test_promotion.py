"""Promotion dev -> staging -> prod on real authenticated servers: lineage, refusals, all-or-nothing."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from mlops_lab import datasets, environments, governance, promotion, registry, training, validation

pytestmark = pytest.mark.integration
MODEL = "credit-risk"


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    """Three environments, a deployer bot in each, and a data scientist's validated model in dev."""
    home = tmp_path_factory.mktemp("landscape")
    envs = environments.start_all(home=home)
    try:
        for env in envs.values():
            env.create_user(promotion.DEPLOYER, "deployer")
        alice = envs["dev"].create_user("alice", "data_scientist")
        envs["staging"].create_user("alice", "data_scientist", password=alice.password)
        split = training.credit_split(datasets.load_german_credit())
        features = [f for f in training.CREDIT_FEATURES if f != "sex"]
        with envs["dev"].signed_in(alice):
            mlflow.set_experiment("credit-risk")
            tracked = training.fit_and_log_credit(
                "gradient_boosting", split, run_name="boosted", features=features,
                intended_use="Pre-screening of consumer credit applications; a credit officer reviews every refusal.",
                n_estimators=100, learning_rate=0.04, max_depth=3, subsample=0.7, min_samples_leaf=9)
            gated = governance.gate(validation.Candidate.from_tracked("boosted", tracked), None, "credit_risk",
                                    split.frame("test"), registered_name=MODEL)
            assert gated.passed, gated.report.failing
            shortcut = mlflow.register_model(tracked.model_uri, MODEL)  # not through the gate
        yield {"envs": envs, "home": home, "split": split, "validated": gated.version.version,
               "unvalidated": shortcut.version, "alice": alice}
    finally:
        envs.stop()


def _versions(env, name=MODEL):
    with env.as_admin():
        try:
            return {v.version: v for v in mlflow.MlflowClient().search_model_versions(f"name = '{name}'")}
        except MlflowException:
            return {}


def _aliases(env, name=MODEL):
    with env.as_admin():
        return dict(mlflow.MlflowClient().get_registered_model(name).aliases)


def test_an_unvalidated_version_is_refused_and_nothing_is_copied(landscape):
    envs = landscape["envs"]
    with pytest.raises(promotion.PromotionError, match="validation_status='missing'"):
        promotion.promote(MODEL, landscape["unvalidated"], envs["dev"], envs["staging"])
    assert _versions(envs["staging"]) == {}


def test_a_data_scientist_cannot_promote(landscape):
    envs = landscape["envs"]
    with pytest.raises(promotion.PromotionError, match="Permission denied|PERMISSION_DENIED|403"):
        promotion.promote(MODEL, landscape["validated"], envs["dev"], envs["staging"],
                          deployer=landscape["alice"])
    assert _versions(envs["staging"]) == {}


def test_dev_to_staging_to_prod_copies_files_signature_and_lineage(landscape):
    envs, split = landscape["envs"], landscape["split"]
    steps = []
    staged = promotion.promote(MODEL, landscape["validated"], envs["dev"], envs["staging"], on_step=steps.append)
    assert steps == list(promotion.STEPS)
    released = promotion.promote(MODEL, staged.version, envs["staging"], envs["prod"])
    assert released.sha256 == staged.sha256  # the same bytes all the way

    prod_version = _versions(envs["prod"])[released.version]
    tags = prod_version.tags
    assert tags["lineage.source_env"] == "staging" and tags["lineage.source_version"] == staged.version
    assert tags["lineage.validation_status"] == "passed" and tags["lineage.promoted_by"] == promotion.DEPLOYER
    assert tags[promotion.STATE] == "complete" and tags["validation_policy"] == "credit-risk-gate@1"
    staging_tags = _versions(envs["staging"])[staged.version].tags
    assert staging_tags["lineage.source_env"] == "dev"
    assert staging_tags["lineage.source_version"] == landscape["validated"]
    assert _aliases(envs["prod"]) == {"challenger": released.version}  # no champion until compared

    X = split.X_test.head(50)
    with envs["dev"].as_admin():
        source = mlflow.pyfunc.load_model(f"models:/{MODEL}/{landscape['validated']}")
    with envs["prod"].as_admin():
        copy = mlflow.pyfunc.load_model(f"models:/{MODEL}/{released.version}")
    assert copy.metadata.signature == source.metadata.signature
    assert np.array_equal(copy.predict(X), source.predict(X))

    decision = promotion.decide_champion(MODEL, envs["prod"], split.X_test, split.y_test)
    assert decision["decision"] == "promote" and decision["champion"] == released.version
    with envs["prod"].as_admin():
        history = registry.history(MODEL)
    assert list(history["by"]) == [promotion.DEPLOYER]
    landscape["champion"] = released.version


def test_a_challenger_no_better_than_the_champion_leaves_it_in_place(landscape):
    envs, split = landscape["envs"], landscape["split"]
    champion = landscape["champion"]
    again = promotion.promote(MODEL, "1", envs["staging"], envs["prod"])  # the same model once more
    decision = promotion.decide_champion(MODEL, envs["prod"], split.X_test, split.y_test)
    assert decision["decision"] == "keep" and decision["scores"]["challenger"] == decision["scores"]["champion"]
    assert _aliases(envs["prod"]) == {"champion": champion, "challenger": again.version}


def test_a_failing_step_leaves_nothing_behind(landscape):
    envs = landscape["envs"]
    before = set(_versions(envs["prod"]))
    aliases = _aliases(envs["prod"])

    def fail_after_registering(step):
        if step == "registered":
            raise RuntimeError("disk full")

    with pytest.raises(promotion.PromotionError, match="disk full.*Nothing was left behind"):
        promotion.promote(MODEL, "1", envs["staging"], envs["prod"], on_step=fail_after_registering)
    assert set(_versions(envs["prod"])) == before and _aliases(envs["prod"]) == aliases
    with envs["prod"].as_admin():
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(promotion.EXPERIMENT)
        assert not client.search_runs([experiment.experiment_id], f"tags.`{promotion.STATE}` = 'copying'")
        failed = client.search_runs([experiment.experiment_id], f"tags.`{promotion.STATE}` = 'failed'")
        assert [r.info.status for r in failed] == ["FAILED"]  # kept, marked, in the audit trail


@pytest.mark.parametrize("when", ["uploaded", "registered"])
def test_prod_dying_half_way_leaves_no_half_version_and_the_champion_unchanged(landscape, when):
    envs, home = landscape["envs"], landscape["home"]
    before = set(_versions(envs["prod"]))
    aliases = _aliases(envs["prod"])

    def kill_prod(step):
        if step == when:
            envs["prod"].stop()

    with pytest.raises(promotion.PromotionError, match="failed"):
        promotion.promote(MODEL, "1", envs["staging"], envs["prod"], on_step=kill_prod)
    envs["prod"] = environments.start("prod", home=home)  # same stores, a new port
    versions = _versions(envs["prod"])
    left = set(versions) - before
    assert all(versions[v].tags[promotion.STATE] == "copying" for v in left)  # at worst a marked leftover
    assert _aliases(envs["prod"]) == aliases  # no alias moved, none points at a leftover

    result = promotion.promote(MODEL, "1", envs["staging"], envs["prod"])  # cleans up, then succeeds
    versions = _versions(envs["prod"])
    assert not left & set(versions), "the leftover of the failed promotion was not removed"
    assert [v for v, mv in versions.items() if mv.tags.get(promotion.STATE) != "complete"] == []
    assert _aliases(envs["prod"])["champion"] == aliases["champion"]
    assert _aliases(envs["prod"])["challenger"] == result.version


def test_a_copy_whose_files_changed_since_it_arrived_is_refused(landscape, tmp_path):
    """Someone with write access to staging's runs swaps the model file between staging and prod."""
    envs = landscape["envs"]
    staged = promotion.promote(MODEL, landscape["validated"], envs["dev"], envs["staging"])
    before = set(_versions(envs["prod"]))
    with envs["staging"].as_admin():
        client = mlflow.MlflowClient()
        (tmp_path / "requirements.txt").write_text("a-package-nobody-checked==6.6.6\n")
        client.log_artifact(staged.run_id, str(tmp_path / "requirements.txt"), "model")
    with pytest.raises(promotion.PromotionError, match="no longer has the files it was promoted with"):
        promotion.promote(MODEL, staged.version, envs["staging"], envs["prod"])
    assert set(_versions(envs["prod"])) == before
