"""Splits, leakage checks and pipelines: honest splits, seeded models, models that log and reload."""

import mlflow
import numpy as np
import pytest

from mlops_lab import config, datasets, training
from mlops_lab.training import SplitError


@pytest.fixture(scope="module")
def credit():
    return datasets.load_german_credit()


@pytest.fixture(scope="module")
def bikes():
    return datasets.load_bikeshare()


@pytest.mark.unit
def test_credit_split_is_stratified_and_seeded(credit):
    a, b = training.credit_split(credit, seed=1), training.credit_split(credit, seed=1)
    assert a.sizes == {"train": 700, "test": 300}
    assert a.y_train.mean() == pytest.approx(0.7) and a.y_test.mean() == pytest.approx(0.7)
    assert list(a.X_test.index) == list(b.X_test.index)
    assert list(training.credit_split(credit, seed=2).X_test.index) != list(a.X_test.index)
    assert a.X_train["sex"].dtype == object, "model inputs carry strings, not categories"


@pytest.mark.unit
def test_time_split_respects_time(bikes):
    split = training.time_split(bikes, datasets.MONTHS[:9], datasets.MONTHS[9:])
    assert bikes.loc[split.X_train.index, "timestamp"].max() < bikes.loc[split.X_test.index, "timestamp"].min()
    assert set(split.X_train.columns) == set(training.BIKE_FEATURES)
    with pytest.raises(SplitError, match="after the training months"):
        training.time_split(bikes, ["Dec"], ["Jan"])
    with pytest.raises(SplitError, match="No rows"):
        training.time_split(bikes, ["Jan"], ["Smarch"])


@pytest.mark.unit
def test_split_refuses_missing_columns(credit, bikes):
    with pytest.raises(SplitError, match=r"\['risk'\]"):
        training.credit_split(credit.drop(columns="risk"))
    with pytest.raises(SplitError, match="hr"):
        training.time_split(bikes.drop(columns="hr"), ["Jan"], ["Feb"])


@pytest.mark.unit
def test_leakage_report_flags_the_target_components(bikes):
    report = training.leakage_report(bikes, "bikers", training.BIKE_FEATURES + training.BIKE_LEAKY)
    assert report.index[0] == "registered" and report.loc["registered", "suspicious"]
    assert not report.loc["temp", "suspicious"]


@pytest.mark.unit
def test_overlap_rows_detects_duplicates(credit):
    split = training.credit_split(credit)
    assert training.overlap_rows(split) == 0
    split.X_test = split.X_test.copy()
    split.X_test.iloc[0] = split.X_train.iloc[0]
    assert training.overlap_rows(split) >= 1


@pytest.mark.unit
def test_pipelines_are_seeded_and_reject_unknown_models(credit):
    split = training.credit_split(credit)
    p1 = training.credit_pipeline("random_forest", seed=3, n_estimators=20).fit(split.X_train, split.y_train)
    p2 = training.credit_pipeline("random_forest", seed=3, n_estimators=20).fit(split.X_train, split.y_train)
    assert np.array_equal(p1.predict_proba(split.X_test), p2.predict_proba(split.X_test))
    with pytest.raises(ValueError, match="Unknown credit model 'svm'"):
        training.credit_pipeline("svm")
    with pytest.raises(ValueError, match="Unknown bike model"):
        training.bike_pipeline("svm")


@pytest.mark.unit
def test_unseen_category_does_not_crash(credit):
    split = training.credit_split(credit)
    model = training.credit_pipeline().fit(split.X_train, split.y_train)
    odd = split.X_test.head(3).copy()
    odd["purpose"] = "spaceship"
    assert model.predict(odd).shape == (3,)


@pytest.mark.integration
@pytest.mark.parametrize("kind,model", [("credit", "gradient_boosting"), ("bike", "hist_gradient_boosting"),
                                        ("bike", "random_forest")])
def test_tree_models_log_with_skops_and_reload_identically(home, credit, bikes, kind, model):
    config.use_workspace("skops")
    if kind == "credit":
        split, pipe = training.credit_split(credit), training.credit_pipeline(model)
    else:
        split = training.time_split(bikes, ["Jan", "Feb"], ["March"])
        pipe = training.bike_pipeline(model, **({"n_estimators": 10} if model == "random_forest" else {}))
    pipe.fit(split.X_train, split.y_train)
    with mlflow.start_run():
        info = training.log_sklearn_model(pipe, split.X_train)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert np.allclose(loaded.predict(split.X_test), pipe.predict(split.X_test))
    assert info.signature.inputs.input_names() == list(split.X_train.columns)


@pytest.mark.integration
def test_fit_and_log_credit_records_everything(home, credit):
    config.use_workspace("fit-and-log")
    split = training.credit_split(credit)
    tracked = training.fit_and_log_credit("logistic_regression", split, tags={"lesson": "t"})
    run = mlflow.get_run(tracked.run_id)
    assert run.data.params["model"] == "logistic_regression" and run.data.tags["problem"] == "credit"
    assert set(tracked.metrics) == {"accuracy", "precision", "recall", "f1", "credit_cost", "roc_auc"}
    assert run.data.metrics["credit_cost"] == tracked.metrics["credit_cost"]
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(tracked.run_id)] == ["confusion_matrix.png"]
    assert list(datasets.run_inputs(tracked.run_id)["context"]) == ["training", "evaluation"]
    assert mlflow.pyfunc.load_model(tracked.model_uri).predict(split.X_test.head(2)).shape == (2,)
