"""The retraining workflow against lesson 09's prod environment, signed in as the deployer bot.

One real ``mlflow server --app-name basic-auth`` (prod) for the module, started fresh: no bot
account, no ``retraining`` experiment, no registered model. The bot's first run creates what it
needs; a data scientist is refused before anything changes; the tests run in order, each from
where the previous one left prod's registry.
"""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from mlops_lab import auth, cli, datasets, environments, promotion, registry
from mlops_lab.pipeline import production, workflow
from mlops_lab.pipeline.workflow import Settings

pytestmark = pytest.mark.integration
FAST = Settings(trials=1, window_months=2)
MODEL = workflow.MODEL_NAME


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    """A fresh prod server, a data scientist's account on it, and the batch files (Jan+Feb, March)."""
    root = tmp_path_factory.mktemp("production")
    bikes = datasets.load_bikeshare()
    files = root / "batches"
    files.mkdir()
    for name, months in (("q1", ["Jan", "Feb"]), ("march", ["March"])):
        bikes[bikes["mnth"].isin(months)].to_parquet(files / f"{name}.parquet", index=False)
    with environments.running("prod", home=root / "home") as envs:
        env = envs["prod"]
        alice = env.create_user("alice", "data_scientist")
        yield {"env": env, "files": files, "alice": alice, "home": root / "home", "runs": {}}


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Each run starts from an empty current folder, so a stray ``./mlruns`` would show."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "mlruns").exists(), "model files went to the client's ./mlruns"
    assert list(tmp_path.iterdir()) == []


def snapshot(env) -> dict:
    """prod's registry and the pipeline's runs, as the admin sees them."""
    with env.as_admin():
        client = mlflow.MlflowClient()
        try:
            model = client.get_registered_model(MODEL)
        except MlflowException:
            model = None
        experiment = client.get_experiment_by_name(workflow.EXPERIMENT)
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)
        return {"model": None if model is None else {"tags": dict(model.tags), "aliases": dict(model.aliases)},
                "versions": sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'")) if model else [],
                "runs": sorted(r.info.run_id for r in runs)}


def test_a_data_scientist_is_refused_on_a_fresh_prod_and_nothing_is_created(prod, in_tmp_cwd):
    before = snapshot(prod["env"])
    with pytest.raises(production.AccessDenied) as refused:
        production.run_in(prod["env"], prod["files"] / "q1.parquet", credentials=prod["alice"], settings=FAST)
    message = str(refused.value)
    assert "\n" not in message
    assert "prod refused 'alice' (403 Permission denied) reading the registered model 'bike-demand'" in message
    assert "needs EDIT on experiments and MANAGE on registered models" in message
    assert "DENY on registered models '*'" in message and "role data-scientist" in message
    assert snapshot(prod["env"]) == before == {"model": None, "versions": [], "runs": []}
    with prod["env"].as_admin():
        assert mlflow.MlflowClient().get_experiment_by_name(workflow.EXPERIMENT) is None


def test_wrong_credentials_are_refused_with_a_401(prod, in_tmp_cwd):
    wrong = auth.Credentials(promotion.DEPLOYER, "not-the-password")
    with pytest.raises(production.AccessDenied, match=r"refused the credentials of 'deploy-bot' \(401\)"):
        production.run_in(prod["env"], prod["files"] / "q1.parquet", credentials=wrong, settings=FAST)


def test_a_permission_refused_half_way_leaves_no_model_behind(prod, in_tmp_cwd, monkeypatch):
    """A user who may create the registered model but not write runs (simulated: the parent run's
    creation answers 403) is refused in one line, and the model the run had just created is gone."""
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    def refused(*args, **kwargs):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code "
                              "403 != 200. Response body: 'Permission denied'", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(workflow, "start_parent", refused)
    with pytest.raises(production.AccessDenied) as stopped:
        production.run_in(prod["env"], prod["files"] / "q1.parquet", settings=FAST)
    message = str(stopped.value)
    assert message.startswith("prod refused 'deploy-bot' during the run (API request to endpoint /api/2.0/mlflow/runs/create")
    assert "EDIT on experiments and MANAGE on registered models" in message and "\n" not in message
    state = snapshot(prod["env"])
    assert state["model"] is None and state["versions"] == [] and state["runs"] == []


def test_the_bot_bootstraps_a_fresh_prod_and_makes_the_first_champion(prod, in_tmp_cwd):
    env = prod["env"]
    first = production.run_in(env, prod["files"] / "q1.parquet", settings=FAST)
    prod["runs"]["q1"] = first
    assert first["decision"] == "promoted" and first["version"] == "1", first
    with env.as_admin():
        client = mlflow.MlflowClient()
        model = client.get_registered_model(MODEL)
        assert str(model.aliases["champion"]) == "1"
        [event] = registry.history(MODEL).to_dict("records")
        assert event["by"].startswith(f"{promotion.DEPLOYER}/") and "first champion" in event["reason"]
        assert workflow.ledger(MODEL) == {"2011-01": first["digest"], "2011-02": first["digest"]}
        version = client.get_model_version(MODEL, "1")
        assert version.tags["validation_status"] == "passed"
        assert version.tags["champion.promoted_by"].startswith(f"{promotion.DEPLOYER}/")
        experiment = client.get_experiment_by_name(workflow.EXPERIMENT)
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), "artifacts are the server's"
        parent = client.get_run(first["parent_run_id"])
        assert parent.info.status == "FINISHED"
    # the model files are on the server's side
    served = env.folder / "artifacts" / experiment.experiment_id
    assert any(p.name == "MLmodel" for p in served.rglob("MLmodel"))
    # the months accepted are kept beside prod's server, not in the client's workspace
    assert sorted(p.name for p in (production.store_home(env) / "pipeline" / "data").iterdir()) == \
        ["2011-01.parquet", "2011-02.parquet"]
    # the admin owns the experiment: the bot writes runs into it but cannot delete prod's history
    with env.signed_in(env.credentials(promotion.DEPLOYER)):
        with pytest.raises(MlflowException, match="403|Permission denied|PERMISSION_DENIED"):
            mlflow.MlflowClient().delete_experiment(experiment.experiment_id)


def test_the_bot_retrains_on_the_next_month(prod, in_tmp_cwd):
    march = production.run_in(prod["env"], prod["files"] / "march.parquet", settings=FAST)
    assert march["months"] == ["2011-03"] and march["window_months"] == ["2011-02", "2011-03"]
    assert march["decision"] in ("promoted", "kept") and march["gate"] == "passed", march
    state = snapshot(prod["env"])
    assert state["versions"] == ["1", "2"]
    assert str(state["model"]["aliases"]["champion"]) == ("2" if march["decision"] == "promoted" else "1")
    history = json.loads(state["model"]["tags"]["history.champion"])
    assert all(event["by"].startswith(f"{promotion.DEPLOYER}/") for event in history)


def test_a_data_scientist_cannot_run_a_month_and_the_registry_is_unchanged(prod, in_tmp_cwd, bikes_april):
    before = snapshot(prod["env"])
    with pytest.raises(production.AccessDenied, match="403 Permission denied"):
        production.run_in(prod["env"], bikes_april, credentials=prod["alice"], settings=FAST)
    assert snapshot(prod["env"]) == before


def test_the_same_batch_again_as_the_bot_changes_nothing(prod, in_tmp_cwd):
    before = snapshot(prod["env"])
    again = production.run_in(prod["env"], prod["files"] / "march.parquet", settings=FAST)
    assert again["decision"] == "skipped" and again["reason"].startswith("already processed")
    after = snapshot(prod["env"])
    assert {k: after[k] for k in ("model", "versions")} == {k: before[k] for k in ("model", "versions")}


def test_the_command_line_runs_against_prod_as_the_bot_and_refuses_a_data_scientist(prod, in_tmp_cwd, monkeypatch,
                                                                                       capsys):
    env = prod["env"]
    # what `mlops-lab env up prod` would have left: the running server in the workspace's state file
    monkeypatch.setenv("MLOPS_LAB_HOME", str(prod["home"]))
    state = environments.state_path(prod["home"])
    state.write_text(json.dumps({"prod": {"url": env.url, "port": env.server.port, "backend": env.backend,
                                          "folder": str(env.folder)}}))
    before = snapshot(env)
    try:
        batch = str(prod["files"] / "march.parquet")
        assert cli.main(["pipeline", "run", "--env", "prod", "--batch", batch, "--trials", "1",
                         "--window-months", "2"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("2011-03: skipped: already processed") and "champion: version" in out
        assert cli.main(["pipeline", "run", "--env", "prod", "--user", "alice", "--batch", batch]) == 2
        [error] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert error.startswith("error: prod refused 'alice' (403 Permission denied)") and "DENY" in error
    finally:
        state.unlink()
    assert env.healthy, "a server the command found running is left running"
    after = snapshot(env)
    assert {k: after[k] for k in ("model", "versions")} == {k: before[k] for k in ("model", "versions")}


@pytest.fixture
def bikes_april(prod):
    path = prod["files"] / "april.parquet"
    if not path.exists():
        bikes = datasets.load_bikeshare()
        bikes[bikes["mnth"] == "April"].to_parquet(path, index=False)
    return path
