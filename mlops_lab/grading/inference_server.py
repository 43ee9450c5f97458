"""Checks for ``labs/10_inference_server.ipynb``: deploy, call every format, score a batch, find the capacity."""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-10-inference-server"
REGISTERED_MODEL = "lab-10-credit-risk"
CHAMPION = f"models:/{REGISTERED_MODEL}@champion"
SLO_P99_MS = 200.0
"""The latency objective of task 4: 99 % of requests answered within 200 ms."""
START_RATE = 30
STEP_SECONDS = 3.0

LAB = Lab("10_inference_server", "Inference server: deploy, call every format, batch-score, find the capacity")


def _expected(rows):
    import mlflow

    from mlops_lab.config import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(CHAMPION).predict(rows)


@LAB.check(
    "server_deployed",
    hint="`server = serving.model_server(checks.CHAMPION).start()` serves the champion by its alias "
    "(keep it running until the last task).",
)
def server_deployed(ns: dict) -> None:
    from mlops_lab.serving import ModelServer, ScoringClient

    server = ns.get("server")
    assert isinstance(server, ModelServer), "there is no variable `server` holding a started model server"
    assert server.model_uri == CHAMPION, f"the server serves {server.model_uri!r}, not {CHAMPION!r}"
    assert server.running and ScoringClient(server.url).ping(), "the server does not answer /ping"


@LAB.check(
    "every_format",
    hint="`client = server.client()`, then `answers = {fmt: client.predict(sample, fmt) for fmt in serving.FORMATS}`.",
)
def every_format(ns: dict) -> None:
    import numpy as np

    from mlops_lab.serving import FORMATS

    answers, sample = ns.get("answers"), ns.get("sample")
    assert isinstance(answers, dict), "there is no dict `answers` (format -> predictions)"
    missing = [f for f in FORMATS if f not in answers]
    assert not missing, f"`answers` has no predictions for {missing}"
    expected = _expected(sample)
    wrong = [f for f in FORMATS if not np.array_equal(np.asarray(answers[f]), expected)]
    assert not wrong, f"the predictions for {wrong} are not the champion's predictions for `sample`"


@LAB.check(
    "batch_scored",
    hint="`batch_scores = serving.score_over_http(client, applications, chunk_size=50)` sends the "
    "applications 50 rows per request.",
)
def batch_scored(ns: dict) -> None:
    import numpy as np

    scores, applications = ns.get("batch_scores"), ns.get("applications")
    assert scores is not None, "there is no variable `batch_scores`"
    assert len(scores) == len(applications), f"{len(scores)} scores for {len(applications)} applications"
    assert np.array_equal(np.asarray(scores), _expected(applications)), "`batch_scores` are not the champion's predictions"


@LAB.check(
    "capacity_found",
    hint="`target = loadtest.Target.json(server.url + \"/invocations\", body)` with a one-row "
    "`dataframe_split` body, then `capacity, steps = loadtest.find_capacity(target, slo_p99_ms=checks.SLO_P99_MS, "
    "start_rate=checks.START_RATE, duration=checks.STEP_SECONDS)`.",
)
def capacity_found(ns: dict) -> None:
    import pandas as pd

    from mlops_lab import loadtest

    capacity, steps = ns.get("capacity"), ns.get("steps")
    assert isinstance(steps, pd.DataFrame) and {"rate", "p99_ms", "error_rate"} <= set(steps.columns), \
        "`steps` should be the table find_capacity returned"
    assert len(steps) >= 2, "step the load up at least twice"
    assert capacity is not None and capacity > 0, "no rate met the SLO: start lower"
    assert capacity == loadtest.capacity(steps, SLO_P99_MS), "`capacity` is not the highest rate that met the SLO in `steps`"
    assert (steps["p99_ms"] > SLO_P99_MS).any() or (steps["error_rate"] >= 0.01).any(), \
        "no step broke the SLO: the capacity is where latency or errors break it"


@LAB.check(
    "server_stopped",
    hint="`server.stop()` stops the server and its workers and frees the port.",
)
def server_stopped(ns: dict) -> None:
    from mlops_lab.processes import port_in_use

    from mlops_lab.processes import group_members

    server = ns.get("server")
    assert server is not None, "there is no variable `server`"
    assert server.pgid is not None, "the server was never started"
    assert not server.running and not group_members(server.pgid), "the server (or one of its workers) is still running"
    assert not port_in_use(server.port), f"port {server.port} is still bound"
