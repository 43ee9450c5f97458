"""The MLproject's entry points, run for real with `mlflow run . -e NAME --env-manager local -P ...`."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from mlops_lab import config, datasets, projects, training

ROOT = config.repo_root()


# -- the file and the command line (unit) -----------------------------------------------------------
@pytest.mark.unit
def test_the_mlproject_declares_typed_entry_points():
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(ROOT))
    assert set(project._entry_points) == set(projects.ENTRY_POINTS)
    assert project.env_config_path is None, "no python_env.yaml: the course runs with --env-manager local"
    types = {name: {k: p.type for k, p in project.get_entry_point(name).parameters.items()}
             for name in ("train", "evaluate", "validate")}
    assert types["train"] == {"model": "string", "seed": "int", "test_size": "float", "drop": "string",
                              "n_estimators": "int"}
    assert types["evaluate"] == {"model_uri": "string", "seed": "int", "test_size": "float"}
    assert types["validate"]["model_uri"] == "string" and types["validate"]["seed"] == "int"
    for name in ("train", "evaluate", "validate"):  # every parameter reaches the command
        entry = project.get_entry_point(name)
        assert entry.command.startswith("python -m mlops_lab.projects " + name)
        assert all("{" + k + "}" in entry.command for k in entry.parameters)


@pytest.mark.unit
def test_the_command_line_is_mlflow_run_with_the_local_env_manager():
    argv = projects.command("train", {"model": "random_forest", "seed": 7}, experiment_id="3")
    assert argv[1:] == ["run", ".", "-e", "train", "--env-manager", "local", "--experiment-id", "3",
                        "-P", "model=random_forest", "-P", "seed=7"]


@pytest.mark.unit
@pytest.mark.parametrize("argv, message", [
    (["train", "--seed", "abc"], "invalid int value: 'abc'"),
    (["evaluate", "--model-uri", "m", "--test-size", "a third"], "invalid float value: 'a third'"),
    (["validate"], "--model-uri"),
])
def test_the_entry_points_refuse_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        projects.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.unit
def test_a_model_uri_that_is_not_one_is_refused():
    with pytest.raises(projects.ProjectError, match="neither a model URI"):
        projects.model_uri_of("my-best-model")
    assert projects.model_uri_of("models:/credit-risk@champion") == "models:/credit-risk@champion"


@pytest.mark.unit
def test_an_unknown_run_id_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert projects.main(["evaluate", "--model-uri", "0" * 32]) == 2
    assert f"error: no run {'0' * 32}" in capsys.readouterr().err


# -- mlflow run, for real (integration) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tracking store (SQLite + local artifacts) and experiment shared by the module's runs."""
    root = tmp_path_factory.mktemp("project-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("projects", artifact_location=(root / "artifacts").as_uri())
    return {"uri": uri, "experiment_id": experiment_id, "client": client}


def _run(store, monkeypatch, entry_point, **parameters) -> projects.ProjectRun:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    return projects.run(entry_point, parameters, experiment_id=store["experiment_id"])


@pytest.fixture(scope="module")
def trained(store):
    with pytest.MonkeyPatch.context() as patch:
        done = _run(store, patch, "train", model="logistic_regression", seed=42, test_size=0.3)
    assert done.ok, done.tail(30)
    return done


@pytest.mark.integration
def test_train_logs_its_typed_parameters_metrics_and_model(store, trained):
    run = store["client"].get_run(trained.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-logistic_regression"
    assert run.data.tags["mlflow.project.entryPoint"] == "train"
    params = run.data.params  # MLflow's (-P and defaults) and the training function's, in one run
    assert {k: params[k] for k in ("model", "seed", "test_size", "drop", "n_estimators")} == {
        "model": "logistic_regression", "seed": "42", "test_size": "0.3", "drop": "sex", "n_estimators": "50"}
    assert params["train_rows"] == "700" and "sex" not in params["features"].split(",")
    assert 0.6 < run.data.metrics["roc_auc"] < 1
    models = store["client"].search_logged_models([store["experiment_id"]],
                                                  filter_string=f"source_run_id = '{trained.run_id}'")
    assert [m.name for m in models] == ["model"]


@pytest.mark.integration
def test_evaluate_logs_metrics_of_a_model_given_by_run_id(store, trained, monkeypatch):
    done = _run(store, monkeypatch, "evaluate", model_uri=trained.run_id)
    assert done.ok, done.tail(30)
    run = store["client"].get_run(done.run_id)
    assert run.data.tags["mlflow.project.entryPoint"] == "evaluate"
    assert run.data.tags["evaluated_model"].startswith("models:/m-")
    metrics = run.data.metrics
    assert {"credit_cost", "roc_auc", "accuracy_score", "f1_score"} <= set(metrics)
    trained_run = store["client"].get_run(trained.run_id)
    assert metrics["roc_auc"] == pytest.approx(trained_run.data.metrics["roc_auc"], abs=1e-4)


@pytest.mark.integration
def test_validate_registers_a_passing_model_as_challenger(store, trained, monkeypatch):
    done = _run(store, monkeypatch, "validate", model_uri=f"runs:/{trained.run_id}/model", name="credit-projects")
    assert done.ok, done.tail(30)
    assert "PASSED: registered credit-projects version 1 as challenger" in done.output
    client = store["client"]
    version = client.get_model_version_by_alias("credit-projects", "challenger")
    assert version.tags["validation_status"] == "passed"
    assert version.tags["validation_run"] == done.run_id  # the project's run is the validation run
    assert client.get_run(done.run_id).data.tags["validation_status"] == "passed"


@pytest.mark.integration
def test_a_gate_refusal_exits_non_zero_and_registers_nothing(store, monkeypatch):
    split = training.credit_split(datasets.load_german_credit())
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store["uri"])
    try:  # trained in process (cheaper than another `mlflow run`): with `sex`, the fairness checks fail
        mlflow.set_experiment(experiment_id=store["experiment_id"])
        unfair = training.fit_and_log_credit("logistic_regression", split, run_name="with-sex",
                                             intended_use=projects.INTENDED_USE)
    finally:
        mlflow.set_tracking_uri(saved)
    done = _run(store, monkeypatch, "validate", model_uri=unfair.model_uri, name="credit-refused")
    assert done.returncode != 0
    assert "REFUSED by the validation gate" in done.output and "dpd_sex" in done.output
    run = store["client"].get_run(done.run_id)
    assert run.info.status == "FAILED" and run.data.tags["validation_status"] == "failed"
    with pytest.raises(MlflowException):
        store["client"].get_registered_model("credit-refused")


@pytest.mark.integration
def test_a_parameter_of_the_wrong_type_fails_the_run_with_a_clear_message(store, monkeypatch):
    done = _run(store, monkeypatch, "evaluate", model_uri="runs:/x/model", seed="abc")
    assert done.returncode != 0
    assert "argument --seed: invalid int value: 'abc'" in done.output
    assert store["client"].get_run(done.run_id).info.status == "FAILED"


@pytest.mark.integration
def test_retrain_runs_the_pipeline_on_a_batch_under_the_project_run(store, monkeypatch, home):
    bikes = datasets.load_bikeshare()
    batch = home / "2011-01..02.parquet"
    bikes[bikes["mnth"].isin(["Jan", "Feb"])].to_parquet(batch, index=False)
    done = _run(store, monkeypatch, "retrain", batch=str(batch))
    assert done.ok, done.tail(30)
    assert "2011-01..2011-02: promoted: first champion" in done.output
    client = store["client"]
    assert client.get_run(done.run_id).data.tags["mlflow.project.entryPoint"] == "retrain"
    [pipeline] = client.search_runs([client.get_experiment_by_name("retraining").experiment_id],
                                    filter_string=f"tags.mlflow_project_run = '{done.run_id}'")
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["mlflow.parentRunId"] == done.run_id
    aliases = client.get_registered_model("bike-demand").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1"}
