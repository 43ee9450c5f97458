"""Governance around the validation gate: status tags, the logged report, the model card, and
registration only for models that pass.

:func:`gate` is the one call a pipeline makes:

1. the candidate's logged model is tagged ``validation_status=pending``;
2. :func:`mlops_lab.validation.validate` runs in an MLflow run named ``validate-<candidate>``,
   which receives the report (metrics per check, ``validation/report.json`` and ``.md``), the
   SHAP explanations, the group-fairness figure and a Markdown model card;
3. the logged model is tagged ``passed`` or ``failed`` (with the failing checks);
4. only if it passed is it registered, tagged ``validation_status=passed`` and given the alias
   ``challenger``. A failing model is never registered; ``champion`` never moves here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops_lab import validation
from mlops_lab.validation import Candidate, GateReport

CHALLENGER = "challenger"


@dataclass
class GateResult:
    """What :func:`gate` did: the report, the validation run, and the registered version (or None)."""

    report: GateReport
    run_id: str
    version: Any = None

    @property
    def passed(self) -> bool:
        return self.report.passed


def model_id(model_uri: str) -> str | None:
    """The logged-model id behind a ``models:/m-...`` URI, or None for other URIs."""
    from mlflow.models import get_model_info

    return getattr(get_model_info(model_uri), "model_id", None)


def _tag_logged_model(model_uri: str, tags: dict[str, str]) -> None:
    import mlflow

    found = model_id(model_uri)
    if found:
        mlflow.set_logged_model_tags(found, tags)


def log_report(report: GateReport) -> None:
    """Log the report to the active run: one metric per measured check, JSON and Markdown, tags."""
    import mlflow

    metrics = {f"gate_{c.name}": float(c.number) for c in report.checks if c.number is not None}
    metrics["gate_passed"] = float(report.passed)
    mlflow.log_metrics(metrics)
    mlflow.log_dict(report.to_dict(), "validation/report.json")
    mlflow.log_text(report.to_markdown(), "validation/report.md")
    details = report.details
    if "shap_global" in details:
        mlflow.log_table(details["shap_global"], "validation/shap_global.json")
        mlflow.log_table(details["shap_local"], "validation/shap_local_row0.json")
    if "shap_explanation" in details:
        import matplotlib.pyplot as plt

        from mlops_lab import explain

        fig = explain.plot_importance(details["shap_explanation"])
        mlflow.log_figure(fig, "validation/shap_summary.png")
        plt.close(fig)
    if "group_metrics" in details:
        import matplotlib.pyplot as plt

        from mlops_lab import plots

        for attr, table in details["group_metrics"].items():
            mlflow.log_table(table.reset_index(), f"validation/group_metrics_{attr}.json")
        fig = plots.group_rates(details["group_metrics"], title=report.candidate)
        mlflow.log_figure(fig, "validation/group_metrics.png")
        plt.close(fig)


def model_card(candidate: Candidate, report: GateReport, policy: dict, limitations: str = "") -> str:
    """A Markdown model card built from what MLflow recorded and what the gate measured."""
    import mlflow

    from mlops_lab import datasets

    run = mlflow.get_run(candidate.run_id) if candidate.run_id else None
    tags = dict(run.data.tags) if run else {}
    params = dict(run.data.params) if run else {}
    data_lines = []
    if run:
        for item in run.inputs.dataset_inputs:
            context = datasets.input_context(item)
            data_lines.append(f"- {context}: `{item.dataset.name}`, digest `{item.dataset.digest}`")
    by_section: dict[str, list] = {}
    for check in report.checks:
        by_section.setdefault(check.section, []).append(check)

    def rows(section: str) -> list[str]:
        return [f"| {c.name} | {c.value} | {c.threshold} | {'pass' if c.passed else 'FAIL'} |"
                for c in by_section.get(section, [])]

    header = ["| check | value | threshold | result |", "|---|---|---|---|"]
    verdict = "passed" if report.passed else f"failed: {', '.join(report.failing)}"
    lines = [
        f"# Model card: {candidate.name}", "",
        "## Model details",
        f"- Model: `{candidate.model_uri}` ({params.get('model', 'unknown algorithm')})",
        f"- Training run: `{candidate.run_id}`",
        f"- Code version: `{tags.get('code_version', 'not recorded')}`",
        f"- Validated against policy `{report.policy}` version {report.policy_version}: **{verdict}**", "",
        "## Intended use", tags.get("intended_use", "_Not recorded: the gate's compliance check fails without it._"), "",
        "## Data", *(data_lines or ["_No dataset inputs recorded._"]), "",
        "## Performance (evaluation data)", *header, *rows("metrics"), *rows("latency"), "",
        f"## Fairness (protected attributes: {', '.join(policy.get('protected_attributes', {}))})",
        *header, *rows("group_fairness"), *rows("individual_fairness"), "",
        "## Robustness", *header, *rows("robustness"), "",
        "## Explainability", *header, *rows("explainability"), "",
        "## Limitations", limitations or "- Trained on 1,000 historical German applications from the 1970s-90s; "
        "decisions in other markets or periods need new validation.\n- Fairness is measured on the evaluation "
        "set only, for the attributes the policy names.", "",
    ]
    return "\n".join(lines)


def gate(candidate: Candidate, baseline: Candidate | None, policy: dict | str, data: pd.DataFrame,
         *, registered_name: str, limitations: str = "", version_tags: dict[str, str] | None = None) -> GateResult:
    """Validate ``candidate`` and register it as ``registered_name`` (alias ``challenger``) only if it passes.

    ``version_tags`` are set on the new version when it is created, in the same call as the
    validation tags (a pipeline's idempotency key must never be missing from a registered version)."""
    import mlflow

    policy = validation.load_policy(policy)
    _tag_logged_model(candidate.model_uri, {"validation_status": "pending"})
    # nested under the caller's run when there is one (a pipeline step), else a run of its own
    with mlflow.start_run(run_name=f"validate-{candidate.name}", nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"validation_status": "pending", "validation_policy": f"{policy['name']}@{policy['version']}",
                         "candidate_model": candidate.model_uri})
        try:
            report = validation.validate(candidate, baseline, policy, data)
        except Exception:
            mlflow.set_tag("validation_status", "error")
            _tag_logged_model(candidate.model_uri, {"validation_status": "error"})
            raise
        log_report(report)
        mlflow.log_text(model_card(candidate, report, policy, limitations), "validation/model_card.md")
        status = "passed" if report.passed else "failed"
        failing = ",".join(report.failing) or "none"
        mlflow.set_tags({"validation_status": status, "validation_failed_checks": failing})
    _tag_logged_model(candidate.model_uri, {"validation_status": status, "validation_failed_checks": failing,
                                            "validation_run": run.info.run_id})
    version = None
    if report.passed:
        version = mlflow.register_model(candidate.model_uri, registered_name, tags={
            "validation_status": "passed", "validation_run": run.info.run_id,
            "validation_policy": f"{policy['name']}@{policy['version']}", **(version_tags or {}),
        })
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(registered_name, CHALLENGER, version.version)
        client.update_model_version(registered_name, version.version,
                                    description=f"Passed {policy['name']}@{policy['version']}; model card: "
                                                f"runs:/{run.info.run_id}/validation/model_card.md")
    return GateResult(report, run.info.run_id, version)


def validation_status(model_uri: str) -> dict[str, str]:
    """The validation tags of a logged model (status, failing checks, validation run)."""
    import mlflow

    found = model_id(model_uri)
    if not found:
        return {}
    tags = mlflow.get_logged_model(found).tags
    return {k: v for k, v in tags.items() if k.startswith("validation_")}

