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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlops_lab.processes import ManagedProcess


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
        whole = set()
        for name in ("min_replicas", "max_replicas", "scale_up_pods"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a whole number of at least 1, not {value!r}")
            else:
                whole.add(name)
        if {"min_replicas", "max_replicas"} <= whole and self.min_replicas > self.max_replicas:
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


# -- a day of traffic ------------------------------------------------------------------------------

def day_traffic(bikes: pd.DataFrame, day: str, *, peak_rps: float, low_rps: float = 1.0,
                seconds_per_hour: float = 4.0) -> pd.DataFrame:
    """One day of Bikeshare rentals as a request rate: each hour's riders scaled so that the busiest
    hour sends ``peak_rps`` (and no hour fewer than ``low_rps``), an hour lasting ``seconds_per_hour``.

    One row per hour: ``hour``, ``bikers``, ``start_s`` (from the start of the day), ``duration_s``
    and ``rate`` (requests per second). Feed ``phases(table)`` to :func:`mlops_lab.loadtest.run_phases`.
    A day not in the data, or one with hours missing (the dataset lacks a few), is refused.
    """
    if not (peak_rps > 0 and low_rps > 0 and seconds_per_hour > 0):
        raise ValueError(f"peak_rps, low_rps and seconds_per_hour must be positive, not {peak_rps!r}, "
                         f"{low_rps!r}, {seconds_per_hour!r}")
    if low_rps > peak_rps:
        raise ValueError(f"low_rps ({low_rps:g}) is above peak_rps ({peak_rps:g})")
    stamps = pd.to_datetime(bikes["timestamp"])
    rows = bikes[stamps.dt.normalize() == pd.Timestamp(day)]
    if rows.empty:
        raise ValueError(f"no Bikeshare hours on {day}; the data covers {stamps.min():%Y-%m-%d} to "
                         f"{stamps.max():%Y-%m-%d}")
    rows = rows.assign(hour=stamps[rows.index].dt.hour).sort_values("hour")
    missing = sorted(set(range(24)) - set(rows["hour"]))
    if missing:
        raise ValueError(f"{day} lacks the hour(s) {missing} in the Bikeshare data; pick a complete day")
    if rows["hour"].duplicated().any():
        raise ValueError(f"{day} has hours more than once: {sorted(rows.loc[rows['hour'].duplicated(), 'hour'])}")
    table = pd.DataFrame({"hour": rows["hour"].astype(int).to_numpy(), "bikers": rows["bikers"].to_numpy()})
    table["start_s"] = table["hour"] * float(seconds_per_hour)
    table["duration_s"] = float(seconds_per_hour)
    table["rate"] = (table["bikers"] / table["bikers"].max() * peak_rps).clip(lower=low_rps).round(2)
    return table


def phases(table: pd.DataFrame) -> list[tuple[float, float]]:
    """The ``(rate, duration)`` pairs of a :func:`day_traffic` table, for ``loadtest.run_phases``."""
    return list(zip(table["rate"].astype(float), table["duration_s"].astype(float)))


# -- live replicas behind the router ------------------------------------------------------------------

class ReplicaSet:
    """The replicas of one router variant, grown and shrunk like a Deployment's pods.

    ``start()`` makes a stopped model server (e.g. ``lambda: serving.model_server(uri)``). Growing
    starts servers in the background; each joins the router (health-checked by it) once ready, so
    a new replica takes its real start-up time to serve, as a new pod does. Shrinking drains the
    newest replica (the router sends it nothing new, waits for what is in flight) and only then
    stops it; a start still under way is cancelled instead and never joins the router. ``desired``
    counts the replicas asked for (serving + starting), the number the autoscaler decides on, like a
    Deployment's ``spec.replicas``; ``alive`` counts the processes running (starting, serving and
    draining), what a cluster bills. Every change is in :attr:`events`. Use it as a context manager:
    on exit, every server it started is stopped (an adopted one only if ``owned``).
    """

    def __init__(self, router_url: str, variant: str, start: Callable[[], "ManagedProcess"], *,
                 drain_timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.router_url, self.variant, self._start = router_url, variant, start
        self.drain_timeout_s = drain_timeout_s
        self._clock, self._t0 = clock, clock()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replica")
        self._jobs: list[Future] = []
        # the servers this set must stop, by id; holding them keeps an id from being reused
        self._owned: dict[int, object] = {}
        self._leftover: list = []  # servers whose stop failed: close() tries again
        self._closed = False
        self.serving: list = []
        self.starting = 0
        self.alive = 0
        self._cancel = 0  # starts to undo as soon as they finish (scaled down while starting)
        self.events: list[dict] = []

    # -- state ------------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since this set was made (the clock of :attr:`events`)."""
        return self._clock() - self._t0

    @property
    def desired(self) -> int:
        with self._lock:
            return len(self.serving) + self.starting - self._cancel

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self.serving)

    def _event(self, action: str, url: str = "", **detail) -> None:
        with self._lock:
            self.events.append({"time_s": round(self.now(), 3), "action": action, "url": url, **detail})

    def start_ups(self, since_s: float = 0.0) -> list[float]:
        """Seconds from the request to serving, for each replica that joined at or after ``since_s``."""
        return [e["start_up_s"] for e in list(self.events)
                if e["action"] == "ready" and e["time_s"] >= since_s]

    def adopt(self, server, *, owned: bool = False) -> None:
        """Count a server that already serves in the router (the variant's first replica); the set
        stops it on close only if ``owned``."""
        with self._lock:
            self.serving.append(server)
            self.alive += 1
            if owned:
                self._owned[id(server)] = server
        self._event("adopted", server.url)

    # -- changes ----------------------------------------------------------------------------------
    def scale_to(self, n: int) -> None:
        """Ask for ``n`` replicas (at least 1); returns at once, the work happens in the background."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"replicas must be a whole number of at least 1, not {n!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError("this replica set is closed")
            have = len(self.serving) + self.starting - self._cancel
            requested = self._clock()
            if n > have:
                undo = min(self._cancel, n - have)
                self._cancel -= undo
                for _ in range(n - have - undo):
                    self._jobs.append(self._pool.submit(self._grow, requested))
                    self.starting += 1
            elif n < have:
                drop = have - n
                cancel = min(drop, self.starting - self._cancel)
                self._cancel += cancel
                for _ in range(drop - cancel):
                    server = self.serving.pop()  # the newest first
                    self._jobs.append(self._pool.submit(self._shrink, server))

    def _take_cancel(self) -> bool:
        with self._lock:
            if self._cancel > 0:
                self._cancel -= 1
                self.starting -= 1
                return True
            return False

    def _grow(self, requested: float) -> None:
        from mlops_lab.deployment import RouterClient

        server = None
        with self._lock:
            self.alive += 1
        try:
            server = self._start()
            self._owned[id(server)] = server
            if not server.running:
                server.start()
            if self._take_cancel():  # scaled down while it started: it never joins the router
                self._stop(server)
                self._event("cancelled", server.url)
                return
            with RouterClient(self.router_url, timeout=30) as client:
                client.add_replica(self.variant, server.url)
        except Exception as error:  # noqa: BLE001 (recorded; the autoscaler sees the replica missing)
            with self._lock:
                self.starting -= 1
                if self._cancel > 0:
                    self._cancel -= 1  # the failure already did what the cancel asked
            if server is not None:
                self._stop(server)
            else:
                with self._lock:
                    self.alive -= 1
            self._event("failed", getattr(server, "url", ""), error=str(error)[-1500:])
            return
        with self._lock:
            self.starting -= 1
            self.serving.append(server)
        self._event("ready", server.url, start_up_s=round(self._clock() - requested, 2))

    def _stop(self, server) -> None:
        """Stop one server; one whose stop fails is kept for :meth:`close` to try again."""
        try:
            server.stop()
        except Exception as error:  # noqa: BLE001
            with self._lock:
                self._leftover.append(server)
            self._event("stop failed", server.url, error=str(error)[-1500:])
            return
        with self._lock:
            self.alive -= 1

    def _shrink(self, server) -> None:
        from mlops_lab.deployment import RouterClient

        try:
            with RouterClient(self.router_url, timeout=self.drain_timeout_s + 30) as client:
                answer = client.remove_replica(self.variant, server.url, drain_timeout_s=self.drain_timeout_s)
        except Exception as error:  # noqa: BLE001 (the router still lists it: keep it serving)
            with self._lock:
                self.serving.append(server)
            self._event("remove failed", server.url, error=str(error)[-1500:])
            return
        if id(server) in self._owned:
            self._stop(server)
        else:  # an adopted server its owner stops: it only leaves this set
            with self._lock:
                self.alive -= 1
        self._event("stopped", server.url, drained=answer.get("drained"))

    def wait(self, timeout: float = 120.0) -> None:
        """Wait for every start and stop asked for so far (``timeout`` for all of them together)."""
        deadline = time.monotonic() + timeout
        for job in list(self._jobs):
            job.result(timeout=max(deadline - time.monotonic(), 0.1))

    def close(self) -> None:
        """Finish pending work, then stop every server this set started or owns (the router's list is
        left as is). Every server is tried even if one fails to stop; the failures are raised together."""
        with self._lock:
            self._closed = True
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            with self._lock:
                servers = [s for s in self.serving if id(s) in self._owned] + self._leftover
                self.serving, self._leftover = [s for s in self.serving if id(s) not in self._owned], []
            problems = []
            for server in servers:
                try:
                    server.stop()
                except Exception as error:  # noqa: BLE001
                    problems.append(f"{getattr(server, 'url', server)}: {error}")
            if problems:
                raise RuntimeError("replicas that did not stop: " + "; ".join(problems))

    def __enter__(self) -> "ReplicaSet":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request_count(metrics_text: str, variant: str) -> float:
    """Answers of ``variant`` so far, from the router's Prometheus exposition (every status code)."""
    from prometheus_client.parser import text_string_to_metric_families

    return float(sum(sample.value for family in text_string_to_metric_families(metrics_text)
                     for sample in family.samples
                     if sample.name == "mlops_router_requests_total" and sample.labels.get("variant") == variant))


class Controller:
    """The HPA's control loop over a live router: every ``sync_s`` seconds it reads the variant's
    request rate from the router's ``/metrics`` (what prometheus-adapter serves the HPA as
    ``rate(mlops_router_requests_total[...])``), divides by the replicas asked for, lets the
    :class:`Autoscaler` decide, and scales the :class:`ReplicaSet`. Runs in a thread between
    ``start()`` and ``stop()`` (or as a context manager); :meth:`table` has one row per sync, its
    times in seconds from ``start()`` (start the load right after it to share the clock).
    """

    def __init__(self, replicas: ReplicaSet, policy: Policy, *, sync_s: float = 1.0) -> None:
        if not sync_s > 0:
            raise ValueError(f"sync_s must be positive, not {sync_s!r}")
        self.replicas, self.sync_s = replicas, float(sync_s)
        self.autoscaler = Autoscaler(policy)
        self.rows: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, session) -> float | None:
        try:
            answer = session.get(self.replicas.router_url + "/metrics", timeout=5)
            answer.raise_for_status()
            return request_count(answer.text, self.replicas.variant)
        except Exception as error:  # noqa: BLE001 (a missed scrape is a missing metric: no decision)
            self.errors.append(str(error)[:200])
            return None

    def _run(self) -> None:
        import requests

        clock, t0 = self.replicas._clock, self._t0
        with requests.Session() as session:
            last_t, last_count = clock(), self._read(session)
            while not self._stop.wait(self.sync_s):
                try:
                    now, count = clock(), self._read(session)
                    rate = None
                    if count is not None and last_count is not None and now > last_t:
                        rate = max(count - last_count, 0.0) / (now - last_t)
                    if count is not None:  # a failed scrape keeps the last good sample
                        last_t, last_count = now, count
                    current = max(self.replicas.desired, 1)
                    decision = self.autoscaler.decide(now - t0, current, None if rate is None else rate / current)
                    if decision.desired != current:
                        self.replicas.scale_to(decision.desired)
                    self.rows.append({"time_s": round(now - t0, 3), "load_rps": rate, "ready": self.replicas.ready,
                                      "alive": self.replicas.alive, "current": current,
                                      "desired": decision.desired, "reason": decision.reason})
                except Exception as error:  # noqa: BLE001 (recorded; the loop goes on)
                    self.errors.append(f"{type(error).__name__}: {error}"[:500])

    def start(self) -> "Controller":
        self._t0 = self.replicas._clock()  # the table's times count from here
        self.started_s = self.replicas.now()  # the same moment on the replica set's clock
        self._thread = threading.Thread(target=self._run, name="autoscaler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.sync_s + 10)

    def __enter__(self) -> "Controller":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["time_s", "load_rps", "ready", "alive", "current", "desired",
                                                "reason"])


# -- measured: throughput and p99 against replicas ----------------------------------------------------

def replica_sweep(replicas: ReplicaSet, target, counts=(1, 2, 3, 4), *, slo_p99_ms: float,
                  start_rate: float = 20.0, factor: float = 1.25, duration: float = 2.0,
                  max_error_rate: float = 0.01) -> pd.DataFrame:
    """The capacity behind the router with 1, 2, ... replicas, measured one count after the other.

    For each count the set is scaled and waited for, warmed for a second, then
    :func:`mlops_lab.loadtest.find_capacity` finds the highest rate whose p99 stays within
    ``slo_p99_ms`` (each search starts at 80 % of the previous capacity, a step that should pass). One row per count: ``replicas``,
    ``capacity_rps``, ``p99_ms`` at that rate, ``max_throughput_rps`` (the most answers per second
    any step got), ``speedup`` over one replica and ``ideal`` (the count itself). On a machine with
    few cores the speedup stops growing once the replicas, the router and the load generator
    share all of them: that is the measurement, not a fault.
    """
    from mlops_lab import loadtest

    rows, rate = [], float(start_rate)
    for n in counts:
        replicas.scale_to(int(n))
        replicas.wait()
        loadtest.run_open_loop(target, rate=max(rate / 2, 1.0), duration=2.0)  # warm the new replicas
        found, table = loadtest.find_capacity(target, slo_p99_ms=slo_p99_ms, start_rate=rate, factor=factor,
                                              duration=duration, max_error_rate=max_error_rate)
        at = table[table["rate"] == found] if found is not None else table.iloc[:0]
        rows.append({"replicas": int(n), "capacity_rps": found,
                     "p99_ms": float(at["p99_ms"].iloc[0]) if len(at) else float("nan"),
                     "max_throughput_rps": float(table["throughput_rps"].max())})
        rate = max(0.8 * found, 1.0) if found else rate  # the next count starts below this one's capacity
    out = pd.DataFrame(rows)
    base = out["capacity_rps"].iloc[0]
    out["speedup"] = (out["capacity_rps"] / base).round(2) if base else float("nan")
    out["ideal"] = out["replicas"].astype(float)
    return out


def plot_sweep(sweep: pd.DataFrame, cores: int | None = None):
    """Capacity against replicas, with the ideal (linear) line and the machine's core count."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    base = sweep["capacity_rps"].iloc[0]
    ax.plot(sweep["replicas"], sweep["ideal"] * base, "--", color="grey", label="ideal: linear in replicas")
    ax.plot(sweep["replicas"], sweep["capacity_rps"], "o-", label="measured capacity (p99 within the SLO)")
    if cores:
        ax.axvline(cores, color="tab:red", linestyle=":", label=f"{cores} CPU cores")
    ax.set(xlabel="serving replicas behind the router", ylabel="requests per second",
           title="Capacity against replicas on this machine", xticks=list(sweep["replicas"]))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_autoscaling(load_timeline: pd.DataFrame, controller: pd.DataFrame, *, slo_p99_ms: float,
                     target: float, seconds_per_hour: float | None = None):
    """Three panels over the compressed day: load (offered and answered), replicas (asked for and
    serving) with the load each replica carries, and p99 against the SLO."""
    import matplotlib.pyplot as plt

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    top.step(load_timeline["t"], load_timeline["offered_rps"], where="post", label="offered")
    top.step(load_timeline["t"], load_timeline["ok_rps"], where="post", alpha=0.7, label="answered (2xx)")
    top.set(ylabel="requests / s", title="A day of Bikeshare-shaped traffic, autoscaled")
    top.legend(loc="upper left", fontsize=8)
    middle.step(controller["time_s"], controller["desired"], where="post", label="replicas asked for")
    middle.step(controller["time_s"], controller["ready"], where="post", linestyle="--", label="replicas serving")
    middle.set(ylabel="replicas", yticks=range(0, int(controller["desired"].max()) + 2))
    twin = middle.twinx()
    twin.plot(controller["time_s"], controller["load_rps"] / controller["ready"].clip(lower=1), color="grey",
              alpha=0.5, label="load per serving replica")
    twin.axhline(target, color="grey", linestyle=":", label=f"target {target:g}/s per replica")
    twin.set_ylabel("req/s per replica")
    middle.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    bottom.plot(load_timeline["t"], load_timeline["p99_ms"], ".-", label="p99 per window")
    bottom.axhline(slo_p99_ms, color="tab:red", linestyle="--", label=f"SLO {slo_p99_ms:g} ms")
    bottom.set(yscale="log", ylabel="p99 (ms)", xlabel="seconds into the compressed day")
    bottom.legend(loc="upper left", fontsize=8)
    if seconds_per_hour:
        ticks = [h * seconds_per_hour for h in range(0, 25, 3)]
        bottom.set_xticks(ticks, [f"{h:02d}:00" for h in range(0, 25, 3)])
        bottom.set_xlabel("hour of the day (compressed)")
    fig.tight_layout()
    return fig


def replica_seconds(controller: pd.DataFrame, end_s: float, column: str = "alive") -> float:
    """The area under a replicas curve of a :class:`Controller` table from 0 to ``end_s``: what the
    day cost in replica-seconds. ``alive`` (the default) counts every replica process running,
    starting and draining ones included, as a cluster bills pods; ``ready`` only those serving."""
    if controller.empty:
        return 0.0
    times = [0.0] + [min(max(float(t), 0.0), end_s) for t in controller["time_s"]] + [end_s]
    counts = [controller[column].iloc[0]] + list(controller[column])
    return float(sum(n * max(b - a, 0.0) for n, a, b in zip(counts, times[:-1], times[1:])))


def provisioning(traffic: pd.DataFrame, sweep: pd.DataFrame, *, controller: pd.DataFrame,
                 load_timeline: pd.DataFrame, slo_p99_ms: float) -> pd.DataFrame:
    """Autoscaled (measured) beside fixed replica counts (from the measured capacities).

    For the autoscaled day: replica-seconds of every replica process alive (start-ups and drains
    included) from the controller's table, and the share of the load timeline's windows whose p99
    broke the SLO. For a fixed count ``n``: ``n`` replicas the whole
    day, and the share of the day whose rate is above the capacity measured for ``n`` in the sweep
    (where its p99 would break the SLO). ``how`` says which numbers are measured and which derived.
    """
    day_s = float((traffic["start_s"] + traffic["duration_s"]).max())
    busy = load_timeline[load_timeline["offered"] > 0]
    over = float((busy["p99_ms"] > slo_p99_ms).mean()) if len(busy) else float("nan")
    rows = [{"provisioning": "autoscaled", "how": "measured", "replica_seconds": replica_seconds(controller, day_s),
             "share_of_day_over_slo": over}]
    for n, capacity_rps in zip(sweep["replicas"], sweep["capacity_rps"]):
        above = traffic["rate"] > (0 if pd.isna(capacity_rps) else capacity_rps)
        rows.append({"provisioning": f"fixed {int(n)}", "how": "from the sweep's capacity",
                     "replica_seconds": float(n) * day_s,
                     "share_of_day_over_slo": float((traffic["duration_s"] * above).sum() / day_s)})
    return pd.DataFrame(rows)
