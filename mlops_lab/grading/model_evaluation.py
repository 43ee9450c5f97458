"""Checks for ``labs/05_model_evaluation.ipynb``: evaluate, add a metric, compare, decide."""

from __future__ import annotations

import math

from mlops_lab.grading import Lab

EXPERIMENT = "lab-05-model-evaluation"

LAB = Lab("05_model_evaluation", "Model evaluation: evaluate, customise, compare, decide")


def _metrics(ns: dict, name: str) -> dict:
    result = ns.get(name)
    assert result is not None, f"there is no variable `{name}`"
    assert hasattr(result, "metrics"), f"`{name}` should be what mlflow.models.evaluate returned"
    return result.metrics


@LAB.check(
    "evaluated_baseline",
    hint="Inside `with mlflow.start_run():`, call `mlflow.models.evaluate(baseline.model_uri, eval_data, "
    "targets=\"risk\", model_type=\"classifier\", extra_metrics=[evaluation.credit_cost_metric()])` "
    "and keep the result in `baseline_result`.",
)
def evaluated_baseline(ns: dict) -> None:
    import mlflow

    from mlops_lab.config import tracking_uri

    metrics = _metrics(ns, "baseline_result")
    for name in ("roc_auc", "accuracy_score", "credit_cost"):
        assert name in metrics, f"`baseline_result.metrics` has no {name!r}"
    mlflow.set_tracking_uri(tracking_uri())
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="metrics.example_count > 0")
    assert len(runs) >= 1, f"no run in {EXPERIMENT!r} has the evaluation metrics: evaluate inside a run"


@LAB.check(
    "custom_metric",
    hint="Write `def approval(predictions, targets, metrics): return (predictions == 1).mean()`, make it "
    "a metric with `mlflow.models.make_metric(eval_fn=approval, greater_is_better=False, name=\"approval_rate\")`, "
    "and evaluate the candidate with it in `extra_metrics` (keep the result in `candidate_result`).",
)
def custom_metric(ns: dict) -> None:
    metrics = _metrics(ns, "candidate_result")
    assert "approval_rate" in metrics, "`candidate_result.metrics` has no 'approval_rate'"
    assert "credit_cost" in metrics, "evaluate the candidate with the cost metric too"
    candidate, eval_data = ns.get("candidate"), ns.get("eval_data")
    expected = float((candidate.pipeline.predict(eval_data.drop(columns="risk")) == 1).mean())
    assert math.isclose(float(metrics["approval_rate"]), expected, abs_tol=1e-9), (
        f"approval_rate is {metrics['approval_rate']}, but the candidate approves {expected:.3f} of applicants"
    )


@LAB.check(
    "compared",
    hint="Use `evaluation.compare(candidate_result.metrics, baseline_result.metrics, "
    "{\"credit_cost\": False, \"roc_auc\": True})` and keep the table in `comparison`.",
)
def compared(ns: dict) -> None:
    import pandas as pd

    table = ns.get("comparison")
    assert isinstance(table, pd.DataFrame), "`comparison` should be the DataFrame evaluation.compare returned"
    for metric in ("credit_cost", "roc_auc"):
        assert metric in table.index, f"`comparison` has no row for {metric!r}"
    base = _metrics(ns, "baseline_result")
    assert math.isclose(table.loc["credit_cost", "baseline"], round(float(base["credit_cost"]), 3)), (
        "the baseline column does not hold the baseline's metrics: check the argument order"
    )


@LAB.check(
    "decided",
    hint="Set `decision` to \"candidate\" or \"baseline\" (the one with the lower credit_cost) and write "
    "in `reason` why, naming the metric that decided.",
)
def decided(ns: dict) -> None:
    decision, reason = ns.get("decision"), ns.get("reason")
    assert decision in ("candidate", "baseline"), "`decision` must be \"candidate\" or \"baseline\""
    cand = float(_metrics(ns, "candidate_result")["credit_cost"])
    base = float(_metrics(ns, "baseline_result")["credit_cost"])
    better = "candidate" if cand < base else "baseline"
    assert decision == better, f"the {better} has the lower credit_cost ({min(cand, base):.3f})"
    assert isinstance(reason, str) and len(reason) >= 20 and "cost" in reason.lower(), (
        "`reason` should be a sentence that names the business metric (cost)"
    )
