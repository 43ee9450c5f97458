"""The data contract: pandera finds every violation, reports it in words, and quarantines bad batches."""

import json

import numpy as np
import pandas as pd
import pytest

from mlops_lab import datasets, quality

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def credit_contract():
    return quality.contract("german_credit")


@pytest.fixture(scope="module")
def bike_contract():
    return quality.contract("bikeshare_hourly_2011")


def messages(report) -> list[str]:
    return list(report.errors["message"])


def test_credit_rules_find_hidden_missing_values_only():
    result = quality.run_rules(datasets.load_german_credit(), "german_credit")
    failed = result[~result["passed"]]
    assert list(failed.index) == ["accounts_known"]
    assert failed.loc["accounts_known", "detail"] == "478 rows"
    assert result.loc["adult_age", "description"] == "age is between 18 and 100"


def test_the_shipped_data_keeps_its_contracts(credit_contract, bike_contract):
    assert credit_contract.validate(datasets.load_german_credit()).passed
    report = bike_contract.validate(datasets.load_bikeshare())
    assert report.passed and report.failures.empty


def test_rules_catch_broken_values():
    credit = datasets.load_german_credit()
    credit.loc[0, "age"] = 7
    credit.loc[1, "credit_amount"] = -5
    result = quality.run_rules(credit, "german_credit")
    assert not result.loc["adult_age", "passed"] and result.loc["adult_age", "detail"] == "1 rows"
    assert not result.loc["positive_amount", "passed"]


def test_every_violation_is_reported_not_only_the_first(credit_contract):
    frame = datasets.load_german_credit().head(6).astype({"sex": object, "purpose": object})
    frame.loc[0, "sex"] = "mael"
    frame.loc[1, "credit_amount"] = -5
    frame.loc[2, "age"] = 7
    frame.loc[3, "purpose"] = None
    frame.loc[4, "job"] = 9
    report = credit_contract.validate(frame, name="bad-batch")
    assert not report.passed and report.bad_rows == [0, 1, 2, 3, 4]
    got = {(f.row, f.column, f.rule) for f in report.errors.itertuples()}
    assert got == {(0, "sex", "sex_allowed"), (1, "credit_amount", "positive_amount"), (2, "age", "adult_age"),
                   (3, "purpose", "no_empty_cells"), (4, "job", "job_level")}
    said = messages(report)
    assert ("column 'sex': 'mael' breaks rule sex_allowed (sex is one of female, male) (did you mean 'male'?)"
            in said)
    assert "column 'age': 7 breaks rule adult_age (age is between 18 and 100)" in said
    assert "5 violations" in report.verdict()


def test_single_value_check_says_what_the_report_says(credit_contract):
    frame = datasets.load_german_credit().head(4).astype({"sex": object, "housing": object})
    bad = {("sex", 0): "mael", ("housing", 1): "castle", ("age", 2): 130, ("credit_amount", 3): 0}
    for (column, row), value in bad.items():
        frame.loc[row, column] = value
    report = credit_contract.validate(frame)
    for (column, row), value in bad.items():
        said = report.errors[(report.errors["row"] == row) & (report.errors["column"] == column)]["message"]
        assert list(said) == [credit_contract.problem(column, value)]
    assert credit_contract.problem("sex", "male") is None and credit_contract.problem("age", 18) is None
    with pytest.raises(quality.ContractError, match="no column 'zip'"):
        credit_contract.problem("zip", 1)


def test_the_fast_path_for_requests_finds_what_the_report_finds_in_the_same_words(credit_contract):
    frame = datasets.load_german_credit().head(6).drop(columns=["risk"]).astype({"sex": object, "housing": object})
    for (column, row), value in {("sex", 0): "mael", ("housing", 1): "castle", ("age", 2): 130,
                                 ("housing", 4): None}.items():
        frame.loc[row, column] = value
    inputs = credit_contract.inputs()
    found = inputs.violations(frame)
    report = inputs.validate(frame).errors
    assert [(v["row"], v["column"]) for v in found] == [(0, "sex"), (1, "housing"), (2, "age"), (4, "housing")]
    assert [v["message"] for v in found] == [report[(report["row"] == v["row"]) & (report["column"] == v["column"])]
                                             ["message"].iloc[0] for v in found]
    assert inputs.violations(frame.iloc[[3, 5]]) == []
    said = quality.describe_violations(found, limit=2)
    assert said.startswith("row 0, column 'sex': 'mael' breaks rule") and said.endswith("(first 2 of 4 problems shown)")


def test_wrong_types_missing_columns_nans_and_empty_batches(credit_contract):
    credit = datasets.load_german_credit().head(5)
    report = credit_contract.validate(credit.drop(columns=["age"]))
    assert "column 'age' is missing" in messages(report)
    typed = credit.astype({"duration": "float64"})
    typed.loc[0, "duration"] = np.nan
    said = messages(credit_contract.validate(typed))
    assert "column 'duration': expected integers, got dtype float64" in said
    assert "column 'duration': the value is missing" in said
    text = credit.astype({"credit_amount": str})
    said = messages(credit_contract.validate(text))
    assert said == ["column 'credit_amount': expected integers, got dtype object"]
    empty = credit_contract.validate(credit.head(0))
    assert not empty.passed and messages(empty) == ["the batch has no rows"]


def test_missing_column_gets_a_suggestion(credit_contract):
    renamed = datasets.load_german_credit().head(3).rename(columns={"duration": "durration"})
    assert "column 'duration' is missing (did you mean 'durration'?)" in messages(credit_contract.validate(renamed))


def test_bikeshare_duplicated_and_out_of_order_hours(bike_contract):
    bikes = datasets.load_bikeshare()
    assert quality.run_rules(bikes, bike_contract)["passed"].all()
    doubled = bikes.iloc[[0, 2, 1, 1]]
    report = bike_contract.validate(doubled)
    assert set(report.errors["rule"]) == {"one_row_per_hour"}
    said = " | ".join(messages(report))
    assert "appears more than once" in said and "does not come after the row above it" in said
    assert report.bad_rows == [2, 3]


def test_bikeshare_rules_across_columns_and_ranges(bike_contract):
    bikes = datasets.load_bikeshare().head(10).copy()
    bikes.loc[0, "bikers"] = 999
    bikes.loc[1, "hum"] = 1.5
    bikes.loc[2, "casual"] = -1
    report = bike_contract.validate(bikes)
    rules = report.summary()
    assert not rules.loc["target_adds_up", "passed"] and rules.loc["target_adds_up", "detail"] == "2 rows"
    assert not rules.loc["normalised_weather", "passed"]
    assert rules.loc["normalised_weather", "description"] == "temp, atemp, hum, windspeed are between 0 and 1"
    assert "column 'hum': 1.5 breaks rule normalised_weather (hum is between 0 and 1)" in messages(report)


def test_contract_round_trips_and_model_inputs_leave_out_the_target(credit_contract):
    again = quality.Contract.from_dict(json.loads(json.dumps(credit_contract.to_dict())))
    assert again.to_dict() == credit_contract.to_dict()
    inputs = credit_contract.inputs(["age", "sex", "zip"])
    assert list(inputs.columns) == ["sex", "age"]
    assert "risk" not in credit_contract.inputs().columns
    with pytest.raises(quality.ContractError, match="no data contract named 'credit'"):
        quality.contract("credit")
    with pytest.raises(quality.ContractError, match="unknown type"):
        quality.Contract.from_dict({"name": "x", "contract": {"a": {"type": "complex"}}})


def test_a_bad_batch_is_quarantined_with_its_report(credit_contract, home):
    good = datasets.load_german_credit().head(20)
    assert quality.accept_batch(good, credit_contract, name="march") is good
    bad = good.copy()
    bad.loc[bad.index[3], "age"] = 150
    with pytest.raises(quality.BatchRejected, match="1 violations") as caught:
        quality.accept_batch(bad, credit_contract, name="april")
    folder = caught.value.path
    assert folder.parent == home / "quarantine"
    kept = pd.read_csv(folder / "rows.csv")
    assert len(kept) == 20 and kept.loc[3, "age"] == 150  # every row kept, none dropped
    report = json.loads((folder / "report.json").read_text())
    assert report["passed"] is False and report["failures"][0]["row"] == 3
    assert "adult_age" in (folder / "report.md").read_text()
    table = quality.quarantined()
    assert list(table["name"]) == ["april"] and table.loc[0, "rows"] == 20


def test_report_rows_are_positions_everywhere(credit_contract):
    part = datasets.load_german_credit().iloc[500:512].copy()
    part.loc[503, "age"] = 7
    part.loc[511, "age"] = 8
    with pytest.raises(quality.BatchRejected) as caught:
        quality.accept_batch(part, credit_contract, name="feeds/week 07")
    report, folder = caught.value.report, caught.value.path
    assert report.bad_rows == [3, 11] and "column 'age': 7 breaks rule adult_age" in report.errors["message"].iloc[0]
    kept = pd.read_csv(folder / "rows.csv")
    assert kept.loc[3, "row"] == 3 and kept.loc[3, "index"] == 503 and kept.loc[3, "age"] == 7
    assert folder.parent == quality.quarantine_dir() and folder.name.startswith("feeds-week-07-")
    assert list(quality.quarantined()["name"]) == ["feeds/week 07"]


def test_spoil_changes_only_the_named_cells():
    credit = datasets.load_german_credit().head(5)
    spoilt = quality.spoil(credit, {(0, "sex"): "mael", (1, "age"): None, (2, "duration"): 2.5})
    assert spoilt.loc[0, "sex"] == "mael" and pd.isna(spoilt.loc[1, "age"]) and spoilt.loc[2, "duration"] == 2.5
    assert spoilt.loc[3:].equals(credit.reset_index(drop=True).loc[3:].astype(spoilt.dtypes))
    assert credit.loc[0, "sex"] == "male"  # the original is untouched
    with pytest.raises(quality.ContractError, match="no column 'zip'"):
        quality.spoil(credit, {(0, "zip"): 1})
    with pytest.raises(quality.ContractError, match="row 10 is outside the frame's 5 rows"):
        quality.spoil(credit, {(10, "age"): 7})


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


def test_profile_of_empty_columns():
    frame = pd.DataFrame({"empty": [np.nan, np.nan], "text": [None, None]}).astype({"text": object})
    profile = quality.profile(frame)
    assert profile.loc["text", "missing"] == 2 and profile.loc["text", "top"] is None
