"""Packaging: ONNX parity, logging and reload, latency table, Dockerfile generation, reproduction."""

import mlflow
import numpy as np
import pytest

from mlops_lab import config, datasets, packaging, training

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split():
    return training.credit_split(datasets.load_german_credit())


@pytest.fixture(scope="module")
def fitted(split):
    return training.credit_pipeline("gradient_boosting", n_estimators=50).fit(split.X_train, split.y_train)


@pytest.mark.parametrize("model", ["gradient_boosting", "logistic_regression"])
def test_onnx_parity(split, model):
    pipe = training.credit_pipeline(model, **({"n_estimators": 50} if model != "logistic_regression" else {}))
    pipe.fit(split.X_train, split.y_train)
    result = packaging.parity(pipe, packaging.OnnxPredictor(packaging.to_onnx(pipe, split.X_train)), split.X_test)
    assert result["labels_identical"] and result["max_probability_diff"] < packaging.PARITY_TOLERANCE
    assert result["within_tolerance"]


def test_parity_detects_a_different_model(split, fitted):
    other = training.credit_pipeline("logistic_regression").fit(split.X_train, split.y_train)
    result = packaging.parity(fitted, packaging.OnnxPredictor(packaging.to_onnx(other, split.X_train)), split.X_test)
    assert not result["within_tolerance"] and result["max_probability_diff"] > 0.01


def test_onnx_handles_missing_values_like_sklearn(split, fitted):
    holes = split.X_test.head(20).astype({"age": float, "duration": float})
    holes.loc[holes.index[:5], "age"] = np.nan
    holes.loc[holes.index[5:10], "housing"] = None
    predictor = packaging.OnnxPredictor(packaging.to_onnx(fitted, split.X_train))
    assert np.array_equal(predictor.predict(holes), fitted.predict(holes))
    assert np.abs(predictor.predict_proba(holes) - fitted.predict_proba(holes)).max() < packaging.PARITY_TOLERANCE


def test_unconvertible_model_is_a_clear_error(split):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    odd = Pipeline([("f", FunctionTransformer(lambda X: X)), ("model", training.credit_pipeline()[-1])])
    with pytest.raises(packaging.PackagingError, match="Cannot convert"):
        packaging.to_onnx(odd, split.X_train)


def test_onnx_model_logs_and_reloads(home, split, fitted):
    config.use_workspace("onnx")
    onx = packaging.to_onnx(fitted, split.X_train)
    with mlflow.start_run():
        info = packaging.log_onnx(onx, split.X_train)
    reloaded = mlflow.pyfunc.load_model(info.model_uri)
    out = reloaded.predict(packaging.onnx_feeds(split.X_test))
    assert np.array_equal(out["label"], fitted.predict(split.X_test))
    assert np.abs(out["probabilities"] - fitted.predict_proba(split.X_test)).max() < packaging.PARITY_TOLERANCE
    assert info.flavors.keys() >= {"onnx", "python_function"}


def test_latency_table_reports_speedups(split, fitted):
    onnx = packaging.OnnxPredictor(packaging.to_onnx(fitted, split.X_train))
    table = packaging.latency_table({"sklearn": fitted.predict_proba, "onnx": onnx.predict_proba},
                                    split.X_test, baseline="sklearn", single_rows=20, batch_rows=200, repeats=2)
    assert list(table.index) == ["sklearn", "onnx"] and table.loc["sklearn", "single_speedup"] == 1
    assert (table[["single_p50_ms", "single_p95_ms", "batch_1000_ms"]] > 0).all().all()


def test_generate_dockerfile_offline(home, split, fitted, tmp_path):
    config.use_workspace("docker")
    with mlflow.start_run():
        info = training.log_sklearn_model(fitted, split.X_train)
    folder = packaging.generate_dockerfile(info.model_uri, tmp_path / "image")
    dockerfile = (folder / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile and (folder / "model_dir" / "MLmodel").is_file()
    with pytest.raises(packaging.PackagingError, match="generate-dockerfile failed"):
        packaging.generate_dockerfile("models:/m-00000000000000000000000000000000", tmp_path / "none")


def test_reproduce_a_run_and_refuse_other_data(home, split):
    config.use_workspace("reproduce")
    features = [f for f in training.CREDIT_FEATURES if f != "sex"]
    tracked = training.fit_and_log_credit("gradient_boosting", split, features=features,
                                          n_estimators=40, learning_rate=0.05, subsample=0.8)
    again = packaging.refit_from_run(tracked.run_id, split)
    assert np.array_equal(again.predict_proba(split.X_test), tracked.pipeline.predict_proba(split.X_test))
    mlflow.MlflowClient().set_tag(tracked.run_id, "code_version", "0" * 40)
    with pytest.raises(packaging.PackagingError, match="trained with code"):
        packaging.refit_from_run(tracked.run_id, split)
    assert packaging.refit_from_run(tracked.run_id, split, allow_other_code=True) is not None
    other = training.credit_split(datasets.load_german_credit(), seed=7)
    with pytest.raises(packaging.PackagingError, match="training data differs"):
        packaging.refit_from_run(tracked.run_id, other, allow_other_code=True)


def test_cli_predict_matches_pyfunc(home, split, fitted, tmp_path):
    config.use_workspace("cli")
    with mlflow.start_run():
        info = training.log_sklearn_model(fitted, split.X_train)
    split.X_test.head(8).to_csv(tmp_path / "batch.csv", index=False)
    predictions = packaging.cli_predict(info.model_uri, tmp_path / "batch.csv", tmp_path / "out.json")
    assert predictions == fitted.predict(split.X_test.head(8)).tolist()
    (tmp_path / "bad.csv").write_text("height,weight\n1.8,80\n")
    with pytest.raises(packaging.PackagingError, match="predict failed"):
        packaging.cli_predict(info.model_uri, tmp_path / "bad.csv", tmp_path / "bad.json")


def test_an_engineered_pipeline_is_refused_by_onnx_with_the_reason(split):
    engineered = training.credit_pipeline("logistic_regression", engineered=True).fit(split.X_train, split.y_train)
    with pytest.raises(packaging.PackagingError, match=r"step\(s\) \['features'\] are the course's own Python code.*pyfunc"):
        packaging.to_onnx(engineered, split.X_train.head(5))
