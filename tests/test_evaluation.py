"""Evaluation: the cost metric, checked inputs, comparison, cross-validation, MLflow's evaluator."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_lab import config, datasets, evaluation, training
from mlops_lab.evaluation import EvaluationError


@pytest.fixture(scope="module")
def split():
    return training.credit_split(datasets.load_german_credit())


@pytest.mark.unit
def test_credit_cost_matches_the_cost_matrix():
    truth = [1, 1, 0, 0]
    assert evaluation.credit_cost(truth, [1, 1, 0, 0]) == 0
    assert evaluation.credit_cost(truth, [1, 1, 1, 0]) == 5 / 4  # one bad applicant approved
    assert evaluation.credit_cost(truth, [0, 1, 0, 0]) == 1 / 4  # one good applicant refused
    with pytest.raises(EvaluationError):
        evaluation.credit_cost([], [])
    with pytest.raises(EvaluationError, match="3 labels but 2 predictions"):
        evaluation.credit_cost([1, 0, 1], [1, 0])


@pytest.mark.unit
def test_cost_by_threshold_prefers_stricter_approval():
    truth = np.array([1] * 70 + [0] * 30)
    proba = np.concatenate([np.linspace(0.5, 1, 70), np.linspace(0.3, 0.8, 30)])
    table = evaluation.cost_by_threshold(truth, proba)
    assert table.loc[table["cost"].idxmin(), "threshold"] > 0.5
    assert table["approval_rate"].is_monotonic_decreasing


@pytest.mark.unit
def test_compare_names_the_better_model():
    table = evaluation.compare({"cost": 0.9, "auc": 0.70}, {"cost": 1.0, "auc": 0.75},
                               {"cost": False, "auc": True})
    assert table.loc["cost", "better"] == "candidate" and table.loc["auc", "better"] == "baseline"
    assert table.loc["cost", "change"] == pytest.approx(-0.1)
    with pytest.raises(EvaluationError, match="'f1' is missing"):
        evaluation.compare({"cost": 1}, {"cost": 1}, {"f1": True})


@pytest.mark.unit
def test_cross_validation_reports_spread(split):
    scoring = {"roc_auc": "roc_auc", "neg_credit_cost": evaluation.credit_cost_scorer()}
    table = evaluation.cross_validate_table(training.credit_pipeline(), split.X_train, split.y_train, scoring, cv=3)
    assert list(table.index) == ["roc_auc", "credit_cost"]
    assert (table["std"] > 0).all() and (table.loc["credit_cost", "mean"] > 0)
    assert (table["min"] <= table["mean"]).all() and (table["mean"] <= table["max"]).all()


@pytest.mark.unit
def test_metric_helpers(split):
    model = training.credit_pipeline().fit(split.X_train, split.y_train)
    metrics = evaluation.classification_metrics(split.y_test, model.predict(split.X_test),
                                                model.predict_proba(split.X_test)[:, 1])
    assert 0.6 < metrics["roc_auc"] < 0.9 and 0 < metrics["credit_cost"] < 2
    assert evaluation.regression_metrics([1, 2, 3], [1, 2, 3]) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


@pytest.fixture
def logged(home, split):
    config.use_workspace("evaluation")
    model = training.credit_pipeline().fit(split.X_train, split.y_train)
    with mlflow.start_run():
        info = training.log_sklearn_model(model, split.X_train)
    return model, info.model_uri


@pytest.mark.integration
def test_evaluate_with_custom_metric_and_artifact(logged, split):
    model, uri = logged
    with mlflow.start_run() as run:
        result = evaluation.evaluate(uri, split.frame("test"), "risk", "classifier",
                                     extra_metrics=[evaluation.credit_cost_metric()],
                                     custom_artifacts=[evaluation.cost_breakdown_artifact])
    expected = evaluation.credit_cost(split.y_test, model.predict(split.X_test))
    assert result.metrics["credit_cost"] == pytest.approx(expected)
    assert {"cost_breakdown", "confusion_matrix"} <= set(result.artifacts)
    assert mlflow.get_run(run.info.run_id).data.metrics["credit_cost"] == pytest.approx(expected)


@pytest.mark.integration
def test_evaluate_refuses_bad_input_clearly(logged, split):
    _, uri = logged
    data = split.frame("test")
    with pytest.raises(EvaluationError, match="no target column 'risk'"):
        evaluation.evaluate(uri, data.drop(columns="risk"), "risk", "classifier")
    with pytest.raises(EvaluationError, match=r"missing \['age'\], unexpected \['height'\]"):
        evaluation.evaluate(uri, data.drop(columns="age").assign(height=1.8), "risk", "classifier")
    with pytest.raises(EvaluationError, match="not logged, or the URI is wrong"):
        evaluation.evaluate("models:/no-such-model/1", data, "risk", "classifier")
    with pytest.raises(EvaluationError, match="model_type"):
        evaluation.evaluate(uri, data, "risk", "ranker")
    with pytest.raises(EvaluationError, match="empty"):
        evaluation.evaluate(uri, data.head(0), "risk", "classifier")


@pytest.mark.integration
def test_a_metric_that_raises_is_named(logged, split):
    from mlflow.models import make_metric

    def broken(predictions, targets, metrics):
        raise ZeroDivisionError("no applicants")

    _, uri = logged
    with mlflow.start_run(), pytest.raises(EvaluationError, match="custom metric 'broken_metric' raised ZeroDivisionError"):
        evaluation.evaluate(uri, split.frame("test"), "risk", "classifier",
                            extra_metrics=[make_metric(eval_fn=broken, greater_is_better=True, name="broken_metric")])


@pytest.mark.integration
def test_metrics_table_rounds_and_orders(logged, split):
    _, uri = logged
    with mlflow.start_run():
        result = evaluation.evaluate(uri, split.frame("test"), "risk", "classifier")
    table = evaluation.metrics_table({"a": result, "b": result}, ["roc_auc", "accuracy_score"])
    assert list(table.columns) == ["roc_auc", "accuracy_score"] and list(table.index) == ["a", "b"]
    assert table.loc["a", "roc_auc"] == round(result.metrics["roc_auc"], 3)
    with pytest.raises(EvaluationError, match=r"\['auc'\] are not in every result"):
        evaluation.metrics_table({"a": result}, ["auc"])


@pytest.mark.integration
def test_shap_is_off_by_default_and_on_when_asked(home):
    """On numeric inputs (where MLflow can explain), SHAP plots appear only with explain=True."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    config.use_workspace("shap-switch")
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with mlflow.start_run():
        uri = training.log_sklearn_model(model, X).model_uri
        quiet = evaluation.evaluate(uri, X.assign(target=y), "target", "classifier", pos_label=None)
        loud = evaluation.evaluate(uri, X.assign(target=y), "target", "classifier", pos_label=None, explain=True)
    assert not any("shap" in name for name in quiet.artifacts)
    assert any("shap" in name for name in loud.artifacts)
