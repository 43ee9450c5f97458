"""Dynamic resource scaling: the Kubernetes HorizontalPodAutoscaler's rule, decision by decision.

Lesson 20 drives real serving replicas behind the course's router with the same rule a Kubernetes
cluster applies, so that what the lesson measures on a laptop is what the cluster's manifests
(Deployment, Service, HorizontalPodAutoscaler; a KServe InferenceService) would do. The rule, as
the HPA controller implements it (``autoscaling/v2``):

1. **proposal** = ``ceil(current_replicas x metric / target)``, where ``metric`` is the current
   average per replica (an HPA ``AverageValue`` target: requests per second per replica, in-flight
   requests per replica). A ratio within ``tolerance`` of 1 (default 10 %) proposes no change.
2. **stabilisation**: every proposal is remembered with its time. Scaling up takes the *lowest*
   proposal of the last ``scale_up_window_s`` (default 0 s: at once); scaling down the *highest*
   of the last ``scale_down_window_s`` (default 300 s), so a dip of a few seconds never removes a
   replica that the next minute needs.
3. **rate limits** (``behavior.scaleUp/scaleDown.policies``, the larger change allowed wins): in
   any ``period_s`` (15 s), at most ``scale_up_pods`` more replicas or ``scale_up_percent`` % more,
   and at most ``scale_down_percent`` % fewer (default 100 %: no limit).
4. the result is kept within ``[min_replicas, max_replicas]``.

A metric that is missing or not a finite number makes no decision (the replicas stay, as the HPA
keeps its scale when it cannot read its metric), and a policy whose limits contradict each other is
refused when it is built.

Written by hand because the HPA controller is Go code inside Kubernetes, with no library to call
from Python; this module follows its algorithm (``computeReplicasForMetrics``,
``stabilizeRecommendationWithBehaviors``, ``convertDesiredReplicasWithBehaviorRate``) step for step,
and says which step decided each time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd


class ScalingPolicyError(ValueError):
    """A scaling policy whose settings cannot all hold (e.g. more minimum than maximum replicas)."""


@dataclass(frozen=True)
class Policy:
    """What an HPA spec says: the target, the limits and the behaviour (Kubernetes' defaults)."""

    target: float
    """The metric's target average per replica (``metrics[].pods.target.averageValue``)."""
    min_replicas: int = 1
    max_replicas: int = 4
    tolerance: float = 0.1
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0
    period_s: float = 15.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_down_percent: float = 100.0

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.target, (int, float)) and math.isfinite(self.target) and self.target > 0):
            problems.append(f"target must be a positive number, not {self.target!r}")
        for name in ("min_replicas", "max_replicas", "scale_up_pods"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a whole number of at least 1, not {value!r}")
        if not problems and self.min_replicas > self.max_replicas:
            problems.append(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if not 0 <= self.tolerance < 1:
            problems.append(f"tolerance must be from 0 to below 1 (a share of the target), not {self.tolerance!r}")
        for name in ("scale_up_window_s", "scale_down_window_s"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} cannot be negative ({getattr(self, name)!r})")
        if not self.period_s > 0:
            problems.append(f"period_s must be positive, not {self.period_s!r}")
        if not self.scale_up_percent > 0:
            problems.append(f"scale_up_percent must be positive, not {self.scale_up_percent!r}")
        if not 0 < self.scale_down_percent <= 100:
            problems.append(f"scale_down_percent must be above 0 and at most 100, not {self.scale_down_percent!r}")
        if problems:
            raise ScalingPolicyError("; ".join(problems))


@dataclass(frozen=True)
class Decision:
    """One evaluation of the rule: what was measured, proposed, and decided, and why."""

    time_s: float
    current: int
    metric: float | None
    ratio: float | None
    proposal: int | None
    desired: int
    reason: str

    @property
    def change(self) -> int:
        return self.desired - self.current


@dataclass
class Autoscaler:
    """The HPA controller's memory for one workload: past proposals and past scale events.

    ``decide(now_s, current, metric)`` is one controller sync (Kubernetes runs one every 15 s); it
    returns a :class:`Decision` and remembers it. Times are seconds on any clock that only moves
    forward (a trace's own times in tests and replays)."""

    policy: Policy
    proposals: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def decide(self, now_s: float, current: int, metric: float | None) -> Decision:
        policy = self.policy
        if isinstance(current, bool) or not isinstance(current, int) or current < 1:
            raise ValueError(f"current replicas must be a whole number of at least 1, not {current!r}")
        if self.decisions and now_s < self.decisions[-1].time_s:
            raise ValueError(f"time went backwards: {now_s} after {self.decisions[-1].time_s}")
        usable = isinstance(metric, (int, float)) and not isinstance(metric, bool) and math.isfinite(metric) \
            and metric >= 0
        if not usable:
            return self._keep(Decision(now_s, current, None, None, None, current,
                                       f"no usable metric ({metric!r}): no scaling decision"))
        ratio = metric / policy.target
        if abs(ratio - 1) <= policy.tolerance:
            proposal, why = current, f"ratio {ratio:.2f} within the {policy.tolerance:.0%} tolerance"
        else:
            proposal, why = math.ceil(current * ratio), f"ceil({current} x {metric:g} / {policy.target:g})"
        proposal = min(max(proposal, policy.min_replicas), policy.max_replicas)
        self.proposals.append((now_s, proposal))
        stabilised, held = self._stabilise(now_s, current, proposal)
        desired, limited = self._limit_rate(now_s, current, stabilised)
        desired = min(max(desired, policy.min_replicas), policy.max_replicas)
        reason = why + (f" = {proposal}" if "ceil" in why else "")
        if held:
            reason += f"; {held}"
        if limited:
            reason += f"; {limited}"
        if desired != current:
            self.events.append((now_s, desired - current))
        return self._keep(Decision(now_s, current, float(metric), round(ratio, 4), proposal, desired, reason))

    def _keep(self, decision: Decision) -> Decision:
        self.decisions.append(decision)
        return decision

    def _stabilise(self, now_s: float, current: int, proposal: int) -> tuple[int, str]:
        """The HPA's stabilisation: the lowest proposal of the scale-up window bounds a rise, the
        highest of the scale-down window bounds a fall (the proposal just made included)."""
        up_cut, down_cut = now_s - self.policy.scale_up_window_s, now_s - self.policy.scale_down_window_s
        up = min([p for t, p in self.proposals if t >= up_cut] or [proposal])
        down = max([p for t, p in self.proposals if t >= down_cut] or [proposal])
        result = current
        if result < up:
            result = up
        if result > down:
            result = down
        held = ""
        if proposal < current and result > proposal:
            held = (f"held at {result} by the scale-down window (the highest proposal of the last "
                    f"{self.policy.scale_down_window_s:g} s)")
        elif proposal > current and result < proposal:
            held = (f"held at {result} by the scale-up window (the lowest proposal of the last "
                    f"{self.policy.scale_up_window_s:g} s)")
        return result, held

    def _limit_rate(self, now_s: float, current: int, desired: int) -> tuple[int, str]:
        """The behaviour policies: changes within the last ``period_s`` count against the limit."""
        policy = self.policy
        recent = [change for t, change in self.events if t > now_s - policy.period_s]
        if desired > current:
            start = current - sum(c for c in recent if c > 0)
            limit = max(start + policy.scale_up_pods, math.ceil(start * (1 + policy.scale_up_percent / 100)))
            if desired > limit:
                return limit, (f"limited to {limit} by the scale-up rate (+{policy.scale_up_pods} replicas or "
                               f"+{policy.scale_up_percent:g} % per {policy.period_s:g} s)")
        elif desired < current:
            start = current - sum(c for c in recent if c < 0)
            limit = math.ceil(start * (1 - policy.scale_down_percent / 100))
            if desired < limit:
                return limit, (f"limited to {limit} by the scale-down rate "
                               f"(-{policy.scale_down_percent:g} % per {policy.period_s:g} s)")
        return desired, ""

    def table(self) -> pd.DataFrame:
        """Every decision so far, one row each."""
        return pd.DataFrame([asdict(d) | {"change": d.change} for d in self.decisions])


def replay(policy: Policy, trace: pd.DataFrame, *, start_replicas: int | None = None,
           time: str = "time_s", load: str = "load") -> pd.DataFrame:
    """The rule over a load trace, with the replicas following its own decisions.

    ``trace`` has one row per controller sync: the time and the total ``load`` at that moment
    (e.g. requests per second over all replicas). The metric each decision reads is the load per
    replica then running (an HPA ``AverageValue``). Replicas appear at once here: a real
    Deployment adds start-up time, which lesson 20 measures with real servers."""
    missing = [c for c in (time, load) if c not in trace.columns]
    if missing:
        raise ValueError(f"the trace lacks the column(s) {missing}; it has {list(trace.columns)}")
    scaler = Autoscaler(policy)
    replicas = policy.min_replicas if start_replicas is None else start_replicas
    for t, total in zip(trace[time], trace[load]):
        metric = None if total is None or (isinstance(total, float) and math.isnan(total)) else total / replicas
        replicas = scaler.decide(float(t), replicas, metric).desired
    out = scaler.table()
    out.insert(1, load, list(trace[load]))
    return out


# -- the same policy as Kubernetes objects ------------------------------------------------------------

METRIC = "mlops_requests_per_second"
"""The per-pod metric the HorizontalPodAutoscaler reads (served to it by a metrics adapter, e.g.
prometheus-adapter over the router's request counter)."""


def manifests(policy: Policy, *, name: str, model_uri: str, artifact_uri: str, namespace: str = "mlops",
              image: str = "ghcr.io/example/credit-model:latest", metric: str = METRIC) -> list[dict]:
    """The Deployment, Service and HorizontalPodAutoscaler that apply ``policy`` on a cluster, and a
    KServe InferenceService that says the same with Knative's autoscaling annotations.

    The Deployment and Service are lesson 12's (``mlflow models serve`` in a container, probes,
    resources); the HPA (``autoscaling/v2``) targets the Deployment with ``metric`` per pod at
    ``policy.target`` (an ``AverageValue``), ``min/maxReplicas``, and ``behavior`` with the policy's
    stabilisation windows and rate limits. The tolerance is the cluster's
    (``--horizontal-pod-autoscaler-tolerance``, 0.1 by default; a per-HPA ``tolerance`` needs the
    HPAConfigurableTolerance feature gate). KServe scales on requests per second per replica
    (``autoscaling.knative.dev/metric: rps``, ``target``) between its ``min/maxReplicas``, and waits
    ``scale-down-delay`` before removing one, Knative's counterpart of the scale-down window.
    ``artifact_uri`` is where the model's files are (KServe fetches files, not ``models:/`` URIs).
    Check them with :func:`mlops_lab.deployment.manifests.validate`."""
    from mlops_lab.deployment import manifests as k8s

    spec = {"name": name, "strategy": "single",  # the URL is the laptop's; render keeps only the model
            "variants": {"stable": {"model_uri": model_uri, "urls": ["http://127.0.0.1:8080"]}}}
    rendered = k8s.render(spec, namespace=namespace, image=image, replicas=policy.min_replicas,
                          artifact_uris={"stable": artifact_uri})
    keep = [o for o in rendered if o["kind"] in ("Deployment", "InferenceService")
            or (o["kind"] == "Service" and o["metadata"]["labels"].get("mlops-lab/variant"))]
    deployment = next(o for o in keep if o["kind"] == "Deployment")
    deployment["spec"].pop("replicas")  # the HPA owns the count: a re-apply must not reset it
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": deployment["metadata"]["name"], "namespace": namespace,
                     "labels": dict(deployment["metadata"]["labels"])},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]},
            "minReplicas": policy.min_replicas, "maxReplicas": policy.max_replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": metric},
                                                  "target": {"type": "AverageValue", "averageValue": _quantity(policy.target)}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": int(policy.scale_up_window_s), "selectPolicy": "Max",
                            "policies": [{"type": "Pods", "value": policy.scale_up_pods, "periodSeconds": int(policy.period_s)},
                                         {"type": "Percent", "value": int(policy.scale_up_percent),
                                          "periodSeconds": int(policy.period_s)}]},
                "scaleDown": {"stabilizationWindowSeconds": int(policy.scale_down_window_s), "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": int(policy.scale_down_percent),
                                            "periodSeconds": int(policy.period_s)}]},
            },
        },
    }
    isvc = next(o for o in keep if o["kind"] == "InferenceService")
    isvc["spec"]["predictor"].update(minReplicas=policy.min_replicas, maxReplicas=policy.max_replicas)
    isvc["metadata"].setdefault("annotations", {}).update({
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "rps",
        "autoscaling.knative.dev/target": _quantity(policy.target),
        "autoscaling.knative.dev/scale-down-delay": f"{int(policy.scale_down_window_s)}s",
    })
    return [o for o in keep if o["kind"] != "InferenceService"] + [hpa, isvc]


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as they are, fractions in milli-units (``2.5`` -> ``2500m``)."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"
