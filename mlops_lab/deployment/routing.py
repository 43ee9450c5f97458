"""The traffic router: one HTTP service in front of several model servers, run by a strategy spec.

It speaks the model servers' own protocol (``GET /ping``, ``/health``, ``/version``, ``POST
/invocations``), so a client cannot tell it from a model server, and forwards each request to one
variant chosen by the spec's weights: sticky per user when the request carries the spec's key
header (``X-User-Id`` by default; the same user always lands on the same variant), otherwise per
request. Answers pass through unchanged (a malformed request gets the model server's own 4xx),
with three headers added: ``X-Request-Id``, ``X-Variant`` and ``X-Model-Version``.

Around that:

- **inference log**: every answer (and every shadow answer) is a row of the SQLite log in the
  workspace, written by a background thread off the response path (:mod:`.log`);
- **shadow**: with ``mirror``, every request is copied to the shadow variant after the primary
  answered, on its own connection pool, with its own timeout and a cap on requests in flight (past
  it, copies are dropped and counted), so a slow or dead shadow costs the primary nothing;
- **canary**: a background task checks the canary every ``interval_s`` (error rate, p99 against
  the stable variant's), moves it up its steps while checks pass, rolls it back to weight 0 after
  ``threshold`` failed checks (recording why; the registry alias is left alone), and promotes the
  canary's version to ``champion`` with :func:`mlops_lab.registry.promote` after a passed check at
  100 %, with the analysis as the reason;
- **admin API**: ``GET /router`` (weights, replicas, canary state, recent decisions), ``PUT
  /router/weights``, ``POST /router/switch`` (blue/green: health-checked first), ``POST
  /router/replicas`` (add a replica, or drain one and remove it), ``PUT /router/spec`` (apply a new
  spec, like ``kubectl apply``); it is for loopback use, without authentication;
- ``GET /metrics``: Prometheus counters and histograms per variant (``prometheus-client``);
- **state**: weights, replicas and canary progress are saved in the workspace after every change
  (``deployments/<name>/state.json``), so a restarted router resumes where it stopped.

Why hand-written: Envoy, Istio and Flagger do this on Kubernetes (see :mod:`.manifests`), but none
runs as one process on a laptop without a cluster; the router is the same ideas in a few hundred
lines of Starlette and aiohttp.

Start it with :func:`mlops_lab.deployment.routing` (a managed process) or ``mlops-lab router serve
SPEC``; ``python -m mlops_lab.deployment.routing --spec FILE --home FOLDER --port PORT`` is what both run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops_lab.deployment.experiment import assign
from mlops_lab.deployment.log import LogWriter, cut
from mlops_lab.deployment.spec import Spec, SpecError, load_spec

MAX_BODY_BYTES = 1_000_000
"""Largest request body the router forwards (the gateway's limit); larger bodies get a readable 413."""
UPSTREAM_TIMEOUT_S = 30.0
EVENTS_KEPT = 200
_log = logging.getLogger("mlops_lab.deployment.routing")
_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def state_folder(home: Path, name: str) -> Path:
    """Where the router named ``name`` keeps its spec, state and inference log."""
    return Path(home) / "deployments" / name


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Replica:
    url: str
    version: str | None
    draining: bool = False
    in_flight: int = 0


@dataclass
class Window:
    """What one variant answered since the last canary check."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, latency_ms: float, error: bool) -> None:
        self.latencies.append(latency_ms)
        self.errors += error

    def p99(self) -> float | None:
        return float(np.percentile(self.latencies, 99)) if self.latencies else None


class Router:
    """The router's state and behaviour, independent of the web framework (one per process)."""

    def __init__(self, spec: Spec, folder: Path) -> None:
        self.folder = folder
        self.spec = spec
        self.writer: LogWriter | None = None
        self.session = None
        self.shadow_session = None
        self.shadow_in_flight = 0
        self.tasks: set[asyncio.Task] = set()
        self.controller: asyncio.Task | None = None
        self.started = time.time()
        self._abort_counts: dict[str, int] = {}
        self._delay_counts: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._reset(spec, resume=True)

    # -- state --------------------------------------------------------------------------------
    def _reset(self, spec: Spec, resume: bool) -> None:
        saved = self._saved() if resume else None
        if saved is not None and saved.get("digest") != spec.digest:
            saved = None  # a different spec: a new deployment, not a resumed one
        self.spec = spec
        self.weights = dict(spec.weights)
        self.replicas = {name: [Replica(url, v.version) for url in v.urls] for name, v in spec.variants.items()}
        self.canary = None
        if spec.canary is not None:
            self.canary = {"status": "progressing", "step": 0, "failed_checks": 0, "checks": [], "reason": None,
                           "stable_p99_ms": None}
        self.events: list[dict] = []
        self.windows = {name: Window() for name in spec.variants}
        if saved is not None:
            self.weights = {k: float(v) for k, v in saved["weights"].items()}
            self.replicas = {name: [Replica(r["url"], r.get("version")) for r in reps]
                             for name, reps in saved["replicas"].items()}
            self.canary = saved.get("canary")
            self.events = saved.get("events", [])
            self.event("resumed", f"router restarted; state of {saved.get('saved_at')} restored")
        else:
            self.event("applied", f"strategy {spec.strategy} with weights {self.weights}")
        self.save()

    def _saved(self) -> dict | None:
        path = self.folder / "state.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def save(self) -> None:
        state = {"name": self.spec.name, "digest": self.spec.digest, "saved_at": _now(), "spec": self.spec.to_dict(),
                 "weights": self.weights, "canary": self.canary, "events": self.events[-EVENTS_KEPT:],
                 "replicas": {n: [{"url": r.url, "version": r.version} for r in reps if not r.draining]
                              for n, reps in self.replicas.items()}}
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / "state.json.tmp"
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.folder / "state.json")  # atomic: a crash leaves the old or the new state

    def event(self, action: str, detail: str) -> None:
        self.events.append({"at": _now(), "action": action, "detail": detail})
        _log.warning("%s: %s", action, detail)

    def set_weights(self, weights: dict[str, float], why: str) -> None:
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.spec.variants}
        if self.metrics is not None:
            for name, value in self.weights.items():
                self.metrics["weight"].labels(variant=name).set(value)
        self.event("weights", f"{self.weights}: {why}")
        self.save()

    def status(self) -> dict:
        return {"name": self.spec.name, "strategy": self.spec.strategy, "model": self.spec.model,
                "weights": self.weights, "key_header": self.spec.key_header,
                "variants": {n: {"version": v.version, "replicas": [
                    {"url": r.url, "version": r.version, "draining": r.draining, "in_flight": r.in_flight}
                    for r in self.replicas[n]]} for n, v in self.spec.variants.items()},
                "mirror": None if self.spec.mirror is None else {"to": self.spec.mirror.to,
                                                                 "in_flight": self.shadow_in_flight},
                "canary": self.canary, "events": self.events[-50:], "digest": self.spec.digest,
                "log": str(self.folder / "inference.db"), "uptime_s": round(time.time() - self.started, 1)}

    # -- metrics ------------------------------------------------------------------------------
    metrics: dict | None = None

    def build_metrics(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: Prometheus does not need them
        registry = CollectorRegistry()
        self.metrics = {
            "requests": Counter("mlops_router_requests", "Answers per variant and HTTP status code",
                                ["variant", "code"], registry=registry),
            "errors": Counter("mlops_router_errors", "Answers that failed (5xx or no answer) per variant",
                              ["variant"], registry=registry),
            "latency": Histogram("mlops_router_request_duration_seconds", "Time to answer, per variant",
                                 ["variant"], buckets=_BUCKETS, registry=registry),
            "weight": Gauge("mlops_router_weight_percent", "Share of traffic each variant gets now",
                            ["variant"], registry=registry),
            "shadow": Counter("mlops_router_shadow_requests", "Mirrored requests: answered, failed or dropped "
                              "(over the in-flight cap)", ["variant", "outcome"], registry=registry),
            "checks": Counter("mlops_router_canary_checks", "Canary analysis checks by result", ["result"],
                              registry=registry),
        }
        for name in self.spec.variants:
            self.metrics["errors"].labels(variant=name)
            self.metrics["weight"].labels(variant=name).set(self.weights.get(name, 0.0))
        return registry

    # -- forwarding ---------------------------------------------------------------------------
    def pick(self, name: str) -> list[Replica]:
        """The variant's serving replicas, the next one (round robin) first."""
        live = [r for r in self.replicas.get(name, []) if not r.draining]
        if not live:
            return []
        start = self._next.get(name, 0) % len(live)
        self._next[name] = start + 1
        return live[start:] + live[:start]

    def _fault(self, spec: Spec, name: str) -> tuple[float, int | None]:
        """Istio-style fault of ``name`` for this request: (delay in s, abort status or None), exact shares."""
        fault = spec.variants[name].fault
        if not fault.active:
            return 0.0, None
        n = self._abort_counts.get(name, 0)
        self._abort_counts[name] = n + 1
        if int((n + 1) * fault.abort_percent / 100) > int(n * fault.abort_percent / 100):
            return 0.0, fault.abort_status
        m = self._delay_counts.get(name, 0)
        self._delay_counts[name] = m + 1
        delayed = int((m + 1) * fault.delay_percent / 100) > int(m * fault.delay_percent / 100)
        return (fault.delay_ms / 1000.0 if delayed else 0.0), None

    async def forward(self, session, name: str, body: bytes, content_type: str, timeout: float,
                      request_id: str, spec: Spec) -> tuple[int, bytes, str, Replica | None, str | None]:
        """Send the request to a replica of ``name``: (status, body, content type, replica, error)."""
        import aiohttp

        delay, abort = self._fault(spec, name)
        if abort is not None:
            return abort, json.dumps({"error_code": "FAULT_INJECTED", "message": f"fault injected on variant "
                                      f"{name!r} by the strategy spec"}).encode(), "application/json", None, "fault"
        if delay:
            await asyncio.sleep(delay)
        replicas = self.pick(name)
        if not replicas:
            return 503, _error("NO_REPLICA", f"variant {name!r} has no replica to serve"), "application/json", None, "no replica"
        error = None
        for replica in replicas[:2]:  # one retry on another replica when the connection itself fails
            if replica.draining:  # started draining while the first attempt tried to connect
                continue
            replica.in_flight += 1
            try:
                async with session.post(replica.url + "/invocations", data=body,
                                        headers={"Content-Type": content_type, "X-Request-Id": request_id},
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
                    content = await answer.read()
                    return answer.status, content, answer.headers.get("Content-Type", "application/json"), replica, None
            except aiohttp.ClientConnectorError as exc:
                error = f"cannot connect to {replica.url}: {type(exc).__name__}"
            except asyncio.TimeoutError:
                return (504, _error("UPSTREAM_TIMEOUT", f"variant {name!r} did not answer within {timeout:g} s"),
                        "application/json", replica, "timeout")
            except aiohttp.ClientError as exc:
                return (502, _error("UPSTREAM_ERROR", f"variant {name!r} failed: {type(exc).__name__}"),
                        "application/json", replica, type(exc).__name__)
            finally:
                replica.in_flight -= 1
        return 502, _error("UPSTREAM_UNAVAILABLE", f"variant {name!r}: {error}"), "application/json", None, error

    def record(self, role: str, request_id: str, name: str | None, replica: Replica | None, status: int,
               latency_ms: float, key: str | None, body: bytes, content: bytes | None, error: str | None,
               spec: Spec | None = None) -> None:
        """Count one answer in the metrics (and the canary's window) and queue its log row.

        ``name`` is None for a request the router refused itself (413); ``spec`` is the spec the
        request was routed by (a new spec may have been applied while it was in flight)."""
        spec = spec or self.spec
        failed = status >= 500 or status == 0
        label = name or "none"
        if role == "primary":
            self.metrics["requests"].labels(variant=label, code=str(status)).inc()
            self.metrics["latency"].labels(variant=label).observe(latency_ms / 1000.0)
            if failed:
                self.metrics["errors"].labels(variant=label).inc()
            window = self.windows.get(name) if self.analysing and spec is self.spec else None
            if window is not None:
                window.add(latency_ms, failed)
        if self.writer is not None:
            variant = spec.variants.get(name) if name else None
            version = replica.version if replica is not None else (variant.version if variant else None)
            self.writer.put({"request_id": request_id, "at": time.time(), "role": role, "variant": name,
                             "version": version, "replica": replica.url if replica else None, "status": status,
                             "latency_ms": round(latency_ms, 3), "key": key, "request": cut(body),
                             "response": cut(content), "error": error})

    async def mirror(self, request_id: str, key: str | None, body: bytes, content_type: str) -> None:
        spec = self.spec
        mirror = spec.mirror
        start = time.perf_counter()
        try:
            await asyncio.sleep(0)  # let the primary's answer go out first
            status, content, _, replica, error = await self.forward(self.shadow_session, mirror.to, body,
                                                                     content_type, mirror.timeout_s, request_id, spec)
        finally:
            self.shadow_in_flight -= 1
        outcome = "answered" if status < 500 else "failed"
        self.metrics["shadow"].labels(variant=mirror.to, outcome=outcome).inc()
        self.record("shadow", request_id, mirror.to, replica, status, (time.perf_counter() - start) * 1000, key,
                    body, content, error, spec)

    def spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- canary -------------------------------------------------------------------------------
    @property
    def analysing(self) -> bool:
        """True while a canary analysis runs (only then are latencies kept for its checks)."""
        return self.canary is not None and self.canary["status"] == "progressing"

    @property
    def busy(self) -> str | None:
        """Why a hand-made change must wait (a canary analysis or promotion runs), or None."""
        if self.canary is not None and self.canary["status"] in ("progressing", "promoting"):
            return (f"a canary analysis is {self.canary['status']}: it sets the weights; wait for it to end, "
                    "or apply a new spec to replace it")
        return None

    def check(self) -> dict:
        """One analysis of the canary over the interval that just ended (Flagger's metric checks)."""
        canary, state = self.spec.canary, self.canary
        window, stable = self.windows[canary.canary], self.windows[canary.stable]
        self.windows = {name: Window() for name in self.spec.variants}
        requests = len(window.latencies)
        error_rate = window.errors / requests if requests else None
        p99, stable_p99 = window.p99(), stable.p99()
        if stable_p99 is not None and len(stable.latencies) >= canary.min_requests:
            state["stable_p99_ms"] = stable_p99
        baseline = state.get("stable_p99_ms")
        result = {"at": _now(), "step": state["step"] + 1, "weight": self.weights[canary.canary],
                  "requests": requests, "errors": window.errors,
                  "error_rate": None if error_rate is None else round(error_rate, 4),
                  "p99_ms": None if p99 is None else round(p99, 2),
                  "stable_p99_ms": None if baseline is None else round(baseline, 2), "problems": []}
        if requests < canary.min_requests:
            result["result"] = "inconclusive"
            result["problems"].append(f"{requests} canary requests, fewer than the {canary.min_requests} a check needs")
            return result
        if error_rate > canary.max_error_rate:
            result["problems"].append(f"error rate {error_rate:.1%} above {canary.max_error_rate:.1%}")
        if canary.max_p99_ms is not None and p99 > canary.max_p99_ms:
            result["problems"].append(f"p99 {p99:.1f} ms above {canary.max_p99_ms:g} ms")
        if baseline is not None and p99 > canary.max_p99_ratio * baseline and p99 - baseline > canary.p99_slack_ms:
            result["problems"].append(f"p99 {p99:.1f} ms above {canary.max_p99_ratio:g} x the stable "
                                      f"variant's {baseline:.1f} ms")
        result["result"] = "failed" if result["problems"] else "passed"
        return result

    async def analyse(self) -> None:
        """The canary controller: one check per interval until the canary is promoted or rolled back."""
        canary = self.spec.canary
        while self.canary["status"] == "progressing":
            await asyncio.sleep(canary.interval_s)
            result = self.check()
            self.metrics["checks"].labels(result=result["result"]).inc()
            state = self.canary
            state["checks"] = (state["checks"] + [result])[-EVENTS_KEPT:]
            if result["result"] == "failed":
                state["failed_checks"] += 1
                if state["failed_checks"] >= canary.threshold:
                    await self.roll_back(result)
                    return
            elif result["result"] == "passed":
                if self.weights[canary.canary] >= 100:
                    await self.promote(result)
                    return
                state["step"] += 1
                weight = canary.steps[state["step"]]
                self.set_weights({canary.stable: 100 - weight, canary.canary: weight},
                                 f"canary check {len(state['checks'])} passed")
                continue
            self.save()

    def _summary(self) -> str:
        checks = self.canary["checks"]
        passed = sum(c["result"] == "passed" for c in checks)
        failed = [c for c in checks if c["result"] == "failed"]
        text = f"canary analysis of {self.spec.name}: {passed} of {len(checks)} checks passed"
        if failed:
            text += "; failed: " + "; ".join(f"check {checks.index(c) + 1} at {c['weight']:g} %: "
                                              + ", ".join(c["problems"]) for c in failed[-2:])
        return text

    async def roll_back(self, result: dict) -> None:
        canary = self.spec.canary
        self.canary.update(status="rolled_back", reason=self._summary())
        self.set_weights({canary.stable: 100, canary.canary: 0}, "canary rolled back")
        self.event("rolled_back", self.canary["reason"])
        version = self.spec.variants[canary.canary].version
        if self.spec.model and version:
            problem = await asyncio.to_thread(_tag_rollback, self.spec.model, version, self.canary["reason"])
            if problem:
                self.event("note_failed", f"the rollback could not be noted in the registry: {problem}")
                self.save()

    async def promote(self, result: dict) -> None:
        from mlops_lab import registry

        canary = self.spec.canary
        version = self.spec.variants[canary.canary].version
        reason = self._summary()
        if not canary.promote:
            self.canary.update(status="succeeded", reason=reason)
            self.event("succeeded", reason)
            self.save()
            return
        self.canary.update(status="promoting")
        self.save()
        try:
            await asyncio.to_thread(registry.promote, self.spec.model, version, reason=reason[:registry.REASON_LIMIT],
                                    actor=f"router/{self.spec.name}")
        except Exception as exc:  # noqa: BLE001 (the registry refused: serve what it says is champion)
            self.canary.update(status="promotion_failed", reason=f"{reason}; the registry refused: {exc}")
            self.set_weights({canary.stable: 100, canary.canary: 0}, "promotion refused by the registry")
            return
        self.canary.update(status="promoted", reason=reason)
        self.event("promoted", f"{self.spec.model} version {version} is champion: {reason}")
        self.save()

    def start_controller(self) -> None:
        if self.controller is not None:
            self.controller.cancel()
            self.controller = None
        if self.canary is not None and self.canary["status"] == "progressing":
            self.controller = asyncio.get_running_loop().create_task(self.analyse())
        elif self.canary is not None and self.canary["status"] == "promoting":  # stopped mid-promotion: finish it
            self.controller = asyncio.get_running_loop().create_task(self.promote(self.canary["checks"][-1]))
        if self.controller is not None:
            self.controller.add_done_callback(self._controller_done)

    def _controller_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        _log.error("the canary controller failed", exc_info=error)
        canary = self.spec.canary
        self.canary.update(status="failed", reason=f"the analysis stopped on an error: {type(error).__name__}: {error}")
        self.set_weights({canary.stable: 100, canary.canary: 0}, "the canary analysis failed: back to stable")


def _tag_rollback(model: str, version: str, reason: str) -> str | None:
    """Note a rollback on the model version (the alias is left alone); returns what went wrong, if anything."""
    try:
        import mlflow

        client = mlflow.MlflowClient()
        client.set_model_version_tag(model, version, "canary.rolled_back_at", _now())
        client.set_model_version_tag(model, version, "canary.rolled_back_reason", reason[:500])
    except Exception as exc:  # noqa: BLE001 (the rollback stands; only its registry note failed)
        return str(exc)
    return None


def _warm_registry() -> None:
    import mlflow

    from mlops_lab import registry  # noqa: F401

    mlflow.MlflowClient()


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


# -- the web app --------------------------------------------------------------------------------------

def build_app(spec: Spec, folder: Path, *, max_body_bytes: int = MAX_BODY_BYTES):
    """The Starlette app of a router for ``spec`` keeping its state and log in ``folder``."""
    from importlib.metadata import version

    import aiohttp
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from mlops_lab.gateway import RequestError, read_body

    router = Router(spec, folder)
    registry = router.build_metrics()
    mlflow_version = version("mlflow")

    def refuse(status: int, message: str, code: str = "BAD_REQUEST") -> JSONResponse:
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def version_route(request: Request) -> Response:
        return Response(mlflow_version, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def invocations(request: Request) -> Response:
        start = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        spec = router.spec  # the spec this request is routed by, even if a new one is applied meanwhile
        key = request.headers.get(spec.key_header)
        try:
            body = await read_body(request, max_body_bytes)
        except RequestError as error:
            router.record("primary", request_id, None, None, error.status, (time.perf_counter() - start) * 1000,
                          key, b"", json.dumps(error.to_json()).encode(), error.code, spec)
            return JSONResponse(error.to_json(), status_code=error.status,
                                headers={"X-Request-Id": request_id, "Connection": "close"})
        name = assign(key or request_id, router.weights, spec.salt)
        content_type = request.headers.get("content-type", "")
        status, content, answer_type, replica, error = await router.forward(
            router.session, name, body, content_type, UPSTREAM_TIMEOUT_S, request_id, spec)
        router.record("primary", request_id, name, replica, status, (time.perf_counter() - start) * 1000, key,
                      body, content, error, spec)
        mirror = spec.mirror
        if mirror is not None:
            if router.shadow_in_flight < mirror.max_in_flight:
                router.shadow_in_flight += 1
                router.spawn(router.mirror(request_id, key, body, content_type))
            else:
                router.metrics["shadow"].labels(variant=mirror.to, outcome="dropped").inc()
        version_label = replica.version if replica is not None else spec.variants[name].version
        return Response(content, status_code=status, media_type=answer_type,
                        headers={"X-Request-Id": request_id, "X-Variant": name, "X-Model-Version": version_label or ""})

    async def status(request: Request) -> Response:
        if request.query_params.get("flush") and router.writer is not None:
            await asyncio.to_thread(router.writer.flush)
        return JSONResponse(router.status())

    async def json_body(request: Request) -> dict:
        try:
            document = json.loads(await request.body() or b"{}")
        except ValueError:
            raise RequestError(400, "the body must be a JSON object") from None
        if not isinstance(document, dict):
            raise RequestError(400, "the body must be a JSON object")
        return document

    async def weights_route(request: Request) -> Response:
        try:
            document = await json_body(request)
            weights = document.get("weights", document)
            if router.busy:
                return refuse(409, router.busy, "CONFLICT")
            checked = load_spec({**router.spec.to_dict(), "strategy": "ab" if len(router.spec.variants) > 1 else "single",
                                 "weights": weights, "canary": None, "mirror": None})
            if router.spec.mirror and checked.weights.get(router.spec.mirror.to, 0) > 0:
                return refuse(400, f"the shadow variant {router.spec.mirror.to!r} must keep weight 0")
        except SpecError as error:
            return refuse(400, "; ".join(error.problems))
        except RequestError as error:
            return refuse(error.status, error.message)
        router.set_weights(checked.weights, str(document.get("reason", "set by hand")))
        return JSONResponse(router.status())

    async def healthy(url: str) -> str | None:
        try:
            async with router.session.get(url + "/ping", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                return None if answer.status == 200 else f"{url}/ping answered {answer.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return f"{url}/ping did not answer ({type(exc).__name__})"

    async def switch(request: Request) -> Response:
        try:
            document = await json_body(request)
        except RequestError as error:
            return refuse(error.status, error.message)
        target = document.get("to")
        if router.busy:
            return refuse(409, router.busy, "CONFLICT")
        if not isinstance(target, str) or target not in router.spec.variants:
            return refuse(400, f"switch to an unknown variant {target!r}; the variants are {', '.join(router.spec.variants)}")
        if router.spec.mirror and target == router.spec.mirror.to:
            return refuse(400, f"{target!r} is the shadow variant; its answers never reach a client")
        replicas = [r for r in router.replicas[target] if not r.draining]
        spec = router.spec
        problems = [p for p in await asyncio.gather(*(healthy(r.url) for r in replicas)) if p]
        if spec is not router.spec or router.busy:
            return refuse(409, "a new spec was applied during the health check; switch again", "CONFLICT")
        if not replicas or problems:
            return refuse(409, f"not switching to {target!r}: " + ("; ".join(problems) or "it has no replica"),
                          "UNHEALTHY")
        before = router.weights
        router.set_weights({target: 100}, str(document.get("reason", f"switched to {target}")))
        router.event("switched", f"from {before} to {target}")
        router.save()
        return JSONResponse(router.status())

    async def replicas(request: Request) -> Response:
        try:
            document = await json_body(request)
        except RequestError as error:
            return refuse(error.status, error.message)
        name = document.get("variant")
        if not isinstance(name, str) or name not in router.spec.variants:
            return refuse(400, f"unknown variant {name!r}; the variants are {', '.join(router.spec.variants)}")
        pool = router.replicas[name]
        if "add" in document:
            url = str(document["add"]).rstrip("/")
            if any(r.url == url for r in pool):
                return refuse(409, f"{url} already serves {name!r}", "CONFLICT")
            problem = await healthy(url)
            if problem:
                return refuse(409, f"not adding {url}: {problem}", "UNHEALTHY")
            if pool is not router.replicas.get(name) or any(r.url == url for r in pool):
                return refuse(409, "the replicas changed during the health check; add it again", "CONFLICT")
            pool.append(Replica(url, str(document.get("version") or router.spec.variants[name].version or "") or None))
            router.event("replica_added", f"{url} serves {name!r}")
            router.save()
            return JSONResponse(router.status())
        if "remove" in document:
            url = str(document["remove"]).rstrip("/")
            found = [r for r in pool if r.url == url and not r.draining]
            if not found:
                return refuse(404, f"{url} does not serve {name!r}", "NOT_FOUND")
            if len([r for r in pool if not r.draining]) <= 1 and router.weights.get(name, 0) > 0:
                return refuse(409, f"{url} is the last replica of {name!r}, which gets traffic: add one first",
                              "CONFLICT")
            replica = found[0]
            replica.draining = True  # no new request goes there from now on
            deadline = time.monotonic() + float(document.get("drain_timeout_s", 30))
            while replica.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            left = replica.in_flight
            if replica in pool:
                pool.remove(replica)
            router.event("replica_removed", f"{url} drained ({left} requests still in flight) and removed from {name!r}")
            router.save()
            return JSONResponse({**router.status(), "drained": left == 0, "in_flight_at_removal": left})
        return refuse(400, "say what to do: {variant, add: URL} or {variant, remove: URL}")

    async def apply(request: Request) -> Response:
        try:
            document = await json_body(request)
            new = load_spec(document)
        except SpecError as error:
            return refuse(400, "; ".join(error.problems))
        except RequestError as error:
            return refuse(error.status, error.message)
        if new.name != router.spec.name:
            return refuse(400, f"this router runs {router.spec.name!r}; a spec named {new.name!r} needs its own router")
        if router.canary is not None and router.canary["status"] == "promoting":
            return refuse(409, "the canary is being promoted in the registry; apply the new spec in a moment", "CONFLICT")
        (folder / "spec.json").write_text(json.dumps(new.to_dict(), indent=1))
        router._reset(new, resume=False)
        router.metrics["weight"].clear()
        for name in new.variants:
            router.metrics["weight"].labels(variant=name).set(router.weights[name])
            router.metrics["errors"].labels(variant=name)
        router.start_controller()
        return JSONResponse(router.status())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        router.writer = LogWriter(folder / "inference.db")
        # keep-alive shorter than uvicorn's 5 s, so the router never reuses a connection the server closed
        router.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=4))
        limit = spec.mirror.max_in_flight if spec.mirror else 64
        router.shadow_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(limit, 64),
                                                                                    keepalive_timeout=4))
        if spec.canary is not None and spec.canary.promote:
            await asyncio.to_thread(_warm_registry)  # import MLflow now, not at the moment of promotion
        router.start_controller()
        try:
            yield
        finally:
            if router.controller is not None:
                router.controller.cancel()
            if router.tasks:  # mirrored requests in flight: let them answer (and be logged) first
                await asyncio.wait(set(router.tasks), timeout=(router.spec.mirror.timeout_s if router.spec.mirror else 1) + 1)
            for task in list(router.tasks):
                task.cancel()
            await asyncio.gather(*router.tasks, return_exceptions=True)
            router.save()
            await router.session.close()
            await router.shadow_session.close()
            router.writer.close()

    app = Starlette(routes=[
        Route("/ping", ping), Route("/health", ping), Route("/version", version_route), Route("/metrics", metrics),
        Route("/invocations", invocations, methods=["POST"]), Route("/router", status),
        Route("/router/weights", weights_route, methods=["PUT", "POST"]), Route("/router/switch", switch, methods=["POST"]),
        Route("/router/replicas", replicas, methods=["POST"]), Route("/router/spec", apply, methods=["PUT", "POST"]),
    ], lifespan=lifespan)
    app.state.router = router
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.deployment.routing", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the strategy spec (YAML or JSON file)")
    parser.add_argument("--home", required=True, help="the workspace (state and log go to deployments/<name>/)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5010)
    args = parser.parse_args(argv)
    import uvicorn

    try:
        spec = load_spec(Path(args.spec))
    except SpecError as error:
        parser.exit(2, f"{error}\n")
    folder = state_folder(Path(args.home), spec.name)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(build_app(spec, folder), host=args.host, port=args.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=5)  # well inside the 10 s a managed process waits before SIGKILL
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
