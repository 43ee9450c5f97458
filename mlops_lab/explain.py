"""SHAP explanations for the course's scikit-learn pipelines.

MLflow's built-in explainer (``evaluate(..., log_explainer=True)``) skips models whose input has
non-numeric columns, which is every pipeline here (it takes raw strings such as ``"own"`` and
one-hot encodes them itself). So we explain the *model step* on the *preprocessed* features with
SHAP directly: a tree explainer for tree ensembles, a linear one for linear models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_lab.config import SEED


def _split(pipeline):
    return pipeline[:-1], pipeline[-1]


def transformed(pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """``X`` after the pipeline's preprocessing, with readable feature names (e.g. ``sex_female``)."""
    prep, _ = _split(pipeline)
    values = prep.transform(X)
    return pd.DataFrame(np.asarray(values, dtype=float), columns=prep.get_feature_names_out(), index=X.index)


def explain(pipeline, X: pd.DataFrame, *, background: pd.DataFrame | None = None,
            max_rows: int = 200, seed: int = SEED):
    """SHAP values of the pipeline's model for up to ``max_rows`` rows of ``X``.

    Returns a ``shap.Explanation`` over the preprocessed features for the positive class (1): in
    log-odds for gradient boosting and linear models, in probability for random forests (SHAP's
    tree explainer explains what the model outputs).
    """
    import shap

    _, model = _split(pipeline)
    rows = X.sample(min(max_rows, len(X)), random_state=seed) if len(X) > max_rows else X
    Xt = transformed(pipeline, rows)
    name = type(model).__name__
    if "Forest" in name or "Boosting" in name or "Tree" in name:
        explainer = shap.TreeExplainer(model)
        explanation = explainer(Xt, check_additivity=False)
    elif hasattr(model, "coef_"):
        bg = transformed(pipeline, background if background is not None else rows)
        explanation = shap.LinearExplainer(model, bg)(Xt)
    else:
        bg = transformed(pipeline, background if background is not None else rows.head(50))
        fn = model.predict_proba if hasattr(model, "predict_proba") else model.predict
        explanation = shap.Explainer(fn, bg, seed=seed)(Xt)
    if explanation.values.ndim == 3:  # (rows, features, classes): keep the positive class
        explanation = explanation[:, :, 1]
    return explanation


def global_importance(explanation, top: int | None = None) -> pd.DataFrame:
    """Mean absolute SHAP value per feature, largest first: how much each feature moves predictions."""
    values = np.abs(explanation.values).mean(axis=0)
    table = pd.DataFrame({"feature": explanation.feature_names, "mean_abs_shap": values})
    table = table.sort_values("mean_abs_shap", ascending=False).round(4).reset_index(drop=True)
    return table.head(top) if top else table


def local_explanation(explanation, row: int, top: int = 5) -> pd.DataFrame:
    """The features that pushed one prediction up or down the most, with their values."""
    values = explanation.values[row]
    order = np.argsort(-np.abs(values))[:top]
    return pd.DataFrame({
        "feature": [explanation.feature_names[i] for i in order],
        "value": [explanation.data[row][i] for i in order],
        "shap": values[order],
    }).round(3)


def plot_importance(explanation, max_display: int = 10):
    """SHAP's beeswarm summary (one dot per row and feature) as a matplotlib Figure."""
    import matplotlib.pyplot as plt
    import shap

    shap.plots.beeswarm(explanation, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.set_size_inches(7, 0.35 * max_display + 1.2)
    fig.tight_layout()
    return fig
