"""The validation gate, both directions for every check, on real data and real models.

One module-scoped set of models (trained once) serves every test: a good candidate and one
deliberately bad candidate per check family.
"""

import copy

import mlflow
import pytest

from mlops_lab import config, datasets, governance, training, validation
from mlops_lab.validation import Candidate, PolicyError, ValidationInputError

pytestmark = pytest.mark.integration

NO_SEX = [f for f in training.CREDIT_FEATURES if f != "sex"]
TUNED = dict(n_estimators=60, learning_rate=0.06, max_depth=3, subsample=0.7, min_samples_leaf=9)
USE = "Pre-screening of credit applications in tests."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A workspace with the production model and candidates logged once for the module."""
    import os

    home = tmp_path_factory.mktemp("validation-home")
    old = os.environ.get("MLOPS_LAB_HOME")
    os.environ["MLOPS_LAB_HOME"] = str(home)
    config.use_workspace("validation-tests")
    split = training.credit_split(datasets.load_german_credit())
    fit = training.fit_and_log_credit
    models = {
        "production": fit("logistic_regression", split, features=NO_SEX, intended_use=USE),
        "good": fit("gradient_boosting", split, features=NO_SEX, intended_use=USE, **TUNED),
        "weak": fit("logistic_regression", split, features=["duration", "age"], intended_use=USE),
        "biased": fit("gradient_boosting", training.with_biased_labels(split, "sex", "female", 0.6),
                      intended_use=USE, **TUNED),
        "brittle": fit("gradient_boosting", split, features=NO_SEX, impute=False, intended_use=USE, **TUNED),
        "undocumented": fit("gradient_boosting", split, features=NO_SEX, **TUNED),
    }
    yield {"split": split, "data": split.frame("test"), "home": home,
           "c": {name: Candidate.from_tracked(name, t) for name, t in models.items()}}
    if old is None:
        os.environ.pop("MLOPS_LAB_HOME", None)
    else:
        os.environ["MLOPS_LAB_HOME"] = old


@pytest.fixture(autouse=True)
def in_world(request, monkeypatch):
    """Tests that use the module's models track to the module's workspace."""
    if "world" in request.fixturenames:
        world = request.getfixturevalue("world")
        monkeypatch.setenv("MLOPS_LAB_HOME", str(world["home"]))
        config.use_workspace("validation-tests")


@pytest.fixture
def policy():
    return copy.deepcopy(validation.load_policy("credit_risk"))


def only(policy, *sections):
    policy["checks"] = {k: v for k, v in policy["checks"].items() if k in sections}
    return policy


def run(world, name, policy, baseline="production"):
    config.use_workspace("validation-tests")
    base = world["c"][baseline] if baseline else None
    with mlflow.start_run():
        return validation.validate(world["c"][name], base, policy, world["data"])


def test_good_candidate_passes_every_check(world, policy):
    report = run(world, "good", policy)
    assert report.passed, report.to_frame()
    sections = set(report.to_frame()["section"])
    assert sections == validation.SECTIONS


def test_metric_thresholds_reject_a_weaker_model(world, policy):
    report = run(world, "weak", only(policy, "metrics"))
    assert {"metric_roc_auc", "metric_credit_cost"} <= set(report.failing)
    assert "baseline" in report.to_frame().loc["metric_credit_cost", "threshold"]


def test_relative_threshold_needs_a_better_model_than_the_baseline(world, policy):
    """The good model measured against itself is not better than its baseline: relative check fails."""
    report = run(world, "good", only(policy, "metrics"), baseline="good")
    assert report.failing == ["metric_credit_cost"]
    no_baseline = run(world, "good", only(policy, "metrics"), baseline=None)
    assert no_baseline.passed


def test_latency_both_directions(world, policy):
    generous = only(policy, "latency")
    generous["checks"]["latency"]["p95_ms_max"] = 10_000
    assert run(world, "good", generous).passed
    impossible = only(copy.deepcopy(policy), "latency")
    impossible["checks"]["latency"]["p95_ms_max"] = 0.0001
    assert run(world, "good", impossible).failing == ["latency_p95"]


def test_group_and_individual_fairness_reject_the_biased_model(world, policy):
    fair = run(world, "good", only(policy, "group_fairness", "individual_fairness"))
    assert fair.passed
    biased = run(world, "biased", only(copy.deepcopy(policy), "group_fairness", "individual_fairness"))
    assert {"dpd_sex", "eod_sex", "counterfactual_sex"} <= set(biased.failing)
    by_sex = biased.details["group_metrics"]["sex"]
    assert by_sex.loc["male", "selection_rate"] - by_sex.loc["female", "selection_rate"] > 0.3


def test_consistency_both_directions(world, policy):
    spec = only(policy, "individual_fairness")
    spec["checks"]["individual_fairness"] = {"consistency_min": 0.5, "neighbours": 5}
    assert run(world, "good", spec).passed
    spec["checks"]["individual_fairness"]["consistency_min"] = 0.99
    assert run(world, "good", spec).failing == ["consistency"]


def test_robustness_rejects_the_brittle_model(world, policy):
    assert run(world, "good", only(policy, "robustness")).passed
    report = run(world, "brittle", only(copy.deepcopy(policy), "robustness"))
    assert report.failing == ["missing_values"]
    row = report.to_frame().loc["missing_values"]
    assert row["value"] == "crashed" and "NaN" in row["reason"]


def test_slice_threshold_both_directions(world, policy):
    lenient = only(copy.deepcopy(policy), "robustness")
    lenient["checks"]["robustness"] = {"slice_by": ["age", "housing"], "slice_auc_min": 0.5, "slice_min_rows": 30}
    assert run(world, "good", lenient).passed
    spec = only(policy, "robustness")
    spec["checks"]["robustness"] = {"slice_by": ["age", "housing"], "slice_auc_min": 0.99, "slice_min_rows": 30}
    report = run(world, "good", spec)
    assert report.failing == ["worst_slice_auc"]
    assert report.checks[0].value.split("(")[1].startswith(("age=", "housing="))


def test_explainability_flags_a_protected_driver(world, policy):
    good = run(world, "good", only(policy, "explainability"))
    assert good.passed and len(good.details["shap_global"]) > 5
    biased = run(world, "biased", only(copy.deepcopy(policy), "explainability"))
    assert biased.failing == ["protected_not_top_drivers"] and "sex" in biased.checks[0].reason


def test_compliance_reads_metadata_from_mlflow(world, policy):
    assert run(world, "good", only(policy, "compliance")).passed
    report = run(world, "undocumented", only(copy.deepcopy(policy), "compliance"))
    assert report.failing == ["has_intended_use"]


def test_policy_errors_are_raised_before_anything_runs(policy):
    bad = copy.deepcopy(policy)
    bad["checks"]["metrics"][0]["metric"] = "roc_acu"
    with pytest.raises(PolicyError, match="Unknown metric 'roc_acu'"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["vibes"] = {}
    with pytest.raises(PolicyError, match=r"Unknown check section\(s\) \['vibes'\]"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["group_fairness"]["demographic_parity_difference_max"]["religion"] = 0.1
    with pytest.raises(PolicyError, match="'religion', which is not a protected attribute"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["compliance"]["required"].append("horoscope")
    with pytest.raises(PolicyError, match="horoscope"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["metrics"][1]["better_than_baseline_by"] = 0
    with pytest.raises(PolicyError, match="must be > 0"):
        validation.load_policy(bad)
    with pytest.raises(PolicyError, match="No policy file"):
        validation.load_policy("no_such_policy")


def test_bad_inputs_are_clear_errors(world, policy):
    with pytest.raises(ValidationInputError, match="no protected attribute 'sex'"):
        validation.validate(world["c"]["good"], None, policy, world["data"].drop(columns="sex"))
    with pytest.raises(ValidationInputError, match="no target column 'risk'"):
        validation.validate(world["c"]["good"], None, policy, world["data"].drop(columns="risk"))
    other = training.credit_pipeline("logistic_regression", features=NO_SEX).fit(world["split"].X_train, world["split"].y_train)
    config.use_workspace("validation-tests")
    with mlflow.start_run():
        info = training.log_sklearn_model(other, world["split"].X_train[NO_SEX])
    different = Candidate("other-signature", info.model_uri, pipeline=other)
    with pytest.raises(ValidationInputError, match="signature"):
        validation.validate(world["c"]["good"], different, policy, world["data"])


def test_model_without_signature_is_refused_whatever_the_policy(world, policy):
    model = world["c"]["good"].load()
    with mlflow.start_run() as r:
        info = mlflow.sklearn.log_model(model, name="model", skops_trusted_types=training.SKOPS_TRUSTED_TYPES)
    unsigned = Candidate("unsigned", info.model_uri, r.info.run_id)
    for spec in (policy, only(copy.deepcopy(policy), "latency")):
        with pytest.raises(ValidationInputError, match="candidate .* has no input signature"):
            validation.validate(unsigned, world["c"]["production"], spec, world["data"])
    with pytest.raises(ValidationInputError, match="baseline .* has no input signature"):
        validation.validate(world["c"]["good"], unsigned, policy, world["data"])


def test_misspelt_or_empty_settings_are_policy_errors(policy):
    for section, key in [("group_fairness", "demographic_parity_diff_max"), ("robustness", "missing_rat"),
                         ("individual_fairness", "consistency_minimum"), ("compliance", "requried")]:
        bad = copy.deepcopy(policy)
        bad["checks"][section][key] = 0.1
        with pytest.raises(PolicyError, match=f"Unknown setting.*{key}"):
            validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["latency"] = {}
    with pytest.raises(PolicyError, match="'latency' is empty"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    bad["checks"]["metrics"][0]["max"] = 0.99
    with pytest.raises(PolicyError, match="exactly one of 'min' or 'max'"):
        validation.load_policy(bad)
    bad = copy.deepcopy(policy)
    del bad["checks"]["robustness"]["noise_auc_drop_max"]
    with pytest.raises(PolicyError, match="go together"):
        validation.load_policy(bad)


def test_single_group_data_cannot_pass_group_fairness(world, policy):
    men = world["data"][world["data"]["sex"] == "male"]
    with mlflow.start_run():
        report = validation.validate(world["c"]["good"], None, only(policy, "group_fairness"), men)
    assert "groups_sex" in report.failing and not any(c.name == "dpd_sex" for c in report.checks)


def test_no_measurable_slice_fails(world, policy):
    spec = only(policy, "robustness")
    spec["checks"]["robustness"] = {"slice_by": ["housing"], "slice_auc_min": 0.5, "slice_min_rows": 10_000}
    report = run(world, "good", spec)
    assert report.failing == ["worst_slice_auc"] and report.checks[0].value == "no slice measured"


def test_blank_metadata_and_uncommitted_code(world, policy):
    blank = training.fit_and_log_credit("logistic_regression", world["split"], features=NO_SEX, intended_use=" ")
    spec = only(policy, "compliance")
    spec["checks"]["compliance"] = {"required": ["intended_use", "code_version"], "allow_uncommitted_code": False}
    candidate = Candidate.from_tracked("blank", blank)
    mlflow.MlflowClient().set_tag(blank.run_id, "code_version", "0123456789abcdef0123456789abcdef01234567-dirty")
    with mlflow.start_run():
        report = validation.validate(candidate, None, spec, world["data"])
    assert report.failing == ["has_intended_use", "has_code_version"]
    assert report.checks[1].value == "commit 0123456789ab" and "uncommitted" in report.checks[1].reason
    assert report.checks[1].reason.endswith("-dirty)")
    spec["checks"]["compliance"]["allow_uncommitted_code"] = True
    with mlflow.start_run():
        assert validation.validate(candidate, None, spec, world["data"]).failing == ["has_intended_use"]


def test_counterfactual_age_moves_applicants_between_bands(world, policy):
    X = world["data"].drop(columns="risk")
    moved = validation.counterfactual(X, "age", policy["protected_attributes"]["age"])
    before = validation.bands(X["age"], [0, 25, 40, 60, 200])
    after = validation.bands(moved["age"], [0, 25, 40, 60, 200])
    assert (before != after).all() and (moved.drop(columns="age") == X.drop(columns="age")).all().all()


def test_the_gate_checks_the_logged_model_not_a_stand_in(world, policy):
    """A candidate whose in-memory pipeline differs from its URI is judged by the URI's model."""
    swapped = Candidate("swapped", world["c"]["brittle"].model_uri, world["c"]["brittle"].run_id,
                        pipeline=world["c"]["good"].pipeline)
    with mlflow.start_run():
        report = validation.validate(swapped, None, only(policy, "robustness"), world["data"])
    assert report.failing == ["missing_values"]


def test_gate_registers_only_passing_models(world, policy):
    config.use_workspace("validation-tests")
    name = "gate-test-model"
    failed = governance.gate(world["c"]["brittle"], world["c"]["production"], policy, world["data"],
                             registered_name=name)
    client = mlflow.MlflowClient()
    assert not failed.passed and failed.version is None
    assert client.search_model_versions(f"name = '{name}'") == []
    assert governance.validation_status(world["c"]["brittle"].model_uri)["validation_status"] == "failed"

    passed = governance.gate(world["c"]["good"], world["c"]["production"], policy, world["data"], registered_name=name)
    assert passed.passed and passed.version is not None
    version = client.get_model_version_by_alias(name, governance.CHALLENGER)
    assert version.version == passed.version.version and version.tags["validation_status"] == "passed"
    assert governance.validation_status(world["c"]["good"].model_uri)["validation_status"] == "passed"
    paths = {a.path for a in client.list_artifacts(passed.run_id, "validation")}
    assert {"validation/report.json", "validation/model_card.md", "validation/shap_summary.png"} <= paths
    card = mlflow.artifacts.load_text(f"runs:/{passed.run_id}/validation/model_card.md")
    assert "## Intended use" in card and USE in card and "**passed**" in card
    run_data = mlflow.get_run(passed.run_id).data
    assert run_data.tags["validation_status"] == "passed" and run_data.metrics["gate_passed"] == 1.0
    assert "champion" not in client.get_registered_model(name).aliases


def test_gate_marks_an_error_when_validation_cannot_run(world, policy):
    config.use_workspace("validation-tests")
    with pytest.raises(ValidationInputError):
        governance.gate(world["c"]["good"], None, policy, world["data"].drop(columns="age"), registered_name="x")
    assert governance.validation_status(world["c"]["good"].model_uri)["validation_status"] == "error"


@pytest.mark.unit
def test_bands_label_ages():
    import pandas as pd

    assert list(validation.bands(pd.Series([19, 25, 39, 40, 75]), [0, 25, 40, 60, 200])) == \
        ["<25", "25-40", "25-40", "40-60", "60+"]
