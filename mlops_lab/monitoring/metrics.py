"""The monitor's state as Prometheus metrics, beside the router's request metrics.

Prometheus scrapes numbers, not reports: after every check the monitor sets one gauge per
feature and statistic, and the alert rules (``prometheus/rules.yml``) decide from those series.
Names follow Prometheus conventions (``mlops_monitor_`` prefix, base units, ``_total`` for
counters); :data:`METRICS` lists them with their help text.
"""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from mlops_lab.monitoring.monitor import Check

PREFIX = "mlops_monitor"
METRICS = {
    "drift_score": ("Drift magnitude or test statistic of a feature in the current window", ["feature", "statistic"]),
    "drift_p_value": ("p-value of the feature's drift test in the current window", ["feature", "test"]),
    "feature_drifted": ("1 when the monitor judged the feature drifted, 0 when stable", ["feature"]),
    "feature_judged": ("1 when the feature could be judged, 0 when the monitor could not judge it", ["feature"]),
    "missing_share": ("Share of missing values of a feature, in the window or in the reference", ["feature", "data"]),
    "drifted_features_share": ("Share of the judged features that drifted", []),
    "prediction_drift_score": ("Drift of the model's outputs in the current window", ["statistic"]),
    "rolling_error": ("Model error on the labelled rows of the current window", ["metric"]),
    "baseline_error": ("Model error on the reference data", ["metric"]),
    "label_coverage": ("Share of the window's predictions whose label has arrived", []),
    "labels_pending": ("Predictions in the window still waiting for their label", []),
    "label_delay_seconds": ("Median delay from prediction to label in the window", []),
    "window_rows": ("Rows in the current window", []),
    "last_check_timestamp_seconds": ("Unix time of the last successful check (the start, until the first)", []),
}


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


class MonitorMetrics:
    """Gauges for one monitor in their own registry (``exposition()`` is what ``/metrics`` serves)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.gauges = {name: Gauge(f"{PREFIX}_{name}", text, labels, registry=self.registry)
                       for name, (text, labels) in METRICS.items()}
        self.checks = Counter(f"{PREFIX}_checks", "Checks run, by result (ok, cannot_judge, error)", ["result"],
                              registry=self.registry)
        for result in ("ok", "cannot_judge", "error"):
            self.checks.labels(result=result)
        for name, (_, labels) in METRICS.items():
            if not labels:  # NaN until measured: "unknown", and false in every PromQL comparison
                self.gauges[name].set(math.nan)
        # a monitor that never completes a check goes stale from its start (the MonitorStale alert)
        self.gauges["last_check_timestamp_seconds"].set(time.time())

    def update(self, check: Check, *, coverage: float | None = None, pending: int | None = None,
               delay_seconds: float | None = None) -> None:
        """Set every gauge from ``check`` (and the label counts, when the caller has them)."""
        g = self.gauges
        for feature, row in check.drift.table.iterrows():
            judged = row["verdict"] != "cannot judge"
            g["feature_judged"].labels(feature=feature).set(1 if judged else 0)
            g["feature_drifted"].labels(feature=feature).set(1 if row["drifted"] else 0)
            for statistic in ("psi", "wasserstein") if row["kind"] == "numeric" else ("psi",):
                g["drift_score"].labels(feature=feature, statistic=statistic).set(_number(row[statistic]))
            g["drift_score"].labels(feature=feature, statistic=row["test"]).set(_number(row["statistic"]))
            g["drift_p_value"].labels(feature=feature, test=row["test"]).set(_number(row["p_value"]))
            g["missing_share"].labels(feature=feature, data="window").set(_number(row["missing_current"]))
            g["missing_share"].labels(feature=feature, data="reference").set(_number(row["missing_reference"]))
        g["drifted_features_share"].set(_number(check.drift.share))
        if check.prediction is not None:
            row = check.prediction.table.iloc[0]
            for statistic in ("psi", "wasserstein"):
                g["prediction_drift_score"].labels(statistic=statistic).set(_number(row[statistic]))
        if check.metric:
            g["rolling_error"].labels(metric=check.metric).set(_number(check.error))
            g["baseline_error"].labels(metric=check.metric).set(_number(check.baseline_error))
        # not measured in this window (no labels expected, or an empty window): unknown, not stale
        g["label_coverage"].set(_number(coverage))
        g["labels_pending"].set(_number(pending))
        g["label_delay_seconds"].set(_number(delay_seconds))
        g["window_rows"].set(check.rows)
        g["last_check_timestamp_seconds"].set(time.time())
        self.checks.labels(result="cannot_judge" if check.drift.verdict == "cannot judge" else "ok").inc()

    def failed(self) -> None:
        """Count a check that raised (the gauges keep their last values; the alert on staleness fires)."""
        self.checks.labels(result="error").inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
