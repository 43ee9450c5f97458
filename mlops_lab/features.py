"""Feature engineering for both case studies: rules declared as data, applied by one transformer.

Lesson 02's stage B. The rules live in ``mlops_lab/specs/<dataset>.yaml`` (a reviewer diffs them
like code): *transformation rules* clean the raw columns (category normalisation, missing values,
outlier capping fitted on the training data) and *feature rules* derive new columns (ratios, bands,
flags, cyclic encodings, interactions). :class:`FeatureTransformer` applies them; it is a
scikit-learn transformer, so the same object runs in training, in batch scoring and inside the
logged model that a server loads: one piece of feature code, no training/serving skew.

History features of the Bikeshare series (demand in the previous hour, over the last 24 hours, the
same hour a week before) cannot be computed from one row: :func:`bike_history` computes them on the
whole hourly grid, stamped with the hour at which they become known, and the feature store
(:mod:`mlops_lab.featurestore`) serves them point-in-time correct for training and online for serving.

Written by hand on purpose: the rules are a few lines of pandas each; a feature-engineering framework
(featuretools, feature-engine) would hide the very arithmetic the lesson teaches.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SERIES_ID = "dc"
"""The one hourly series of the Bikeshare data (Capital Bikeshare, Washington DC): its entity key."""

HISTORY_FEATURES = ["demand_prev_hour", "demand_mean_24h", "demand_same_hour_last_week"]
"""Bikeshare history features, known at the start of the hour they are stamped with."""

APPLICANT_SNAPSHOT = pd.Timestamp("2024-01-01", tz="UTC")
"""German Credit has no dates: every applicant's features are stamped with this snapshot time."""


class FeatureError(ValueError):
    """Feature rules were asked for with data that cannot support them (a missing column, an unknown rule)."""


def bike_history(frame: pd.DataFrame, *, target: str = "bikers", timestamp: str = "timestamp") -> pd.DataFrame:
    """History features of the hourly demand, one row per hour of the complete grid.

    Row ``t`` holds what is known when hour ``t`` starts: ``demand_prev_hour`` (demand of hour
    ``t-1``), ``demand_mean_24h`` (mean demand of the hours ``t-24`` to ``t-1`` that were recorded;
    missing if fewer than 12 were) and ``demand_same_hour_last_week`` (hour ``t-168``). Missing hours
    of the data stay missing, never zero. Columns: ``series_id``, ``event_timestamp`` (the file's
    Washington clock times, which have no zone, stamped UTC: labels are given the same way), the three
    features. A point-in-time join on ``event_timestamp <= label time`` therefore never
    sees the label's own demand or anything after it.
    """
    missing = [c for c in (target, timestamp) if c not in frame.columns]
    if missing:
        raise FeatureError(f"bike_history needs the columns {missing}; got {list(frame.columns)}")
    if frame.empty:
        raise FeatureError("bike_history needs at least one hour of data; the frame is empty")
    stamps = pd.DatetimeIndex(frame[timestamp])
    if stamps.has_duplicates:
        raise FeatureError(f"bike_history: {int(stamps.duplicated().sum())} timestamps appear twice; "
                           "each hour must appear once")
    demand = pd.Series(frame[target].to_numpy(dtype="float64"), index=stamps).sort_index()
    grid = pd.date_range(demand.index.min(), demand.index.max() + pd.Timedelta(hours=1), freq="h")
    demand = demand.reindex(grid)
    previous = demand.shift(1)
    out = pd.DataFrame({
        "series_id": SERIES_ID,
        "event_timestamp": grid.tz_localize("UTC") if grid.tz is None else grid.tz_convert("UTC"),
        "demand_prev_hour": previous.to_numpy(),
        "demand_mean_24h": previous.rolling(24, min_periods=12).mean().round(4).to_numpy(),
        "demand_same_hour_last_week": demand.shift(168).to_numpy(),
    })
    return out.reset_index(drop=True)


CREDIT_ID_COLUMNS = ["sex", "job", "housing", "saving_accounts", "checking_account", "credit_amount",
                     "duration", "purpose", "age"]


def applicant_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id per German Credit applicant: a hash of the application's raw values.

    The file has no id column. The id is the first 16 hex digits of the SHA-256 of the nine input
    columns (not the target), so the same application always gets the same id, in any order, in any
    session, whatever the dtypes (``1169``, ``1169.0`` and ``"1169"`` are one value; a missing value
    is empty). Hash the *raw* application: capped or cleaned values would give other ids.
    Applications identical in every column (none in the shipped file) get a suffix ``-2``, ``-3``,
    ... in the order they appear.
    """
    missing = [c for c in CREDIT_ID_COLUMNS if c not in frame.columns]
    if missing:
        raise FeatureError(f"applicant_ids needs the columns {missing}")
    text = frame[CREDIT_ID_COLUMNS].astype(object).map(_canonical).agg("|".join, axis=1)
    base = text.map(lambda s: hashlib.sha256(s.encode()).hexdigest()[:16])
    occurrence = base.groupby(base).cumcount()
    ids = base.where(occurrence == 0, base + "-" + (occurrence + 1).astype(str))
    return ids.rename("applicant_id")


def _canonical(value) -> str:
    """One text per value: integral numbers without a decimal point, missing values empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def cyclic(values: pd.Series, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Sine and cosine of a periodic value (hour of day, month): 23:00 and 00:00 end up close."""
    angle = 2 * np.pi * values.to_numpy(dtype="float64") / period
    return np.round(np.sin(angle), 6), np.round(np.cos(angle), 6)


# -- rules declared as data ---------------------------------------------------------------------

def spec(dataset: str) -> dict:
    """The declared rules of a shipped dataset (``mlops_lab/specs/<dataset>.yaml``): contract,
    cleaning and feature rules, as a dictionary."""
    import yaml

    from mlops_lab.quality import SPEC_DIR, contract

    contract(dataset)  # a clear error for an unknown name
    return yaml.safe_load((SPEC_DIR / f"{dataset}.yaml").read_text())


def rules_table(dataset: str) -> pd.DataFrame:
    """The cleaning and feature rules of ``dataset`` as a table: name, kind, what it does."""
    declared = spec(dataset)
    rows = []
    for kind, value in declared.get("cleaning", {}).items():
        rows.append({"rule": kind, "stage": "cleaning", "kind": kind, "says": _cleaning_words(kind, value)})
    for name, rule in declared.get("features", {}).items():
        kind = next(k for k in rule if k != "says")
        rows.append({"rule": name, "stage": "feature", "kind": kind, "says": rule.get("says", "")})
    return pd.DataFrame(rows).set_index("rule")


def _cleaning_words(kind: str, value) -> str:
    if kind == "normalise_text":
        return f"trim spaces in {', '.join(value)}"
    if kind == "fill_missing":
        return "; ".join(f"missing {c} becomes {v!r}" for c, v in value.items())
    if kind == "cap_quantiles":
        return "; ".join(f"{c} capped to its {lo:g}-{hi:g} quantiles of the training data" for c, (lo, hi) in value.items())
    return str(value)


_FEATURE_KINDS = ("ratio", "product", "bands", "flag", "cyclic")


def _derive(name: str, rule: dict, frame: pd.DataFrame, order: dict[str, list]) -> pd.Series:
    """One feature rule applied to ``frame`` (cleaned); ``order`` maps text columns to their ordered values."""
    kind = next((k for k in rule if k in _FEATURE_KINDS), None)
    if kind is None:
        raise FeatureError(f"feature {name!r}: unknown rule {sorted(rule)}; the course knows {list(_FEATURE_KINDS)}")
    body = rule[kind]
    needed = body if kind in ("ratio", "product") else [body["column"], *body.get("and", {})]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FeatureError(f"feature {name!r} needs the column(s) {missing}, which the input lacks")
    if kind == "ratio":
        top, bottom = (frame[c].astype("float64") for c in body)
        return (top / bottom.where(bottom != 0)).round(4)
    if kind == "product":
        return (frame[body[0]].astype("float64") * frame[body[1]].astype("float64")).round(6)
    if kind == "bands":
        banded = pd.cut(frame[body["column"]], bins=body["edges"], labels=body["labels"], right=False)
        return banded.astype(str).where(banded.notna(), None).astype(object)
    if kind == "flag":
        column = frame[body["column"]]
        if "is" in body:
            values = body["is"] if isinstance(body["is"], list) else [body["is"]]
            flag = column.astype(object).isin(values)
        else:
            flag = column.astype(object) != body["not"]
        for other, value in body.get("and", {}).items():
            flag &= frame[other] == value
        return flag.astype("int64")
    column = frame[body["column"]]
    if column.dtype == object or isinstance(column.dtype, pd.CategoricalDtype):
        positions = {v: i + 1 for i, v in enumerate(order.get(body["column"], []))}
        column = column.astype(object).map(positions)
    sin, cos = cyclic(column, body["period"])
    return pd.Series(sin if body.get("part", "sin") == "sin" else cos, index=frame.index)


try:  # scikit-learn is a base dependency; the import is here so the rules above need only pandas
    from sklearn.base import BaseEstimator, TransformerMixin
except ImportError:  # pragma: no cover
    BaseEstimator, TransformerMixin = object, object


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """The dataset's cleaning and feature rules as one scikit-learn transformer.

    ``fit`` learns what cleaning needs from the training data (the capping quantiles); ``transform``
    returns the input columns, cleaned, plus one column per feature rule. Put it first in a
    pipeline: the same fitted object then runs in training, in batch scoring and inside the logged
    model a server loads. ``features`` limits the derived columns (default: every rule);
    ``extra_rules`` adds rules in the spec's form, e.g. ``{"amount_per_age": {"ratio":
    ["credit_amount", "age"]}}``. Columns the rules do not know (e.g. history features from the
    feature store) pass through unchanged.
    """

    def __init__(self, dataset: str = "german_credit", features: list[str] | None = None,
                 extra_rules: dict | None = None) -> None:
        self.dataset = dataset
        self.features = features
        self.extra_rules = extra_rules

    def _rules(self) -> tuple[dict, dict, dict[str, list]]:
        # a fitted transformer keeps the rules it was fitted with: editing the spec later does not
        # change a logged model
        declared = getattr(self, "spec_", None) or self._declared()
        rules = declared.get("features", {})
        chosen = _known_rules(self.dataset, rules, self.features)
        order = {c: list(r["allowed"]) for c, r in declared["contract"].items() if "allowed" in r}
        return declared.get("cleaning", {}), {f: rules[f] for f in chosen}, order

    def _declared(self) -> dict:
        declared = spec(self.dataset)
        extra = dict(self.extra_rules or {})
        clash = sorted(set(extra) & set(declared.get("features", {})))
        if clash:
            raise FeatureError(f"extra rule(s) {clash} already exist in the {self.dataset} spec: pick new names")
        for name, rule in extra.items():
            if not isinstance(rule, dict) or not any(k in rule for k in _FEATURE_KINDS):
                raise FeatureError(f"extra rule {name!r} must be a mapping with one of {list(_FEATURE_KINDS)}, "
                                   f"e.g. {{'ratio': ['credit_amount', 'duration']}}; got {rule!r}")
        return {**declared, "features": {**declared.get("features", {}), **extra}}

    def fit(self, X: pd.DataFrame, y=None) -> "FeatureTransformer":
        self.spec_ = self._declared()
        cleaning, _, _ = self._rules()
        if not isinstance(X, pd.DataFrame):
            raise FeatureError("FeatureTransformer needs a DataFrame with named columns")
        if X.empty:
            raise FeatureError("FeatureTransformer cannot learn its caps from an empty frame: fit it on training rows")
        frame = self._clean_text(X, cleaning)
        self.caps_ = {}
        for column, (low, high) in cleaning.get("cap_quantiles", {}).items():
            if column in frame.columns:
                values = _numeric(frame[column], column)
                self.caps_[column] = [float(values.quantile(low)), float(values.quantile(high))]
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    @staticmethod
    def _clean_text(X: pd.DataFrame, cleaning: dict) -> pd.DataFrame:
        frame = X.copy()
        for column in cleaning.get("normalise_text", []):
            if column in frame.columns:
                values = frame[column].astype(object)
                frame[column] = values.where(values.isna(), values.astype(str).str.strip())
        for column, value in cleaning.get("fill_missing", {}).items():
            if column in frame.columns:
                frame[column] = frame[column].astype(object).where(frame[column].notna(), value)
        return frame

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        if not hasattr(self, "caps_"):
            raise FeatureError("this FeatureTransformer is not fitted yet: call fit (or fit the pipeline) first")
        if not isinstance(X, pd.DataFrame):
            raise FeatureError("FeatureTransformer needs a DataFrame with named columns")
        cleaning, rules, order = self._rules()
        frame = self._clean_text(X, cleaning)
        for column, (low, high) in self.caps_.items():
            if column in frame.columns:
                values = _numeric(frame[column], column)
                if pd.api.types.is_integer_dtype(frame[column].dtype):  # caps of a count stay counts
                    low, high = np.ceil(low), np.floor(high)
                frame[column] = values.clip(low, high).astype(frame[column].dtype)
        derived = {name: _derive(name, rule, frame, order) for name, rule in rules.items()}
        return pd.concat([frame, pd.DataFrame(derived, index=frame.index)], axis=1)

    def get_feature_names_out(self, input_features=None):
        _, rules, _ = self._rules()
        names = list(input_features if input_features is not None else self.feature_names_in_)
        return np.asarray(names + list(rules), dtype=object)


def _numeric(values: pd.Series, column: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise FeatureError(f"column {column!r} must hold numbers to be capped, got dtype {values.dtype}")
    return values.astype("float64")


def _known_rules(dataset: str, rules: dict, names: list[str] | None) -> list[str]:
    """``names`` (default: every rule), refused with a hint when one is not declared."""
    from mlops_lab.quality import closest

    chosen = list(rules) if names is None else list(names)
    unknown = [n for n in chosen if n not in rules]
    if unknown:
        hints = "".join(f" (did you mean {h!r} for {n!r}?)" for n in unknown if (h := closest(n, rules)))
        raise FeatureError(f"unknown feature rule(s) {unknown} for {dataset}; it declares {list(rules)}{hints}")
    return chosen


def derived_columns(dataset: str, features: list[str] | None = None) -> dict[str, list[str]]:
    """The derived feature names of ``dataset``, split into ``numeric`` and ``categorical``."""
    rules = spec(dataset).get("features", {})
    names = _known_rules(dataset, rules, features)
    categorical = [n for n in names if "bands" in rules[n]]
    return {"numeric": [n for n in names if n not in categorical], "categorical": categorical}
