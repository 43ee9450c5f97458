"""The autoscaler over real replicas behind the real router: scale up with the load, drain on the way down.

One registry and one router serve the module; replicas are the ONNX gateway (the fastest server to
start), so the test shows the control loop, not start-up times (lesson 20 measures those with
``mlflow models serve``).
"""

from __future__ import annotations

import json
import time

import pytest

from mlops_lab import config, datasets, deployment, loadtest, prerequisites, registry, scaling, serving, training

pytestmark = pytest.mark.integration
MODEL = prerequisites.CREDIT_MODEL


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("scaling-home")
    with config.environment_variables({"MLOPS_LAB_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        workspace = config.use_workspace("scaling-tests")
        prerequisites.champion(MODEL)
        version = registry.version_for(MODEL, registry.CHAMPION).version
        env = {"MLFLOW_TRACKING_URI": workspace.tracking_uri}
        uri = f"models:/{MODEL}/{version}"
        split = training.credit_split(datasets.load_german_credit())
        first = serving.gateway_server(uri, env=env).start()
        spec = {"name": "scaling-test", "strategy": "single", "model": MODEL,
                "variants": {"stable": {"version": str(version), "urls": [first.url]}}}
        try:
            with deployment.router(spec, env=env) as router:
                yield {"router": router, "first": first, "start": lambda: serving.gateway_server(uri, env=env),
                       "target": loadtest.Target.json(router.url + "/invocations",
                                                      json.loads(serving.payload(split.X_test.head(1))[0]))}
        finally:
            first.stop()


def _urls(router) -> list[str]:
    return [r["url"] for r in router.client().status()["variants"]["stable"]["replicas"]]


def _load_until(target, rate: float, done, limit_s: float, chunk_s: float = 2.0) -> list:
    """Open-loop load at ``rate`` in ``chunk_s`` runs until ``done()`` or ``limit_s``: the results.

    The phases end on what the replicas did, not on a clock: a start-up takes seconds on an idle
    laptop and several times that on a busy CI runner."""
    results, start = [], time.monotonic()
    while True:
        results.append(loadtest.run_open_loop(target, rate, chunk_s))
        if done() or time.monotonic() - start > limit_s:
            return results


def test_the_controller_scales_up_with_the_load_and_back_down_after_the_window(live):
    router, first = live["router"], live["first"]
    policy = scaling.Policy(target=10, max_replicas=3, scale_down_window_s=3, period_s=1)
    with scaling.ReplicaSet(router.url, "stable", live["start"]) as replicas:
        replicas.adopt(first)

        def actions(name):
            return [e for e in replicas.events if e["action"] == name]

        with scaling.Controller(replicas, policy, sync_s=0.5) as controller:
            # 40/s at a target of 10 per replica: up to the maximum, held until both new ones serve
            results = _load_until(live["target"], 40, lambda: len(actions("ready")) == 2, limit_s=120)
            # 3/s: back to the minimum once the window has passed
            results += _load_until(live["target"], 3, lambda: controller.table()["desired"].iloc[-1] == 1,
                                   limit_s=60)
        replicas.wait()
        table = controller.table()
        assert table["desired"].max() == 3, table
        assert table["desired"].iloc[-1] == 1, table
        assert len(_urls(router)) == 1 and _urls(router) == [first.url]
        stopped = actions("stopped")
        assert len(actions("ready")) == 2 and len(stopped) == 2 and all(e["drained"] for e in stopped), replicas.events
        assert all(r.summary()["error_rate"] == 0 for r in results)  # draining loses no request
        held = table[table["reason"].str.contains("held at", na=False)]
        assert len(held), table  # the window kept replicas through the first low syncs
        assert replicas.alive == 1 and not controller.errors
        end = float(table["time_s"].max())
        assert scaling.replica_seconds(table, end) > scaling.replica_seconds(table, end, column="ready")
    assert first.running, "an adopted server is its owner's to stop"
    with pytest.raises(RuntimeError, match="closed"):
        replicas.scale_to(2)


def test_a_replica_that_fails_to_start_is_recorded_and_not_counted(live):
    router = live["router"]

    def broken():
        return serving.gateway_server("models:/no-such-model/1", timeout=20)

    with scaling.ReplicaSet(router.url, "stable", broken) as replicas:
        replicas.adopt(live["first"])
        replicas.scale_to(2)
        assert replicas.desired == 2
        replicas.wait()
        assert replicas.desired == 1 and replicas.ready == 1
        failed = [e for e in replicas.events if e["action"] == "failed"]
        assert len(failed) == 1 and "no-such-model" in failed[0]["error"]  # the log tail says why
        assert replicas.alive == 1

        def raises():
            raise OSError("no port left")

        replicas._start = raises  # a factory that fails before any process exists
        replicas.scale_to(2)
        replicas.wait()
        assert replicas.desired == 1 and replicas.alive == 1
        assert "no port left" in replicas.events[-1]["error"]
    assert _urls(router) == [live["first"].url] and live["first"].running


def test_scaling_down_while_a_replica_starts_undoes_the_start(live):
    router = live["router"]
    with scaling.ReplicaSet(router.url, "stable", live["start"]) as replicas:
        replicas.adopt(live["first"])
        replicas.scale_to(2)
        replicas.scale_to(1)  # before the new one is ready
        assert replicas.desired == 1
        replicas.wait()
        assert replicas.ready == 1 and replicas.alive == 1 and _urls(router) == [live["first"].url]
        assert [e["action"] for e in replicas.events] == ["adopted", "cancelled"]  # it never joined the router
        replicas.scale_to(3)
        replicas.scale_to(2)  # one of the two starts is undone, the other serves
        replicas.wait()
        assert replicas.ready == 2 and len(_urls(router)) == 2 and len(replicas.start_ups()) == 1
        with pytest.raises(ValueError, match="at least 1"):
            replicas.scale_to(0)
        replicas.scale_to(1)  # the newest goes: drained, removed, stopped
        replicas.wait()
        assert replicas.events[-1]["action"] == "stopped" and replicas.alive == 1
    assert _urls(router) == [live["first"].url] and live["first"].running
