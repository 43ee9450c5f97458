"""The strategy spec as Kubernetes manifests: what the laptop router does, written for a cluster.

On one laptop the router (:mod:`mlops_lab.deployment.routing`) runs a strategy spec. When the
users outgrow one machine, the same spec becomes Kubernetes objects::

    from mlops_lab.deployment import load_spec, manifests

    spec = load_spec("canary.yaml")
    objects = manifests.render(spec, namespace="mlops")   # a list of plain dicts
    manifests.validate(objects)                           # a DataFrame: one row per object, ok or why not
    manifests.write(spec, "k8s/")                         # k8s/manifests.yaml
    # kubectl apply -f k8s/manifests.yaml -l mlops-lab/flavour=kubernetes

Three ways to run the same spec
-------------------------------
:func:`render` writes the spec three ways at once. They are alternatives: apply ONE of them (every
object carries the label ``mlops-lab/flavour``, which ``kubectl apply -l`` selects on).

- ``kubernetes``: plain Kubernetes plus the Istio service mesh. One ``Deployment`` and one
  ``Service`` per variant, each container running ``mlflow models serve``; a ``Service`` named
  after the spec in front of all of them; an Istio ``DestinationRule`` that names each variant's
  pods a *subset*; an Istio ``VirtualService`` that splits the traffic between the subsets with
  the spec's weights (the router's job, done by the Envoy sidecars).
- ``kserve``: KServe ``InferenceService`` objects (KServe runs the model server itself, with its
  MLflow runtime); a canary is one InferenceService with ``canaryTrafficPercent``.
- ``argo-rollouts``: an Argo Rollouts ``Rollout`` (a Deployment whose updates Argo drives) that
  moves the traffic itself: for a canary, up the spec's steps, with an ``AnalysisTemplate`` (the
  router's canary analysis as Prometheus queries) and an Istio VirtualService and DestinationRule
  of its own, whose weights and subsets Argo rewrites as it goes; for blue/green, two Services
  (active and preview) and a manual promotion. The Rollout runs the canary's (the new colour's)
  model: the stable version is whatever the Rollout ran before (apply it first with that model).

Which objects each strategy gets (``<n>`` is the spec's name, ``<v>`` a variant's)::

    strategy   kubernetes (+ Istio)                          kserve                     argo-rollouts
    ---------  --------------------------------------------  -------------------------  ------------------------------
    single     Deployment + Service <n>-<v>; Service <n>;    InferenceService <n>       -
               DestinationRule <n>; VirtualService <n>
               (one route, weight 100)
    rolling    as single; the Deployment replaces pods one   InferenceService <n>       -
               at a time (maxSurge 1, maxUnavailable 0)
    ab         per variant Deployment + Service; Service     InferenceService <n>-<v>   -
               <n>; DestinationRule <n>; VirtualService <n>  per variant
               with the spec's weights
    canary     as ab, weights at the first step              InferenceService <n>,      Rollout <n> (canary steps),
                                                             canaryTrafficPercent =     AnalysisTemplate <n>-analysis,
                                                             first step                 Service, DestinationRule and
                                                                                        VirtualService <n>-rollout
    shadow     as ab; the route sends everything to the      InferenceService <n>-<v>   -
               primary (the shadow has weight 0) and         per variant
               mirrors 100 % to the shadow
    bluegreen  as ab, weights 100 / 0 (the switch is an      InferenceService <n>-<v>   Rollout <n> (blueGreen),
               edit of two numbers)                          per variant                Services <n>-active, <n>-preview

A variant with a ``fault`` gets Istio fault injection (``delay.fixedDelay`` + ``percentage``,
``abort.httpStatus`` + ``percentage``). Istio injects faults per HTTP *route*, not per weighted
destination: when the faulty variant is the only one with traffic on the main route, the fault
goes on that route; otherwise it goes on a VirtualService ``<n>-<v>-fault`` for the variant's own
host ``<n>-<v>`` (requests sent to that Service get the fault; the weighted split does not).

What is not rendered: the router itself, an ingress Gateway (the VirtualServices are for traffic
inside the mesh), the MLflow tracking server the containers read ``models:/`` URIs from
(``MLFLOW_TRACKING_URI``), Prometheus, and the controllers (Istio, KServe, Argo Rollouts).

Checking without a cluster
--------------------------
:func:`validate` checks every object offline, one row each: core kinds (Deployment, Service)
against Kubernetes' own OpenAPI schema with ``kubernetes-validate`` (strict: an unknown field is an
error), the five custom resources against the ``openAPIV3Schema`` of their published CRDs, vendored
as JSON under ``crds/`` (``crds/README.md`` says from which repository, file and commit, and what
was trimmed), with ``jsonschema``, plus a few rules of ours (names Kubernetes accepts, route weights
that sum to 100, percentages within 0-100, a ``storageUri`` KServe can fetch, references between
objects). A kind without a vendored schema gets a structure check only, and its row says so. What
only a cluster can tell (an admission webhook, a CEL rule ``x-kubernetes-validations``, a quota) is
left to ``kubectl apply --dry-run=server``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_lab.deployment.spec import Fault, Spec, SpecError, Variant, load_spec

__all__ = ["CRDS", "FLAVOURS", "KUBERNETES_VERSION", "render", "to_yaml", "validate", "write"]

KUBERNETES_VERSION = "1.33"
"""The Kubernetes version whose schemas :func:`validate` uses (kubernetes-validate 1.37.0 ships 1.25 to 1.37)."""
FLAVOURS = ("kubernetes", "kserve", "argo-rollouts")
"""The three alternative ways to run a spec; each object's ``mlops-lab/flavour`` label names its own."""
PORT = 8080
"""The port ``mlflow models serve`` listens on inside each container (Services expose it as port 80)."""
PROMETHEUS = "http://prometheus.monitoring.svc.cluster.local:9090"
"""Where the AnalysisTemplate asks Prometheus (an argument of the template: override it there)."""
TRACKING_URI = "http://mlflow.mlops.svc.cluster.local:5000"
"""Where the model containers resolve ``models:/name/version`` (the MLflow tracking server in the cluster)."""
RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
"""Per model container: what the scheduler reserves, and the most it may use (an sklearn pipeline
and the MLflow scoring server fit well inside)."""
KSERVE_SCHEMES = ("gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://",
                  "oci://", "hf://", "azure://")
"""Storage URIs KServe's storage initializer can fetch (``models:/`` is not one of them)."""

CRDS: dict[tuple[str, str], dict[str, str]] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): {
        "file": "inferenceservice.serving.kserve.io_v1beta1.json", "repository": "kserve/kserve",
        "path": "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        "commit": "67bcf1a466459db33e7aa66b5547cdfb1aebd602"},
    ("argoproj.io/v1alpha1", "Rollout"): {
        "file": "rollout.argoproj.io_v1alpha1.json", "repository": "argoproj/argo-rollouts",
        "path": "manifests/crds/rollout-crd.yaml", "commit": "b211e158b2c68c17984a3564121326601dcdc5d4"},
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): {
        "file": "analysistemplate.argoproj.io_v1alpha1.json", "repository": "argoproj/argo-rollouts",
        "path": "manifests/crds/analysis-template-crd.yaml", "commit": "bd971dd55ba73f02dec2b1d42be6344a4c8c4c96"},
    ("networking.istio.io/v1", "VirtualService"): {
        "file": "virtualservice.networking.istio.io_v1.json", "repository": "istio/istio",
        "path": "manifests/charts/base/files/crd-all.gen.yaml", "commit": "0983e6b3f96877fe1e8ecb2e16d1be77360cd2da"},
    ("networking.istio.io/v1", "DestinationRule"): {
        "file": "destinationrule.networking.istio.io_v1.json", "repository": "istio/istio",
        "path": "manifests/charts/base/files/crd-all.gen.yaml", "commit": "0983e6b3f96877fe1e8ecb2e16d1be77360cd2da"},
}
"""The custom resources :func:`render` writes, and the published CRD each one's schema comes from."""
CORE_KINDS = {("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler")}
"""Kinds checked against Kubernetes' own schema (kubernetes-validate)."""

_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# -- rendering --------------------------------------------------------------------------------------

def render(spec: Spec | dict | str | Path, *, namespace: str = "mlops",
           image: str = "ghcr.io/example/credit-model:latest",
           replicas: int | Mapping[str, int] | None = None,
           artifact_uris: Mapping[str, str] | None = None) -> list[dict]:
    """The Kubernetes objects for ``spec`` (a :class:`Spec`, or what :func:`load_spec` reads), as dicts.

    ``namespace`` is set on every object; ``image`` is the container image with MLflow and the
    model's dependencies installed (it runs ``mlflow models serve -m <model_uri>``); ``replicas``
    overrides the number of pods per variant (one number for all, or a dict per variant; by default
    a variant gets as many pods as it has URLs in the spec, its replicas on the laptop).
    ``artifact_uris`` maps variants to where their model's files are (``s3://...``, what
    ``MlflowClient().get_model_version_download_uri(name, version)`` returns): KServe fetches files,
    not ``models:/`` URIs, so without it the InferenceService carries the ``models:/`` URI and
    :func:`validate` says it cannot be fetched. The module docstring lists the objects per strategy.
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    missing = [name for name, variant in spec.variants.items() if not variant.model_uri]
    if missing:
        raise SpecError([f"variant {name!r} names no model to serve: give the spec model: <registered name> and the "
                         f"variant a version:, or the variant a model_uri:" for name in missing])
    if not _DNS_1035_LABEL.match(namespace) or len(namespace) > 63:
        raise ValueError(f"namespace must be a DNS label (lower-case letters, digits, '-', starting with a letter), "
                         f"got {namespace!r}")
    r = _Renderer(spec, namespace, image, replicas, dict(artifact_uris or {}))
    return r.kubernetes() + r.kserve() + r.argo()


class _Renderer:
    """Builds the objects of :func:`render`; one method per flavour, small helpers for the rest."""

    def __init__(self, spec: Spec, namespace: str, image: str, replicas, artifact_uris: dict[str, str]) -> None:
        self.spec, self.namespace, self.image, self.artifact_uris = spec, namespace, image, artifact_uris
        self.replicas = replicas
        self.weights = _percentages(spec.weights)

    # helpers -------------------------------------------------------------------------------------
    def count(self, variant: str) -> int:
        """Pods for ``variant``: the ``replicas`` argument, else one per URL the spec gives it."""
        if isinstance(self.replicas, Mapping):
            if variant in self.replicas:
                return int(self.replicas[variant])
        elif self.replicas is not None:
            return int(self.replicas)
        return max(1, len(self.spec.variants[variant].urls))

    def name(self, *parts: str) -> str:
        return _name(self.spec.name, *parts)

    def host(self, service: str) -> str:
        """A Service's name inside the cluster (what Istio routes on)."""
        return f"{service}.{self.namespace}.svc.cluster.local"

    def metadata(self, name: str, flavour: str, variant: str | None = None) -> dict:
        labels = {"app.kubernetes.io/name": self.spec.name, "app.kubernetes.io/managed-by": "mlops-lab",
                  "mlops-lab/flavour": flavour}
        if variant is not None:
            labels["mlops-lab/variant"] = variant
        annotations = {"mlops-lab/strategy": self.spec.strategy, "mlops-lab/spec-digest": self.spec.digest}
        if variant is not None:
            annotations["mlops-lab/model-uri"] = self.spec.variants[variant].model_uri
            if self.spec.variants[variant].version:
                annotations["mlops-lab/model-version"] = self.spec.variants[variant].version
        return {"name": name, "namespace": self.namespace, "labels": labels, "annotations": annotations}

    def container(self, variant: Variant) -> dict:
        """The model server: ``mlflow models serve`` on port 8080, with probes the kubelet calls."""
        return {
            "name": "model",
            "image": self.image,
            "command": ["mlflow", "models", "serve", "-m", variant.model_uri, "--host", "0.0.0.0",
                        "--port", str(PORT), "--env-manager", "local"],
            # models:/name/version is resolved through the tracking server (the registry)
            "env": [{"name": "MLFLOW_TRACKING_URI", "value": TRACKING_URI}],
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            # readiness: no traffic until /ping answers (the model is loaded); a failing pod leaves the Service
            "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "initialDelaySeconds": 5,
                               "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
            # liveness: a server that stops answering /health is restarted (give it time to load first)
            "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 30,
                              "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "resources": json.loads(json.dumps(RESOURCES)),
        }

    # kubernetes + Istio ------------------------------------------------------------------------
    def kubernetes(self) -> list[dict]:
        spec, out = self.spec, []
        for name, variant in spec.variants.items():
            labels = {"app.kubernetes.io/name": spec.name, "mlops-lab/variant": name}
            deployment = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": self.metadata(self.name(name), "kubernetes", name),
                "spec": {
                    "replicas": self.count(name),
                    "selector": {"matchLabels": dict(labels)},
                    "template": {"metadata": {"labels": dict(labels)},
                                 "spec": {"containers": [self.container(variant)]}},
                },
            }
            if spec.strategy == "rolling":
                # a new version replaces pods one at a time: one extra pod at most, never one fewer than asked
                deployment["spec"]["strategy"] = {"type": "RollingUpdate",
                                                  "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
                deployment["spec"]["minReadySeconds"] = 5
            out.append(deployment)
            out.append(self.service(self.name(name), labels, "kubernetes", name))
        # one Service over every variant's pods: the host the VirtualService splits into subsets
        out.append(self.service(spec.name, {"app.kubernetes.io/name": spec.name}, "kubernetes"))
        out.append(self.destination_rule(spec.name, "kubernetes",
                                         {name: {"mlops-lab/variant": name} for name in spec.variants}))
        out.extend(self.virtual_services())
        return out

    def service(self, name: str, selector: dict, flavour: str, variant: str | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Service", "metadata": self.metadata(name, flavour, variant),
                "spec": {"selector": dict(selector),
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}

    def destination_rule(self, name: str, flavour: str, subsets: dict[str, dict]) -> dict:
        """Istio's names for groups of pods behind the Service ``name``: a subset per variant (by labels)."""
        return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": self.metadata(name, flavour),
                "spec": {"host": self.host(name),
                         "subsets": [{"name": subset, **({"labels": labels} if labels else {})}
                                     for subset, labels in subsets.items()]}}

    def virtual_services(self) -> list[dict]:
        """The split: one HTTP route with a weighted destination per variant, mirror and faults."""
        spec = self.spec
        route: dict[str, Any] = {
            "name": "primary",
            "route": [{"destination": {"host": self.host(spec.name), "subset": name}, "weight": self.weights[name]}
                      for name in spec.variants],
        }
        if spec.mirror is not None:
            # a copy of every request goes to the shadow; Envoy drops its answer (the client never sees it)
            route["mirror"] = {"host": self.host(spec.name), "subset": spec.mirror.to}
            # (the router's mirror.timeout_s and max_in_flight have no Istio field: Envoy bounds mirrors itself)
            route["mirrorPercentage"] = {"value": 100.0}
        served = [name for name, weight in self.weights.items() if weight > 0]
        out = [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": self.metadata(spec.name, "kubernetes"),
                "spec": {"hosts": [self.host(spec.name)], "http": [route]}}]
        for name, variant in spec.variants.items():
            if not variant.fault.active:
                continue
            if served == [name]:
                route["fault"] = _fault(variant.fault)   # exact: every request on this route goes to it
                continue
            service = self.name(name)
            out.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": self.metadata(self.name(name, "fault"), "kubernetes", name),
                        "spec": {"hosts": [self.host(service)],
                                 "http": [{"name": "fault", "fault": _fault(variant.fault),
                                           "route": [{"destination": {"host": self.host(service)}}]}]}})
        return out

    # KServe ------------------------------------------------------------------------------------
    def kserve(self) -> list[dict]:
        spec = self.spec
        if spec.strategy == "canary":
            # KServe keeps the previously rolled-out revision as the stable one and sends
            # canaryTrafficPercent % to this (latest) revision: apply the stable model first, then this.
            canary = spec.canary
            isvc = self.inference_service(spec.name, canary.canary)
            isvc["spec"]["predictor"]["canaryTrafficPercent"] = _percent(canary.steps[0])
            return [isvc]
        if spec.strategy in ("single", "rolling"):
            return [self.inference_service(spec.name, next(iter(spec.variants)))]
        # ab, shadow, bluegreen: one InferenceService per variant; splitting traffic between them is
        # a VirtualService over their hosts (or a KServe InferenceGraph), as in the kubernetes flavour
        return [self.inference_service(self.name(name), name) for name in spec.variants]

    def inference_service(self, name: str, variant: str) -> dict:
        count = self.count(variant)
        return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": self.metadata(name, "kserve", variant),
                "spec": {"predictor": {
                    "minReplicas": count,
                    "maxReplicas": max(count, 1),
                    "model": {"modelFormat": {"name": "mlflow"},
                              "storageUri": self.artifact_uris.get(variant, self.spec.variants[variant].model_uri),
                              "resources": json.loads(json.dumps(RESOURCES))},
                }}}

    # Argo Rollouts -----------------------------------------------------------------------------
    def argo(self) -> list[dict]:
        if self.spec.strategy == "canary":
            return self.canary_rollout()
        if self.spec.strategy == "bluegreen":
            return self.bluegreen_rollout()
        return []

    def rollout(self, variant: str, strategy: dict) -> dict:
        """One Rollout: a Deployment whose updates follow ``strategy`` (Argo replaces ``strategy`` with its own)."""
        labels = self.rollout_labels()
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                "metadata": self.metadata(self.spec.name, "argo-rollouts", variant),
                "spec": {"replicas": self.count(variant),
                         "revisionHistoryLimit": 3,
                         "selector": {"matchLabels": dict(labels)},
                         "template": {"metadata": {"labels": dict(labels)},
                                      "spec": {"containers": [self.container(self.spec.variants[variant])]}},
                         "strategy": strategy}}

    def rollout_labels(self) -> dict:
        """The Rollout's pods: not a variant's (Argo labels each ReplicaSet with its template hash)."""
        return {"app.kubernetes.io/name": self.spec.name, "mlops-lab/workload": "rollout"}

    def canary_rollout(self) -> list[dict]:
        spec, canary = self.spec, self.spec.canary
        interval = _duration(canary.interval_s)
        steps: list[dict] = []
        for weight in canary.steps:
            # each weight is held for one analysis interval, as the router holds it for one check
            steps += [{"setWeight": _percent(weight)}, {"pause": {"duration": interval}}]
        template = self.name("analysis")
        strategy = {"canary": {
            "steps": steps,
            # a background analysis for the whole rollout: a failed AnalysisRun aborts it (weight back to 0)
            "analysis": {"templates": [{"templateName": template}],
                         "args": [{"name": "stable-variant", "value": canary.stable},
                                  {"name": "canary-variant", "value": canary.canary}]},
            # Argo moves the weights of this VirtualService's route "primary" between two subsets,
            # which it points at the stable and the canary ReplicaSets (rollouts-pod-template-hash)
            "trafficRouting": {"istio": {
                "virtualService": {"name": self.name("rollout"), "routes": ["primary"]},
                "destinationRule": {"name": self.name("rollout"), "canarySubsetName": canary.canary,
                                    "stableSubsetName": canary.stable}}},
        }}
        rollout = self.rollout(canary.canary, strategy)
        host = self.name("rollout")   # a Service over the Rollout's pods, the host Argo's subsets split
        # subsets without labels: Argo fills in each one's rollouts-pod-template-hash
        rule = self.destination_rule(host, "argo-rollouts", {canary.stable: {}, canary.canary: {}})
        first = _percent(canary.steps[0])
        service = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": self.metadata(host, "argo-rollouts"),
                   "spec": {"hosts": [self.host(host)],
                            "http": [{"name": "primary", "route": [
                                {"destination": {"host": self.host(host), "subset": canary.stable},
                                 "weight": 100 - first},
                                {"destination": {"host": self.host(host), "subset": canary.canary},
                                 "weight": first}]}]}}
        return [self.service(host, self.rollout_labels(), "argo-rollouts"), rollout,
                self.analysis_template(template), rule, service]

    def analysis_template(self, name: str) -> dict:
        """The router's canary check as Prometheus queries over the router's own metrics.

        The router exports ``mlops_router_requests_total{variant, code}`` and
        ``mlops_router_request_duration_seconds_bucket{variant, le}``; run it (or a proxy exporting the
        same series) in front of the pods, or swap in Istio's ``istio_requests_total`` and
        ``istio_request_duration_milliseconds_bucket`` with ``destination_workload`` for ``variant``.
        A check with fewer than ``min_requests`` canary requests returns nothing, so neither condition
        holds and the measurement is *inconclusive*: where the router just waits for more traffic, Argo
        pauses the Rollout for a person to resume or abort (raise ``inconclusiveLimit`` to wait longer).
        """
        canary = self.spec.canary
        window = _duration(max(canary.interval_s, 60.0))   # rate() needs a few Prometheus scrapes
        enough = (f'sum(increase(mlops_router_requests_total{{variant="{{{{args.canary-variant}}}}"}}[{window}])) '
                  f'>= {canary.min_requests}')

        def p99(arg: str) -> str:
            return (f'histogram_quantile(0.99, sum by (le) (rate(mlops_router_request_duration_seconds_bucket'
                    f'{{variant="{{{{args.{arg}}}}}"}}[{window}])))')

        def conditions(good: str, bad: str) -> dict:
            ready = "len(result) > 0 && !isNaN(result[0])"
            return {"successCondition": f"{ready} && {good}", "failureCondition": f"{ready} && {bad}"}

        common = {"interval": _duration(canary.interval_s),
                  # Argo fails the analysis when failed measurements EXCEED failureLimit (failed > limit),
                  # the router rolls back at `threshold` failed checks: so the limit is threshold - 1
                  "failureLimit": canary.threshold - 1}
        floor = round(1.0 - canary.max_error_rate, 6)
        metrics = [
            {"name": "success-rate", **common,
             **conditions(f"result[0] >= {floor:g}", f"result[0] < {floor:g}"),
             "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": (
                 f'(sum(increase(mlops_router_requests_total{{variant="{{{{args.canary-variant}}}}",code!~"5.."}}'
                 f'[{window}])) / sum(increase(mlops_router_requests_total{{variant="{{{{args.canary-variant}}}}"}}'
                 f'[{window}]))) and on() ({enough})')}}},
            # the router fails a check when the canary's p99 is above max_p99_ratio x the stable p99
            # AND more than p99_slack_ms above it: i.e. above the larger of the two allowances
            {"name": "latency-p99", **common,
             **conditions("result[0] <= 1", "result[0] > 1"),
             "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": (
                 f'({p99("canary-variant")} / on() ({p99("stable-variant")} + clamp_min({p99("stable-variant")} '
                 f'* {canary.max_p99_ratio - 1:g}, {canary.p99_slack_ms / 1000:g}))) and on() ({enough})')}}},
        ]
        if canary.max_p99_ms is not None:
            limit = canary.max_p99_ms / 1000
            metrics.append({"name": "latency-p99-max", **common,
                            **conditions(f"result[0] <= {limit:g}", f"result[0] > {limit:g}"),
                            "provider": {"prometheus": {"address": "{{args.prometheus}}",
                                                        "query": f"({p99('canary-variant')}) and on() ({enough})"}}})
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": self.metadata(name, "argo-rollouts"),
                "spec": {"args": [{"name": "stable-variant"}, {"name": "canary-variant"},
                                  {"name": "prometheus", "value": PROMETHEUS}],
                         "metrics": metrics}}

    def bluegreen_rollout(self) -> list[dict]:
        spec = self.spec
        active = spec.primary
        preview = next(name for name in spec.variants if name != active)
        # the Rollout's template is the new colour: Argo brings it up behind the preview Service and
        # switches the active Service to it when someone runs `kubectl argo rollouts promote <n>`
        strategy = {"blueGreen": {"activeService": self.name("active"), "previewService": self.name("preview"),
                                  "autoPromotionEnabled": False, "scaleDownDelaySeconds": 30}}
        # Argo adds the ReplicaSet's rollouts-pod-template-hash to these selectors
        return [self.service(self.name("active"), self.rollout_labels(), "argo-rollouts"),
                self.service(self.name("preview"), self.rollout_labels(), "argo-rollouts"),
                self.rollout(preview, strategy)]


def _name(*parts: str) -> str:
    """``a-b-c``, shortened with a hash when longer than the 63 characters a Service name may have."""
    name = "-".join(p for p in parts if p)
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return name[:56].rstrip("-") + "-" + digest


def _percentages(weights: Mapping[str, float]) -> dict[str, int]:
    """Whole percentages summing to 100 (Istio weights are integers): the largest remainders round up."""
    floors = {name: math.floor(w) for name, w in weights.items()}
    left = 100 - sum(floors.values())
    order = sorted(weights, key=lambda n: (-(weights[n] - floors[n]), list(weights).index(n)))
    for name in order[:max(left, 0)]:
        floors[name] += 1
    return floors


def _percent(value: float) -> int:
    """A whole percentage (Argo's setWeight and KServe's canaryTrafficPercent are integers)."""
    return int(min(100, max(0, round(value))))


def _duration(seconds: float) -> str:
    """A duration as Argo, Istio and Go read it: ``10s``, ``1.5s``, ``0.25s`` (milliseconds at most)."""
    text = f"{max(round(seconds, 3), 0.001):.3f}".rstrip("0").rstrip(".")
    return text + "s"


def _fault(fault: Fault) -> dict:
    """Istio's fault block: a fixed delay on a share of requests, an HTTP status for another share."""
    out: dict[str, Any] = {}
    if fault.delay_ms > 0:
        out["delay"] = {"fixedDelay": _duration(fault.delay_ms / 1000),
                        "percentage": {"value": float(fault.delay_percent)}}
    if fault.abort_percent > 0:
        out["abort"] = {"httpStatus": int(fault.abort_status), "percentage": {"value": float(fault.abort_percent)}}
    return out


# -- YAML ---------------------------------------------------------------------------------------------

def to_yaml(objects: list[dict]) -> str:
    """The objects as one multi-document YAML stream (``---`` between them), in the order given."""
    import yaml

    header = ("# Rendered by mlops_lab.deployment.manifests. Three alternative flavours; apply one, e.g.\n"
              "#   kubectl apply -f manifests.yaml -l mlops-lab/flavour=kubernetes\n")
    # a JSON round trip first: no shared dicts, so no YAML anchors (&id001) that kubectl users never write
    plain = json.loads(json.dumps(objects))
    return header + yaml.safe_dump_all(plain, sort_keys=False, default_flow_style=False, width=120)


def write(spec: Spec | dict | str | Path, folder: str | Path, **options: Any) -> list[Path]:
    """Render ``spec`` (``options`` go to :func:`render`) into ``folder/manifests.yaml``; returns [that path].

    One file for everything, as ``kubectl apply -f`` takes it: the ``mlops-lab/flavour`` label picks
    a flavour (``-l mlops-lab/flavour=kserve``), ``kubectl apply --dry-run=server -f`` checks it against a
    real cluster. The folder is created if needed; an existing ``manifests.yaml`` is replaced.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifests.yaml"
    path.write_text(to_yaml(render(spec, **options)))
    return [path]


# -- validation ---------------------------------------------------------------------------------------

def validate(objects: list[dict], *, kubernetes_version: str = KUBERNETES_VERSION) -> pd.DataFrame:
    """One row per object: ``kind``, ``name``, ``validated_against``, ``ok``, ``message`` (why not, or '').

    Deployments and Services: Kubernetes' OpenAPI schema for ``kubernetes_version`` through
    kubernetes-validate, strict (an unknown field is an error, as ``kubectl apply`` says it). The five
    custom resources: their CRD's vendored ``openAPIV3Schema`` with jsonschema, unknown fields
    reported as the API server's strict field validation does, and their ``metadata`` as Kubernetes'
    ObjectMeta. Then the rules of ours in the module docstring. Anything else: a structure check.
    """
    rows = []
    for obj in objects:
        kind = str(obj.get("kind", "")) if isinstance(obj, dict) else ""
        name = str((obj.get("metadata") or {}).get("name", "")) if isinstance(obj, dict) else ""
        against, problems = _check(obj, objects, kubernetes_version)
        rows.append({"kind": kind, "name": name, "validated_against": against, "ok": not problems,
                     "message": "; ".join(problems)})
    return pd.DataFrame(rows, columns=["kind", "name", "validated_against", "ok", "message"])


def _check(obj: Any, objects: list[dict], version: str) -> tuple[str, list[str]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return "structure only", ["an object is a mapping with apiVersion, kind, metadata and spec"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CORE_KINDS:
        against, problems = _kubernetes(obj, version)
    elif key in CRDS:
        against, problems = _crd(obj, key, version)
    else:
        against, problems = "structure only: the CRD schema is not available offline", _structure(obj)
    problems += _names(obj) + _rules(obj, objects) + _duplicates(obj, objects)
    return against + " + mlops-lab rules", problems


def _duplicates(obj: dict, objects: list[dict]) -> list[str]:
    """Two objects of one kind, name and flavour: the second would silently replace the first."""
    def key(o: dict) -> tuple:
        metadata = o.get("metadata") or {}
        return (o.get("kind"), metadata.get("namespace"), metadata.get("name"),
                (metadata.get("labels") or {}).get("mlops-lab/flavour"))

    same = sum(1 for o in objects if isinstance(o, dict) and isinstance(o.get("metadata"), dict) and key(o) == key(obj))
    return [f"{same} objects are {obj.get('kind')} {obj['metadata'].get('name')!r} of the same flavour: "
            f"rename a variant"] if same > 1 else []


def _kubernetes(obj: dict, version: str) -> tuple[str, list[str]]:
    import kubernetes_validate

    against = f"kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {version} schema (strict)"
    return against, _kubernetes_problems(obj, version)


def _kubernetes_problems(obj: dict, version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_where(error.path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def _crd(obj: dict, key: tuple[str, str], version: str) -> tuple[str, list[str]]:
    source = CRDS[key]
    against = (f"{source['repository']} {source['path']} @ {source['commit'][:10]}: "
               f"{key[0]} {key[1]} openAPIV3Schema (vendored, crds/{source['file']})")
    schema = _schema(source["file"])
    problems = [f"{_where(e.path)}: {e.message}" for e in sorted(_validator(source["file"]).iter_errors(obj),
                                                                  key=lambda e: list(map(str, e.path)))][:5]
    problems += [f"{_where(path)}: unknown field {path[-1]!r}" for path in _unknown_fields(schema, obj, ())]
    # the API server checks every custom resource's metadata as ObjectMeta (a ConfigMap carries only that)
    problems += _kubernetes_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version)
    if key == ("argoproj.io/v1alpha1", "Rollout") and isinstance((obj.get("spec") or {}).get("template"), dict):
        # the CRD copy leaves the pod template open: Kubernetes' own schema checks it, inside a
        # Deployment of the same selector (a Rollout's template is a Deployment's, field for field)
        carrier = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pod-template"},
                   "spec": {"selector": obj["spec"].get("selector") or {}, "template": obj["spec"]["template"]}}
        problems += [p for p in _kubernetes_problems(carrier, version) if p.startswith("spec.template")]
    return against, problems


@lru_cache(maxsize=None)
def _schema(file: str) -> dict:
    text = resources.files("mlops_lab.deployment").joinpath("crds", file).read_text()
    return _nullable(json.loads(text))


@lru_cache(maxsize=None)
def _validator(file: str):
    import jsonschema

    return jsonschema.Draft7Validator(_schema(file))


def _nullable(schema: Any) -> Any:
    """OpenAPI's ``nullable: true`` as JSON Schema says it (``type`` also allows null)."""
    if isinstance(schema, list):
        return [_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable(v) for k, v in schema.items()}
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _unknown_fields(schema: dict, value: Any, path: tuple) -> list[tuple]:
    """Fields the schema does not name (what a structural CRD prunes, and strict validation rejects)."""
    found: list[tuple] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        open_ = schema.get("x-kubernetes-preserve-unknown-fields")
        for key, item in value.items():
            if properties is not None and key in properties:
                found += _unknown_fields(properties[key], item, path + (key,))
            elif isinstance(schema.get("additionalProperties"), dict):
                found += _unknown_fields(schema["additionalProperties"], item, path + (key,))
            elif properties is not None and not open_ and not (not path and key in ("apiVersion", "kind", "metadata")):
                found.append(path + (key,))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _unknown_fields(schema["items"], item, path + (i,))
    return found


def _structure(obj: dict) -> list[str]:
    """What every Kubernetes object needs, for kinds without a schema here."""
    problems = []
    if not isinstance(obj.get("apiVersion"), str) or not obj["apiVersion"]:
        problems.append("apiVersion must be a string such as 'networking.istio.io/v1'")
    if not isinstance(obj.get("kind"), str) or not obj["kind"]:
        problems.append("kind must be a string such as 'Gateway'")
    if not isinstance(obj["metadata"].get("name"), str):
        problems.append("metadata.name must be a string")
    if "spec" in obj and not isinstance(obj["spec"], dict):
        problems.append("spec must be a mapping")
    return problems


def _names(obj: dict) -> list[str]:
    """Names and labels as the API server accepts them (RFC 1123 / 1035, 63 characters for labels)."""
    metadata, problems = obj["metadata"], []
    name = metadata.get("name")
    if isinstance(name, str):
        if obj.get("kind") == "Service":
            if not _DNS_1035_LABEL.match(name) or len(name) > 63:
                problems.append(f"metadata.name: a Service name is a DNS label (a-z, 0-9, '-', starting with a "
                                f"letter, at most 63 characters), got {name!r}")
        elif not _DNS_1123_SUBDOMAIN.match(name) or len(name) > 253:
            problems.append(f"metadata.name: {name!r} is not a DNS subdomain (lower-case letters, digits, '-', '.')")
    for key, value in (metadata.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{key}: {value!r} is not a label value (63 characters at most, "
                            f"letters, digits, '-', '_', '.')")
    return problems


def _rules(obj: dict, objects: list[dict]) -> list[str]:
    """Rules of ours that no schema says: percentages, sums, what KServe can fetch, references."""
    kind, spec, problems = obj.get("kind"), obj.get("spec"), []
    if not isinstance(spec, dict):
        return problems
    if kind == "VirtualService":
        for i, route in enumerate(spec.get("http") or []):
            if not isinstance(route, dict):
                continue
            weights = [d.get("weight") for d in route.get("route") or [] if isinstance(d, dict)]
            numbers = [w for w in weights if isinstance(w, int) and not isinstance(w, bool)]
            if len(weights) > 1 and len(numbers) == len(weights) and sum(numbers) != 100:
                problems.append(f"spec.http.{i}.route: the weights sum to {sum(numbers)}, not 100")
            for where, block in (("fault.delay", (route.get("fault") or {}).get("delay")),
                                 ("fault.abort", (route.get("fault") or {}).get("abort")),
                                 ("mirrorPercentage", route)):
                share = (block or {}).get("percentage" if where != "mirrorPercentage" else "mirrorPercentage")
                value = share.get("value") if isinstance(share, dict) else None
                if isinstance(value, (int, float)) and not 0 <= value <= 100:
                    problems.append(f"spec.http.{i}.{where}: a percentage is between 0 and 100, got {value!r}")
            problems += _subset_problems(route, i, objects, obj)
    elif kind == "InferenceService":
        predictor = spec.get("predictor") if isinstance(spec.get("predictor"), dict) else {}
        share = predictor.get("canaryTrafficPercent")
        if isinstance(share, (int, float)) and not isinstance(share, bool) and not 0 <= share <= 100:
            problems.append(f"spec.predictor.canaryTrafficPercent: a percentage is between 0 and 100, got {share!r}")
        uri = (predictor.get("model") or {}).get("storageUri") if isinstance(predictor.get("model"), dict) else None
        if isinstance(uri, str) and not uri.startswith(KSERVE_SCHEMES):
            problems.append(f"spec.predictor.model.storageUri: KServe cannot fetch {uri!r} (it reads "
                            f"{', '.join(KSERVE_SCHEMES[:4])}, ...): pass render(..., artifact_uris={{variant: "
                            f"MlflowClient().get_model_version_download_uri(name, version)}})")
    elif kind == "Rollout":
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        for i, step in enumerate(steps):
            weight = step.get("setWeight") if isinstance(step, dict) else None
            if isinstance(weight, int) and not 0 <= weight <= 100:
                problems.append(f"spec.strategy.canary.steps.{i}.setWeight: between 0 and 100, got {weight!r}")
        canary = (spec.get("strategy") or {}).get("canary") or {}
        for ref in ((canary.get("analysis") or {}).get("templates") or []):
            name = ref.get("templateName") if isinstance(ref, dict) else None
            if name and not ref.get("clusterScope") and not _has(objects, "AnalysisTemplate", name):
                problems.append(f"spec.strategy.canary.analysis: no AnalysisTemplate {name!r} among these objects")
        blue = (spec.get("strategy") or {}).get("blueGreen") or {}
        for field in ("activeService", "previewService"):
            if blue.get(field) and not _has(objects, "Service", blue[field]):
                problems.append(f"spec.strategy.blueGreen.{field}: no Service {blue[field]!r} among these objects")
    return problems


def _subset_problems(route: dict, i: int, objects: list[dict], vs: dict) -> list[str]:
    """A destination subset that no DestinationRule of the same flavour defines answers 503 in Istio."""
    flavour = ((vs.get("metadata") or {}).get("labels") or {}).get("mlops-lab/flavour")
    rules = [o for o in objects if isinstance(o, dict) and o.get("kind") == "DestinationRule"
             and ((o.get("metadata") or {}).get("labels") or {}).get("mlops-lab/flavour") == flavour]
    defined = {(r["spec"].get("host"), s.get("name")) for r in rules if isinstance(r.get("spec"), dict)
               for s in r["spec"].get("subsets") or [] if isinstance(s, dict)}
    problems = []
    targets = [d.get("destination") for d in route.get("route") or [] if isinstance(d, dict)]
    targets.append(route.get("mirror"))
    for target in targets:
        if isinstance(target, dict) and target.get("subset") and (target.get("host"), target["subset"]) not in defined:
            problems.append(f"spec.http.{i}: subset {target['subset']!r} of {target.get('host')} is defined by no "
                            f"DestinationRule among these objects")
    return problems


def _has(objects: list[dict], kind: str, name: str) -> bool:
    return any(isinstance(o, dict) and o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name
               for o in objects)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(the object)"
