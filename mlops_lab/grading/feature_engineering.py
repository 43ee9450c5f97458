"""Checks for ``labs/02_feature_engineering.ipynb``: a feature rule, a batch report, a point-in-time
training set and an online lookup without skew.

The checks recompute what they expect from the raw data (the rule's arithmetic, the batch's planted
problems, the history values by brute force) and ask the student's feature store itself, so a
variable that merely holds the right-looking table does not pass.
"""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-02-features"
NEW_RULE = "amount_per_age"
BATCH_PROBLEMS = {(3, "housing"): "castle", (8, "duration"): 0, (11, "age"): 17}
"""The planted problems of :func:`incoming_batch`: (row, column) -> value."""
LABEL_TIMES = ["2011-02-07 08:00", "2011-02-07 08:30", "2011-02-14 17:00", "2011-02-28 23:00"]
"""The label times (UTC) task 3 builds its training set for."""
STORE_MONTHS = ["Jan", "Feb"]

LAB = Lab("02_feature_engineering", "Feature engineering: a rule, a contract, a point-in-time training set, no skew")


def incoming_batch():
    """Twenty real applications with three planted problems (the task 2 batch)."""
    from mlops_lab import datasets, quality

    return quality.spoil(datasets.load_german_credit().sample(20, random_state=7), BATCH_PROBLEMS)


def _equal(a, b) -> bool:
    import pandas as pd

    return (pd.isna(a) and pd.isna(b)) or a == b


def _get(ns: dict, name: str, kind: type | tuple, what: str):
    value = ns.get(name)
    assert value is not None, f"there is no variable `{name}` ({what})"
    assert isinstance(value, kind), f"`{name}` should be {what}, got {type(value).__name__}"
    return value


@LAB.check(
    "feature_rule_added",
    hint="`features.FeatureTransformer(\"german_credit\", extra_rules={\"amount_per_age\": {\"ratio\": "
    "[\"credit_amount\", \"age\"]}})`, then `.fit(X)` and keep `engineered = transformer.transform(X)`.",
)
def feature_rule_added(ns: dict) -> None:
    import pandas as pd

    from mlops_lab.features import FeatureTransformer

    transformer = _get(ns, "transformer", FeatureTransformer, "a fitted features.FeatureTransformer")
    assert hasattr(transformer, "spec_"), "`transformer` is not fitted: call transformer.fit(X)"
    rule = transformer.spec_["features"].get(NEW_RULE)
    assert rule is not None, f"the transformer has no rule named {NEW_RULE!r} (use extra_rules)"
    assert rule.get("ratio") == ["credit_amount", "age"], f"{NEW_RULE} should be the ratio credit_amount / age, got {rule}"
    engineered = _get(ns, "engineered", pd.DataFrame, "the transformer's output on X")
    assert NEW_RULE in engineered.columns, f"`engineered` has no column {NEW_RULE!r}"
    expected = (engineered["credit_amount"] / engineered["age"]).round(4)
    assert len(engineered) > 0 and engineered[NEW_RULE].equals(expected), \
        f"{NEW_RULE} is not credit_amount / age (rounded to 4 places) on every row"


@LAB.check(
    "batch_report_read",
    hint="`report = quality.contract(\"german_credit\").validate(batch)`; read `report.errors` and set "
    "`bad_rows` (row numbers) and `broken_rules` (rule names) from it.",
)
def batch_report_read(ns: dict) -> None:
    from mlops_lab.quality import Report

    report = _get(ns, "report", Report, "the contract's report on `batch`")
    assert not report.passed, "the report says the batch passed: validate `batch`, the one with the problems"
    assert len(report.frame) == 20, "the report is not about the 20-row `batch`"
    planted_rows = sorted({row for row, _ in BATCH_PROBLEMS})
    bad_rows = ns.get("bad_rows")
    assert bad_rows is not None, "there is no variable `bad_rows`"
    assert sorted(int(r) for r in bad_rows) == planted_rows, f"`bad_rows` is {sorted(bad_rows)}: not the rows that break the contract"
    broken = ns.get("broken_rules")
    expected = {"housing_allowed", "duration_months", "adult_age"}
    assert broken is not None and set(broken) == expected, \
        f"`broken_rules` is {broken!r}: it should name the {len(expected)} rules the report lists"


@LAB.check(
    "batch_quarantined",
    hint="Call `quality.accept_batch(batch, \"german_credit\", name=\"lab-batch\")` in a try block, catch "
    "`quality.BatchRejected as rejected` and keep `quarantine_path = rejected.path`.",
)
def batch_quarantined(ns: dict) -> None:
    import json
    from pathlib import Path

    import pandas as pd

    from mlops_lab import quality

    path = _get(ns, "quarantine_path", Path, "the folder quality.BatchRejected named")
    assert path.parent == quality.quarantine_dir(), f"{path} is not in the workspace's quarantine folder"
    assert (path / "rows.csv").is_file() and (path / "report.json").is_file(), "the quarantine folder lacks rows.csv or report.json"
    assert len(pd.read_csv(path / "rows.csv")) == 20, "the quarantined batch does not hold all 20 rows"
    assert json.loads((path / "report.json").read_text())["passed"] is False, "the quarantined report says it passed"


@LAB.check(
    "point_in_time",
    hint="Feed January and February to the store with `featurestore.add_month`, build `entity_df` with "
    "`series_id` and UTC `event_timestamp` from `checks.LABEL_TIMES`, and keep "
    "`train = featurestore.training_set(store, entity_df, features.HISTORY_FEATURES)`.",
)
def point_in_time(ns: dict) -> None:
    import pandas as pd

    from mlops_lab import datasets, featurestore
    from mlops_lab.features import HISTORY_FEATURES

    _get(ns, "store", featurestore.Store, "the feature store from featurestore.create()")
    train = _get(ns, "train", pd.DataFrame, "the point-in-time training set")
    missing = [c for c in ["event_timestamp", *HISTORY_FEATURES] if c not in train.columns]
    assert not missing, f"`train` lacks the columns {missing}"
    wanted = [pd.Timestamp(t, tz="UTC") for t in LABEL_TIMES]
    assert sorted(pd.to_datetime(train["event_timestamp"], utc=True)) == wanted, \
        f"`train` should have one row per label time in checks.LABEL_TIMES, got {list(train['event_timestamp'])}"
    assert train["demand_prev_hour"].notna().all(), "some labels got no features: did both months reach the store?"
    leaked = featurestore.leaked_rows(train, datasets.load_bikeshare())
    assert leaked == 0, f"{leaked} rows hold features that were not known at the label's time"


@LAB.check(
    "online_without_skew",
    hint="`online_now = featurestore.online(store, [{\"series_id\": features.SERIES_ID}], features.HISTORY_FEATURES)` "
    "and `skew_report = featurestore.skew(store, [{\"series_id\": features.SERIES_ID}], features.HISTORY_FEATURES)`.",
)
def online_without_skew(ns: dict) -> None:
    import pandas as pd

    from mlops_lab import datasets, featurestore
    from mlops_lab.features import HISTORY_FEATURES, SERIES_ID, bike_history

    store = _get(ns, "store", featurestore.Store, "the feature store from featurestore.create()")
    online_now = _get(ns, "online_now", pd.DataFrame, "featurestore.online's answer")
    bikes = datasets.load_bikeshare()
    history = bike_history(bikes[bikes["mnth"].isin(STORE_MONTHS)]).iloc[-1]
    served = featurestore.online(store, [{"series_id": SERIES_ID}], HISTORY_FEATURES).iloc[0]
    for name in HISTORY_FEATURES:
        assert name in online_now.columns, f"`online_now` has no column {name!r}"
        assert _equal(served[name], history[name]), f"the store serves {name} = {served[name]}, the data says {history[name]}"
        assert _equal(online_now[name].iloc[0], served[name]), f"`online_now` {name} differs from what the store serves"
    report = _get(ns, "skew_report", featurestore.SkewReport, "featurestore.skew's report")
    assert set(report.table["feature"].str.split(":").str[-1]) == set(HISTORY_FEATURES), \
        "the skew report does not cover the three history features"
    assert report.ok and report.mismatches == 0, f"the skew report has {report.mismatches} mismatches"
