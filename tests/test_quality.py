"""Data quality rules flag real problems and pass clean data."""

import pytest

from mlops_lab import datasets, quality

pytestmark = pytest.mark.unit


def test_credit_rules_find_hidden_missing_values_only():
    result = quality.run_rules(datasets.load_german_credit(), quality.GERMAN_CREDIT_RULES)
    failed = result[~result["passed"]]
    assert list(failed.index) == ["accounts_known"]
    assert failed.loc["accounts_known", "detail"] == "478 rows"


def test_rules_catch_broken_values():
    credit = datasets.load_german_credit()
    credit.loc[0, "age"] = 7
    credit.loc[1, "credit_amount"] = -5
    result = quality.run_rules(credit, quality.GERMAN_CREDIT_RULES)
    assert not result.loc["adult_age", "passed"] and result.loc["adult_age", "detail"] == "1 rows"
    assert not result.loc["positive_amount", "passed"]


def test_bikeshare_rules_pass_and_catch_a_duplicate_hour():
    bikes = datasets.load_bikeshare()
    assert quality.run_rules(bikes, quality.BIKESHARE_RULES)["passed"].all()
    doubled = bikes.iloc[[0, 0, 1]]
    result = quality.run_rules(doubled, quality.BIKESHARE_RULES)
    assert not result.loc["one_row_per_hour", "passed"]


def test_rule_on_missing_column_fails_with_reason():
    credit = datasets.load_german_credit().drop(columns=["age"])
    result = quality.run_rules(credit, quality.GERMAN_CREDIT_RULES)
    assert not result.loc["adult_age", "passed"]
    assert "cannot evaluate" in result.loc["adult_age", "detail"]


def test_missing_hours_of_2011():
    gaps = quality.missing_hours(datasets.load_bikeshare())
    assert gaps["expected_hours"].sum() == 8760
    assert gaps["missing_hours"].sum() == 8760 - 8645
    assert gaps.loc[1, "missing_hours"] == 56


def test_profile_and_class_balance():
    credit = datasets.load_german_credit()
    profile = quality.profile(credit)
    assert profile.loc["age", "min"] == 19 and profile.loc["sex", "top"] == "male"
    balance = quality.class_balance(credit["risk"])
    assert balance["share"].to_dict() == {0: 0.3, 1: 0.7}


def test_edge_inputs_give_clear_results():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"empty": [np.nan, np.nan], "text": [None, None]}).astype({"text": object})
    profile = quality.profile(frame)
    assert profile.loc["text", "missing"] == 2 and profile.loc["text", "top"] is None
    with pytest.raises(ValueError, match="at least one rule"):
        quality.run_rules(frame, [])
