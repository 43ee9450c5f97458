"""Model evaluation: MLflow's evaluator with the course's custom metrics, cross-validation, comparison.

The business metric of the credit case is the German Credit **cost matrix**: approving a bad
applicant costs 5, refusing a good one costs 1, a right decision costs 0. :func:`credit_cost` is its
average per applicant; :func:`credit_cost_metric` makes it an MLflow metric that
``mlflow.models.evaluate`` computes beside the built-in ones.

:func:`evaluate` wraps ``mlflow.models.evaluate`` and checks its inputs first, so a missing target
column, mismatched feature columns, a model that was never logged or a metric that raises produce
one clear message instead of a stack trace from deep inside MLflow.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mlops_lab.config import SEED

COST_BAD_ACCEPTED = 5.0
"""Cost of approving an applicant who turns out bad (predicted 1, truly 0)."""
COST_GOOD_REFUSED = 1.0
"""Cost of refusing an applicant who would have repaid (predicted 0, truly 1)."""


class EvaluationError(ValueError):
    """Evaluation cannot run: the data, the model or a metric is not what it must be."""


# -- the business metric ---------------------------------------------------------------------

def credit_cost(y_true, y_pred) -> float:
    """Average cost per applicant under the German Credit cost matrix (lower is better)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise EvaluationError("credit_cost needs at least one prediction")
    if len(y_true) != len(y_pred):
        raise EvaluationError(f"credit_cost got {len(y_true)} labels but {len(y_pred)} predictions")
    bad_accepted = np.sum((y_pred == 1) & (y_true == 0))
    good_refused = np.sum((y_pred == 0) & (y_true == 1))
    return float((COST_BAD_ACCEPTED * bad_accepted + COST_GOOD_REFUSED * good_refused) / len(y_true))


def credit_cost_metric():
    """``credit_cost`` as an MLflow metric (``greater_is_better=False``) for ``evaluate``."""
    from mlflow.models import make_metric

    def eval_fn(predictions, targets, metrics=None):
        return credit_cost(targets, predictions)

    return make_metric(eval_fn=eval_fn, greater_is_better=False, name="credit_cost")


def probability_auc_metric():
    """ROC AUC from a ``probability_good`` output column, as an MLflow metric named ``roc_auc``.

    MLflow computes ROC AUC only from a scikit-learn model's ``predict_proba``; a custom model that
    answers a table (lesson 16) carries its probability as a column, which MLflow hands to a
    metric whose argument has that column's name."""
    from mlflow.models import make_metric
    from sklearn.metrics import roc_auc_score

    def eval_fn(predictions, targets, probability_good):
        if pd.Series(targets).nunique() < 2:  # MLflow tries every metric on the first row alone
            return float("nan")
        return float(roc_auc_score(targets, probability_good))

    return make_metric(eval_fn=eval_fn, greater_is_better=True, name="roc_auc")


def cost_by_threshold(y_true, proba_good, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Cost when approving applicants whose probability of being good is at least each threshold.

    The default 0.5 threshold ignores that a bad approval costs five times a wrong refusal; this
    table shows which threshold the cost matrix prefers.
    """
    thresholds = np.round(np.arange(0.3, 0.96, 0.05), 2) if thresholds is None else thresholds
    proba_good = np.asarray(proba_good)
    rows = [{"threshold": t, "approval_rate": float(np.mean(proba_good >= t)),
             "cost": credit_cost(y_true, (proba_good >= t).astype(int))} for t in thresholds]
    return pd.DataFrame(rows).round(3)


def cost_breakdown_artifact(eval_df: pd.DataFrame, builtin_metrics: dict, artifacts_dir: str):
    """A custom MLflow artifact: a bar chart of what the errors cost, by kind of error."""
    import matplotlib.pyplot as plt

    target, prediction = eval_df["target"], eval_df["prediction"]
    costs = {
        "bad applicants approved": COST_BAD_ACCEPTED * int(((prediction == 1) & (target == 0)).sum()),
        "good applicants refused": COST_GOOD_REFUSED * int(((prediction == 0) & (target == 1)).sum()),
    }
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(list(costs), list(costs.values()), color=["#e76f51", "#f4a261"])
    ax.set_xlabel("total cost on the evaluation set")
    ax.set_title("What the errors cost", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return {"cost_breakdown": fig}


def classification_metrics(y_true, y_pred, proba_good=None) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class = good), ROC AUC and the credit cost, rounded."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    metrics = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred, zero_division=0),
        "f1": f1_score(y_true, y_pred, zero_division=0),
        "credit_cost": credit_cost(y_true, y_pred),
    }
    if proba_good is not None:
        metrics["roc_auc"] = roc_auc_score(y_true, proba_good)
    return {k: round(float(v), 4) for k, v in metrics.items()}


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """RMSE, MAE and R² of a regressor, rounded."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": round(float(np.sqrt(mean_squared_error(y_true, y_pred))), 3),
        "mae": round(float(mean_absolute_error(y_true, y_pred)), 3),
        "r2": round(float(r2_score(y_true, y_pred)), 4),
    }


# -- checked evaluation -------------------------------------------------------------------------

def _signature_columns(model_uri: str) -> list[str] | None:
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        info = get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        raise EvaluationError(
            f"Cannot load the model {model_uri!r}: it was not logged, or the URI is wrong ({exc})."
        ) from exc
    if info.signature is None or info.signature.inputs is None:
        return None
    return info.signature.inputs.input_names()


def check_evaluation_data(data: pd.DataFrame, target: str, model_uri: str | None = None) -> None:
    """Raise :class:`EvaluationError` naming the problem if ``data`` cannot evaluate the model."""
    if not isinstance(data, pd.DataFrame):
        raise EvaluationError(f"Evaluation data must be a pandas DataFrame, got {type(data).__name__}")
    if target not in data.columns:
        raise EvaluationError(
            f"The evaluation data has no target column {target!r} (columns: {list(data.columns)})."
        )
    if data.empty:
        raise EvaluationError("The evaluation data is empty.")
    if data[target].isna().any():
        raise EvaluationError(f"The target column {target!r} has {int(data[target].isna().sum())} missing values.")
    if model_uri is not None:
        expected = _signature_columns(model_uri)
        if expected is not None:
            features = [c for c in data.columns if c != target]
            missing = [c for c in expected if c not in features]
            extra = [c for c in features if c not in expected]
            if missing or extra:
                raise EvaluationError(
                    f"The evaluation data's columns do not match the model's signature: "
                    f"missing {missing}, unexpected {extra}."
                )


def _safe(metric, name: str):
    """Wrap a custom metric so an exception inside it names the metric (its arguments unchanged:
    MLflow reads their names to hand it output or input columns)."""
    import functools

    from mlflow.models import make_metric

    fn = metric.eval_fn

    @functools.wraps(fn)
    def eval_fn(*args):
        try:
            return fn(*args)
        except Exception as exc:
            raise EvaluationError(f"The custom metric {name!r} raised {type(exc).__name__}: {exc}") from exc

    return make_metric(eval_fn=eval_fn, greater_is_better=metric.greater_is_better, name=name)


def evaluate(
    model_uri: str,
    data: pd.DataFrame,
    target: str,
    model_type: str,
    *,
    extra_metrics: Sequence = (),
    custom_artifacts: Sequence[Callable] = (),
    explain: bool = False,
    pos_label: int | None = 1,
    predictions: str | None = None,
):
    """``mlflow.models.evaluate`` on a logged model, with inputs checked and SHAP off by default.

    Must run inside an active MLflow run (the metrics and plots are logged to it). ``explain=True``
    asks MLflow for SHAP explanations too, which costs seconds per call; MLflow computes them only
    when every input column is numeric (it skips, with a warning, the course's pipelines that take
    text columns: use :mod:`mlops_lab.explain` for those). Returns MLflow's ``EvaluationResult``
    (``.metrics``, ``.artifacts``). ``predictions`` names the output column to evaluate when the
    model answers a table (lesson 16's decision model: ``"label"``).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if model_type not in ("classifier", "regressor"):
        raise EvaluationError(f"model_type must be 'classifier' or 'regressor', not {model_type!r}")
    check_evaluation_data(data, target, model_uri)
    config = {"log_explainer": explain, "log_model_explainability": explain}
    if model_type == "classifier" and pos_label is not None:
        config["pos_label"] = pos_label
    metrics = [_safe(m, m.name) for m in extra_metrics]
    evaluator_log = logging.getLogger("mlflow.models.evaluation.evaluators.classifier")
    level = evaluator_log.level
    evaluator_log.setLevel(logging.ERROR)  # it mistakes 0/1 integer labels for "unknown" type
    try:
        with warnings.catch_warnings():
            # Library chatter that says nothing about the model: MLflow's integer-schema hint,
            # SHAP's notice about NumPy's global RNG, and how MLflow stores the explainer.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            warnings.filterwarnings("ignore", message="The NumPy global RNG was seeded")
            warnings.filterwarnings("ignore", message="Unable to serialize underlying model")
            if predictions is not None:  # MLflow's classifier evaluator reads one column only from a
                # model's output: score first, then evaluate the answers as a static dataset
                answers = mlflow.pyfunc.load_model(model_uri).predict(data.drop(columns=[target]))
                if predictions not in answers.columns:
                    raise EvaluationError(f"the model at {model_uri!r} answers {list(answers.columns)}, "
                                          f"not the column {predictions!r} the evaluation asks for")
                data = pd.concat([data.reset_index(drop=True)[[target]], answers.reset_index(drop=True)], axis=1)
            return mlflow.models.evaluate(
                None if predictions is not None else model_uri, data, targets=target, model_type=model_type,
                predictions=predictions,
                extra_metrics=metrics, custom_artifacts=list(custom_artifacts),
                evaluator_config=config,
            )
    except MlflowException as exc:
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, EvaluationError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, EvaluationError):
            raise cause from exc
        raise EvaluationError(f"MLflow could not evaluate {model_uri!r}: {exc.message}") from exc
    finally:
        evaluator_log.setLevel(level)


def metrics_table(results: dict[str, object], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per evaluated model, one column per metric, rounded to 3 decimals."""
    missing = sorted({m for r in results.values() for m in metrics if m not in r.metrics})
    if missing:
        raise EvaluationError(f"Metrics {missing} are not in every result; available: {sorted(next(iter(results.values())).metrics)}")
    rows = {name: {m: float(r.metrics[m]) for m in metrics} for name, r in results.items()}
    return pd.DataFrame(rows).T[list(metrics)].round(3)


def compare(candidate: dict[str, float], baseline: dict[str, float],
            higher_is_better: dict[str, bool]) -> pd.DataFrame:
    """Candidate vs baseline on the same metrics: values, the change, and which one is better."""
    rows = []
    for metric, higher in higher_is_better.items():
        if metric not in candidate or metric not in baseline:
            raise EvaluationError(f"Metric {metric!r} is missing from one of the results")
        c, b = float(candidate[metric]), float(baseline[metric])
        better = "tie" if np.isclose(c, b) else ("candidate" if (c > b) == higher else "baseline")
        rows.append({"metric": metric, "candidate": round(c, 3), "baseline": round(b, 3),
                     "change": round(c - b, 3), "better": better})
    return pd.DataFrame(rows).set_index("metric")


def cross_validate_table(pipeline, X: pd.DataFrame, y: pd.Series, scoring: dict[str, object],
                         *, cv: int | object = 5, seed: int = SEED, time_ordered: bool = False) -> pd.DataFrame:
    """Cross-validated scores with their spread: mean, std, min and max per metric.

    Stratified, shuffled folds for classification; ``time_ordered=True`` uses expanding-window
    folds (``TimeSeriesSplit``) so no fold trains on the future. ``scoring`` maps names to
    scikit-learn scorers (strings or ``make_scorer`` objects).
    """
    from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit, cross_validate

    if isinstance(cv, int):
        cv = TimeSeriesSplit(n_splits=cv) if time_ordered else StratifiedKFold(cv, shuffle=True, random_state=seed)
    scores = cross_validate(pipeline, X, y, scoring=scoring, cv=cv, n_jobs=1)
    rows = {}
    for name in scoring:
        values = scores[f"test_{name}"]
        if name.startswith("neg_"):
            name, values = name[4:], -values
        rows[name] = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}
    return pd.DataFrame(rows).T.round(3)


def credit_cost_scorer():
    """``credit_cost`` as a scikit-learn scorer (negated, since scorers maximise)."""
    from sklearn.metrics import make_scorer

    return make_scorer(credit_cost, greater_is_better=False)
