"""Operate: the automated retraining workflow on Dagster (lesson 14).

:mod:`~mlops_lab.pipeline.workflow` holds the steps (ingest, validate, features, retrain,
evaluate, gate, decide, record) as plain functions; :mod:`~mlops_lab.pipeline.definitions` makes
them a Dagster job with an inbox sensor, a monthly schedule and an alert sensor;
:mod:`~mlops_lab.pipeline.stream` turns micro-batches into complete months;
:mod:`~mlops_lab.pipeline.replay` replays the year under three retraining policies;
:mod:`~mlops_lab.pipeline.service` runs Dagster's daemon and web UI as managed processes;
:mod:`~mlops_lab.pipeline.production` runs the same job against an environment of lesson 09
(``prod``) signed in as the deployer bot.
"""

from mlops_lab.pipeline.workflow import MODEL_NAME, PipelineError, Settings, ledger

__all__ = ["MODEL_NAME", "PipelineError", "Settings", "ledger"]
