"""Deployment strategies on live traffic: a traffic router in front of real model servers.

    spec = deployment.load_spec("canary.yaml")          # or a dict; every mistake is reported at once
    with deployment.router(spec) as router:             # a real HTTP service on loopback
        client = router.client()
        client.status()["weights"]                      # {'stable': 90.0, 'canary': 10.0}
        ...                                             # send traffic to router.url + "/invocations"
        router.log().frame()                            # the inference log, one row per answer

The pieces:

- :mod:`.spec`: the strategy spec (``single``, ``ab``, ``canary``, ``shadow``, ``bluegreen``,
  ``rolling``) and its checks;
- :mod:`.routing`: the router process (routing, shadow, canary analysis, admin API, metrics);
- :mod:`.log`: the inference log in the workspace, with labels joined by request id;
- :mod:`.experiment`: the A/B statistics (sample size, sample-ratio-mismatch check, the decision);
- :mod:`.manifests`: the same specs as Kubernetes manifests (KServe, Argo Rollouts, Istio), validated offline;
- this module: start a router (:func:`router`), talk to it (:class:`RouterClient`), replace
  replicas one at a time (:func:`rolling_update`), compare a shadow (:func:`compare_shadow`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_lab.deployment.log import InferenceLog
from mlops_lab.deployment.spec import STRATEGIES, Spec, SpecError, load_spec
from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

__all__ = ["STRATEGIES", "InferenceLog", "RouterClient", "RouterError", "RouterServer", "Spec", "SpecError",
           "compare_shadow", "load_spec", "rolling_update", "router"]


class RouterError(RuntimeError):
    """The router refused an admin request; ``status`` is the HTTP status and the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class RouterClient:
    """The router's admin API from Python (scoring goes to :attr:`url` ``/invocations`` like any model server)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _call(self, method: str, path: str, document: dict | None = None) -> dict:
        import requests

        try:
            answer = self._session.request(method, self.url + path, json=document, timeout=self.timeout)
        except requests.ConnectionError:
            raise RouterError(0, f"no router answers at {self.url}; start one with `mlops-lab router serve SPEC` "
                                 "or pass --url") from None
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        if not answer.ok:
            raise RouterError(answer.status_code, str(body.get("message", answer.text))[:2000])
        return body

    def status(self, flush: bool = False) -> dict:
        """Weights, replicas, canary state and recent decisions; ``flush=True`` first commits the log."""
        return self._call("GET", "/router" + ("?flush=1" if flush else ""))

    def weights(self) -> dict[str, float]:
        return self.status()["weights"]

    def set_weights(self, weights: dict[str, float], reason: str = "set by hand") -> dict:
        """New weights (percentages summing to 100); refused while a canary analysis runs."""
        return self._call("PUT", "/router/weights", {"weights": weights, "reason": reason})

    def switch(self, to: str, reason: str | None = None) -> dict:
        """Blue/green: send all traffic to ``to`` after its replicas answered a health check (else 409)."""
        return self._call("POST", "/router/switch", {"to": to, **({"reason": reason} if reason else {})})

    def add_replica(self, variant: str, url: str, version: str | None = None) -> dict:
        """Add a model server to ``variant`` (health-checked first)."""
        return self._call("POST", "/router/replicas", {"variant": variant, "add": url, "version": version})

    def remove_replica(self, variant: str, url: str, drain_timeout_s: float = 30.0) -> dict:
        """Stop sending new requests to ``url``, wait for its requests in flight, then remove it."""
        return self._call("POST", "/router/replicas", {"variant": variant, "remove": url,
                                                        "drain_timeout_s": drain_timeout_s})

    def apply(self, spec: Spec | dict | str | Path) -> dict:
        """Replace the router's spec (checked first); the new deployment starts from its first step."""
        spec = spec if isinstance(spec, Spec) else load_spec(spec)
        return self._call("PUT", "/router/spec", spec.to_dict())

    def canary(self) -> dict | None:
        return self.status()["canary"]

    def wait_for_canary(self, timeout: float = 60.0, poll: float = 0.1) -> dict:
        """Wait until the canary analysis ends (promoted, rolled back, ...); returns its final state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.canary()
            if state is None:
                raise RouterError(400, "this router runs no canary")
            if state["status"] not in ("progressing", "promoting"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"the canary was still progressing after {timeout:g} s: {state['checks'][-3:]}")
            time.sleep(poll)

    def metrics(self) -> str:
        return self._session.get(self.url + "/metrics", timeout=self.timeout).text

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RouterClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RouterServer(ManagedProcess):
    """A running router on loopback: ``url`` for traffic, :meth:`client` for its admin API, :meth:`log`."""

    spec: Spec
    folder: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, timeout: float = 60.0) -> RouterClient:
        return RouterClient(self.url, timeout=timeout)

    def scoring_client(self, timeout: float = 30.0):
        from mlops_lab.serving import ScoringClient

        return ScoringClient(self.url, timeout=timeout)

    def log(self) -> InferenceLog:
        """The router's inference log (the same file survives a restart)."""
        return InferenceLog(self.folder / "inference.db")


def _check_promotable(spec: Spec) -> None:
    if spec.canary is None or not spec.canary.promote:
        return
    from mlops_lab import registry

    version = spec.variants[spec.canary.canary].version
    try:
        registry.check_promotable(spec.model, version)
    except Exception as error:  # noqa: BLE001 (any reason is a reason not to start)
        raise SpecError([f"the canary would end in promoting {spec.model} version {version}, which the registry "
                         f"refuses: {error}. Validate it first (lesson 06), or set canary.promote: false"]) from None


def router(spec: Spec | dict | str | Path, *, port: int | None = None, timeout: float = 60.0,
           env: dict[str, str] | None = None) -> RouterServer:
    """A router process for ``spec`` on ``127.0.0.1`` (a free port unless given); use it as a context manager.

    The spec is checked first (:class:`SpecError` lists every mistake), and for a canary that
    promotes, the registry must accept the canary's version (it has passed validation): nothing
    starts otherwise. The router keeps its state and inference log in the workspace under
    ``deployments/<name>/``; starting it again with the same spec resumes that state.
    """
    from mlops_lab import config
    from mlops_lab.deployment.routing import state_folder

    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    _check_promotable(spec)
    home = config.workspace()
    folder = state_folder(home, spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict(), indent=1))
    port = port or free_port()
    args = [sys.executable, "-m", "mlops_lab.deployment.routing", "--spec", spec_file, "--home", home,
            "--host", LOOPBACK, "--port", str(port)]
    server = RouterServer(args, name=f"router-{spec.name}", port=port, health_url=f"http://{LOOPBACK}:{port}/ping",
                          timeout=timeout, env=config.child_env(env),
                          log_path=home / "logs" / f"router-{spec.name}-{port}.log")
    server.spec, server.folder = spec, folder
    return server


def rolling_update(client: RouterClient, variant: str, old: Sequence[ManagedProcess], start_new: Callable[[], Any],
                   *, version: str | None = None, drain_timeout_s: float = 30.0,
                   on_step: Callable[[dict], None] | None = None) -> list:
    """Replace the replicas ``old`` of ``variant`` one at a time, without dropping a request.

    For each old server: ``start_new()`` starts a replacement (a model server, ready when it
    returns), the router adds it after a health check, then drains the old one (no new request;
    those in flight finish) and removes it, and only then is the old server stopped. At every
    moment at least as many replicas serve as before. Returns the new servers; ``on_step`` gets a
    dict per replacement (old and new URL, requests still in flight when it was removed).
    """
    replaced = []
    for server in old:
        fresh = start_new()
        if not getattr(fresh, "running", True):
            fresh.start()
        try:
            client.add_replica(variant, fresh.url, version=version)
        except Exception:
            fresh.stop()  # refused (unhealthy, or the router is busy): leave nothing running
            raise
        answer = client.remove_replica(variant, server.url, drain_timeout_s=drain_timeout_s)
        server.stop()
        replaced.append(fresh)
        if on_step is not None:
            on_step({"old": server.url, "new": fresh.url, "drained": answer["drained"],
                     "in_flight_at_removal": answer["in_flight_at_removal"]})
    return replaced


def _predictions(text: Any) -> list | None:
    if isinstance(text, dict) and "predictions" in text:
        return list(np.ravel(text["predictions"]))
    return None


def compare_shadow(log: InferenceLog | pd.DataFrame) -> pd.DataFrame:
    """The primary and its shadow side by side: agreement, prediction differences and latency.

    Pairs every primary answer with the shadow answer of the same request id. Returns one row
    per variant role with requests, answered (2xx), p50 and p99 latency, and on the shadow's row
    the share of paired predictions that agree and the mean and largest absolute difference
    (for numeric predictions; on class labels it is the share that differ).
    """
    table = log.frame(parse=True) if isinstance(log, InferenceLog) else log
    primary, shadow = table[table["role"] == "primary"], table[table["role"] == "shadow"]
    pairs = primary.merge(shadow, on="request_id", suffixes=("_primary", "_shadow"))
    agree, differences = [], []
    for a, b in zip(pairs["response_primary"], pairs["response_shadow"]):
        x, y = _predictions(a), _predictions(b)
        if x is None or y is None or len(x) != len(y):
            continue
        agree.extend(p == q for p, q in zip(x, y))
        try:
            differences.extend(abs(float(p) - float(q)) for p, q in zip(x, y))
        except (TypeError, ValueError):
            pass
    rows = []
    for role, part in (("primary", primary), ("shadow", shadow)):
        ok = part["status"].between(200, 299)
        latency = part.loc[ok, "latency_ms"].to_numpy(dtype=float)
        rows.append({"role": role, "variant": ", ".join(sorted(part["variant"].dropna().unique())),
                     "requests": len(part), "answered": int(ok.sum()),
                     "p50_ms": round(float(np.percentile(latency, 50)), 2) if len(latency) else None,
                     "p99_ms": round(float(np.percentile(latency, 99)), 2) if len(latency) else None,
                     "paired": len(pairs) if role == "shadow" else None,
                     "agreement": round(float(np.mean(agree)), 4) if role == "shadow" and agree else None,
                     "mean_abs_diff": round(float(np.mean(differences)), 4) if role == "shadow" and differences else None,
                     "max_abs_diff": round(float(np.max(differences)), 4) if role == "shadow" and differences else None})
    return pd.DataFrame(rows).set_index("role")


def traffic(table: pd.DataFrame, window: float = 0.5, role: str = "primary") -> pd.DataFrame:
    """Per time window: each variant's share of the answers and error rate (5xx or no answer).

    ``table`` is an inference log frame (:meth:`InferenceLog.frame`); time ``t`` counts seconds
    from its first answer. Columns: ``t``, ``variant``, ``answers``, ``share`` (0-1), ``errors``,
    ``error_rate``; one row per window and variant that answered in it.
    """
    part = table[table["role"] == role] if "role" in table else table
    if part.empty:
        return pd.DataFrame(columns=["t", "variant", "answers", "share", "errors", "error_rate"])
    seconds = (part["at"] - part["at"].min()).dt.total_seconds()
    frame = pd.DataFrame({"t": (seconds // window) * window, "variant": part["variant"],
                          "error": (part["status"] >= 500) | (part["status"] == 0)})
    grouped = frame.groupby(["t", "variant"]).agg(answers=("error", "size"), errors=("error", "sum")).reset_index()
    grouped["share"] = grouped["answers"] / grouped.groupby("t")["answers"].transform("sum")
    grouped["error_rate"] = grouped["errors"] / grouped["answers"]
    return grouped[["t", "variant", "answers", "share", "errors", "error_rate"]]


def plot_traffic(table: pd.DataFrame, window: float = 0.5, title: str = "", events: Sequence[tuple[float, str]] = ()):
    """Two panels over time: each variant's share of traffic (stacked) and its error rate; ``events``
    are ``(t, label)`` vertical markers (a switch, a rollback)."""
    import matplotlib.pyplot as plt

    timeline = traffic(table, window)
    share = timeline.pivot(index="t", columns="variant", values="share").fillna(0.0) * 100
    errors = timeline.pivot(index="t", columns="variant", values="error_rate") * 100
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True)
    top.stackplot(share.index, share.T.to_numpy(), labels=list(share.columns), step="post", alpha=0.8)
    top.set_ylabel("share of traffic (%)")
    top.set_ylim(0, 100)
    top.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    for name in errors.columns:
        bottom.step(errors.index, errors[name].to_numpy(), where="post", label=name)
    bottom.set_ylabel("error rate (%)")
    bottom.set_xlabel(f"seconds since the first request (windows of {window:g} s)")
    bottom.set_ylim(bottom=0)
    for at, label in events:
        for axis in (top, bottom):
            axis.axvline(at, color="black", linestyle="--", linewidth=0.8)
        top.annotate(label, (at, 100), xytext=(3, -12), textcoords="offset points", fontsize=8)
    top.set_title(title)
    figure.tight_layout()
    return figure


def serving_modes(model_uri: str, X: pd.DataFrame, realtime: Any, *, single_rows: int = 200) -> pd.DataFrame:
    """The lecture's batch vs real-time vs edge table, with this machine's figures.

    ``realtime`` is a :class:`mlops_lab.loadtest.LoadResult` of one-row requests over HTTP (through
    the router). Batch scores all of ``X`` at once with the MLflow model in process; edge converts the
    scikit-learn pipeline to ONNX and scores one row at a time in process, with no server at all.
    """
    import mlflow

    from mlops_lab import packaging

    model = mlflow.pyfunc.load_model(model_uri)
    pipeline = mlflow.sklearn.load_model(model_uri)
    edge = packaging.OnnxPredictor(packaging.to_onnx(pipeline, X.head(50)))
    batch = packaging.latency(model.predict, X, single_rows=20, batch_rows=1000)
    edge_times = packaging.latency(edge.predict, X, single_rows=single_rows, batch_rows=100, repeats=2)
    summary = realtime.summary()
    return pd.DataFrame([
        {"mode": "batch", "where": "a scheduled job (Spark, lesson 15)", "one prediction (ms)": None,
         "p99 (ms)": None, "predictions per second": 1000 / (batch["batch_1000_ms"] / 1000),
         "fresh": "as of the last run", "needs": "a scheduler and storage"},
        {"mode": "real-time", "where": "a model server behind the router", "one prediction (ms)": summary["p50_ms"],
         "p99 (ms)": summary["p99_ms"], "predictions per second": summary.get("throughput_rps"),
         "fresh": "at request time", "needs": "servers up all the time, a network"},
        {"mode": "edge", "where": "in the application's process (ONNX)", "one prediction (ms)": edge_times["single_p50_ms"],
         "p99 (ms)": None, "predictions per second": 1000 / edge_times["single_p50_ms"],
         "fresh": "at request time, model as of the last app release", "needs": "a model small enough to ship"},
    ]).set_index("mode")
