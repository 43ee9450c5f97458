"""Hyperparameter tuning with Optuna, logged to MLflow: one parent run, one nested run per trial.

Studies are stored in the workspace (``<workspace>/optuna.db``), so running the same study again
*resumes* it: trial numbers continue and earlier trials still count. The objective reports its
score after every cross-validation fold, which lets a pruner stop hopeless trials early.
Trial runs are logged by :class:`NestedRunCallback`, a few lines written here because Optuna's
own ``MLflowCallback`` (optuna-integration) is deprecated since Optuna 4.9 and will be removed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from mlops_lab.config import SEED

SEARCH_SPACE = {
    "n_estimators": (50, 300),
    "learning_rate": (0.01, 0.3),
    "max_depth": (1, 5),
    "subsample": (0.5, 1.0),
    "min_samples_leaf": (1, 30),
}
"""Ranges searched for the credit gradient-boosting classifier."""


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_uri() -> str:
    """The study storage in the workspace: ``sqlite:///<workspace>/optuna.db``."""
    from mlops_lab.config import workspace

    return f"sqlite:///{workspace() / 'optuna.db'}"


def create_study(name: str, *, sampler: str = "tpe", seed: int = SEED, prune: bool = True):
    """Create, or load to resume, a maximising study named ``name`` in the workspace storage.

    ``sampler`` is ``"tpe"`` (Optuna's default, Bayesian) or ``"random"`` (the baseline);
    ``prune=True`` adds a median pruner that stops a trial whose fold scores trail the median.
    """
    import optuna

    _quiet_optuna()
    if sampler not in ("tpe", "random"):
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of ['random', 'tpe']")
    storage = storage_uri()
    try:  # a resumed study must not replay the draws of its first session: offset the seed
        done = len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        done = 0
    chosen = (optuna.samplers.TPESampler(seed=seed + done, n_startup_trials=5) if sampler == "tpe"
              else optuna.samplers.RandomSampler(seed=seed + done))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
              if prune else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               sampler=chosen, pruner=pruner, load_if_exists=True)


def credit_objective(X: pd.DataFrame, y: pd.Series, *, folds: int = 3, seed: int = SEED) -> Callable:
    """An objective: mean ROC AUC of a gradient-boosting credit model over stratified folds.

    The score is reported after each fold (``trial.report``) so the study's pruner can stop a
    trial early (``optuna.TrialPruned``).
    """
    import optuna
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from mlops_lab.training import credit_pipeline

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        scores = []
        for step, (train, valid) in enumerate(splits):
            model = credit_pipeline("gradient_boosting", seed=seed, **params)
            model.fit(X.iloc[train], y.iloc[train])
            scores.append(roc_auc_score(y.iloc[valid], model.predict_proba(X.iloc[valid])[:, 1]))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    return objective


def suggest_params(trial) -> dict:
    """Draw one set of hyperparameters from :data:`SEARCH_SPACE`."""
    s = SEARCH_SPACE
    return {
        "n_estimators": trial.suggest_int("n_estimators", *s["n_estimators"], step=50),
        "learning_rate": trial.suggest_float("learning_rate", *s["learning_rate"], log=True),
        "max_depth": trial.suggest_int("max_depth", *s["max_depth"]),
        "subsample": trial.suggest_float("subsample", *s["subsample"]),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", *s["min_samples_leaf"]),
    }


class NestedRunCallback:
    """After each trial, log it as a nested MLflow run: parameters, score, state, trial number."""

    def __init__(self, metric_name: str) -> None:
        self.metric_name = metric_name

    def __call__(self, study, trial) -> None:
        import mlflow

        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            mlflow.set_tags({"optuna_trial": trial.number, "optuna_state": trial.state.name})
            if trial.value is not None:
                mlflow.log_metric(self.metric_name, trial.value)


def run_study(study, objective: Callable, n_trials: int, *, run_name: str | None = None,
              metric_name: str = "cv_roc_auc") -> dict:
    """Optimise ``study`` for ``n_trials`` more trials under one MLflow parent run.

    Each trial becomes a nested run (parameters, score, state) through :class:`NestedRunCallback`;
    the parent run gets the best parameters and score. Returns a summary: best value, best
    parameters, trials in the study, pruned trials, and the seconds this call took.
    """
    import mlflow
    import optuna

    _quiet_optuna()
    callback = NestedRunCallback(metric_name)
    started = time.perf_counter()
    with mlflow.start_run(run_name=run_name or study.study_name):
        study.optimize(objective, n_trials=n_trials, callbacks=[callback], gc_after_trial=False)
        seconds = time.perf_counter() - started
        complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if not complete:
            raise RuntimeError(f"Study {study.study_name!r} has no completed trial")
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric(f"best_{metric_name}", study.best_value)
        mlflow.set_tag("optuna_study", study.study_name)
    pruned = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.PRUNED])
    return {"best_value": study.best_value, "best_params": study.best_params,
            "trials": len(study.trials), "pruned": len(pruned), "seconds": seconds}


def top_trials(study, k: int = 5) -> pd.DataFrame:
    """The ``k`` best completed trials: their score and parameters, best first."""
    frame = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    frame = frame[frame["state"] == "COMPLETE"].drop(columns="state")
    frame.columns = [c.removeprefix("params_") for c in frame.columns]
    return frame.sort_values("value", ascending=False).head(k).set_index("number").round(3)


def param_importances(study) -> pd.Series:
    """How much each hyperparameter mattered to the score in this study (fANOVA, sums to 1)."""
    import optuna

    _quiet_optuna()
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=SEED))
    return pd.Series(importances, name="importance").round(3)


def narrowed_space(study, k: int = 5) -> dict[str, tuple]:
    """The range each parameter spans among the top ``k`` trials: the space production code keeps."""
    top = top_trials(study, k)

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return round(value, 3) if isinstance(value, float) else value

    return {name: (plain(top[name].min()), plain(top[name].max())) for name in SEARCH_SPACE if name in top}


def comparison_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Searches side by side (from :func:`run_study` summaries): best score, trials, pruned, time.

    The time is fixed-width text (``"   6.6 s"``): it differs from machine to machine, unlike the
    scores, and a constant width keeps the table's layout stable for regression checks.
    """
    return pd.DataFrame({
        name: {"best score": round(s["best_value"], 4), "trials": s["trials"],
               "pruned": s["pruned"], "time": f"{s['seconds']:6.1f} s"}
        for name, s in summaries.items()
    }).T
