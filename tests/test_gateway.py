"""The input contract of the validating scoring server, as pure functions (no server)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from mlops_lab import datasets, gateway, serving, training

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def example() -> pd.DataFrame:
    return training.credit_split(datasets.load_german_credit()).X_test.head(4)


@pytest.fixture(scope="module")
def contract(example) -> gateway.InputContract:
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gateway.InputContract.from_signature(infer_signature(example, np.zeros(len(example))))


def test_the_corpus_has_at_least_30_requests_with_distinct_names(example):
    corpus = gateway.malformed_requests(example)
    assert len(corpus) >= 30
    assert len({case.name for case in corpus}) == len(corpus)


@pytest.mark.parametrize("index", range(len(gateway.malformed_requests(
    training.credit_split(datasets.load_german_credit()).X_test.head(1)))))
def test_every_malformed_request_is_refused_with_its_status_and_a_message_naming_the_problem(contract, example, index):
    case = gateway.malformed_requests(example)[index]
    with pytest.raises(gateway.RequestError) as refused:
        contract.parse(case.body, case.content_type)
    assert refused.value.status == case.status, case.name
    assert case.says.lower() in refused.value.message.lower(), (case.name, refused.value.message)
    assert 400 <= refused.value.status < 500
    assert refused.value.to_json()["message"] == refused.value.message


@pytest.mark.parametrize("fmt", serving.FORMATS)
def test_every_request_format_parses_to_the_same_typed_frame(contract, example, fmt):
    body, content_type = serving.payload(example, fmt)
    frame, params = contract.parse(body, content_type)
    assert params is None
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), example.reset_index(drop=True), check_dtype=False)
    assert frame["age"].dtype == np.int64 and frame["sex"].dtype == object


def test_integral_floats_are_accepted_as_integers_and_charset_utf8_is_fine(contract, example):
    body = json.loads(serving.payload(example.head(1))[0])
    body["dataframe_split"]["data"][0][0] = 2.0
    frame, _ = contract.parse(json.dumps(body).encode(), "application/json; charset=UTF-8")
    assert frame.iloc[0, 0] == 2 and frame.dtypes.iloc[0] == np.int64


def test_a_misnamed_column_gets_a_suggestion(contract, example):
    body = serving.payload(example.rename(columns={"credit_amount": "credit_amout"}))[0]
    with pytest.raises(gateway.RequestError, match="did you mean 'credit_amount' for 'credit_amout'"):
        contract.parse(body, "application/json")


def test_optional_columns_accept_null():
    contract = gateway.InputContract((gateway.Column("a", "number"), gateway.Column("b", "string", required=False)))
    frame, _ = contract.parse(json.dumps({"inputs": [{"a": 1, "b": None}]}).encode(), "application/json")
    assert frame["b"].isna().all()
    with pytest.raises(gateway.RequestError, match="missing value"):
        contract.parse(json.dumps({"inputs": [{"a": None, "b": "x"}]}).encode(), "application/json")


def test_a_model_without_a_signature_has_no_contract():
    with pytest.raises(ValueError, match="no signature"):
        gateway.InputContract.from_signature(None)


def test_unknown_backend_and_proxy_without_upstream_are_refused(contract):
    with pytest.raises(ValueError, match="unknown back end"):
        gateway.make_backend("gpu", "models:/x", contract)
    with pytest.raises(ValueError, match="--upstream"):
        gateway.make_backend("proxy", "models:/x", contract)


def test_the_frame_has_the_dtypes_the_signature_declares():
    contract = gateway.InputContract((gateway.Column("n", "integer", True, "integer"), gateway.Column("x", "number", True, "float"),
                                      gateway.Column("b", "boolean", True, "boolean"), gateway.Column("s", "string", True, "string")))
    frame, _ = contract.parse(json.dumps({"inputs": {"n": [1, 2], "x": [0.5, 1], "b": [True, False], "s": ["a", "b"]}}).encode(),
                              "application/json")
    assert [str(t) for t in frame.dtypes] == ["int32", "float32", "bool", "object"]
    with pytest.raises(gateway.RequestError, match="out of range"):  # int32 bounds for an 'integer' column
        contract.parse(json.dumps({"inputs": {"n": [2 ** 31], "x": [0.5], "b": [True], "s": ["a"]}}).encode(), "application/json")


def test_numbers_too_large_for_a_float_are_refused_not_crashed():
    contract = gateway.InputContract((gateway.Column("x", "number", True, "double"),))
    with pytest.raises(gateway.RequestError, match="number out of range"):
        contract.parse(b'{"inputs": {"x": [1' + b"0" * 400 + b"]}}", "application/json")
    with pytest.raises(gateway.RequestError, match="expected a number"):
        contract.parse(b"x\n1_0\n", "text/csv")


def test_messages_list_at_most_ten_names(contract, example):
    columns = list(example.columns) + [f"extra_{k}" for k in range(15)]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": [[0] * len(columns)]}}).encode()
    with pytest.raises(gateway.RequestError, match="and 5 more"):
        contract.parse(body, "application/json")


def test_the_corpus_needs_an_integer_and_a_text_column(example):
    with pytest.raises(ValueError, match="integer column and a text"):
        gateway.malformed_requests(example[["age"]])
