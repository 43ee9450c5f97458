"""Deployment strategies on real processes: the router in front of real gateways, on loopback.

One registry (champion = version 1, a validated challenger = version 2) and one gateway per
version serve the whole module; each test starts the routers it needs.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import mlflow
import pytest

from mlops_lab import config, datasets, deployment, loadtest, prerequisites, registry, serving, training
from mlops_lab.deployment import SpecError

pytestmark = pytest.mark.integration
MODEL = prerequisites.CREDIT_MODEL


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    """A workspace with a champion (v1) and a challenger (v2), and an ONNX gateway serving each."""
    home = tmp_path_factory.mktemp("deployment-home")
    with config.environment_variables({"MLOPS_LAB_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        workspace = config.use_workspace("deployment-tests")
        prerequisites.champion(MODEL)
        challenger = prerequisites.challenger(MODEL)
        champion = registry.version_for(MODEL, registry.CHAMPION).version
        env = {"MLFLOW_TRACKING_URI": workspace.tracking_uri}
        split = training.credit_split(datasets.load_german_credit())
        with serving.gateway_server(f"models:/{MODEL}/{champion}", env=env) as v1, \
                serving.gateway_server(f"models:/{MODEL}/{challenger}", env=env) as v2:
            yield {"home": home, "uri": workspace.tracking_uri, "env": env, "v1": str(champion), "v2": str(challenger),
                   "s1": v1, "s2": v2, "X": split.X_test, "body": serving.payload(split.X_test.head(1))}


@pytest.fixture
def registry_of(landscape):
    """The module's registry as the in-process MLflow client sees it."""
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(landscape["uri"])
    yield
    mlflow.set_tracking_uri(saved)


def start(landscape, spec: dict):
    return deployment.router(spec, env=landscape["env"])


def target(server, landscape) -> loadtest.Target:
    body, content_type = landscape["body"]
    return loadtest.Target(server.url + "/invocations", body, content_type)


def canary_spec(landscape, *, fault: dict | None = None, url: str | None = None, name: str = "trial") -> dict:
    canary = {"version": landscape["v2"], "urls": [url or landscape["s2"].url]}
    if fault:
        canary["fault"] = fault
    return {"name": name, "model": MODEL, "strategy": "canary",
            "variants": {"stable": {"version": landscape["v1"], "urls": [landscape["s1"].url]}, "canary": canary},
            "canary": {"steps": [10, 25, 50, 100], "interval_s": 0.4, "threshold": 2, "min_requests": 5,
                       "max_error_rate": 0.01, "max_p99_ratio": 2.0, "p99_slack_ms": 20}}


class Background:
    """Open-loop load in a thread, in short runs until stopped; every run's result is kept."""

    def __init__(self, target: loadtest.Target, rate: float, chunk_s: float = 0.5) -> None:
        self.results: list[loadtest.LoadResult] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target, rate, chunk_s), daemon=True)

    def _run(self, target, rate, chunk_s) -> None:
        while not self._stop.is_set():
            self.results.append(loadtest.run_open_loop(target, rate, chunk_s))

    def __enter__(self) -> "Background":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for result in self.results:
            for kind, count in result.error_counts().items():
                total[kind] = total.get(kind, 0) + count
        return total

    def count(self) -> int:
        return sum(len(r) for r in self.results)


def test_a_malformed_spec_is_refused_before_anything_starts(landscape):
    bad = canary_spec(landscape)
    bad["canary"]["interval_s"] = -1
    bad["variants"]["stable"]["urls"] = ["127.0.0.1:5001"]
    with pytest.raises(SpecError) as caught:
        deployment.router(bad)
    assert any("interval_s must be greater than 0" in p for p in caught.value.problems)
    assert any("must be a URL" in p for p in caught.value.problems)
    unvalidated = canary_spec(landscape)
    unvalidated["variants"]["canary"]["version"] = "99"
    with pytest.raises(SpecError, match="refuses"):
        with config.environment_variables({"MLFLOW_TRACKING_URI": landscape["uri"]}):
            deployment.router(unvalidated)


def test_twenty_good_canaries_are_promoted_and_twenty_bad_ones_rolled_back(landscape, registry_of):
    """Flagger's promise: a bad canary (5 % errors, or p99 far above stable) is rolled back within
    4 intervals every time; a good one is promoted every time; the alias moves only on promotion."""
    trials = [("good", None)] * 20 + [("erroring", {"abort_percent": 5})] * 10 + [("slow", {"delay_ms": 80})] * 10
    outcomes = []
    with start(landscape, canary_spec(landscape)) as router, Background(target(router, landscape), rate=250):
        client = router.client()
        client.wait_for_canary(timeout=60)  # the spec it started with
        for kind, fault in trials:
            registry.promote(MODEL, landscape["v1"], reason="trial reset: version 1 is champion again", actor="test")
            client.apply(canary_spec(landscape, fault=fault, name="trial"))
            state = client.wait_for_canary(timeout=60)
            champion = registry.version_for(MODEL, registry.CHAMPION).version
            outcomes.append((kind, state["status"], len(state["checks"]), str(champion), client.weights()["canary"]))
    good = [o for o in outcomes if o[0] == "good"]
    bad = [o for o in outcomes if o[0] != "good"]
    assert [o[1] for o in good] == ["promoted"] * 20, good
    assert all(o[3] == landscape["v2"] and o[4] == 100 for o in good), good
    assert [o[1] for o in bad] == ["rolled_back"] * 20, bad
    assert all(o[2] <= 4 for o in bad), [o[2] for o in bad]  # checks until the rollback
    assert all(o[3] == landscape["v1"] and o[4] == 0 for o in bad), bad  # alias untouched, canary at 0
    rollback = registry.history(MODEL)
    assert set(rollback["by"]) == {"course-setup", "test", "router/trial"}


def test_a_canary_whose_server_dies_is_rolled_back_with_the_reason(landscape, registry_of):
    registry.promote(MODEL, landscape["v1"], reason="reset before the dead-canary test", actor="test")
    with serving.gateway_server(f"models:/{MODEL}/{landscape['v2']}", env=landscape["env"]) as doomed:
        spec = canary_spec(landscape, url=doomed.url, name="dead-canary")
        with start(landscape, spec) as router, Background(target(router, landscape), rate=100):
            time.sleep(0.3)
            doomed.stop()
            state = router.client().wait_for_canary(timeout=30)
    assert state["status"] == "rolled_back"
    assert "error rate" in state["reason"]
    assert str(registry.version_for(MODEL, registry.CHAMPION).version) == landscape["v1"]
    tags = mlflow.MlflowClient().get_model_version(MODEL, landscape["v2"]).tags
    assert "error rate" in tags["canary.rolled_back_reason"]


def test_ab_split_is_sticky_per_user_and_every_answer_is_logged(landscape):
    spec = {"name": "ab", "strategy": "ab", "salt": "exp-1",
            "variants": {"a": {"version": landscape["v1"], "urls": [landscape["s1"].url]},
                         "b": {"version": landscape["v2"], "urls": [landscape["s2"].url]}},
            "weights": {"a": 50, "b": 50}}
    X = landscape["X"]
    with start(landscape, spec) as router:
        client = router.scoring_client()
        seen: dict[str, set] = {}
        for i in range(120):
            user = f"user-{i % 30}"
            answer = client.post(*serving.payload(X.iloc[[i % len(X)]]), headers={"X-User-Id": user})
            assert answer.ok, answer
            seen.setdefault(user, set()).add(answer.headers["X-Variant"])
        router.client().status(flush=True)
        table = router.log().frame(parse=True)
    assert all(len(v) == 1 for v in seen.values()), seen  # sticky
    assert {next(iter(v)) for v in seen.values()} == {"a", "b"}
    assert len(table) == 120 and table["request_id"].is_unique
    assert set(table["version"]) == {landscape["v1"], landscape["v2"]}
    assert table.groupby("key")["variant"].nunique().max() == 1
    assert all(isinstance(r, dict) and "predictions" in r for r in table["response"])


def test_the_router_passes_model_server_refusals_through_and_answers_413_every_client_can_read(landscape):
    spec = {"name": "single", "strategy": "single",
            "variants": {"only": {"version": landscape["v1"], "urls": [landscape["s1"].url]}}}
    corpus = [c for c in serving_corpus(landscape) if c.status != 413]
    with start(landscape, spec) as router:
        via_router = serving.try_requests(corpus, {"router": router.url, "direct": landscape["s1"].url})
        body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [["y" * 2_000_000]]}}).encode()
        request = urllib.request.Request(router.url + "/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        refused = json.loads(caught.value.read())
        after = router.scoring_client().predict(landscape["X"].head(2))
    assert (via_router["router"] == via_router["direct"]).all(), via_router[via_router["router"] != via_router["direct"]]
    assert (via_router["router"] >= 400).all() and (via_router["router"] < 500).all()
    assert caught.value.code == 413 and "1,000,000" in refused["message"] and "chunk" in refused["message"]
    assert len(after) == 2


def serving_corpus(landscape):
    from mlops_lab import gateway

    return gateway.malformed_requests(landscape["X"].head(3))


def test_shadow_answers_never_reach_the_client_and_a_dead_shadow_costs_the_primary_nothing(landscape):
    spec = {"name": "shadow", "strategy": "shadow",
            "variants": {"primary": {"version": landscape["v1"], "urls": [landscape["s1"].url]},
                         "candidate": {"version": landscape["v2"], "urls": []}},
            "mirror": {"to": "candidate", "timeout_s": 1.0}}
    with serving.gateway_server(f"models:/{MODEL}/{landscape['v2']}", env=landscape["env"]) as shadow_server:
        spec["variants"]["candidate"]["urls"] = [shadow_server.url]
        with start(landscape, spec) as router:
            client = router.scoring_client()
            X = landscape["X"]
            for i in range(60):
                answer = client.post(*serving.payload(X.iloc[[i]]))
                assert answer.ok and answer.headers["X-Variant"] == "primary"
            router.client().status(flush=True)
            comparison = deployment.compare_shadow(router.log())
            with Background(target(router, landscape), rate=100) as load:
                time.sleep(1.5)
                shadow_server.stop()
                time.sleep(1.5)
            router.client().status(flush=True)
            table = router.log().frame()
            metrics = router.client().metrics()
    assert comparison.loc["shadow", "paired"] == 60 and comparison.loc["primary", "requests"] == 60
    assert 0.5 <= comparison.loc["shadow", "agreement"] <= 1.0
    assert load.errors() == {}, load.errors()  # 0 primary errors while the shadow died
    # the primary's p99 with the shadow alive and dead is measured side by side in benchmarks/bench_deployment.py
    shadow = table[table["role"] == "shadow"]
    assert (shadow["status"] == 502).any() and (shadow["status"] == 200).any()  # it did die, and it was logged
    assert shadow.loc[shadow["status"] == 502, "error"].str.contains("cannot connect").all()
    assert 'mlops_router_shadow_requests_total{outcome="failed",variant="candidate"}' in metrics


def test_blue_green_switches_and_rolls_back_under_load_without_a_failed_request(landscape):
    spec = {"name": "bluegreen", "strategy": "bluegreen", "active": "blue",
            "variants": {"blue": {"version": landscape["v1"], "urls": [landscape["s1"].url]},
                         "green": {"version": landscape["v2"], "urls": [landscape["s2"].url]}}}
    with start(landscape, spec) as router, Background(target(router, landscape), rate=150) as load:
        client = router.client()
        time.sleep(0.7)
        client.switch("green")
        time.sleep(0.7)
        client.switch("blue", reason="rollback")
        time.sleep(0.7)
        dead = {**spec, "variants": {**spec["variants"], "green": {"version": "3", "urls": ["http://127.0.0.1:9"]}}}
        client.apply(dead)
        with pytest.raises(deployment.RouterError) as refused:
            client.switch("green")
        weights = client.weights()
    assert load.errors() == {} and load.count() > 200
    assert refused.value.status == 409 and "green" in refused.value.message
    assert weights == {"blue": 100.0, "green": 0.0}
    router_log = router.log().frame()
    assert set(router_log["variant"]) == {"blue", "green"}


def test_a_rolling_update_replaces_every_replica_under_load_without_a_failed_request(landscape):
    env = landscape["env"]
    old = [serving.gateway_server(f"models:/{MODEL}/{landscape['v1']}", env=env).start() for _ in range(2)]
    new = []
    try:
        spec = {"name": "rolling", "strategy": "rolling",
                "variants": {"credit": {"version": landscape["v1"], "urls": [s.url for s in old]}}}
        steps = []
        with start(landscape, spec) as router, Background(target(router, landscape), rate=100) as load:
            new = deployment.rolling_update(
                router.client(), "credit", old,
                lambda: serving.gateway_server(f"models:/{MODEL}/{landscape['v2']}", env=env).start(),
                version=landscape["v2"], on_step=steps.append)
            time.sleep(0.5)
            status = router.client().status(flush=True)
        table = router.log().frame()
    finally:
        for server in old + new:
            server.stop()
    assert load.errors() == {}, load.errors()
    assert [s["drained"] for s in steps] == [True, True]
    assert {r["url"] for r in status["variants"]["credit"]["replicas"]} == {s.url for s in new}
    assert table["version"].iloc[0] == landscape["v1"] and table["version"].iloc[-1] == landscape["v2"]
    assert not any(s.running for s in old)


def test_a_restarted_router_keeps_its_weights_and_its_log_without_duplicates(landscape):
    spec = {"name": "restart", "strategy": "ab",
            "variants": {"a": {"version": landscape["v1"], "urls": [landscape["s1"].url]},
                         "b": {"version": landscape["v2"], "urls": [landscape["s2"].url]}},
            "weights": {"a": 50, "b": 50}}
    X = landscape["X"]
    ids = []
    for round_ in range(2):
        with start(landscape, spec) as router:
            if round_ == 0:
                router.client().set_weights({"a": 80, "b": 20}, reason="less risk")
            weights = router.client().weights()
            client = router.scoring_client()
            for i in range(40):
                request_id = f"r{round_}-{i}"
                ids.append(request_id)
                assert client.post(*serving.payload(X.iloc[[i]]), headers={"X-Request-Id": request_id}).ok
        assert weights == {"a": 80.0, "b": 20.0}
    table = router.log().frame()
    assert len(table) == 80 and sorted(table["request_id"]) == sorted(ids)


def test_metrics_count_requests_errors_and_latency_per_variant(landscape):
    spec = {"name": "metrics", "strategy": "ab",
            "variants": {"a": {"version": landscape["v1"], "urls": [landscape["s1"].url]},
                         "b": {"version": landscape["v2"], "urls": [landscape["s2"].url],
                               "fault": {"abort_percent": 50}}},
            "weights": {"a": 50, "b": 50}}
    with start(landscape, spec) as router:
        loadtest.run_open_loop(target(router, landscape), 100, 1.0)
        text = router.client().metrics()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    ok_a = samples[("mlops_router_requests_total", (("code", "200"), ("variant", "a")))]
    failed_b = samples[("mlops_router_errors_total", (("variant", "b"),))]
    assert ok_a > 20 and failed_b > 10 and samples[("mlops_router_errors_total", (("variant", "a"),))] == 0
    assert samples[("mlops_router_request_duration_seconds_count", (("variant", "a"),))] == ok_a
    assert samples[("mlops_router_weight_percent", (("variant", "b"),))] == 50


def test_the_router_runs_from_a_terminal_and_answers_its_commands(landscape, tmp_path):
    import sys
    from pathlib import Path

    from mlops_lab import cli, processes

    spec = tmp_path / "single.yaml"
    spec.write_text(json.dumps({"name": "terminal", "strategy": "single",
                                "variants": {"only": {"version": landscape["v1"], "urls": [landscape["s1"].url]}}}))
    port = processes.free_port()
    command = [str(Path(sys.executable).parent / "mlops-lab"), "router", "serve", str(spec), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with processes.ManagedProcess(command, name="router-cli", port=port, health_url=url + "/ping", env=landscape["env"]):
        assert serving.ScoringClient(url).predict(landscape["X"].head(3)).shape == (3,)
        assert cli.main(["router", "status", "--url", url]) == 0
        assert cli.main(["router", "weights", "only=50", "--url", url]) == 2  # does not sum to 100
