"""Checks for ``labs/06_model_validation.ipynb``: read a gate report, fix a model, tighten a policy,
register only what passes."""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-06-model-validation"
REGISTERED_MODEL = "lab-credit-risk"

LAB = Lab("06_model_validation", "Validate models before deployment")


@LAB.check(
    "read_the_report",
    hint="Run `report = validation.validate(brittle, baseline, policy, eval_data)` inside "
    "`with mlflow.start_run():`, then set `failing = report.failing`.",
)
def read_the_report(ns: dict) -> None:
    from mlops_lab.validation import GateReport

    report = ns.get("report")
    assert isinstance(report, GateReport), "`report` should be what validation.validate returned"
    assert report.candidate == "brittle", f"`report` validates {report.candidate!r}, not the brittle model"
    assert ns.get("failing") == report.failing, "`failing` should be the report's list of failing checks"
    assert report.failing == ["missing_values"], f"unexpected failing checks {report.failing}"


@LAB.check(
    "fixed_the_model",
    hint="Retrain with imputation: `training.fit_and_log_credit(\"gradient_boosting\", split, features=no_sex, "
    "impute=True, intended_use=use, **settings)`, wrap it with `validation.Candidate.from_tracked(\"fixed\", ...)` "
    "as `fixed`, and validate it again into `fixed_report`.",
)
def fixed_the_model(ns: dict) -> None:
    report = ns.get("fixed_report")
    assert report is not None, "there is no variable `fixed_report`"
    assert report.passed, f"the fixed model still fails {report.failing}"
    assert {"robustness", "group_fairness", "compliance"} <= {c.section for c in report.checks}, (
        "validate the fixed model with the full policy"
    )


@LAB.check(
    "tightened_policy",
    hint="Copy the policy (`copy.deepcopy(policy)`), set `checks.latency.p95_ms_max` to 10 and "
    "`checks.group_fairness.demographic_parity_difference_max.sex` to 0.05, and check it with "
    "`validation.load_policy(strict_policy)`.",
)
def tightened_policy(ns: dict) -> None:
    from mlops_lab import validation

    strict = ns.get("strict_policy")
    assert isinstance(strict, dict), "there is no dict `strict_policy`"
    checked = validation.load_policy(strict)
    assert checked["checks"]["latency"]["p95_ms_max"] <= 10, "p95 latency must be at most 10 ms"
    assert checked["checks"]["group_fairness"]["demographic_parity_difference_max"]["sex"] <= 0.05, (
        "the demographic parity limit for sex must be at most 0.05"
    )
    original = validation.load_policy("credit_risk")
    assert strict is not ns.get("policy"), "`strict_policy` is `policy` itself: make a copy (copy.deepcopy)"
    assert ns.get("policy") == original, "`policy` was changed: leave it as shipped and change a copy"


@LAB.check(
    "registered_only_what_passed",
    hint="Call `governance.gate(...)` for the brittle and for the fixed model with "
    "`registered_name=checks.REGISTERED_MODEL`; only the fixed one should end up registered, as `challenger`.",
)
def registered_only_what_passed(ns: dict) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlops_lab.config import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    try:
        version = client.get_model_version_by_alias(REGISTERED_MODEL, "challenger")
    except MlflowException:
        raise AssertionError(f"no version of {REGISTERED_MODEL!r} has the alias 'challenger'") from None
    assert version.tags.get("validation_status") == "passed", "the challenger is not tagged validation_status=passed"
    brittle, fixed = ns.get("brittle"), ns.get("fixed")
    assert brittle is not None and fixed is not None, "keep the candidates `brittle` and `fixed`"
    sources = {v.source for v in client.search_model_versions(f"name = '{REGISTERED_MODEL}'")}
    from mlops_lab.governance import model_id

    assert not any(model_id(brittle.model_uri) in s for s in sources), "the brittle model was registered"
    assert any(model_id(fixed.model_uri) in s for s in sources), "the fixed model is not registered"
    from mlops_lab.governance import validation_status

    assert validation_status(brittle.model_uri).get("validation_status") == "failed", (
        "gate the brittle model too, so its failure is on record"
    )
