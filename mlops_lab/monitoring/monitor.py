"""The monitor: one object that judges windows of production data against a reference.

:class:`Monitor` holds the reference (what the model was validated on), which columns are
features, which column is the model's output and which is the label, and the thresholds. For
each window :meth:`Monitor.check` gives a :class:`Check`: data drift per feature, prediction
drift, and, where labels have arrived, the model's error against its error on the reference
(performance drift). :meth:`Monitor.run` does it for a sequence of windows and returns a
:class:`Timeline` (one row per window, and the per-feature scores a heatmap shows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_lab.monitoring.drift import (DriftReport, MonitoringError, Thresholds, check_columns, error,
                                        feature_drift, infer_kinds, prediction_drift)
from mlops_lab.monitoring.windows import Window


@dataclass
class Check:
    """What the monitor found in one window."""

    window: str
    rows: int
    drift: DriftReport
    prediction: DriftReport | None = None
    metric: str | None = None
    error: float = float("nan")
    baseline_error: float = float("nan")
    labelled: int = 0
    error_ratio: float = 1.5
    min_labels: int = 30
    start: object = None
    notes: list[str] = field(default_factory=list)

    @property
    def performance(self) -> str:
        """``"degraded"``, ``"ok"`` or ``"cannot judge"`` (too few labels, or no baseline)."""
        if self.labelled < self.min_labels or np.isnan(self.error) or np.isnan(self.baseline_error):
            return "cannot judge"
        return "degraded" if self.error > self.error_ratio * self.baseline_error else "ok"

    @property
    def alarm(self) -> bool:
        """True when data, predictions or performance moved in this window."""
        return bool(self.drift.alarm or (self.prediction is not None and self.prediction.alarm)
                    or self.performance == "degraded")

    def row(self) -> dict:
        """The window's line in a :class:`Timeline`."""
        prediction = self.prediction.table.iloc[0] if self.prediction is not None else None
        return {"window": self.window, "start": self.start, "rows": self.rows, "verdict": self.drift.verdict,
                "drifted": len(self.drift.drifted), "share": self.drift.share,
                "features": ", ".join(self.drift.drifted),
                "prediction_psi": float(prediction["psi"]) if prediction is not None else np.nan,
                "prediction_verdict": prediction["verdict"] if prediction is not None else None,
                "labelled": self.labelled, "error": self.error, "baseline_error": self.baseline_error,
                "performance": self.performance, "alarm": self.alarm}

    def summary(self) -> str:
        text = self.drift.summary()
        if self.prediction is not None:
            text += f"; predictions {self.prediction.verdict}"
        if self.metric:
            text += (f"; {self.metric} {self.error:.3g} vs {self.baseline_error:.3g} on the reference "
                     f"({self.labelled} labelled rows): {self.performance}")
        return text

    def __repr__(self) -> str:
        return f"<Check {self.summary()}>"


@dataclass
class Timeline:
    """The checks of a sequence of windows."""

    checks: list[Check]

    @property
    def frame(self) -> pd.DataFrame:
        """One row per window: verdicts, drifted features, prediction drift, error and alarm."""
        if not self.checks:
            return pd.DataFrame(columns=["start", "rows", "verdict", "drifted", "share", "features", "prediction_psi",
                                         "prediction_verdict", "labelled", "error", "baseline_error", "performance",
                                         "alarm"], index=pd.Index([], name="window"))
        return pd.DataFrame([c.row() for c in self.checks]).set_index("window")

    def scores(self, statistic: str = "psi") -> pd.DataFrame:
        """Feature x window table of one statistic (``psi``, ``wasserstein``, ``statistic`` or ``p_value``)."""
        return pd.DataFrame({c.window: c.drift.table[statistic] for c in self.checks}).astype(float)

    def decisions(self) -> pd.DataFrame:
        """Feature x window table of drift decisions (True, False; None where the monitor could not judge)."""
        return pd.DataFrame({c.window: c.drift.table["drifted"].where(c.drift.table["verdict"] != "cannot judge")
                             for c in self.checks})

    def first_alarm(self) -> str | None:
        """The first window that raised an alarm, or None."""
        return next((c.window for c in self.checks if c.alarm), None)


class Monitor:
    """Judges windows of production rows against ``reference``.

    Args:
        reference: the data the model was validated on (features, and optionally the model's
            ``prediction`` and the ``target`` on it, which give the baseline error).
        numeric, categorical: the features (default: every reference column but the prediction
            and the target, split by dtype).
        prediction: the column holding the model's output, for prediction drift.
        target: the column holding the label, for performance drift.
        metric: the error metric (``mae``, ``rmse``, ``mape``, ``error_rate``).
        categorical_prediction: treat the prediction as a class (chi-squared) rather than a number.
        thresholds: :class:`Thresholds` for the drift decisions.
        baseline_error: the error to compare with (default: ``metric`` on the reference).
        error_ratio: performance is degraded when the error exceeds ``error_ratio x baseline``.
        min_labels: fewest labelled rows in a window for a performance verdict.
        any_feature: a window drifts when any feature drifted (default); False leaves it to the
            share of drifted features (``thresholds.share``).
    """

    def __init__(self, reference: pd.DataFrame, *, numeric: Iterable[str] | None = None,
                 categorical: Iterable[str] | None = None, prediction: str | None = None, target: str | None = None,
                 metric: str = "mae", categorical_prediction: bool = False, thresholds: Thresholds | None = None,
                 baseline_error: float | None = None, error_ratio: float = 1.5, min_labels: int = 30,
                 any_feature: bool = True) -> None:
        if not isinstance(reference, pd.DataFrame) or not len(reference):
            raise MonitoringError("The monitor needs a non-empty reference DataFrame.")
        if numeric is None and categorical is None:
            columns = [c for c in reference.columns if c not in (prediction, target)]
            numeric, categorical = infer_kinds(reference, columns)
        self.numeric, self.categorical = list(numeric or []), list(categorical or [])
        check_columns(reference, self.features, "reference")
        self.reference = reference
        self.prediction, self.target, self.metric = prediction, target, metric
        self.categorical_prediction = categorical_prediction
        self.thresholds = thresholds or Thresholds()
        self.error_ratio, self.min_labels, self.any_feature = error_ratio, min_labels, any_feature
        if baseline_error is None and prediction in reference.columns and target in reference.columns:
            baseline_error = error(reference[target], reference[prediction], metric)
        self.baseline_error = float("nan") if baseline_error is None else float(baseline_error)
        if target is not None:
            error([], [], metric)  # an unknown metric fails here, not at the first window

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    def __repr__(self) -> str:
        return (f"<Monitor {len(self.features)} features, reference {len(self.reference)} rows, "
                f"prediction={self.prediction!r}, target={self.target!r}>")

    def check(self, window: Window | pd.DataFrame, name: str | None = None) -> Check:
        """Judge one window (a :class:`Window` or a DataFrame of rows)."""
        start = None
        if isinstance(window, Window):
            name, start, frame = name or window.name, window.start, window.frame
        elif isinstance(window, pd.DataFrame):
            frame = window
        else:
            raise MonitoringError("check() takes a Window or a DataFrame of rows.")
        name = name or "window"
        drift = feature_drift(self.reference, frame, numeric=self.numeric, categorical=self.categorical,
                              thresholds=self.thresholds, window=name, any_feature=self.any_feature)
        check = Check(name, len(frame), drift, start=start, error_ratio=self.error_ratio, min_labels=self.min_labels,
                      baseline_error=self.baseline_error)
        if self.prediction is not None and self.prediction in self.reference.columns:
            if len(frame):
                check_columns(frame, [self.prediction], "window")
            current = frame[self.prediction] if len(frame) else pd.Series([], dtype=float)
            check.prediction = prediction_drift(self.reference[self.prediction].rename(self.prediction), current,
                                                categorical=self.categorical_prediction,
                                                thresholds=self.thresholds, window=name)
        if self.target is not None and self.prediction is not None:
            check.metric = self.metric
            if len(frame) and self.target in frame.columns and self.prediction in frame.columns:
                labelled = frame[self.target].notna()
                check.labelled = int(labelled.sum())
                check.error = error(frame.loc[labelled, self.target], frame.loc[labelled, self.prediction], self.metric)
        return check

    def run(self, windows: Iterable[Window]) -> Timeline:
        """Check every window in order."""
        return Timeline([self.check(w) for w in windows])
