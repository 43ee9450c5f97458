"""Optuna tuning: studies persist and resume, trials are nested MLflow runs, pruning prunes."""

import mlflow
import optuna
import pytest

from mlops_lab import config, datasets, training, tuning

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split():
    return training.credit_split(datasets.load_german_credit())


def test_study_logs_nested_runs_and_resumes(home, split):
    config.use_workspace("tuning")
    objective = tuning.credit_objective(split.X_train, split.y_train, folds=2)
    study = tuning.create_study("s", sampler="tpe")
    summary = tuning.run_study(study, objective, 4, run_name="parent")
    assert summary["trials"] == 4 and 0.5 < summary["best_value"] < 1
    assert (home / "optuna.db").is_file()

    parent = mlflow.search_runs(experiment_names=["tuning"], filter_string="tags.mlflow.runName = 'parent'").iloc[0]
    children = mlflow.search_runs(experiment_names=["tuning"],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert len(children) == 4
    assert parent["metrics.best_cv_roc_auc"] == pytest.approx(summary["best_value"])
    assert set(children["tags.optuna_state"]) <= {"COMPLETE", "PRUNED"}

    again = tuning.create_study("s", sampler="tpe")
    assert len(again.trials) == 4, "the stored study is loaded, not recreated"
    assert tuning.run_study(again, objective, 2)["trials"] == 6


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_are_reproducible(home, split, sampler):
    config.use_workspace("tuning-seeds")
    objective = tuning.credit_objective(split.X_train, split.y_train, folds=2)
    first = tuning.run_study(tuning.create_study("r1", sampler=sampler, seed=5, prune=False), objective, 3)
    second = tuning.run_study(tuning.create_study("r2", sampler=sampler, seed=5, prune=False), objective, 3)
    assert first["best_params"] == second["best_params"] and first["best_value"] == second["best_value"]


def test_a_resumed_study_draws_new_parameters(home):
    config.use_workspace("resume-draws")
    study = tuning.create_study("fresh-draws", sampler="random", prune=False)
    tuning.run_study(study, lambda trial: tuning.suggest_params(trial)["learning_rate"], 3, metric_name="lr")
    resumed = tuning.create_study("fresh-draws", sampler="random", prune=False)
    tuning.run_study(resumed, lambda trial: tuning.suggest_params(trial)["learning_rate"], 3, metric_name="lr")
    values = [t.params["learning_rate"] for t in resumed.trials]
    assert len(values) == 6 and len(set(values)) == 6, "the resumed session repeated earlier draws"


def test_unknown_sampler(home):
    config.use_workspace("unknown-sampler")
    with pytest.raises(ValueError, match="Unknown sampler 'grid'"):
        tuning.create_study("x", sampler="grid")


def test_median_pruner_stops_a_trailing_trial(home):
    config.use_workspace("pruning")
    study = tuning.create_study("p", sampler="random", seed=1)

    def objective(trial):
        level = trial.number if trial.number < 4 else -10  # the fifth trial is hopeless
        for step in range(3):
            trial.report(level, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return level

    summary = tuning.run_study(study, objective, 5, metric_name="score")
    assert summary["pruned"] == 1 and study.trials[4].state == optuna.trial.TrialState.PRUNED


def test_reading_a_study(home, split):
    config.use_workspace("reading")
    study = tuning.create_study("read", sampler="random", prune=False)
    summary = tuning.run_study(study, tuning.credit_objective(split.X_train, split.y_train, folds=2), 5)
    top = tuning.top_trials(study, 3)
    assert len(top) == 3 and top["value"].is_monotonic_decreasing
    assert top["value"].iloc[0] == pytest.approx(round(summary["best_value"], 3))
    importances = tuning.param_importances(study)
    assert set(importances.index) == set(tuning.SEARCH_SPACE) and importances.sum() == pytest.approx(1, abs=0.01)
    space = tuning.narrowed_space(study, 3)
    low, high = tuning.SEARCH_SPACE["max_depth"]
    assert low <= space["max_depth"][0] <= space["max_depth"][1] <= high
    table = tuning.comparison_table({"random": summary})
    assert table.loc["random", "trials"] == 5 and table.loc["random", "time"].endswith(" s")


def test_run_study_without_a_completed_trial_says_so(home):
    config.use_workspace("all-pruned")
    study = tuning.create_study("none", sampler="random")

    def objective(trial):
        raise optuna.TrialPruned()

    with pytest.raises(RuntimeError, match="no completed trial"):
        tuning.run_study(study, objective, 2)
