"""Feature rules: each rule's arithmetic, history without the future, one transformer from training to serving."""

import numpy as np
import pandas as pd
import pytest

from mlops_lab import datasets, features, training

pytestmark = pytest.mark.unit



@pytest.fixture(scope="module")
def credit_input():
    return training.model_input(datasets.load_german_credit()[training.CREDIT_FEATURES])


@pytest.fixture(scope="module")
def bikes():
    return datasets.load_bikeshare()


def test_credit_rules_compute_what_they_say(credit_input):
    out = features.FeatureTransformer("german_credit").fit(credit_input).transform(credit_input)
    first = out.iloc[0]  # 1169 over 6 months, 67 years old, own home, savings not known
    assert first["instalment"] == round(1169 / 6, 4)
    assert first["age_band"] == "60_plus" and first["owns_home"] == 1
    assert first["has_savings"] == 0 and first["has_checking"] == 1
    assert set(out["age_band"]) == {"under_25", "25_39", "40_59", "60_plus"}
    assert list(out.columns[: len(credit_input.columns)]) == list(credit_input.columns)  # inputs kept


def test_cleaning_trims_fills_and_caps_with_what_training_learned(credit_input):
    transformer = features.FeatureTransformer("german_credit").fit(credit_input)
    cap = transformer.caps_["credit_amount"][1]
    assert cap == pytest.approx(credit_input["credit_amount"].quantile(0.99))
    raw = credit_input.head(2).copy()
    raw.loc[raw.index[0], "sex"] = "  female "
    raw.loc[raw.index[0], "saving_accounts"] = None
    raw.loc[raw.index[1], "credit_amount"] = 1_000_000
    out = transformer.transform(raw)
    assert out.iloc[0]["sex"] == "female" and out.iloc[0]["saving_accounts"] == "not_known"
    assert out.iloc[0]["has_savings"] == 0
    assert out.iloc[1]["credit_amount"] == int(cap)


def test_bike_rules_cyclic_flags_and_interactions(bikes):
    out = features.FeatureTransformer("bikeshare_hourly_2011").fit(bikes).transform(bikes)
    midnight, eleven = out[out["hr"] == 0].iloc[0], out[out["hr"] == 23].iloc[0]
    assert midnight["hour_sin"] == 0 and midnight["hour_cos"] == 1
    distance = np.hypot(midnight["hour_sin"] - eleven["hour_sin"], midnight["hour_cos"] - eleven["hour_cos"])
    assert distance < 0.3  # 23:00 and 00:00 are neighbours on the circle
    jan, jul = out[out["mnth"] == "Jan"].iloc[0], out[out["mnth"] == "July"].iloc[0]
    assert jan["month_cos"] == pytest.approx(np.cos(2 * np.pi / 12)) and jul["month_cos"] < -0.8
    rush = out[(out["hr"] == 8) & (out["workingday"] == 1)]
    assert rush["rush_hour"].eq(1).all() and out[out["workingday"] == 0]["rush_hour"].eq(0).all()
    assert out["weekend"].eq(out["weekday"].isin([0, 6]).astype(int)).all()
    assert (out["feels_warm"] == (out["atemp"] * out["hum"]).round(6)).all()
    assert out.loc[out["weathersit"] == "clear", "bad_weather"].eq(0).all()


def test_unknown_rules_and_missing_columns_are_named(credit_input):
    with pytest.raises(features.FeatureError, match=r"unknown feature rule\(s\) \['instalmnt'\].*did you mean 'instalment'"):
        features.FeatureTransformer("german_credit", ["instalmnt"]).fit(credit_input)
    transformer = features.FeatureTransformer("german_credit", ["instalment"]).fit(credit_input)
    with pytest.raises(features.FeatureError, match=r"'instalment' needs the column\(s\) \['duration'\]"):
        transformer.transform(credit_input.drop(columns=["duration"]))
    with pytest.raises(features.FeatureError, match="not fitted"):
        features.FeatureTransformer("german_credit").transform(credit_input)
    with pytest.raises(Exception, match="no data contract named"):
        features.FeatureTransformer("credit").fit(credit_input)


def test_extra_rules_are_added_and_checked(credit_input):
    extra = {"amount_per_age": {"ratio": ["credit_amount", "age"], "says": "credit per year of age"}}
    out = features.FeatureTransformer("german_credit", extra_rules=extra).fit(credit_input).transform(credit_input)
    assert out.iloc[0]["amount_per_age"] == round(1169 / 67, 4) and "instalment" in out
    only = features.FeatureTransformer("german_credit", ["amount_per_age"], extra).fit(credit_input)
    assert list(only.get_feature_names_out())[-1] == "amount_per_age"
    with pytest.raises(features.FeatureError, match="already exist"):
        features.FeatureTransformer("german_credit", extra_rules={"instalment": {"ratio": ["a", "b"]}}).fit(credit_input)
    with pytest.raises(features.FeatureError, match="must be a mapping"):
        features.FeatureTransformer("german_credit", extra_rules={"x": {"divide": ["a", "b"]}}).fit(credit_input)


def test_a_fitted_transformer_keeps_the_rules_it_was_fitted_with(credit_input):
    transformer = features.FeatureTransformer("german_credit").fit(credit_input)
    transformer.spec_ = {**transformer.spec_, "features": {"instalment": {"ratio": ["duration", "credit_amount"]}}}
    out = transformer.transform(credit_input.head(1))
    assert out.iloc[0]["instalment"] == round(6 / 1169, 4) and "age_band" not in out


def test_history_features_on_a_hand_built_series():
    stamps = pd.to_datetime(["2011-01-01 00:00", "2011-01-01 01:00", "2011-01-01 03:00"])
    frame = pd.DataFrame({"timestamp": stamps, "bikers": [10, 20, 40]})
    out = features.bike_history(frame).set_index("event_timestamp")
    hour = lambda h: pd.Timestamp(f"2011-01-01 {h:02d}:00", tz="UTC")  # noqa: E731
    assert list(out.index) == [hour(h) for h in range(5)]  # the full grid, one hour past the data
    assert np.isnan(out.loc[hour(0), "demand_prev_hour"])  # nothing is known before the first hour
    assert out.loc[hour(1), "demand_prev_hour"] == 10  # hour 1 knows hour 0, not itself
    assert np.isnan(out.loc[hour(3), "demand_prev_hour"])  # hour 2 is missing: missing, not zero
    assert out.loc[hour(4), "demand_prev_hour"] == 40
    assert out["demand_mean_24h"].isna().all()  # fewer than 12 recorded hours in every window
    assert (out["series_id"] == features.SERIES_ID).all()


def test_history_features_never_use_the_hour_they_describe(bikes):
    history = features.bike_history(bikes).set_index("event_timestamp")
    demand = bikes.set_index(bikes["timestamp"].dt.tz_localize("UTC"))["bikers"]
    at = history.index[200:260]
    assert history.loc[at, "demand_prev_hour"].equals(demand.reindex(at - pd.Timedelta(hours=1)).astype(float).set_axis(at))
    week = demand.reindex(at - pd.Timedelta(hours=168)).astype(float).set_axis(at)
    pd.testing.assert_series_equal(history.loc[at, "demand_same_hour_last_week"], week, check_names=False)
    t = history.index[500]
    window = demand[(demand.index >= t - pd.Timedelta(hours=24)) & (demand.index < t)]
    assert history.loc[t, "demand_mean_24h"] == round(window.mean(), 4)


def test_history_refuses_what_it_cannot_compute(bikes):
    with pytest.raises(features.FeatureError, match="appear twice"):
        features.bike_history(bikes.iloc[[0, 0, 1]])
    with pytest.raises(features.FeatureError, match="empty"):
        features.bike_history(bikes.head(0))
    with pytest.raises(features.FeatureError, match=r"\['bikers'\]"):
        features.bike_history(bikes.drop(columns=["bikers"]))


def test_applicant_ids_are_stable_unique_and_order_free():
    credit = datasets.load_german_credit()
    ids = features.applicant_ids(credit)
    assert ids.is_unique and ids.str.len().eq(16).all()
    shuffled = features.applicant_ids(credit.sample(frac=1, random_state=0))
    assert shuffled.sort_index().equals(ids)
    twice = features.applicant_ids(pd.concat([credit.head(2), credit.head(1)], ignore_index=True))
    assert twice.iloc[2] == ids.iloc[0] + "-2"


def test_rules_table_lists_every_declared_rule():
    table = features.rules_table("german_credit")
    assert {"instalment", "age_band", "has_checking", "cap_quantiles"} <= set(table.index)
    assert table.loc["instalment", "says"] == "credit amount per month of the loan"


def test_train_serve_parity_through_a_logged_model():
    """The transformer inside the logged model gives the served model the same features as training."""
    import mlflow

    from mlops_lab import config

    config.use_workspace("feature-parity")
    credit = datasets.load_german_credit()
    split = training.credit_split(credit)
    pipeline = training.credit_pipeline("logistic_regression", engineered=True).fit(split.X_train, split.y_train)
    with mlflow.start_run():
        info = training.log_sklearn_model(pipeline, split.X_train)
    loaded = mlflow.sklearn.load_model(info.model_uri)
    served = loaded.named_steps["features"].transform(split.X_test)
    trained = pipeline.named_steps["features"].transform(split.X_test)
    pd.testing.assert_frame_equal(served, trained)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    assert (pyfunc.predict(split.X_test) == pipeline.predict(split.X_test)).all()


def test_applicant_ids_do_not_depend_on_dtypes():
    credit = datasets.load_german_credit().head(50)
    ids = features.applicant_ids(credit)
    as_floats = credit.astype({"credit_amount": "float64", "age": "float64", "sex": str})
    assert features.applicant_ids(as_floats).equals(ids)
    as_text = credit.astype({"credit_amount": str, "job": str})
    assert features.applicant_ids(as_text).equals(ids)
    missing = credit.astype({"age": "Int64"})
    missing.loc[0, "age"] = pd.NA
    assert features.applicant_ids(missing).iloc[1:].equals(ids.iloc[1:]) and features.applicant_ids(missing).iloc[0] != ids.iloc[0]


def test_capping_bad_and_nullable_columns(credit_input):
    transformer = features.FeatureTransformer("german_credit").fit(credit_input)
    nullable = credit_input.head(3).astype({"credit_amount": "Int64"})
    nullable.loc[nullable.index[0], "credit_amount"] = pd.NA
    nullable.loc[nullable.index[1], "credit_amount"] = 1_000_000
    out = transformer.transform(nullable)
    assert pd.isna(out.iloc[0]["credit_amount"]) and out.iloc[1]["credit_amount"] == int(transformer.caps_["credit_amount"][1])
    with pytest.raises(features.FeatureError, match="column 'credit_amount' must hold numbers to be capped, got dtype object"):
        transformer.transform(credit_input.head(2).astype({"credit_amount": str}))
    with pytest.raises(features.FeatureError, match="empty frame"):
        features.FeatureTransformer("german_credit").fit(credit_input.head(0))
    with pytest.raises(features.FeatureError, match=r"unknown feature rule\(s\) \['instalmnt'\].*did you mean 'instalment'"):
        training.credit_pipeline(engineered=["instalmnt"])


def test_training_data_that_breaks_the_contract_is_not_logged():
    from mlops_lab import config, quality

    config.use_workspace("contract-at-training")
    split = training.credit_split(datasets.load_german_credit())
    bad = split.X_train.copy()
    bad.iloc[0, bad.columns.get_loc("age")] = 7
    with pytest.raises(quality.ContractError, match=r"training inputs break the german_credit contract.*adult_age \(1\)"):
        training.fit_and_log_credit("logistic_regression", training.Split(bad, split.X_test, split.y_train, split.y_test))


def test_an_engineered_model_takes_the_feature_code_along():
    import mlflow
    from mlflow.artifacts import download_artifacts

    from mlops_lab import config

    config.use_workspace("feature-code")
    split = training.credit_split(datasets.load_german_credit())
    pipeline = training.credit_pipeline("logistic_regression", engineered=True).fit(split.X_train, split.y_train)
    with mlflow.start_run():
        info = training.log_sklearn_model(pipeline, split.X_train, contract="german_credit")
    local = download_artifacts(info.model_uri)
    from pathlib import Path

    assert (Path(local) / "code" / "mlops_lab" / "features.py").is_file()
    assert (Path(local) / "code" / "mlops_lab" / "specs" / "german_credit.yaml").is_file()
