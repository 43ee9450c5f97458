"""The whole monitoring path on real processes: traffic -> router -> inference log -> monitor ->
Prometheus -> alert rule -> Alertmanager -> our receiver.

A real model server (the ONNX gateway of a logged credit model) sits behind a real router; the
monitor service watches the router's inference log; Prometheus scrapes the monitor and the router.
Healthy traffic raises nothing; traffic asking for three times the credit makes FeatureDrift fire
for ``credit_amount``, delivered once to the receiver, where lesson 14's retraining picks it up.
"""

from __future__ import annotations

import time

import pytest
from promstack import fast_stack, need

from mlops_lab import datasets, deployment, monitoring, serving, training

pytestmark = pytest.mark.integration


def send(client, rows) -> None:
    for i in range(len(rows)):
        answer = client.post(*serving.payload(rows.iloc[[i]]), headers={"X-User-Id": f"applicant-{i}"})
        assert answer.ok, answer.message


def test_drifted_traffic_fires_an_alert_delivered_once_and_healthy_traffic_none(model, home):
    need("prometheus", "alertmanager")
    split = training.credit_split(datasets.load_german_credit())
    reference = split.X_train.assign(prediction=model["pipeline"].predict(split.X_train))
    healthy = split.X_test.head(100)
    drifted = split.X_test.iloc[100:200].assign(credit_amount=lambda f: f["credit_amount"] * 3)
    spec = {"name": "monitored", "strategy": "single", "variants": {"stable": {"version": "1", "urls": []}}}
    with serving.gateway_server(model["uri"]) as gateway:
        spec["variants"]["stable"]["urls"] = [gateway.url]
        with deployment.router(spec) as router:
            settings = monitoring.ServiceConfig(log=str(router.log().path), reference=str(home / "reference.parquet"),
                                                numeric=training.CREDIT_NUMERIC,
                                                categorical=training.CREDIT_CATEGORICAL, window=100, interval=0.5,
                                                categorical_prediction=True, labels=False)
            with monitoring.serve(settings, reference) as monitor, \
                    fast_stack({"monitor": monitor.url + "/metrics", "router": router.url + "/metrics"}) as stack:
                client = router.scoring_client()
                send(client, healthy)
                router.client().status(flush=True)
                assert monitor.check()["verdict"] == "stable"
                health = {t["job"]: t["health"] for t in stack.wait_for_targets(timeout=30)}
                assert health == {"monitor": "up", "router": "up"}
                time.sleep(4)  # longer than for: 2s + an evaluation + group_wait: nothing may fire
                assert stack.alerts() == [] and stack.store.notifications() == []
                [requests] = stack.query('sum(mlops_router_requests_total{code="200"})')
                assert requests["value"] == 100

                send(client, drifted)
                router.client().status(flush=True)
                status = monitor.check()
                assert status["drifted"] == ["credit_amount"], status
                [delivered] = stack.store.wait_for("FeatureDrift", status="firing", timeout=30)
                assert delivered["labels"]["feature"] == "credit_amount"
                assert delivered["labels"]["job"] == "monitor"
                time.sleep(2)  # Prometheus re-sends at every evaluation; Alertmanager delivers once
                firing = [n for n in stack.store.notifications() if n["labels"]["alertname"] == "FeatureDrift"]
                assert len(firing) == 1
