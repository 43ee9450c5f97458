"""The retraining workflow on real processes: Dagster's daemon and web UI, and a pipeline killed mid-run.

The daemon's inbox sensor picks up a batch dropped in the workspace and launches exactly one run,
which registers one challenger; the same batch dropped again runs once more and registers nothing.
``mlops-lab pipeline run`` killed by SIGKILL while it trains leaves the registry as it was, and
the next run completes.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import mlflow
import pytest

from mlops_lab import cli, datasets
from mlops_lab.pipeline import definitions, service, workflow
from mlops_lab.processes import ManagedProcess, group_members

pytestmark = pytest.mark.integration


def _first_months(path) -> None:
    bikes = datasets.load_bikeshare()
    bikes[bikes["mnth"].isin(["Jan", "Feb"])].to_parquet(path, index=False)


def _versions() -> list[str]:
    return sorted(str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name = '{workflow.MODEL_NAME}'"))


def test_the_daemon_runs_a_dropped_batch_once_and_the_same_batch_again_adds_no_version(home):
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    inbox = definitions.inbox_dir()
    inbox.mkdir(parents=True)
    with service.start(home=home) as running:
        assert running.url.startswith("http://127.0.0.1:")
        _first_months(inbox / "2011-01..02.parquet")
        [run] = service.wait_for_runs(1, home=home, timeout=240)
        assert run["status"] == "SUCCESS" and run["trigger"] == "sensor:inbox", run
        assert _versions() == ["1"]
        aliases = mlflow.MlflowClient().get_registered_model(workflow.MODEL_NAME).aliases
        assert {k: str(v) for k, v in aliases.items()} == {"champion": "1"}

        time.sleep(1.1)  # a new modification time: the file is dropped again, a new request
        _first_months(inbox / "2011-01..02.parquet")
        runs = service.wait_for_runs(2, home=home, timeout=240)
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], runs
        assert _versions() == ["1"]
        skipped = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                     filter_string=f"tags.dagster_run_id = '{runs[0]['run_id']}' and tags.pipeline_step = 'ingest'")
        assert [r.data.tags["outcome"] for r in skipped] == [f"already processed: 2011-01, 2011-02 (batch {workflow.batch_digest(workflow.read_batch(inbox / '2011-01..02.parquet'))})"]
        groups = [p.pgid for p in running.processes.values()]
    assert all(not group_members(pgid) for pgid in groups)
    mlflow.set_tracking_uri(None)


def test_pipeline_up_status_down_from_the_command_line(home, capsys):
    assert cli.main(["pipeline", "status"]) == 0
    assert "daemon  down" in capsys.readouterr().out
    assert cli.main(["pipeline", "up"]) == 0
    try:
        shown = capsys.readouterr().out
        assert "Dagster UI: http://127.0.0.1:" in shown and str(definitions.inbox_dir()) in shown
        assert cli.main(["pipeline", "up"]) == 0  # up again: says where it is, starts nothing
        assert cli.main(["pipeline", "status"]) == 0
        assert "daemon  up" in capsys.readouterr().out
    finally:
        assert cli.main(["pipeline", "down"]) == 0
    assert "stopped: webserver, daemon" in capsys.readouterr().out
    assert cli.main(["pipeline", "down"]) == 0
    assert "nothing was running" in capsys.readouterr().out


def test_a_pipeline_killed_while_training_changes_nothing_and_the_next_run_completes(home):
    batch = home / "first.parquet"
    _first_months(batch)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    command = [sys.executable, "-m", "mlops_lab.cli", "pipeline", "run", "--batch", str(batch), "--trials", "30"]

    def training() -> bool:
        found = mlflow.get_experiment_by_name(workflow.EXPERIMENT)
        return found is not None and bool(mlflow.search_runs(
            [found.experiment_id], output_format="list",
            filter_string="tags.pipeline_step = 'retrain' and attributes.status = 'RUNNING'"))

    process = ManagedProcess(command, name="pipeline-run", ready=training, timeout=180,
                             env={"MLFLOW_TRACKING_URI": uri}).start()
    os.killpg(process.pgid, signal.SIGKILL)  # no clean-up handler runs: a machine losing power
    process.stop()
    client = mlflow.MlflowClient()
    assert _versions() == [] and client.get_registered_model(workflow.MODEL_NAME).aliases == {}
    assert workflow.ledger(workflow.MODEL_NAME) == {}
    [stale] = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                 filter_string="tags.pipeline_step = 'retrain'")
    assert stale.info.status == "RUNNING"  # what the killed process left

    done = definitions.run(batch, settings=workflow.Settings(trials=2, window_months=2))
    assert done["decision"] == "promoted" and _versions() == ["1"]
    killed = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="attributes.status = 'KILLED'")
    assert {r.data.tags.get("mlflow.runName") for r in killed} == {f"pipeline-{done['label']}", "retrain"}
    mlflow.set_tracking_uri(None)


def test_pipeline_run_reports_a_missing_batch_in_one_line(home, capsys):
    assert cli.main(["pipeline", "run", "--batch", str(home / "nothing.parquet")]) == 2
    assert "error: No batch file" in capsys.readouterr().err
