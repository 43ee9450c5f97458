"""Serving on real servers: ``mlflow models serve``, the validating gateway, batch scoring three ways."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_lab import datasets, gateway, processes, serving, training
from mlops_lab.processes import ProcessError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A logged credit model (logistic regression) downloaded to a folder: servable without a tracking store."""
    import mlflow

    root = tmp_path_factory.mktemp("served-model")
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        split = training.credit_split(datasets.load_german_credit())
        pipeline = training.credit_pipeline("logistic_regression").fit(split.X_train, split.y_train)
        experiment = mlflow.create_experiment("served-model", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = training.log_sklearn_model(pipeline, split.X_train)
        path = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "model"))
    finally:
        mlflow.set_tracking_uri(saved)
    return {"uri": path, "pipeline": pipeline, "X": split.X_test}


@pytest.fixture(scope="module")
def mlflow_server(model):
    with serving.model_server(model["uri"]) as server:
        yield server


@pytest.fixture(scope="module")
def fast_server(model):
    with serving.gateway_server(model["uri"], backend="onnx") as server:
        yield server


@pytest.fixture(scope="module")
def pyfunc_gateway(model):
    with serving.gateway_server(model["uri"], backend="pyfunc") as server:
        yield server


@pytest.fixture(scope="module")
def proxy_server(model, mlflow_server):
    with serving.gateway_server(model["uri"], backend="proxy", upstream=mlflow_server.url) as server:
        yield server


def test_mlflow_server_speaks_the_protocol_in_every_format(mlflow_server, model):
    import mlflow

    client = mlflow_server.client()
    assert client.ping() and client.health()
    assert client.version() == mlflow.__version__
    X = model["X"].head(25)
    expected = model["pipeline"].predict(X)
    for fmt in serving.FORMATS:
        assert np.array_equal(client.predict(X, fmt), expected), fmt


@pytest.mark.parametrize("which", ["fast_server", "pyfunc_gateway", "proxy_server"])
def test_every_gateway_backend_answers_every_format_like_the_model(request, which, model):
    client = request.getfixturevalue(which).client()
    X = model["X"].head(40)
    expected = model["pipeline"].predict(X)
    for fmt in serving.FORMATS:
        assert np.array_equal(client.predict(X, fmt), expected), (which, fmt)
    contract = client._get("/contract").json()
    assert contract["backend"] == which.split("_")[0].replace("fast", "onnx")
    assert [c["name"] for c in contract["columns"]] == list(X.columns)


@pytest.mark.parametrize("which", ["fast_server", "proxy_server"])
def test_every_malformed_request_gets_a_4xx_naming_the_problem_and_valid_ones_still_work(request, which, model):
    server = request.getfixturevalue(which)
    client = server.client()
    X = model["X"].head(3)
    expected = model["pipeline"].predict(X)
    corpus = gateway.malformed_requests(X)
    assert len(corpus) >= 30
    for case in corpus:
        answer = client.post(case.body, case.content_type)
        assert answer.status == case.status, (case.name, answer.status, answer.body)
        assert case.says.lower() in answer.message.lower(), (case.name, answer.message)
        assert "predictions" not in str(answer.body)
        # a valid request right after each bad one gets the right answer
        assert np.array_equal(client.predict(X), expected), case.name
    assert client.ping() and server.running


def test_mlflow_scoring_server_alone_lets_malformed_requests_through(mlflow_server, model):
    """Why the gateway exists: MLflow 3.17's server answers some bad requests with 5xx or a prediction."""
    client = serving.ScoringClient(mlflow_server.url)
    outcomes = {}
    for case in gateway.malformed_requests(model["X"].head(3)):
        try:
            outcomes[case.name] = client.post(case.body, case.content_type).status
        except serving.ServingError:
            outcomes[case.name] = 0  # connection dropped
            client = serving.ScoringClient(mlflow_server.url)
    assert outcomes["deep nesting"] >= 500
    silent = [name for name, status in outcomes.items() if status == 200]
    assert {"extra column", "boolean in an integer column", "fraction in an integer column"} <= set(silent), silent
    assert mlflow_server.client().ping()


def test_batch_scoring_three_ways_gives_identical_results(mlflow_server, fast_server, model, tmp_path):
    import mlflow

    X = model["X"]
    csv = tmp_path / "batch.csv"
    X.to_csv(csv, index=False)
    from_file = serving.predict_file(model["uri"], csv, tmp_path / "out.json")
    in_chunks = serving.predict_in_chunks(mlflow.pyfunc.load_model(model["uri"]).predict, X, chunk_size=64, progress=False)
    over_http = serving.score_over_http(mlflow_server.client(), X, chunk_size=100)
    fast = serving.score_over_http(fast_server.client(), X, chunk_size=100)
    expected = model["pipeline"].predict(X)
    for name, got in {"file": from_file, "chunks": in_chunks, "http": over_http, "onnx": fast}.items():
        assert np.array_equal(got, expected), name


def test_the_proxy_answers_503_when_its_model_server_dies(model):
    upstream = serving.model_server(model["uri"]).start()
    try:
        with serving.gateway_server(model["uri"], backend="proxy", upstream=upstream.url) as proxy:
            client = proxy.client()
            X = model["X"].head(2)
            assert np.array_equal(client.predict(X), model["pipeline"].predict(X))
            upstream.stop()
            answer = client.post(*serving.payload(X))
            assert answer.status == 503 and upstream.url in answer.message
            assert client.ping(), "the gateway itself stays up and says what is wrong"
    finally:
        upstream.stop()
    assert not processes.group_members(upstream.pgid) and not processes.group_members(proxy.pgid)


def test_the_client_raises_a_serving_error_with_the_status(fast_server, model):
    with pytest.raises(serving.ServingError) as refused:
        fast_server.client().predict(model["X"].head(2).drop(columns=["age"]))
    assert refused.value.status == 400 and "age" in refused.value.message
    dead = serving.ScoringClient(f"http://127.0.0.1:{processes.free_port()}", timeout=2)
    assert not dead.ping()
    with pytest.raises(serving.ServingError, match="no answer"):
        dead.predict(model["X"].head(1))


def test_a_gateway_for_a_model_without_signature_fails_to_start_and_says_why(tmp_path, model):
    import mlflow

    path = tmp_path / "unsigned"
    mlflow.sklearn.save_model(model["pipeline"], str(path), skops_trusted_types=training.SKOPS_TRUSTED_TYPES)
    with pytest.raises(ProcessError, match="no signature"):
        serving.gateway_server(str(path), backend="pyfunc", timeout=60).start()


def test_payload_rejects_unknown_formats_and_csv_params(model):
    with pytest.raises(ValueError, match="Unknown request format"):
        serving.payload(model["X"].head(1), "parquet")
    with pytest.raises(ValueError, match="CSV"):
        serving.payload(model["X"].head(1), "csv", {"a": 1})
    with pytest.raises(ValueError, match="workers"):
        serving.model_server("models:/x", workers=0)
