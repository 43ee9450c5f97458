"""The input contract of the validating scoring server, as pure functions (no server)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from mlops_lab import datasets, gateway, quality, serving, training

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


# -- the data contract ---------------------------------------------------------------------------

class InProcess:
    """The app called in this process (httpx's ASGI transport): no server, no port."""

    def __init__(self, app) -> None:
        import asyncio

        import httpx

        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")

    def get(self, path: str):
        return self.loop.run_until_complete(self.client.get(path))

    def post(self, path: str, content, content_type: str = "application/json"):
        return self.loop.run_until_complete(self.client.post(path, content=content, headers={"Content-Type": content_type}))

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


class ScoresZero(gateway.Backend):
    """A stand-in model for in-process app tests: one zero per row."""

    name = "stub"

    async def predict(self, frame: pd.DataFrame) -> tuple[int, dict]:
        return 200, {"predictions": [0] * len(frame)}


@pytest.fixture(scope="module")
def credit_contract():
    return quality.contract("german_credit")


@pytest.fixture(scope="module")
def guarded(contract, credit_contract, example) -> gateway.InputContract:
    """The signature's contract plus the data contract the model would carry (refuse policy)."""
    return gateway.InputContract(contract.columns, data_contract=credit_contract.inputs(list(example.columns)))


def one_row(example: pd.DataFrame, column: str, value) -> bytes:
    body = json.loads(serving.payload(example.head(1))[0])
    body["dataframe_split"]["data"][0][list(example.columns).index(column)] = value
    return json.dumps(body).encode()


BAD_VALUES = [("sex", "mael"), ("housing", "Own"), ("purpose", "radio/tv"), ("saving_accounts", "lots"),
              ("credit_amount", -100), ("credit_amount", 0), ("duration", 121), ("age", 7), ("job", 9)]


@pytest.mark.parametrize("column, value", BAD_VALUES)
def test_the_gateway_refuses_a_bad_value_in_the_words_of_the_training_report(guarded, credit_contract, example,
                                                                             column, value):
    frame = training.credit_split(datasets.load_german_credit()).frame("test").head(1).reset_index(drop=True)
    assert credit_contract.validate(frame).passed
    guarded.parse(serving.payload(example.head(1))[0], "application/json")  # the valid row is accepted
    report = credit_contract.validate(frame.astype({column: object}).assign(**{column: [value]}))
    errors = report.errors
    assert list(errors["column"]) == [column]
    sentence = errors["message"].iloc[0]
    with pytest.raises(gateway.ContractViolation) as refused:
        guarded.parse(one_row(example, column, value), "application/json")
    assert refused.value.status == 400 and refused.value.code == "CONTRACT_VIOLATION"
    assert refused.value.message == f"row 0, {sentence}"
    assert f"column '{column}'" in sentence and repr(value) in sentence and errors["rule"].iloc[0] in sentence
    assert refused.value.violations == [{"row": 0, "column": column, "value": value, "rule": errors["rule"].iloc[0],
                                         "message": sentence}]


def test_without_a_data_contract_the_same_values_are_scored(contract, example):
    for column, value in BAD_VALUES:
        frame, _ = contract.parse(one_row(example, column, value), "application/json")
        assert frame[column].iloc[0] == value


def test_the_corpus_grows_only_with_a_contract(example, credit_contract):
    plain = gateway.malformed_requests(example)
    grown = gateway.malformed_requests(example, credit_contract)
    assert len(plain) == 55, "lesson 10 counts the corpus"
    assert [c.name for c in grown[:len(plain)]] == [c.name for c in plain]
    added = grown[len(plain):]
    assert [c.name for c in added] == [c.name for c in gateway.contract_requests(example, "german_credit")]
    assert len({c.name for c in grown}) == len(grown) and len(added) >= 4
    assert {"unknown category", "negative integer", "integer below its range",
            "integer category outside its set"} <= {c.name for c in added}


@pytest.mark.parametrize("index", range(len(gateway.contract_requests(
    training.credit_split(datasets.load_german_credit()).X_test.head(1), "german_credit"))))
def test_every_contract_request_is_refused_naming_column_value_and_rule(guarded, contract, example, credit_contract, index):
    case = gateway.contract_requests(example, credit_contract)[index]
    with pytest.raises(gateway.ContractViolation) as refused:
        guarded.parse(case.body, case.content_type)
    assert refused.value.status == case.status == 400, case.name
    assert case.says in refused.value.message, (case.name, refused.value.message)
    violation = refused.value.violations[0]
    assert violation["rule"] in case.says and f"column '{violation['column']}'" in case.says
    contract.parse(case.body, case.content_type)  # well-typed: only the data contract refuses it


def test_violations_are_listed_in_row_order_at_most_five_in_the_message(guarded, example):
    rows = json.loads(serving.payload(example.head(4))[0])
    columns = rows["dataframe_split"]["columns"]
    for row in rows["dataframe_split"]["data"]:
        row[columns.index("sex")], row[columns.index("age")] = "mael", 7
    with pytest.raises(gateway.ContractViolation) as refused:
        guarded.parse(json.dumps(rows).encode(), "application/json")
    found = refused.value.violations
    assert [(v["row"], v["column"]) for v in found] == [(r, c) for r in range(4) for c in ("age", "sex")]
    assert refused.value.message.count("row ") == 5 and refused.value.message.endswith("(first 5 of 8 problems shown)")


def test_signature_columns_outside_the_contract_are_checked_for_type_only(contract, credit_contract, example):
    only_sex = gateway.InputContract(contract.columns, data_contract=credit_contract.inputs(["sex"]))
    only_sex.parse(one_row(example, "age", 7), "application/json")
    with pytest.raises(gateway.ContractViolation, match="sex_allowed"):
        only_sex.parse(one_row(example, "sex", "mael"), "application/json")
    narrow = gateway.InputContract(tuple(c for c in contract.columns if c.name != "age"), data_contract=credit_contract)
    assert "age" not in [r.column for r in narrow.value_rules] and "risk" not in [r.column for r in narrow.value_rules]
    optional = gateway.InputContract((gateway.Column("age", "integer"), gateway.Column("sex", "string", required=False)),
                                     data_contract=credit_contract)
    assert optional.parse(b'{"inputs": {"age": [30, 40], "sex": [null, "male"]}}', "application/json")[0]["sex"].isna().sum() == 1
    with pytest.raises(gateway.ContractViolation, match="row 1, column 'sex'"):  # a null is no category, a typo is
        optional.parse(b'{"inputs": {"age": [30, 40], "sex": [null, "mael"]}}', "application/json")
    with pytest.raises(ValueError, match="contract policy"):
        gateway.InputContract(contract.columns, data_contract=credit_contract, contract_policy="ignore")


def test_the_contract_route_lists_the_data_contracts_rules(guarded, contract):
    described = guarded.describe()["data_contract"]
    assert described["name"] == "german_credit" and described["policy"] == "refuse"
    rules = {r["rule"]: r for r in described["rules"]}
    assert rules["adult_age"] == {"column": "age", "rule": "adult_age", "says": "age is between 18 and 100", "range": [18, 100]}
    assert rules["sex_allowed"]["allowed"] == ["female", "male"] and "risk_is_binary" not in rules
    assert "data_contract" not in contract.describe()


def metric(client, rule: str, action: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == gateway.VIOLATIONS_METRIC + "_total" and sample.labels == {"rule": rule, "action": action}:
                return sample.value
    raise AssertionError(f"no series for {rule}/{action} in:\n{text}")


def test_the_flag_policy_scores_flags_and_counts_rows_per_rule(guarded, example):
    flagging = gateway.InputContract(guarded.columns, data_contract=guarded.data_contract, contract_policy="flag")
    with InProcess(gateway.build_app(flagging, ScoresZero())) as client:
        valid = client.post("/invocations", content=serving.payload(example)[0])
        assert valid.status_code == 200 and valid.json() == {"predictions": [0] * 4, "contract_violations": []}
        assert metric(client, "sex_allowed", "flagged") == 0 and metric(client, "adult_age", "flagged") == 0
        rows = json.loads(serving.payload(example.head(3))[0])
        columns = rows["dataframe_split"]["columns"]
        rows["dataframe_split"]["data"][0][columns.index("sex")] = "mael"
        rows["dataframe_split"]["data"][2][columns.index("sex")] = "mael"
        rows["dataframe_split"]["data"][2][columns.index("age")] = 7
        answer = client.post("/invocations", content=json.dumps(rows))
        assert answer.status_code == 200 and answer.json()["predictions"] == [0, 0, 0]
        flags = answer.json()["contract_violations"]
        assert [(f["row"], f["column"], f["rule"], f["value"]) for f in flags] == [
            (0, "sex", "sex_allowed", "mael"), (2, "age", "adult_age", 7), (2, "sex", "sex_allowed", "mael")]
        assert flags[0]["message"] == guarded.data_contract.problem("sex", "mael")
        assert metric(client, "sex_allowed", "flagged") == 2 and metric(client, "adult_age", "flagged") == 1
        assert metric(client, "job_level", "flagged") == 0
        typed = client.post("/invocations", content=one_row(example, "age", "seven"))
        assert typed.status_code == 400 and typed.json()["error_code"] == "BAD_REQUEST"  # types are never flagged
        assert client.get("/contract").json()["data_contract"]["policy"] == "flag"


def test_the_refuse_policy_counts_refused_rows_and_valid_traffic_leaves_the_counter_at_zero(guarded, example):
    with InProcess(gateway.build_app(guarded, ScoresZero())) as client:
        for _ in range(3):
            assert client.post("/invocations", content=serving.payload(example)[0]).status_code == 200
        assert metric(client, "sex_allowed", "refused") == 0
        answer = client.post("/invocations", content=one_row(example, "sex", "mael"))
        assert answer.status_code == 400 and answer.json() == {
            "error_code": "CONTRACT_VIOLATION", "message": "row 0, " + guarded.data_contract.problem("sex", "mael")}
        assert metric(client, "sex_allowed", "refused") == 1


def test_the_policy_is_checked_before_a_server_starts(capsys):
    with pytest.raises(ValueError, match="contract policy"):
        serving.gateway_server("models:/credit-risk@champion", contract_policy="ignore")
    server = serving.gateway_server("models:/credit-risk@champion", contract_policy="flag")
    assert server.args[server.args.index("--contract-policy") + 1] == "flag" and not server.running
    with pytest.raises(SystemExit):
        gateway.main(["--model-uri", "models:/x", "--contract-policy", "ignore"])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err
