"""The monitor as a service: a process that watches the inference log and serves ``/metrics``.

Every ``interval`` seconds it reads the router's inference log, takes the sliding window of the
last ``window`` scored rows, joins the labels that have arrived, judges the window against the
reference and sets its gauges (``metrics.py``). Prometheus scrapes ``/metrics``; ``/status``
answers the last check as JSON; ``POST /check`` runs a check now (a notebook or a test need not
wait for the next tick). A check that fails (the log unreadable, a bad window) is counted and
logged, the service keeps running, and the last good gauges stay (the staleness alert covers it).

Run it with :func:`serve` (a managed process, stopped with its group), or by hand:
``python -m mlops_lab.monitoring.service CONFIG.json --port 9108``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mlops_lab import config as course_config
from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

_log = logging.getLogger("mlops_lab.monitoring.service")


@dataclass
class ServiceConfig:
    """What the monitor service watches and how it decides (written as JSON beside its reference).

    ``reference`` is a Parquet file with the features (and ``prediction`` and ``label`` columns for
    prediction and performance drift); ``log`` is the router's inference log."""

    log: str
    reference: str
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    prediction: str | None = "prediction"
    labels: bool = True
    metric: str = "error_rate"
    categorical_prediction: bool = False
    window: int = 1000
    interval: float = 15.0
    thresholds: dict = field(default_factory=dict)
    error_ratio: float = 1.5
    min_labels: int = 30

    def __post_init__(self) -> None:
        from mlops_lab.monitoring.drift import MonitoringError

        problems = []
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            problems.append(f"window must be a positive number of rows, got {self.window!r}")
        if not isinstance(self.interval, (int, float)) or not self.interval > 0:
            problems.append(f"interval must be a positive number of seconds, got {self.interval!r}")
        if problems:
            raise MonitoringError("Invalid monitor configuration: " + "; ".join(problems) + ".")

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> "ServiceConfig":
        return cls(**json.loads(Path(path).read_text()))


class Watcher:
    """The service's logic, usable in process: :meth:`tick` is one check of the latest window."""

    def __init__(self, settings: ServiceConfig) -> None:
        from mlops_lab.deployment.log import InferenceLog
        from mlops_lab.monitoring.drift import Thresholds
        from mlops_lab.monitoring.metrics import MonitorMetrics
        from mlops_lab.monitoring.monitor import Monitor

        self.settings = settings
        self.log = InferenceLog(settings.log)
        reference = pd.read_parquet(settings.reference)
        target = "label" if settings.labels and "label" in reference.columns else None
        prediction = settings.prediction if settings.prediction in reference.columns else None
        self.monitor = Monitor(reference, numeric=settings.numeric or None, categorical=settings.categorical or None,
                               prediction=prediction, target=target, metric=settings.metric,
                               categorical_prediction=settings.categorical_prediction,
                               thresholds=Thresholds(**settings.thresholds), error_ratio=settings.error_ratio,
                               min_labels=settings.min_labels)
        self.metrics = MonitorMetrics()
        self.last: dict = {"checked": False}
        self._lock = threading.Lock()

    def tick(self) -> dict:
        """Check the last ``window`` scored rows now; returns what ``/status`` shows."""
        from mlops_lab.monitoring.drift import MonitoringError
        from mlops_lab.monitoring.feedback import Feedback, join_labels, requests_frame
        from mlops_lab.monitoring.windows import latest

        with self._lock:
            try:
                # only the newest answers are read: a check costs the same however long the log is
                logged = self.log.frame("primary", parse=True, last=self.settings.window)
                rows = requests_frame(logged, prediction=self.settings.prediction or "prediction")
                skipped = rows.attrs.get("skipped", 0)
                coverage = pending = delay = label_problem = None
                unknown: list[str] = []
                if self.monitor.target is not None and len(rows):
                    try:
                        rows = join_labels(rows, self.log.labels(rows["request_id"])).frame
                    except MonitoringError as error:  # a bad label must not stop the drift check
                        label_problem = str(error)
                        rows = rows.assign(label=None)
                    unknown = self.log.unknown_labels()
                frame = latest(rows, self.settings.window, time="at").frame
                if self.monitor.target is not None and len(frame):
                    window = Feedback(frame)
                    coverage, pending = window.coverage, window.pending
                    median = window.median_delay
                    delay = float("nan") if pd.isna(median) else pd.Timedelta(median).total_seconds()
                name = f"last {self.settings.window} rows"
                check = self.monitor.check(frame, name=name)
                self.metrics.update(check, coverage=coverage, pending=pending, delay_seconds=delay)
                self.last = {"checked": True, "at": time.time(), "summary": check.summary(), "rows": check.rows,
                             "verdict": check.drift.verdict, "drifted": check.drift.drifted, "alarm": check.alarm,
                             "performance": check.performance, "skipped_requests": skipped,
                             "coverage": coverage, "pending": pending, "unknown_labels": len(unknown),
                             "label_problem": label_problem}
            except Exception as error:  # noqa: BLE001 (the service reports and keeps watching)
                _log.exception("check failed")
                self.metrics.failed()
                self.last = {**self.last, "error": f"{type(error).__name__}: {error}", "failed_at": time.time()}
            return self.last


def app(watcher: Watcher):
    """The Starlette application: ``/health``, ``/metrics``, ``/status`` and ``POST /check``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def health(request):
        return JSONResponse({"status": "ok"})

    def exposition() -> bytes:
        with watcher._lock:  # never half of one check and half of the next
            return watcher.metrics.exposition()

    async def metrics(request):
        return Response(await run_in_threadpool(exposition), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def status(request):
        return JSONResponse(watcher.last)

    async def check(request):
        return JSONResponse(await run_in_threadpool(watcher.tick))

    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics), Route("/status", status),
                             Route("/check", check, methods=["POST"])])


def _loop(watcher: Watcher, stop: threading.Event) -> None:
    while not stop.is_set():
        watcher.tick()
        stop.wait(watcher.settings.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.monitoring.service", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the service's JSON configuration (ServiceConfig)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    args = parser.parse_args(argv)
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    watcher = Watcher(ServiceConfig.load(args.config))
    stop = threading.Event()
    thread = threading.Thread(target=_loop, args=(watcher, stop), daemon=True, name="monitor-loop")
    thread.start()
    print(f"monitor of {watcher.settings.log} on http://{args.host}:{args.port}/metrics (Ctrl-C stops it)", flush=True)
    try:
        uvicorn.run(app(watcher), host=args.host, port=args.port, log_level="warning")
    finally:
        stop.set()
        thread.join(timeout=30)
    return 0


class MonitorServer(ManagedProcess):
    """The monitor service process; ``url`` is its base URL (``/metrics`` for Prometheus)."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _call(self, path: str, method: str = "GET", timeout: float = 10) -> bytes:
        import urllib.request

        request = urllib.request.Request(self.url + path, data=b"" if method == "POST" else None, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (loopback)
            return answer.read()

    def check(self) -> dict:
        """Run a check now and return the service's status."""
        return json.loads(self._call("/check", "POST", timeout=60))

    def metrics(self) -> str:
        """The service's ``/metrics`` page (Prometheus text format)."""
        return self._call("/metrics").decode()

    def status(self) -> dict:
        """The last check, as ``/status`` answers it."""
        return json.loads(self._call("/status"))


def serve(settings: ServiceConfig, reference: pd.DataFrame | None = None, *, name: str = "monitor",
          port: int | None = None, home: Path | None = None, env: dict[str, str] | None = None) -> MonitorServer:
    """The monitor service for ``settings`` (``reference`` is written to its Parquet file first when given).

    Returns a :class:`MonitorServer` not yet started: use it as a context manager (``with serve(...)
    as monitor:``), which starts it and stops its process group on exit, or call ``.start()``. Its configuration and log live in ``<workspace>/monitoring/<name>/``."""
    folder = (home or course_config.workspace()) / "monitoring" / name
    folder.mkdir(parents=True, exist_ok=True)
    if reference is not None:
        reference.to_parquet(settings.reference)
    if not Path(settings.reference).is_file():
        from mlops_lab.monitoring.drift import MonitoringError

        raise MonitoringError(f"No reference file at {settings.reference}: pass reference= to write it.")
    path = settings.save(folder / "monitor.json")
    port = port or free_port()
    server = MonitorServer([sys.executable, "-m", "mlops_lab.monitoring.service", str(path), "--port", str(port)],
                           name=f"monitor-{name}", port=port, health_url=f"http://{LOOPBACK}:{port}/health",
                           timeout=60, env=course_config.child_env(env), log_path=folder / "monitor.log")
    return server


if __name__ == "__main__":
    sys.exit(main())
