"""Data quality checks for project initiation: profiles, declarative rules, class balance, gaps.

Rules are data, not code: a list of :class:`Rule` per dataset, each a name, a human sentence and
a predicate over the DataFrame. :func:`run_rules` returns one row per rule with pass/fail and the
number of offending rows, so a notebook shows the whole picture instead of stopping at the first
problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd


def profile(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column: dtype, missing cells, distinct values, min/max (numeric) or top value."""
    rows = []
    for column in frame.columns:
        series = frame[column]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        rows.append({
            "column": column,
            "dtype": str(series.dtype),
            "missing": int(series.isna().sum()),
            "distinct": int(series.nunique()),
            "min": series.min() if numeric else None,
            "max": series.max() if numeric else None,
            "top": None if numeric or series.dropna().empty else str(series.mode().iloc[0]),
        })
    return pd.DataFrame(rows).set_index("column")


@dataclass(frozen=True)
class Rule:
    """A data quality rule: ``bad`` returns a boolean Series marking the offending rows."""

    name: str
    description: str
    bad: Callable[[pd.DataFrame], pd.Series]


def run_rules(frame: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """Apply every rule; a rule that cannot be evaluated (e.g. a missing column) fails with the reason."""
    if not rules:
        raise ValueError("run_rules needs at least one rule")
    rows = []
    for rule in rules:
        try:
            offending = int(rule.bad(frame).sum())
            detail = "" if offending == 0 else f"{offending} rows"
        except (KeyError, TypeError, ValueError) as exc:
            offending, detail = -1, f"cannot evaluate: {type(exc).__name__}: {exc}"
        rows.append({"rule": rule.name, "description": rule.description,
                     "passed": offending == 0, "detail": detail})
    return pd.DataFrame(rows).set_index("rule")


GERMAN_CREDIT_RULES = [
    Rule("no_empty_cells", "no cell is empty", lambda f: f.isna().any(axis=1)),
    Rule("risk_is_binary", "risk is 0 (bad) or 1 (good)", lambda f: ~f["risk"].isin([0, 1])),
    Rule("adult_age", "age is between 18 and 100", lambda f: ~f["age"].between(18, 100)),
    Rule("positive_amount", "credit_amount is positive", lambda f: f["credit_amount"] <= 0),
    Rule("duration_months", "duration is 1 to 120 months", lambda f: ~f["duration"].between(1, 120)),
    Rule("job_level", "job is a skill level 0-3", lambda f: ~f["job"].isin([0, 1, 2, 3])),
    Rule("accounts_known", "saving and checking accounts are known",
         lambda f: (f["saving_accounts"] == "not_known") | (f["checking_account"] == "not_known")),
]

BIKESHARE_RULES = [
    Rule("no_empty_cells", "no cell is empty", lambda f: f.isna().any(axis=1)),
    Rule("target_adds_up", "bikers = casual + registered",
         lambda f: f["bikers"] != f["casual"] + f["registered"]),
    Rule("normalised_weather", "temp, atemp, hum, windspeed are within [0, 1]",
         lambda f: ~f[["temp", "atemp", "hum", "windspeed"]].apply(lambda s: s.between(0, 1)).all(axis=1)),
    Rule("one_row_per_hour", "no timestamp appears twice", lambda f: f["timestamp"].duplicated()),
    Rule("non_negative_counts", "counts are not negative",
         lambda f: (f[["casual", "registered", "bikers"]] < 0).any(axis=1)),
]


def class_balance(target: pd.Series) -> pd.DataFrame:
    """Counts and shares of each class of a classification target."""
    counts = target.value_counts().sort_index()
    return pd.DataFrame({"count": counts, "share": (counts / counts.sum()).round(3)})


def missing_hours(frame: pd.DataFrame, timestamp: str = "timestamp") -> pd.DataFrame:
    """Hours absent from an hourly series, counted per month (a stream's gaps are quality issues too)."""
    stamps = pd.DatetimeIndex(frame[timestamp])
    expected = pd.date_range(stamps.min().normalize(), stamps.max().normalize() + pd.Timedelta(hours=23), freq="h")
    absent = expected.difference(stamps)
    per_month = pd.Series(absent.month, dtype="int64").value_counts().reindex(range(1, 13), fill_value=0)
    return pd.DataFrame({"expected_hours": pd.Series(expected.month).value_counts().sort_index(),
                         "missing_hours": per_month}).rename_axis("month")
