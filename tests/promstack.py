"""Prometheus for the tests: skip-or-fail when it is missing, a fast stack, and a stand-in exporter.

* Binaries: ``prometheus``, ``promtool`` and Alertmanager come from Debian's ``prometheus`` and
  ``prometheus-alertmanager`` packages. When one is missing the tests that need it are skipped,
  unless ``MLOPS_LAB_REQUIRE_PROMETHEUS=1`` (set by ``.ci/run``), which turns the skip into a failure.
* ``fast_stack(targets)``: the monitoring stack with the timings of a test (scrape and evaluate every
  second, ``for: 2s``, Alertmanager's group timers of a second, no repeat within a test).
* ``exporter``: a tiny process of the tests' own serving Prometheus text at ``/metrics``, its values
  read from a JSON file at every scrape (``exporter.set(temp=0.5)``). It stands in for the monitor
  where a test is about the alerting path only; run as a script it is that process::

      python tests/promstack.py --port 9100 --values values.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REQUIRE_ENV = "MLOPS_LAB_REQUIRE_PROMETHEUS"
FAST = {"for_": "2s", "scrape_interval": "1s", "evaluation_interval": "1s",
        "alertmanager_timers": {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "resend_delay": "500ms"}
"""Stack options for tests: an alert fires about 3 s after its condition starts to hold, and
Prometheus re-sends it at every evaluation (Alertmanager must still deliver it once)."""


def required() -> bool:
    """True when a missing Prometheus must fail the run instead of skipping (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def need(*names: str) -> None:
    """Skip the test (or fail it, under ``MLOPS_LAB_REQUIRE_PROMETHEUS=1``) when a program is missing.

    ``names``: any of prometheus, promtool, alertmanager, amtool."""
    import pytest

    from mlops_lab.monitoring import alerts

    missing = alerts.missing_binaries(names or ("prometheus", "promtool", "alertmanager"))
    if not missing:
        return
    reason = (f"{', '.join(missing)} not found (install Debian's prometheus and prometheus-alertmanager "
              "packages, or `brew install prometheus alertmanager`)")
    if required():
        pytest.fail(f"Prometheus is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"{reason}; {REQUIRE_ENV}=1 makes this a failure")


def fast_stack(targets: dict[str, str] | None = None, **options):
    """The monitoring stack (a context manager) with :data:`FAST` timings; ``options`` override them."""
    import importlib

    need("prometheus", "alertmanager")
    stack_module = importlib.import_module("mlops_lab.monitoring.stack")
    return stack_module.stack(targets, **{**FAST, **options})


# -- the stand-in exporter ------------------------------------------------------------------------
class Exporter:
    """A running stand-in exporter: ``url`` is its ``/metrics``; ``set(feature=score, ...)`` changes
    ``mlops_monitor_drift_score{feature=..., statistic="psi"}`` for the next scrape."""

    def __init__(self, values: Path, process) -> None:
        self.values = values
        self.process = process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}/metrics"

    def set(self, **scores: float) -> None:
        tmp = self.values.with_suffix(".tmp")
        tmp.write_text(json.dumps(scores))
        os.replace(tmp, self.values)  # a scrape reads the old file or the new one, never half of one


def start_exporter(folder: Path, **scores: float) -> Exporter:
    """Start the stand-in exporter (a managed process; ``.process.stop()`` it) with ``scores``."""
    from mlops_lab.processes import ManagedProcess, free_port

    values = Path(folder) / "exporter-values.json"
    port = free_port()
    process = ManagedProcess([sys.executable, __file__, "--port", str(port), "--values", str(values)],
                             name="test-exporter", port=port, health_url=f"http://127.0.0.1:{port}/health",
                             timeout=30)
    exporter = Exporter(values, process)
    exporter.set(**scores)
    process.start()
    return exporter


def render(scores: dict[str, float]) -> str:
    """Prometheus's text format for the drift scores (one PSI gauge per feature) and the decision a
    monitor would take on them (drifted when the PSI is above 0.2)."""
    lines = ["# HELP mlops_monitor_drift_score Drift of a feature between the reference and the window",
             "# TYPE mlops_monitor_drift_score gauge"]
    lines += [f'mlops_monitor_drift_score{{feature="{name}",statistic="psi"}} {float(value)!r}'
              for name, value in sorted(scores.items())]
    lines += ["# HELP mlops_monitor_feature_drifted 1 when the monitor judged the feature drifted",
              "# TYPE mlops_monitor_feature_drifted gauge"]
    lines += [f'mlops_monitor_feature_drifted{{feature="{name}"}} {1.0 if value > 0.2 else 0.0}'
              for name, value in sorted(scores.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a stand-in exporter for the monitoring tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--values", required=True, help="JSON file: feature -> PSI, read at every scrape")
    args = parser.parse_args(argv)
    values = Path(args.values)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if self.path == "/health":
                body, kind, code = b"ok\n", "text/plain", 200
            elif self.path.split("?")[0] == "/metrics":
                body, kind, code = render(json.loads(values.read_text())).encode(), "text/plain; version=0.0.4", 200
            else:
                body, kind, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
