"""SHAP explanations of the course pipelines: additive, ranked, local."""

import numpy as np
import pytest

from mlops_lab import datasets, explain, training

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def split():
    return training.credit_split(datasets.load_german_credit())


@pytest.mark.parametrize("model", ["gradient_boosting", "logistic_regression"])
def test_explanations_add_up_to_the_model_output(split, model):
    pipe = training.credit_pipeline(model, **({"n_estimators": 30} if model == "gradient_boosting" else {}))
    pipe.fit(split.X_train, split.y_train)
    e = explain.explain(pipe, split.X_test, background=split.X_train, max_rows=50)
    assert e.values.shape == (50, len(explain.transformed(pipe, split.X_test.head(1)).columns))
    rows = split.X_test.sample(50, random_state=42)
    log_odds = pipe.decision_function(rows)
    assert np.allclose(e.base_values + e.values.sum(axis=1), log_odds, atol=1e-4)


def test_global_and_local_tables(split):
    pipe = training.credit_pipeline("random_forest", n_estimators=30).fit(split.X_train, split.y_train)
    e = explain.explain(pipe, split.X_test, max_rows=40)
    top = explain.global_importance(e, top=5)
    assert len(top) == 5 and top["mean_abs_shap"].is_monotonic_decreasing
    assert "checking_account_not_known" in set(explain.global_importance(e)["feature"])
    local = explain.local_explanation(e, 0, top=3)
    assert list(local.columns) == ["feature", "value", "shap"] and len(local) == 3
    assert local["shap"].abs().is_monotonic_decreasing


def test_plot_importance_returns_a_figure(split):
    pipe = training.credit_pipeline().fit(split.X_train, split.y_train)
    fig = explain.plot_importance(explain.explain(pipe, split.X_test, max_rows=30), max_display=5)
    assert fig.axes
