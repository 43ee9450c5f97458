"""The strategy spec as Kubernetes manifests: every strategy renders, and validates offline.

No cluster: the core kinds are checked with kubernetes-validate, the custom resources against the
CRD schemas vendored under ``mlops_lab/deployment/crds``. Each check is tested both ways: the
rendered object passes, the same object broken in one place fails with a message naming the place.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from mlops_lab.deployment import SpecError, load_spec, manifests

pytestmark = pytest.mark.unit

URL = "http://127.0.0.1:{}"
SPECS = {
    "single": {"name": "credit-single", "strategy": "single",
               "variants": {"main": {"version": "1", "urls": [URL.format(5001)]}}},
    "rolling": {"name": "credit-rolling", "strategy": "rolling",
                "variants": {"main": {"version": "3", "urls": [URL.format(5001), URL.format(5002), URL.format(5003)]}}},
    "ab": {"name": "credit-ab", "strategy": "ab", "weights": {"a": 70, "b": 30},
           "variants": {"a": {"version": "1", "urls": [URL.format(5001)]},
                        "b": {"version": "2", "urls": [URL.format(5002), URL.format(5003)]}}},
    "canary": {"name": "credit-canary", "strategy": "canary",
               "variants": {"stable": {"version": "1", "urls": [URL.format(5001)]},
                            "canary": {"version": "2", "urls": [URL.format(5002)],
                                       "fault": {"delay_ms": 150, "delay_percent": 50, "abort_percent": 20}}},
               "canary": {"steps": [5, 20, 50, 100], "interval_s": 30, "threshold": 3, "max_error_rate": 0.02,
                          "max_p99_ms": 400}},
    "shadow": {"name": "credit-shadow", "strategy": "shadow", "mirror": {"to": "challenger"},
               "variants": {"champion": {"version": "1", "urls": [URL.format(5001)]},
                            "challenger": {"version": "2", "urls": [URL.format(5002)]}}},
    "bluegreen": {"name": "credit-bluegreen", "strategy": "bluegreen", "active": "blue",
                  "variants": {"blue": {"version": "1", "urls": [URL.format(5001)]},
                               "green": {"version": "2", "urls": [URL.format(5002)]}}},
}
KINDS = {  # (kind, flavour) -> how many, per strategy: the module docstring's table
    "single": {("Deployment", "kubernetes"): 1, ("Service", "kubernetes"): 2, ("DestinationRule", "kubernetes"): 1,
               ("VirtualService", "kubernetes"): 1, ("InferenceService", "kserve"): 1},
    "ab": {("Deployment", "kubernetes"): 2, ("Service", "kubernetes"): 3, ("DestinationRule", "kubernetes"): 1,
           ("VirtualService", "kubernetes"): 1, ("InferenceService", "kserve"): 2},
    "canary": {("Deployment", "kubernetes"): 2, ("Service", "kubernetes"): 3, ("DestinationRule", "kubernetes"): 1,
               ("VirtualService", "kubernetes"): 2, ("InferenceService", "kserve"): 1,
               ("Service", "argo-rollouts"): 1, ("Rollout", "argo-rollouts"): 1,
               ("AnalysisTemplate", "argo-rollouts"): 1, ("DestinationRule", "argo-rollouts"): 1,
               ("VirtualService", "argo-rollouts"): 1},
    "bluegreen": {("Deployment", "kubernetes"): 2, ("Service", "kubernetes"): 3, ("DestinationRule", "kubernetes"): 1,
                  ("VirtualService", "kubernetes"): 1, ("InferenceService", "kserve"): 2,
                  ("Service", "argo-rollouts"): 2, ("Rollout", "argo-rollouts"): 1},
}
KINDS["rolling"] = KINDS["single"]
KINDS["shadow"] = KINDS["ab"]


def spec_of(strategy: str, **changes):
    return load_spec({"model": "credit-risk", **copy.deepcopy(SPECS[strategy]), **changes})


def artifacts(spec) -> dict[str, str]:
    """Where each variant's files would be (what the registry's download URI says)."""
    return {name: f"s3://mlflow/1/run-{name}/artifacts/model" for name in spec.variants}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {strategy: manifests.render(spec_of(strategy), artifact_uris=artifacts(spec_of(strategy)))
            for strategy in SPECS}


def one(objects, kind, name=None, flavour="kubernetes"):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["labels"]["mlops-lab/flavour"] == flavour
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} of {flavour}"
    return found[0]


def row(objects, index: int = 0):
    table = manifests.validate(objects)
    return table.iloc[index]


def weights(virtual_service) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in virtual_service["spec"]["http"][0]["route"]}


# -- every strategy --------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", list(SPECS))
def test_every_strategy_renders_and_validates(rendered, strategy):
    objects = rendered[strategy]
    table = manifests.validate(objects)
    assert list(table.columns) == ["kind", "name", "validated_against", "ok", "message"]
    assert len(table) == len(objects)
    assert table["ok"].all(), table.loc[~table["ok"], ["kind", "name", "message"]].to_string()
    counts: dict = {}
    for o in objects:
        key = (o["kind"], o["metadata"]["labels"]["mlops-lab/flavour"])
        counts[key] = counts.get(key, 0) + 1
    assert counts == KINDS[strategy]   # (canary: the faulty canary's fault has a VirtualService of its own)
    assert {o["metadata"]["namespace"] for o in objects} == {"mlops"}
    against = dict(zip(table["kind"], table["validated_against"]))
    assert "kubernetes-validate 1.37.0" in against["Deployment"]
    assert "istio/istio" in against["VirtualService"] and "kserve/kserve" in against["InferenceService"]


def test_the_kubernetes_flavour_follows_the_spec(rendered):
    objects = rendered["ab"]
    deployment = one(objects, "Deployment", "credit-ab-b")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mlflow", "models", "serve", "-m", "models:/credit-risk/2", "--host", "0.0.0.0",
                                    "--port", "8080", "--env-manager", "local"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert deployment["spec"]["replicas"] == 2                      # one pod per URL of the variant
    assert "strategy" not in deployment["spec"]
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service", "credit-ab-b")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    rule = one(objects, "DestinationRule")
    assert {s["name"]: s["labels"] for s in rule["spec"]["subsets"]} == {
        "a": {"mlops-lab/variant": "a"}, "b": {"mlops-lab/variant": "b"}}
    assert rule["spec"]["host"] == "credit-ab.mlops.svc.cluster.local"

    rolling = one(rendered["rolling"], "Deployment")
    assert rolling["spec"]["replicas"] == 3
    assert rolling["spec"]["strategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert one(manifests.render(spec_of("rolling"), replicas=5), "Deployment")["spec"]["replicas"] == 5
    per_variant = manifests.render(spec_of("ab"), replicas={"a": 4})
    assert one(per_variant, "Deployment", "credit-ab-a")["spec"]["replicas"] == 4
    assert one(per_variant, "Deployment", "credit-ab-b")["spec"]["replicas"] == 2


# -- Istio -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", list(SPECS))
def test_the_istio_weights_are_the_specs(rendered, strategy):
    spec = spec_of(strategy)
    service = one(rendered[strategy], "VirtualService", spec.name)
    assert weights(service) == {name: int(w) for name, w in spec.weights.items()}
    assert sum(weights(service).values()) == 100


def test_fractional_weights_become_whole_percentages_summing_to_100():
    spec = load_spec({"model": "m", "name": "thirds", "strategy": "ab", "weights": {"a": 33.3, "b": 33.3, "c": 33.4},
                      "variants": {v: {"version": str(i), "urls": [URL.format(5001 + i)]}
                                   for i, v in enumerate("abc")}})
    split = weights(one(manifests.render(spec), "VirtualService", "thirds"))
    assert sum(split.values()) == 100 and split == {"a": 33, "b": 33, "c": 34}


def test_the_shadow_is_mirrored_with_weight_zero(rendered):
    service = one(rendered["shadow"], "VirtualService", "credit-shadow")
    route = service["spec"]["http"][0]
    assert weights(service) == {"champion": 100, "challenger": 0}
    assert route["mirror"] == {"host": "credit-shadow.mlops.svc.cluster.local", "subset": "challenger"}
    assert route["mirrorPercentage"] == {"value": 100.0}
    assert "mirror" not in one(rendered["ab"], "VirtualService")["spec"]["http"][0]


def test_a_fault_is_injected_where_istio_can_apply_it(rendered):
    # canary: the faulty variant shares the weighted route, so the fault is on its own host
    faulty = one(rendered["canary"], "VirtualService", "credit-canary-canary-fault")
    assert faulty["spec"]["hosts"] == ["credit-canary-canary.mlops.svc.cluster.local"]
    assert faulty["spec"]["http"][0]["fault"] == {
        "delay": {"fixedDelay": "0.15s", "percentage": {"value": 50.0}},
        "abort": {"httpStatus": 500, "percentage": {"value": 20.0}}}
    assert "fault" not in one(rendered["canary"], "VirtualService", "credit-canary")["spec"]["http"][0]
    # single: every request of the main route goes to the faulty variant, so the fault is on that route
    spec = spec_of("single", variants={"main": {"version": "1", "urls": [URL.format(5001)],
                                                "fault": {"abort_percent": 5, "abort_status": 503}}})
    objects = manifests.render(spec, artifact_uris=artifacts(spec))
    route = one(objects, "VirtualService", "credit-single")["spec"]["http"][0]
    assert route["fault"] == {"abort": {"httpStatus": 503, "percentage": {"value": 5.0}}}
    assert manifests.validate(objects)["ok"].all()


# -- KServe ----------------------------------------------------------------------------------------

def test_kserve_serves_mlflow_and_canaries_at_the_first_step(rendered):
    isvc = one(rendered["canary"], "InferenceService", flavour="kserve")
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 5
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    assert predictor["model"]["storageUri"] == "s3://mlflow/1/run-canary/artifacts/model"
    other = one(rendered["ab"], "InferenceService", "credit-ab-a", "kserve")
    assert "canaryTrafficPercent" not in other["spec"]["predictor"]


def test_kserve_cannot_fetch_a_models_uri():
    objects = manifests.render(spec_of("single"))          # no artifact_uris: the models:/ URI is kept
    isvc = one(objects, "InferenceService", flavour="kserve")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "models:/credit-risk/1"
    table = manifests.validate(objects).set_index("kind")
    assert not table.loc["InferenceService", "ok"]
    assert "storageUri" in table.loc["InferenceService", "message"]
    assert "artifact_uris" in table.loc["InferenceService", "message"]


# -- Argo Rollouts ---------------------------------------------------------------------------------

def test_the_rollout_steps_are_the_canary_steps(rendered):
    spec = spec_of("canary")
    rollout = one(rendered["canary"], "Rollout", flavour="argo-rollouts")
    canary = rollout["spec"]["strategy"]["canary"]
    assert [s["setWeight"] for s in canary["steps"] if "setWeight" in s] == [int(s) for s in spec.canary.steps]
    assert [s["pause"] for s in canary["steps"] if "pause" in s] == [{"duration": "30s"}] * 4
    assert canary["analysis"]["templates"] == [{"templateName": "credit-canary-analysis"}]
    assert canary["trafficRouting"]["istio"]["destinationRule"]["canarySubsetName"] == "canary"
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert "models:/credit-risk/2" in container["command"]       # the Rollout runs the canary's model
    routed = one(rendered["canary"], "VirtualService", "credit-canary-rollout", "argo-rollouts")
    assert routed["spec"]["http"][0]["name"] in canary["trafficRouting"]["istio"]["virtualService"]["routes"]
    assert weights(routed) == {"stable": 95, "canary": 5}


def test_the_analysis_template_is_the_routers_canary_check(rendered):
    template = one(rendered["canary"], "AnalysisTemplate", flavour="argo-rollouts")
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert set(metrics) == {"success-rate", "latency-p99", "latency-p99-max"}
    assert {m["failureLimit"] for m in metrics.values()} == {2}     # threshold 3: fails when failed > 2
    assert {m["interval"] for m in metrics.values()} == {"30s"}
    success = metrics["success-rate"]
    assert "mlops_router_requests_total" in success["provider"]["prometheus"]["query"]
    assert 'code!~"5.."' in success["provider"]["prometheus"]["query"]
    assert success["successCondition"].endswith("result[0] >= 0.98")
    latency = metrics["latency-p99"]["provider"]["prometheus"]["query"]
    assert "mlops_router_request_duration_seconds_bucket" in latency and "histogram_quantile(0.99" in latency
    assert metrics["latency-p99-max"]["successCondition"].endswith("result[0] <= 0.4")
    default = manifests.render(spec_of("canary", canary={"steps": [10, 100]}))
    assert {m["name"] for m in one(default, "AnalysisTemplate", flavour="argo-rollouts")["spec"]["metrics"]} == {
        "success-rate", "latency-p99"}


def test_bluegreen_is_a_rollout_with_a_manual_switch(rendered):
    objects = rendered["bluegreen"]
    rollout = one(objects, "Rollout", flavour="argo-rollouts")
    blue_green = rollout["spec"]["strategy"]["blueGreen"]
    assert blue_green["activeService"] == "credit-bluegreen-active"
    assert blue_green["previewService"] == "credit-bluegreen-preview"
    assert blue_green["autoPromotionEnabled"] is False
    assert "models:/credit-risk/2" in rollout["spec"]["template"]["spec"]["containers"][0]["command"]   # green
    for name in ("credit-bluegreen-active", "credit-bluegreen-preview"):
        service = one(objects, "Service", name, "argo-rollouts")
        assert service["spec"]["selector"] == rollout["spec"]["selector"]["matchLabels"]
    assert weights(one(objects, "VirtualService")) == {"blue": 100, "green": 0}


# -- broken objects are caught --------------------------------------------------------------------

def test_kubernetes_validate_catches_a_broken_deployment(rendered):
    deployment = copy.deepcopy(one(rendered["ab"], "Deployment", "credit-ab-a"))
    assert row([deployment])["ok"]
    deployment["spec"]["replicas"] = "two"
    broken = row([deployment])
    assert not broken["ok"] and broken["message"].startswith("spec.replicas:")
    unknown = copy.deepcopy(one(rendered["ab"], "Deployment", "credit-ab-a"))
    unknown["spec"]["replica"] = 2                                  # a typo: strict validation says so
    assert not row([unknown])["ok"] and "replica" in row([unknown])["message"]
    service = copy.deepcopy(one(rendered["ab"], "Service", "credit-ab"))
    service["metadata"]["name"] = "2-credit"                       # a Service name starts with a letter
    assert not row([service])["ok"] and "DNS label" in row([service])["message"]


def test_the_crd_schema_catches_a_broken_inference_service(rendered):
    isvc = copy.deepcopy(one(rendered["canary"], "InferenceService", flavour="kserve"))
    assert row([isvc])["ok"]
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    broken = row([isvc])
    assert not broken["ok"]
    assert "spec.predictor.canaryTrafficPercent: 'ten' is not of type 'integer'" in broken["message"]
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 150        # an integer, but no percentage
    assert not row([isvc])["ok"] and "between 0 and 100" in row([isvc])["message"]
    typo = copy.deepcopy(one(rendered["canary"], "InferenceService", flavour="kserve"))
    typo["spec"]["predictorr"] = typo["spec"].pop("predictor")
    message = row([typo])["message"]
    assert "'predictor' is a required property" in message and "unknown field 'predictorr'" in message


def test_the_crd_schema_catches_a_broken_virtual_service(rendered):
    objects = copy.deepcopy(rendered["ab"])
    service = one(objects, "VirtualService")
    assert manifests.validate(objects).set_index("kind").loc["VirtualService", "ok"]
    service["spec"]["http"][0]["route"][0]["weight"] = "70"
    table = manifests.validate(objects).set_index("kind")
    assert not table.loc["VirtualService", "ok"]
    assert "spec.http.0.route.0.weight: '70' is not of type 'integer'" in table.loc["VirtualService", "message"]
    service["spec"]["http"][0]["route"][0]["weight"] = 60          # 60 + 30
    assert "sum to 90, not 100" in manifests.validate(objects).set_index("kind").loc["VirtualService", "message"]
    service["spec"]["http"][0]["route"][0]["weight"] = 70
    service["spec"]["http"][0]["route"][0]["destination"]["subset"] = "c"
    assert "subset 'c'" in manifests.validate(objects).set_index("kind").loc["VirtualService", "message"]
    service["spec"]["http"][0]["route"][0]["destination"]["subset"] = "a"
    service["spec"]["http"][0]["fault"] = {"delay": {"fixedDelay": "1s", "exponentialDelay": "1s"}}
    assert "fault.delay" in manifests.validate(objects).set_index("kind").loc["VirtualService", "message"]


def test_the_crd_schema_catches_a_broken_rollout_and_template(rendered):
    objects = copy.deepcopy(rendered["canary"])
    rollout = one(objects, "Rollout", flavour="argo-rollouts")
    template = one(objects, "AnalysisTemplate", flavour="argo-rollouts")
    rows = manifests.validate(objects).set_index("kind")
    assert rows.loc["Rollout", "ok"] and rows.loc["AnalysisTemplate", "ok"]
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "5%"
    rollout["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"   # the pod spec too
    del template["spec"]["metrics"][0]["provider"]
    rows = manifests.validate(objects).set_index("kind")
    assert "spec.strategy.canary.steps.0.setWeight: '5%' is not of type 'integer'" in rows.loc["Rollout", "message"]
    assert "spec.template.spec.containers.0.ports.0.containerPort" in rows.loc["Rollout", "message"]
    assert "'provider' is a required property" in rows.loc["AnalysisTemplate", "message"]
    alone = manifests.validate([one(rendered["canary"], "Rollout", flavour="argo-rollouts")]).iloc[0]
    assert not alone["ok"] and "no AnalysisTemplate 'credit-canary-analysis'" in alone["message"]


def test_a_kind_without_a_schema_gets_a_structure_check():
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "public"},
               "spec": {"selector": {"istio": "ingressgateway"}}}
    checked = row([gateway])
    assert checked["ok"]
    assert checked["validated_against"].startswith("structure only: the CRD schema is not available offline")
    gateway["spec"] = ["not", "a", "mapping"]
    assert not row([gateway])["ok"]
    assert not row(["not an object"])["ok"]


# -- files ------------------------------------------------------------------------------------------

def test_yaml_and_files_round_trip(rendered, tmp_path):
    objects = rendered["canary"]
    text = manifests.to_yaml(objects)
    assert "&id" not in text and "*id" not in text                 # no YAML anchors, plain documents
    assert list(yaml.safe_load_all(text)) == objects
    paths = manifests.write(spec_of("canary"), tmp_path / "k8s", artifact_uris=artifacts(spec_of("canary")))
    assert paths == [tmp_path / "k8s" / "manifests.yaml"]
    assert list(yaml.safe_load_all(paths[0].read_text())) == objects


def test_a_spec_without_a_model_cannot_be_rendered():
    spec = load_spec({"name": "no-model", "strategy": "single", "variants": {"a": {"urls": [URL.format(5001)]}}})
    with pytest.raises(SpecError, match="variant 'a' names no model"):
        manifests.render(spec)
    with pytest.raises(ValueError, match="namespace"):
        manifests.render(spec_of("single"), namespace="Not_A_Namespace")


def test_the_vendored_crd_schemas_are_small_and_documented():
    folder = Path(manifests.__file__).parent / "crds"
    readme = (folder / "README.md").read_text()
    files = sorted(folder.glob("*.json"))
    assert {source["file"] for source in manifests.CRDS.values()} == {f.name for f in files}
    assert sum(f.stat().st_size for f in files) < 200_000
    for source in manifests.CRDS.values():
        schema = json.loads((folder / source["file"]).read_text())
        assert schema["type"] == "object" and "spec" in schema["properties"]
        assert source["commit"] in readme and source["file"] in readme and source["repository"] in readme
    assert "Apache-2.0" in readme
