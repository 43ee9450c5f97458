"""Data drift, prediction drift and performance drift: the statistics a monitor decides with.

For each feature the monitor compares a window of production data with a reference (the data
the model was trained or validated on):

- a **test** says whether the difference is more than sampling noise: Kolmogorov-Smirnov for
  numeric features, chi-squared on the category counts for categorical ones (p-value below
  ``alpha``);
- a **magnitude** says whether it is large enough to matter: the population stability index
  (PSI, on the reference's deciles or categories) and the Wasserstein distance divided by the
  reference's standard deviation (how far, in reference sigmas, the mass had to move).

A feature has drifted when the test is significant *and* a magnitude is over its threshold. A
test alone alarms on tiny, harmless shifts once windows are large (every p-value goes to zero
with enough rows); a magnitude alone alarms on noise when windows are small. Missing values
count too: a share of missing values that rises by more than ``missing`` is drift (a broken
upstream often looks like this first). Anything the monitor cannot judge (too few rows, a
column with no values) says so, with the reason, and is never counted as "stable".

The statistics are scipy's (``ks_2samp``, ``chi2_contingency``, ``wasserstein_distance``); PSI
is four lines of numpy. Evidently computes similar statistics (``report.py``), but picks its test
by sample size and keeps no p-value and magnitude side by side, which is what a course needs to
show and what the alert rules read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np
import pandas as pd

from mlops_lab.quality import closest

VERDICTS = ("drift", "stable", "cannot judge")
COLUMNS = ["kind", "test", "statistic", "p_value", "psi", "wasserstein", "missing_reference", "missing_current",
           "new_categories", "n_reference", "n_current", "verdict", "drifted", "reason"]
PSEUDOCOUNT = 0.5
"""Added to every bin's count in PSI (additive smoothing): an empty bin costs a finite amount, and
small windows are not punished for the bins they leave empty by chance (a floor on the share, the
other common choice, makes a 30-row window look drifted on noise alone)."""


class MonitoringError(ValueError):
    """Input the monitor cannot work with (no reference, columns missing or mistyped, a bad window)."""


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted. Every field is a plain number a reader can check.

    Args:
        alpha: significance level of the per-feature test (KS or chi-squared).
        psi: PSI at or above which a shift is material (0.1 "watch", 0.2 "act" is the usual reading).
        wasserstein: Wasserstein distance, in reference standard deviations, at or above which a
            numeric shift is material.
        missing: rise in the share of missing values (absolute) that counts as drift on its own.
        share: share of drifted features above which the whole window counts as drifted (the
            alert rule DatasetDrift uses the same line).
        min_reference: fewest non-missing reference values a feature needs to be judged.
        min_current: fewest non-missing window values a feature needs to be judged.
        bins: PSI bins for numeric features (the reference's quantiles).
    """

    alpha: float = 0.01
    psi: float = 0.2
    wasserstein: float = 0.1
    missing: float = 0.1
    share: float = 0.5
    min_reference: int = 100
    min_current: int = 30
    bins: int = 10

    def __post_init__(self) -> None:
        problems = []
        for name in ("alpha", "missing", "share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not 0 < value <= 1:
                problems.append(f"{name} must be in (0, 1], got {value!r}")
        for name in ("psi", "wasserstein"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.number)) and np.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number, got {value!r}")
        for name in ("min_reference", "min_current", "bins"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 2:
                problems.append(f"{name} must be a whole number of at least 2, got {value!r}")
        if problems:
            raise MonitoringError("Invalid thresholds: " + "; ".join(problems) + ".")

    def with_(self, **changes) -> "Thresholds":
        """A copy with some thresholds changed (validated again)."""
        return replace(self, **changes)


def _suggest(name: str, columns: Iterable[str]) -> str:
    close = closest(name, columns)
    return f" (did you mean {close!r}?)" if close else ""


def check_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`MonitoringError` naming every column of ``columns`` missing from ``frame``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hints = ", ".join(f"{c!r}{_suggest(c, frame.columns)}" for c in missing)
        raise MonitoringError(f"The {what} has no column {hints}; it has {sorted(map(str, frame.columns))}.")


def psi(reference: pd.Series, current: pd.Series, *, bins: int = 10, categorical: bool = False) -> float:
    """Population stability index of ``current`` against ``reference`` (missing values dropped).

    Numeric values are binned on the reference's quantiles (at most ``bins`` bins, open at both
    ends, so values outside the reference's range land in the outer bins); categorical values,
    and numeric columns with at most ``bins`` distinct values, use one bin per value (a value
    never seen in the reference gets its own bin). ``sum((cur - ref) * ln(cur / ref))`` over bins,
    the shares smoothed with :data:`PSEUDOCOUNT` per bin.
    """
    ref, cur = reference.dropna(), current.dropna()
    if categorical or ref.nunique() <= bins:
        ref, cur = categories(ref), categories(cur)
        levels = pd.Index(pd.unique(pd.concat([ref, cur])))
        ref_count = ref.value_counts().reindex(levels, fill_value=0).to_numpy(float)
        cur_count = cur.value_counts().reindex(levels, fill_value=0).to_numpy(float)
    else:
        inner = np.unique(np.quantile(ref.to_numpy(float), np.linspace(0, 1, bins + 1)[1:-1]))
        edges = np.concatenate([[-np.inf], inner, [np.inf]])
        ref_count = np.histogram(ref.to_numpy(float), edges)[0].astype(float)
        cur_count = np.histogram(cur.to_numpy(float), edges)[0].astype(float)
    ref_share = (ref_count + PSEUDOCOUNT) / (ref_count.sum() + PSEUDOCOUNT * len(ref_count))
    cur_share = (cur_count + PSEUDOCOUNT) / (cur_count.sum() + PSEUDOCOUNT * len(cur_count))
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def categories(series: pd.Series) -> pd.Series:
    """Category values as text, the same way for every statistic: whole numbers stored as floats
    (a column of codes with a missing value becomes float) read as the integers they are."""
    def text(value) -> str:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return pd.Series([text(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)


def wasserstein(reference: pd.Series, current: pd.Series) -> float:
    """Wasserstein (earth mover's) distance divided by the reference's standard deviation.

    Scale-free: 0.5 means the mass moved half a reference sigma on average. NaN when the
    reference is constant (there is no scale to measure in) and the window is not."""
    from scipy.stats import wasserstein_distance

    ref, cur = reference.dropna().to_numpy(float), current.dropna().to_numpy(float)
    distance = float(wasserstein_distance(ref, cur))
    scale = float(np.std(ref))
    if scale == 0:
        return 0.0 if distance == 0 else float("nan")
    return distance / scale


def _numeric(series: pd.Series, column: str, what: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.astype(float).replace([np.inf, -np.inf], np.nan)  # infinities are not measurements
    if pd.api.types.is_datetime64_any_dtype(series):
        raise MonitoringError(f"Column {column!r} of the {what} holds times; monitor a number derived from them "
                              "(an hour, an age) instead.")
    values = series.dropna()
    converted = pd.to_numeric(values, errors="coerce")
    bad = values[converted.isna()]
    if len(bad):
        raise MonitoringError(f"Column {column!r} of the {what} should be numeric but holds {bad.iloc[0]!r} "
                              f"({len(bad)} value(s) that are not numbers).")
    return pd.to_numeric(series, errors="coerce").astype(float)


def _judge_feature(name: str, ref: pd.Series, cur: pd.Series, categorical: bool, t: Thresholds) -> dict:
    from scipy.stats import chi2_contingency, ks_2samp

    row: dict = {"kind": "categorical" if categorical else "numeric", "test": "chi2" if categorical else "ks",
                 "statistic": np.nan, "p_value": np.nan, "psi": np.nan, "wasserstein": np.nan,
                 "missing_reference": float(ref.isna().mean()) if len(ref) else np.nan,
                 "missing_current": float(cur.isna().mean()) if len(cur) else np.nan,
                 "new_categories": "", "n_reference": int(ref.notna().sum()), "n_current": int(cur.notna().sum())}
    if len(cur) == 0:
        return {**row, "verdict": "cannot judge", "drifted": False, "reason": "the window has no rows"}
    if len(cur) < t.min_current:
        return {**row, "verdict": "cannot judge", "drifted": False,
                "reason": f"{len(cur)} rows in the window, fewer than min_current={t.min_current}"}
    missing_rise = row["missing_current"] - row["missing_reference"]
    if missing_rise >= t.missing:
        return {**row, "verdict": "drift", "drifted": True,
                "reason": f"missing values rose from {row['missing_reference']:.0%} to {row['missing_current']:.0%}"}
    if row["n_reference"] < t.min_reference:
        return {**row, "verdict": "cannot judge", "drifted": False,
                "reason": f"{row['n_reference']} reference values, fewer than min_reference={t.min_reference}"}
    if row["n_current"] < t.min_current:
        return {**row, "verdict": "cannot judge", "drifted": False,
                "reason": f"{row['n_current']} values in the window, fewer than min_current={t.min_current}"}
    ref, cur = ref.dropna(), cur.dropna()
    row["psi"] = psi(ref, cur, bins=t.bins, categorical=categorical)
    if categorical:
        ref, cur = categories(ref), categories(cur)
        new = sorted(set(cur) - set(ref))
        row["new_categories"] = ", ".join(new[:5]) + (" ..." if len(new) > 5 else "")
        levels = sorted(set(ref) | set(cur))
        table = np.array([ref.value_counts().reindex(levels, fill_value=0).to_numpy(),
                          cur.value_counts().reindex(levels, fill_value=0).to_numpy()])
        if len(levels) < 2:
            row["statistic"], row["p_value"] = 0.0, 1.0
        else:
            result = chi2_contingency(table, correction=False)
            row["statistic"], row["p_value"] = float(result.statistic), float(result.pvalue)
        significant = row["p_value"] < t.alpha
        material = row["psi"] >= t.psi
        evidence = f"chi2 p = {row['p_value']:.2g}, PSI {row['psi']:.3f}"
        limits = f"alpha {t.alpha:g}, PSI {t.psi:g}"
    else:
        result = ks_2samp(ref.to_numpy(float), cur.to_numpy(float))
        row["statistic"], row["p_value"] = float(result.statistic), float(result.pvalue)
        row["wasserstein"] = wasserstein(ref, cur)
        significant = row["p_value"] < t.alpha
        material = row["psi"] >= t.psi or (np.isnan(row["wasserstein"]) or row["wasserstein"] >= t.wasserstein)
        distance = "inf (constant reference)" if np.isnan(row["wasserstein"]) else f"{row['wasserstein']:.3f}"
        evidence = f"KS p = {row['p_value']:.2g}, PSI {row['psi']:.3f}, Wasserstein {distance} sigma"
        limits = f"alpha {t.alpha:g}, PSI {t.psi:g}, Wasserstein {t.wasserstein:g}"
    if significant and material:
        verdict, reason = "drift", f"{evidence}: significant and material ({limits})"
    elif significant:
        verdict, reason = "stable", f"{evidence}: significant but too small to matter ({limits})"
    else:
        verdict, reason = "stable", f"{evidence}: within sampling noise ({limits})"
    if row["new_categories"]:
        reason += f"; values never seen in the reference: {row['new_categories']}"
    return {**row, "verdict": verdict, "drifted": verdict == "drift", "reason": reason}


@dataclass
class DriftReport:
    """The drift decisions for one window: one row per feature in :attr:`table`.

    ``verdict`` is ``"drift"`` when the share of drifted features exceeds ``thresholds.share`` or
    (with ``any_feature``) when any feature drifted, ``"cannot judge"`` when no feature could be
    judged, else ``"stable"``."""

    table: pd.DataFrame
    thresholds: Thresholds
    n_reference: int
    n_current: int
    window: str | None = None
    any_feature: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """The features that drifted in this window."""
        return list(self.table.index[self.table["drifted"]])

    @property
    def judged(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] != "cannot judge"]

    @property
    def share(self) -> float:
        """Share of the judged features that drifted (NaN when none could be judged)."""
        judged = self.judged
        return float(judged["drifted"].mean()) if len(judged) else float("nan")

    @property
    def verdict(self) -> str:
        if not len(self.judged):
            return "cannot judge"
        if self.share > self.thresholds.share or (self.any_feature and self.drifted):
            return "drift"
        return "stable"

    @property
    def alarm(self) -> bool:
        return self.verdict == "drift"

    def summary(self) -> str:
        """One line: the window, its verdict, and the features that moved."""
        where = f"{self.window}: " if self.window else ""
        if self.verdict == "cannot judge":
            reasons = sorted(set(self.table["reason"]))
            return f"{where}cannot judge ({'; '.join(reasons)})"
        moved = ", ".join(self.drifted) or "none"
        return (f"{where}{self.verdict} - {len(self.drifted)} of {len(self.judged)} features drifted "
                f"({self.share:.0%}): {moved}")

    def __repr__(self) -> str:
        return f"<DriftReport {self.summary()}>"


def infer_kinds(frame: pd.DataFrame, columns: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``columns`` into numeric and categorical by the reference's dtypes (booleans are numeric;
    time columns are left out)."""
    numeric, categorical = [], []
    for column in columns:
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            continue  # times are not features to compare across windows (every new hour is "new")
        (numeric if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
         else categorical).append(column)
    return numeric, categorical


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: Iterable[str] | None = None,
                  categorical: Iterable[str] | None = None, thresholds: Thresholds | None = None,
                  window: str | None = None, any_feature: bool = True) -> DriftReport:
    """Compare ``current`` with ``reference`` feature by feature and decide which features drifted.

    ``numeric`` and ``categorical`` name the features (both omitted: every column of the
    reference, split by dtype). Raises :class:`MonitoringError` for an empty reference, features
    missing from either frame (with a suggestion for a renamed column) or a numeric column that
    holds text; an empty window gives a report whose verdict is ``"cannot judge"``.
    """
    t = thresholds or Thresholds()
    if not isinstance(reference, pd.DataFrame) or not isinstance(current, pd.DataFrame):
        raise MonitoringError("reference and current must be pandas DataFrames.")
    if numeric is None and categorical is None:
        numeric, categorical = infer_kinds(reference, reference.columns)
    numeric, categorical = list(numeric or []), list(categorical or [])
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise MonitoringError(f"Columns listed as both numeric and categorical: {both}.")
    for frame, what in ((reference, "reference"), (current, "window")):
        if frame.columns.duplicated().any():
            raise MonitoringError(f"The {what} has duplicated column names: "
                                  f"{sorted(set(frame.columns[frame.columns.duplicated()]))}.")
    if not numeric and not categorical:
        raise MonitoringError("No features to monitor: name numeric and/or categorical columns.")
    if len(reference) == 0:
        raise MonitoringError("The reference data is empty: the monitor needs the data the model was trained "
                              "or validated on to compare with.")
    check_columns(reference, numeric + categorical, "reference")
    if len(current):
        check_columns(current, numeric + categorical, "window")
    rows = {}
    for column in numeric + categorical:
        is_categorical = column in categorical
        ref = reference[column]
        cur = current[column] if column in current.columns else pd.Series([], dtype=float)
        if not is_categorical:
            ref, cur = _numeric(ref, column, "reference"), _numeric(cur, column, "window")
        rows[column] = _judge_feature(column, ref, cur, is_categorical, t)
    table = pd.DataFrame.from_dict(rows, orient="index")[COLUMNS]
    table.index.name = "feature"
    return DriftReport(table, t, len(reference), len(current), window, any_feature)


def prediction_drift(reference: pd.Series, current: pd.Series, *, categorical: bool = False,
                     thresholds: Thresholds | None = None, window: str | None = None) -> DriftReport:
    """Drift of the model's outputs (scores, probabilities or classes): the same tests on one column.

    Prediction drift needs no labels, so it is the earliest signal that the model now sees a
    different world; it says nothing yet about whether the model is wrong."""
    reference, current = pd.Series(reference), pd.Series(current)
    name = reference.name or "prediction"
    ref = pd.DataFrame({name: reference.to_numpy()})
    cur = pd.DataFrame({name: current.to_numpy()})
    kinds = {"categorical": [name]} if categorical else {"numeric": [name]}
    return feature_drift(ref, cur, thresholds=thresholds, window=window, **kinds)


ERROR_METRICS = ("mae", "rmse", "mape", "error_rate")


def error(y_true, y_pred, metric: str = "mae") -> float:
    """The model's error on labelled rows: ``mae``, ``rmse``, ``mape`` (regression) or ``error_rate``.

    Rows without a label are dropped (they are pending, not wrong); NaN when none is left."""
    if metric not in ERROR_METRICS:
        raise MonitoringError(f"Unknown error metric {metric!r}; choose one of {list(ERROR_METRICS)}.")
    truth = pd.Series(np.asarray(y_true, dtype=object))
    pred = pd.Series(np.asarray(y_pred, dtype=object))
    if len(truth) != len(pred):
        raise MonitoringError(f"{len(truth)} labels but {len(pred)} predictions.")
    keep = truth.notna() & pred.notna()
    truth, pred = truth[keep], pred[keep]
    if not len(truth):
        return float("nan")
    if metric == "error_rate":
        try:  # classes as numbers (1 and 1.0 are the same class) or, failing that, as text
            return float((truth.astype(float).to_numpy() != pred.astype(float).to_numpy()).mean())
        except (TypeError, ValueError):
            return float((truth.astype(str) != pred.astype(str)).mean())
    truth, pred = truth.astype(float).to_numpy(), pred.astype(float).to_numpy()
    if metric == "mae":
        return float(np.mean(np.abs(truth - pred)))
    if metric == "rmse":
        return float(np.sqrt(np.mean((truth - pred) ** 2)))
    nonzero = truth != 0
    return float(np.mean(np.abs((truth[nonzero] - pred[nonzero]) / truth[nonzero]))) if nonzero.any() else float("nan")
