"""The shipped datasets: dtypes, batches in time order, lineage, and clear errors on bad files."""


import mlflow
import pandas as pd
import pytest

from mlops_lab import config, datasets
from mlops_lab.datasets import DataError

pytestmark = pytest.mark.unit


def test_german_credit_shape_dtypes_and_classes():
    credit = datasets.load_german_credit()
    assert credit.shape == (1000, 10)
    assert credit["risk"].value_counts().to_dict() == {1: 700, 0: 300}
    assert credit["sex"].value_counts().to_dict() == {"male": 690, "female": 310}
    assert isinstance(credit["purpose"].dtype, pd.CategoricalDtype)
    assert credit["age"].dtype == "int64"


def test_bikeshare_is_time_ordered_with_timestamp():
    bikes = datasets.load_bikeshare()
    assert len(bikes) == 8645
    assert bikes["timestamp"].is_monotonic_increasing
    assert bikes["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 00:00")
    assert bikes["mnth"].cat.ordered and list(bikes["mnth"].cat.categories) == datasets.MONTHS
    assert (bikes["bikers"] == bikes["casual"] + bikes["registered"]).all()


def test_monthly_batches_cover_the_year_in_order():
    batches = list(datasets.monthly_batches())
    assert [b.name for b in batches] == datasets.MONTHS
    assert sum(len(b.frame) for b in batches) == 8645
    ends = [b.frame["timestamp"].max() for b in batches]
    starts = [b.frame["timestamp"].min() for b in batches]
    assert all(end < nxt for end, nxt in zip(ends, starts[1:]))


def test_missing_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(DataError, match="missing.*git checkout -- data/german_credit.csv"):
        datasets.load_german_credit(tmp_path / "german_credit.csv")


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "credit.csv"
    datasets.load_german_credit().drop(columns=["age"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"lacks the columns \['age'\]"):
        datasets.load_german_credit(path)


def test_non_numeric_value_names_the_column(tmp_path):
    path = tmp_path / "bikes.csv"
    raw = pd.read_csv(datasets.data_dir() / "bikeshare_hourly_2011.csv")
    raw["temp"] = raw["temp"].astype(object)
    raw.loc[5, "temp"] = "warm"
    raw.to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'temp' should be float64"):
        datasets.load_bikeshare(path)


def test_corrupt_file_is_reported(tmp_path):
    path = tmp_path / "credit.csv"
    path.write_bytes(b"\x00\xff\xfe garbage \x00" * 50)
    with pytest.raises(DataError):
        datasets.load_german_credit(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="corrupt"):
        datasets.load_german_credit(empty)


def test_bad_target_and_unknown_month_are_refused(tmp_path):
    credit = datasets.load_german_credit()
    credit.loc[0, "risk"] = 2
    credit.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="must be 0 or 1"):
        datasets.load_german_credit(tmp_path / "c.csv")
    raw = pd.read_csv(datasets.data_dir() / "bikeshare_hourly_2011.csv")
    raw.loc[0, "mnth"] = "Smarch"
    raw.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="Smarch"):
        datasets.load_bikeshare(tmp_path / "b.csv")


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="Unknown dataset 'iris'"):
        datasets.load("iris")
    with pytest.raises(DataError, match="Unknown dataset"):
        datasets.dataset_card("iris")


def test_digest_is_stable_and_sensitive():
    credit = datasets.load_german_credit()
    assert datasets.digest(credit) == datasets.digest(datasets.load_german_credit())
    changed = credit.copy()
    changed.loc[0, "age"] += 1
    assert datasets.digest(changed) != datasets.digest(credit)


def test_dataset_card_has_provenance():
    card = datasets.dataset_card("german_credit")
    assert card["rows"] == 1000 and card["target"] == "risk"
    assert "UCI" in card["source"] and "DbCL" in card["licence"]
    assert card["file"] == "data/german_credit.csv"


def test_logged_dataset_carries_lineage(home):
    config.use_workspace("lineage")
    bikes = datasets.load_bikeshare()
    january = next(datasets.monthly_batches(bikes))
    with mlflow.start_run() as run:
        logged = datasets.log_dataset(january.frame, context="training", name="bikes-jan")
    table = datasets.run_inputs(run.info.run_id)
    assert table.to_dict("records") == [{
        "name": "bikes-jan", "digest": logged.digest, "context": "training",
        "source file": "bikeshare_hourly_2011.csv",
    }]
    assert logged.targets == "bikers"


def test_mlflow_dataset_rejects_missing_target():
    frame = datasets.load_german_credit().drop(columns=["risk"])
    with pytest.raises(DataError, match="Target column 'risk'"):
        datasets.as_mlflow_dataset(frame, targets="risk")


def test_shipped_files_match_the_course_sources():
    """data/ holds the provenance-documented files, byte for byte, when ../shared is present."""
    shared = config.repo_root().parent / "shared" / "datasets"
    if not shared.is_dir():
        pytest.skip("the course's shared datasets folder is not next to this clone")
    for name in ("german_credit.csv", "bikeshare_hourly_2011.csv"):
        assert (datasets.data_dir() / name).read_bytes() == (shared / name).read_bytes()


def test_non_integer_value_in_integer_column_is_refused(tmp_path):
    raw = pd.read_csv(datasets.data_dir() / "german_credit.csv")
    raw["age"] = raw["age"].astype(float)
    raw.loc[3, "age"] = 30.7
    raw.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="column 'age' should be int64.*30.7"):
        datasets.load_german_credit(tmp_path / "c.csv")


def test_features_only_frame_logs_without_a_target(home):
    config.use_workspace("features-only")
    features = datasets.load_german_credit().drop(columns="risk")
    with mlflow.start_run() as run:
        logged = datasets.log_dataset(features, context="inference", name="applicants")
    assert logged.targets is None
    assert datasets.run_inputs(run.info.run_id)["context"].tolist() == ["inference"]
