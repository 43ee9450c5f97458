"""Serving on real servers: ``mlflow models serve``, the validating gateway, batch scoring three ways."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mlops_lab import config, datasets, gateway, processes, serving, training
from mlops_lab.processes import ProcessError

pytestmark = pytest.mark.integration


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
def guarded_server(model):
    """The ONNX gateway for the model that carries the data contract (default policy: refuse)."""
    with serving.gateway_server(model["guarded_uri"], backend="onnx") as server:
        yield server


@pytest.fixture(scope="module")
def flag_server(model):
    """The pyfunc gateway for the same model, scoring and flagging what breaks the contract."""
    with serving.gateway_server(model["guarded_uri"], backend="pyfunc", contract_policy="flag") as server:
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


@pytest.mark.parametrize("which", ["fast_server", "proxy_server", "guarded_server"])
def test_every_malformed_request_gets_a_4xx_naming_the_problem_and_valid_ones_still_work(request, which, model):
    server = request.getfixturevalue(which)
    client = server.client()
    X = model["X"].head(3)
    expected = model["pipeline"].predict(X)
    corpus = gateway.malformed_requests(X, contract=gateway.data_contract(server.model_uri))
    assert len(corpus) == 55 + (8 if which == "guarded_server" else 0)
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
    for case in gateway.malformed_requests(model["X"].head(3), contract="german_credit"):
        try:
            outcomes[case.name] = client.post(case.body, case.content_type).status
        except serving.ServingError:
            outcomes[case.name] = 0  # connection dropped
            client = serving.ScoringClient(mlflow_server.url)
    assert outcomes["deep nesting"] >= 500
    silent = [name for name, status in outcomes.items() if status == 200]
    assert {"extra column", "boolean in an integer column", "fraction in an integer column"} <= set(silent), silent
    assert {case.name for case in gateway.contract_requests(model["X"].head(3), "german_credit")} <= set(silent), silent
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


# -- the data contract, from training to serving ----------------------------------------------------

def counters(client: serving.ScoringClient) -> dict[tuple[str, str], float]:
    """``/metrics``' data-contract counter: (rule, action) -> rows."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.labels["rule"], s.labels["action"]): s.value
            for family in text_string_to_metric_families(client._get("/metrics").text)
            for s in family.samples if s.name == gateway.VIOLATIONS_METRIC + "_total"}


def test_the_data_contract_travels_inside_the_logged_model(model):
    import mlflow

    from mlops_lab import quality

    expected = quality.contract("german_credit").inputs(list(model["X"].columns)).to_dict()
    read = model["contract_read"]
    assert read["logged"].to_dict() == expected and read["info"]["data_contract"] == expected
    assert read["plain"] is None and gateway.data_contract(model["uri"]) is None
    assert gateway.data_contract(model["guarded_uri"]).to_dict() == expected  # the downloaded files carry it
    carried = mlflow.pyfunc.load_model(model["guarded_uri"]).metadata.metadata["data_contract"]
    assert carried == expected and "risk" not in carried["contract"]


def test_a_contract_of_another_dataset_is_refused_at_logging_time(model):
    import mlflow

    config.use_workspace("contract-refused")  # this test's own store and experiment, not a neighbour's
    with mlflow.start_run(), pytest.raises(ValueError, match="none of the model's input columns"):
        training.log_sklearn_model(model["pipeline"], model["X"], contract="bikeshare_hourly_2011")


def test_a_model_without_a_contract_still_scores_what_only_a_contract_refuses(fast_server, model):
    client = fast_server.client()
    for case in gateway.contract_requests(model["X"].head(3), "german_credit"):
        answer = client.post(case.body, case.content_type)
        assert answer.status == 200 and list(answer.body) == ["predictions"], (case.name, answer.body)
    assert "data_contract" not in client._get("/contract").json() and counters(client) == {}


def test_the_refusing_gateway_names_row_column_value_and_rule_and_counts(guarded_server, model):
    client = guarded_server.client()
    X = model["X"].head(3)
    assert client._get("/contract").json()["data_contract"]["policy"] == "refuse"
    assert {action for _, action in counters(client)} == {"refused"}  # a series per rule, from the start
    body = json.loads(serving.payload(X.head(1))[0])
    body["dataframe_split"]["data"][0][list(X.columns).index("sex")] = "mael"
    before = counters(client)[("sex_allowed", "refused")]
    answer = client.post(json.dumps(body))
    assert answer.status == 400 and answer.body == {
        "error_code": "CONTRACT_VIOLATION",
        "message": "row 0, column 'sex': 'mael' breaks rule sex_allowed (sex is one of female, male) (did you mean 'male'?)"}
    assert counters(client)[("sex_allowed", "refused")] == before + 1
    assert np.array_equal(client.predict(X), model["pipeline"].predict(X))


def test_the_flagging_gateway_scores_flags_and_counts_rows_per_rule(flag_server, model):
    client = flag_server.client()
    X = model["X"].head(3)
    expected = model["pipeline"].predict(X)
    assert client._get("/contract").json()["data_contract"]["policy"] == "flag"
    answer = client.post(*serving.payload(X))
    assert answer.status == 200 and answer.body == {"predictions": expected.tolist(), "contract_violations": []}
    assert set(counters(client).values()) == {0.0} and ("adult_age", "flagged") in counters(client)
    cases = gateway.contract_requests(X, "german_credit")
    for case in cases:
        answer = client.post(case.body, case.content_type)
        assert answer.status == 200 and answer.body["predictions"], (case.name, answer.body)
        flags = answer.body["contract_violations"]
        assert len(flags) == 1 and f"row {flags[0]['row']}, {flags[0]['message']}" == case.says, (case.name, flags)
    got = counters(client)
    per_rule = Counter(case.says.split("breaks rule ")[1].split(" ")[0] for case in cases)
    assert {rule: got[(rule, "flagged")] for rule in per_rule} == dict(per_rule)
    assert got[("housing_allowed", "flagged")] == 0
