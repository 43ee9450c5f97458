"""Monitoring in production (lesson 13): drift, performance with delayed labels, metrics and alerts.

- ``drift``: per-feature tests (KS, chi-squared) and magnitudes (PSI, Wasserstein), prediction
  drift, error metrics, and the :class:`Thresholds` that decide;
- ``windows``: fixed and sliding windows over a stream of rows;
- ``feedback``: the inference log as scored rows, labels joined by request id;
- ``monitor``: :class:`Monitor`, one check per window, a :class:`Timeline` over many;
- ``report``: the same windows through Evidently (HTML report, agreement with our decisions);
- ``metrics`` and ``service``: the monitor's state as Prometheus metrics, served by a process;
- ``calibration``: the monitor measured (false alarms, detection delay) and ``for:`` over windows;
- ``alerts``, ``receiver`` and ``stack``: the alert rules (checked and tested with ``promtool``),
  Alertmanager's configuration, the webhook receiver that records alerts, and the real Prometheus
  and Alertmanager on loopback (``mlops-lab monitor up|status|down``).

The operate layer: it reads what the serve layer wrote (the router's inference log) and never
trains or serves itself.
"""

from mlops_lab.monitoring.drift import (DriftReport, MonitoringError, Thresholds, error, feature_drift,
                                        prediction_drift, psi, wasserstein)
from mlops_lab.monitoring.feedback import Feedback, join_labels, requests_frame
from mlops_lab.monitoring.metrics import MonitorMetrics
from mlops_lab.monitoring.monitor import Check, Monitor, Timeline
from mlops_lab.monitoring.service import MonitorServer, ServiceConfig, Watcher, serve
from mlops_lab.monitoring.windows import Window, fixed, latest, sliding

__all__ = ["Check", "DriftReport", "Feedback", "Monitor", "MonitorMetrics", "MonitorServer", "MonitoringError",
           "ServiceConfig", "Thresholds", "Timeline", "Watcher", "Window", "error", "feature_drift", "fixed",
           "join_labels", "latest", "prediction_drift", "psi", "requests_frame", "serve", "sliding", "wasserstein"]
