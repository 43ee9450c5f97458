"""Evidently's view of data drift, beside our own: an HTML report, its per-column decisions, their agreement.

`Evidently <https://docs.evidentlyai.com>`_ (an open-source monitoring library) compares a reference
DataFrame with a current one and gives two things: a self-contained HTML report to click through
(a distribution plot and a drift decision per column, the share of drifted columns) and the same
decisions as data. :func:`evidently_report` writes the first, :func:`evidently_drift` returns the
second as a table, and :func:`agreement` lines it up with our own statistics.

We still compute our own statistics (``mlops_lab.monitoring.drift``) because Evidently chooses the
test for you, by sample size: up to 1,000 reference rows it runs a significance test (KS, chi-square,
Z-test) and reports a p-value; above that it switches to a distance (Wasserstein, Jensen-Shannon)
with a fixed threshold of 0.1 and reports no p-value at all. The same column can therefore be judged
by a different rule from one month to the next. Our monitor keeps one test per kind of column and a
p-value and a magnitude side by side, which is what a lesson can explain and an alert rule can read;
comparing the two is how a student learns what each number means.

Evidently's usage telemetry is switched off here: this module sets ``DO_NOT_TRACK`` (read by
``evidently.telemetry``) and ``ITERATIVE_DO_NOT_TRACK`` (read by ``iterative_telemetry``) before
Evidently is imported, so nothing tries to reach the network. Evidently takes about 4 s to import,
so it is imported inside the functions, on first use.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_lab import config
from mlops_lab.quality import closest

# Telemetry off before anything imports Evidently (both variables are read when an event would be sent).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("ITERATIVE_DO_NOT_TRACK", "1")

SIZE_SWITCH = 1000
"""Evidently's default tests switch from p-values to distances above this many reference rows."""
FEW_VALUES = 5
"""A numeric column with at most this many distinct values is tested like a category by Evidently."""
DISTANCES = ("Wasserstein distance (normed)", "Jensen-Shannon distance")
OUR_TESTS = {"ks": "KS", "chi2": "chi-squared"}
VERDICTS = ("drift", "stable", "cannot judge")


class ReportError(ValueError):
    """Input Evidently's report cannot be built from (no rows, columns missing, mistyped or listed twice)."""


# --------------------------------------------------------------------------------------------- input


def _names(columns: Iterable[str] | str | None, what: str) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        columns = [columns]
    names = list(dict.fromkeys(columns))  # drop repeats, keep the order
    for name in names:
        if not isinstance(name, str):
            raise ReportError(f"{what}= must list column names (strings), got {name!r}.")
    return names


def _missing_message(missing: list[str], frame: pd.DataFrame, what: str) -> str:
    known = [str(c) for c in frame.columns]
    parts = []
    for name in missing:
        close = closest(name, known)
        parts.append(f"{name!r}" + (f" (did you mean {close!r}?)" if close else ""))
    shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
    return f"The {what} data has no column {', '.join(parts)}. Its columns: {shown}."


def _check(reference: pd.DataFrame, current: pd.DataFrame, numeric, categorical) -> tuple[list[str], list[str]]:
    frames = {"reference": reference, "current": current}
    for what, frame in frames.items():
        if not isinstance(frame, pd.DataFrame):
            raise ReportError(f"The {what} data must be a pandas DataFrame, got {type(frame).__name__}.")
        if len(frame) == 0:
            raise ReportError(f"The {what} data has no rows: drift compares rows of reference and current data.")
    numeric, categorical = _names(numeric, "numeric"), _names(categorical, "categorical")
    both = [name for name in numeric if name in categorical]
    if both:
        raise ReportError(f"Column(s) {', '.join(map(repr, both))} listed as both numeric and categorical: "
                          "choose one kind for each column.")
    if not numeric and not categorical:
        raise ReportError("No columns to compare: list them in numeric=[...] and/or categorical=[...].")
    for what, frame in frames.items():
        missing = [name for name in numeric + categorical if name not in frame.columns]
        if missing:
            raise ReportError(_missing_message(missing, frame, what))
    for what, frame in frames.items():
        for name in numeric:
            column = frame[name]
            if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                raise ReportError(f"Column {name!r} is listed as numeric but holds {column.dtype} values in the "
                                  f"{what} data: list it under categorical=[...] (or convert it to numbers).")
            if column.replace([np.inf, -np.inf], np.nan).isna().all():
                raise ReportError(f"Column {name!r} has no values in the {what} data (all missing): "
                                  "leave it out of the columns to compare.")
        for name in categorical:
            if frame[name].isna().all():
                raise ReportError(f"Column {name!r} has no values in the {what} data (all missing): "
                                  "leave it out of the columns to compare.")
    return numeric, categorical


# --------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the warnings Evidently's own code raises (import-time deprecations, NaN correlations of
    constant columns), which would otherwise fill a notebook with text about Evidently's internals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for message in ("invalid value encountered", "divide by zero encountered", "Degrees of freedom"):
            warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
        yield


def _snapshot(reference: pd.DataFrame, current: pd.DataFrame, numeric: Iterable[str] | str | None,
              categorical: Iterable[str] | str | None):
    """Run Evidently's DataDriftPreset (with its per-column tests) on the listed columns only."""
    numeric, categorical = _check(reference, current, numeric, categorical)
    columns = numeric + categorical
    with _quiet():
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        report = Report([DataDriftPreset(columns=columns)], include_tests=True)
        snapshot = report.run(current_data=Dataset.from_pandas(current[columns], data_definition=definition),
                              reference_data=Dataset.from_pandas(reference[columns], data_definition=definition))
    return snapshot, numeric, categorical


def _values(series: pd.Series, numeric: bool) -> pd.Series:
    """The values Evidently tests: missing (and, for numbers, infinite) values dropped."""
    return (series.replace([np.inf, -np.inf], np.nan) if numeric else series).dropna()


def _drift_frame(snapshot, reference: pd.DataFrame, current: pd.DataFrame,
                 numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    result = snapshot.dict()
    status = {test["metric_config"]["metric_id"]: test["status"] for test in result["tests"]}
    rows, share, count, dataset_drift = {}, np.nan, np.nan, None
    for metric in result["metrics"]:
        kind = metric["config"]["type"]
        if kind.endswith(":DriftedColumnsCount"):
            share, count = float(metric["value"]["share"]), int(metric["value"]["count"])
            if metric["id"] in status:
                dataset_drift = status[metric["id"]] == "FAIL"  # its test is "share of drifted columns < 0.5"
        elif kind.endswith(":ValueDrift"):
            settings = metric["config"]
            rows[settings["column"]] = {"method": settings["method"], "score": float(metric["value"]),
                                        "threshold": float(settings["threshold"]),
                                        "drifted": status[metric["id"]] == "FAIL"}
    table = []
    for name in numeric + categorical:
        is_numeric = name in numeric
        ref, cur = _values(reference[name], is_numeric), _values(current[name], is_numeric)
        table.append({"feature": name, **rows[name], "type": "numeric" if is_numeric else "categorical",
                      "reference_rows": len(ref), "current_rows": len(cur),
                      "distinct": int(pd.concat([ref, cur]).nunique())})
    frame = pd.DataFrame(table).set_index("feature")
    frame["drifted"] = frame["drifted"].astype(bool)
    frame.attrs["share_drifted"] = share
    frame.attrs["drifted_count"] = count
    frame.attrs["dataset_drift"] = bool(share >= 0.5) if dataset_drift is None else dataset_drift
    return frame


def evidently_drift(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: Iterable[str],
                    categorical: Iterable[str]) -> pd.DataFrame:
    """Evidently's per-column drift decisions, as a table: one row per column, indexed by ``feature``.

    Columns: ``method`` (Evidently's name for the test or distance it chose, e.g. ``"K-S p_value"``,
    ``"Wasserstein distance (normed)"``, ``"chi-square p_value"``, ``"Z-test p_value"``,
    ``"Jensen-Shannon distance"``), ``score`` (the p-value or the distance), ``threshold`` and ``drifted``
    (Evidently's decision: a p-value under its threshold, or a distance at or over it), plus the counts
    its choice of test depends on: ``type`` (numeric or categorical, as you listed it),
    ``reference_rows`` and ``current_rows`` (non-missing values) and ``distinct`` (distinct values in
    both together). Evidently's dataset-level result is in ``frame.attrs``: ``share_drifted`` (share
    of drifted columns), ``drifted_count`` and ``dataset_drift`` (True when that share reaches 0.5).
    Only the listed columns are compared; missing values are dropped first, as Evidently does.
    """
    snapshot, numbers, categories = _snapshot(reference, current, numeric, categorical)
    return _drift_frame(snapshot, reference, current, numbers, categories)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "report"


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: Iterable[str],
                     categorical: Iterable[str], title: str | None = None, path: str | Path | None = None,
                     log_to_mlflow: bool = False, artifact_path: str | None = "monitoring") -> Path:
    """Write Evidently's data drift report (``DataDriftPreset``) on the listed columns as one HTML file.

    The file is self-contained (Evidently's JavaScript, fonts and data are inlined: it opens offline,
    in a browser or as an MLflow artifact). ``title`` heads the page and names the file; by default
    the file is ``<workspace>/monitoring/reports/<title-as-slug>.html`` (``path`` may name another
    file, or an existing folder to write it in). With ``log_to_mlflow=True`` the file is also logged with
    ``mlflow.log_artifact`` under ``artifact_path`` of the active run; call it inside
    ``with mlflow.start_run():``, otherwise :class:`ReportError` says so before any work is done.
    Returns the path of the file. Bad input (no rows, missing or mistyped columns, a column listed as
    both numeric and categorical) raises :class:`ReportError` naming the problem.
    """
    title = title or "Data drift"
    if log_to_mlflow:
        import mlflow

        if mlflow.active_run() is None:
            raise ReportError("log_to_mlflow=True needs an active MLflow run to log the report to: call "
                              "evidently_report(...) inside `with mlflow.start_run():`.")
    snapshot, numbers, categories = _snapshot(reference, current, numeric, categorical)
    target = Path(path).expanduser() if path is not None else config.workspace() / "monitoring" / "reports"
    if path is None or target.is_dir():
        target = target / f"{_slug(title)}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        page = snapshot.get_html_str(as_iframe=False)
    heading = html.escape(title)
    sizes = (f"reference: {len(reference):,} rows &middot; current: {len(current):,} rows &middot; "
             f"{len(numbers) + len(categories)} columns")
    page = page.replace("<head>", f"<head>\n<title>{heading}</title>", 1)
    root = page.index('<div id="root_')  # JSON data in <head> escapes quotes, so this is the page's own div
    page = (page[:root] + '<div style="font-family: sans-serif; margin: 16px 24px 0">'
            f'<h1 style="margin: 0">{heading}</h1><p style="color: #555">{sizes}</p></div>\n' + page[root:])
    target.write_text(page, encoding="utf-8")
    if log_to_mlflow:
        import mlflow

        mlflow.log_artifact(str(target), artifact_path=artifact_path or None)
    return target.resolve()


# --------------------------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class Agreement:
    """How often Evidently's per-column decisions match ours, and why they differ where they do.

    ``rate`` is the share of features judged by both whose decisions agree (NaN when none was);
    ``judged`` and ``agreed`` are the counts behind it; ``cannot_judge`` lists the features our
    statistics could not judge (left out of the rate). ``table`` has one row per feature (index
    ``feature``; columns ``ours``, ``theirs``, ``method``, ``agree``, ``why``) and ``disagreements``
    holds just the rows that disagree, each with a plain-words ``why``.
    """

    rate: float
    judged: int
    agreed: int
    cannot_judge: list[str]
    table: pd.DataFrame = field(repr=False)
    disagreements: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        """One line, e.g. ``Evidently agrees on 9 of 10 features (90 %)``."""
        skipped = ""
        if self.cannot_judge:
            skipped = f"; our statistics cannot judge {len(self.cannot_judge)} more ({', '.join(self.cannot_judge)})"
        if self.judged == 0:
            return f"No feature to compare: our statistics cannot judge any of {len(self.cannot_judge)}" + (
                f" ({', '.join(self.cannot_judge)})" if self.cannot_judge else "")
        noun = "feature" if self.judged == 1 else "features"
        return f"Evidently agrees on {self.agreed} of {self.judged} {noun} ({self.rate * 100:.0f} %){skipped}"

    def __str__(self) -> str:
        return self.summary()


def _require(frame: pd.DataFrame, what: str, columns: list[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ReportError(f"{what} must be a pandas DataFrame indexed by feature, got {type(frame).__name__}.")
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ReportError(f"{what} lacks column(s) {', '.join(map(repr, missing))}; it needs {columns} "
                          f"(its columns: {list(frame.columns)}).")
    repeated = sorted(set(frame.index[frame.index.duplicated()].astype(str)))
    if repeated:
        raise ReportError(f"{what} lists feature(s) {repeated} more than once: one row per feature, please.")


def _text(value) -> str:
    """A cell as text: empty for a missing value (None, NaN)."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _why(feature: str, mine: pd.Series, other: pd.Series) -> str:
    """Plain words for one disagreement, following Evidently's default choice of test."""
    method, score, threshold = str(other["method"]), float(other["score"]), float(other["threshold"])
    our_test = OUR_TESTS.get(str(mine["test"]), str(mine["test"]))
    rows, distinct = other.get("reference_rows"), other.get("distinct")
    few = (other.get("type") == "numeric" and distinct is not None and not pd.isna(distinct)
           and int(distinct) <= FEW_VALUES and "K-S" not in method and "Wasserstein" not in method)
    distance = method in DISTANCES or "distance" in method.lower()
    name = method.removesuffix(" p_value")
    name = name if name.lower().endswith("test") else f"{name} test"
    if rows is None or pd.isna(rows):
        choice = f"Evidently used {method}"
    else:
        size = f"the reference has {int(rows):,} rows ({'>' if int(rows) > SIZE_SWITCH else '≤'} 1,000)"
        values = f" and '{feature}' has only {int(distinct)} distinct values (≤ {FEW_VALUES})" if few else ""
        used = f"Evidently used {method}" if distance else f"Evidently ran a {name}"
        choice = f"{used} because {size}{values}"
    reason = _text(mine.get("reason"))
    theirs_drift = bool(other["drifted"])
    if not theirs_drift and "missing values rose" in reason:
        clause = "our statistics count the rise in missing values as drift, while Evidently drops missing values first"
    elif distance and not theirs_drift:
        clause = (f"a distance measures the size of a shift, not its significance: our {our_test} test found a "
                  f"significant shift, but its size ({score:.3f}) is under Evidently's threshold {threshold:g}")
    elif distance:
        clause = (f"a distance measures the size of a shift, not its significance: its size ({score:.3f}) reaches "
                  f"Evidently's threshold {threshold:g}, but our statistics did not call it drift")
        if "too small to matter" in reason:
            clause += " (significant, but under our own size thresholds)"
        elif "within sampling noise" in reason:
            clause += " (not significant: it may be sampling noise)"
    elif theirs_drift and "too small to matter" in reason:
        clause = (f"it decides on the p-value alone ({score:.2g} < {threshold:g}); our statistics also "
                  "require the shift to be large enough to matter")
    elif theirs_drift and name == "chi-square test" and str(mine["test"]) == "chi2":
        clause = (f"Evidently's chi-square takes the reference proportions as exact (a goodness-of-fit test, "
                  f"p = {score:.2g} < {threshold:g}), so it flags drift more often than our two-sample test, "
                  "which allows for noise in both samples")
    elif theirs_drift:
        clause = (f"its p-value {score:.2g} is under its threshold {threshold:g}, "
                  f"while our {our_test} test found no drift")
    else:
        clause = f"its p-value {score:.2g} is over its threshold {threshold:g}, while our {our_test} test found drift"
    return f"{choice}; {clause}." + (f" Ours: {reason}." if reason else "")


def agreement(ours: pd.DataFrame, theirs: pd.DataFrame) -> Agreement:
    """Compare our per-feature drift decisions with Evidently's and explain each disagreement.

    ``ours`` is our monitor's table, indexed by feature, with at least ``drifted`` (bool), ``test``
    (``"ks"`` or ``"chi2"``) and ``verdict`` (``"drift"``, ``"stable"`` or ``"cannot judge"``; a
    ``reason`` column, when present, is quoted); ``theirs`` is :func:`evidently_drift`'s table for the
    same features. Features we cannot judge are left out of the rate and listed in ``cannot_judge``.
    Each ``why`` follows Evidently's default choice of test (``_get_default_stattest`` in
    ``evidently/legacy/calculations/stattests/registry.py``): with at most 1,000 non-missing reference
    values a numeric column gets the KS test (p-value <= 0.05 is drift) and a categorical one the
    chi-square test (p < 0.05), or a Z-test for proportions when there are only two values; above 1,000
    a numeric column gets the Wasserstein distance divided by the reference's standard deviation and a
    categorical one the Jensen-Shannon distance, both drifted at >= 0.1. A numeric column with at most 5
    distinct values is tested like a categorical one.
    """
    _require(ours, "ours", ["drifted", "test", "verdict"])
    _require(theirs, "theirs", ["method", "score", "threshold", "drifted"])
    only_ours = [str(f) for f in ours.index if f not in theirs.index]
    only_theirs = [str(f) for f in theirs.index if f not in ours.index]
    if only_ours or only_theirs:
        raise ReportError("ours and theirs must judge the same features: "
                          + "; ".join(part for part in (
                              f"only ours has {only_ours}" if only_ours else "",
                              f"only Evidently's has {only_theirs}" if only_theirs else "") if part)
                          + ". Run both on the same columns.")
    unknown = sorted(set(map(str, ours["verdict"])) - set(VERDICTS))
    if unknown:
        raise ReportError(f"ours has verdict(s) {unknown}; expected one of {list(VERDICTS)}.")
    rows = []
    for feature in ours.index:
        mine, other = ours.loc[feature], theirs.loc[feature]
        theirs_word = "drift" if bool(other["drifted"]) else "stable"
        if mine["verdict"] == "cannot judge":
            rows.append({"feature": feature, "ours": "cannot judge", "theirs": theirs_word, "method": other["method"],
                         "agree": pd.NA, "why": "left out: our statistics cannot judge this feature"
                         + (f" ({_text(mine.get('reason'))})" if _text(mine.get("reason")) else "")})
            continue
        agree = bool(mine["drifted"]) == bool(other["drifted"])
        why = "" if agree else _why(str(feature), mine, other)
        rows.append({"feature": feature, "ours": "drift" if bool(mine["drifted"]) else "stable", "theirs": theirs_word,
                     "method": other["method"], "agree": agree, "why": why})
    table = pd.DataFrame(rows, columns=["feature", "ours", "theirs", "method", "agree", "why"]).set_index("feature")
    table["agree"] = table["agree"].astype("boolean")
    judged = table[table["ours"] != "cannot judge"]
    agreed = int(judged["agree"].sum())
    return Agreement(rate=agreed / len(judged) if len(judged) else float("nan"), judged=len(judged), agreed=agreed,
                     cannot_judge=[str(f) for f in table.index[table["ours"] == "cannot judge"]],
                     table=table, disagreements=table[table["agree"].eq(False).fillna(False).astype(bool)])
