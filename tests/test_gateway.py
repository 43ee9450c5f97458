"""The input contract of the validating scoring server: pure functions and the app in-process (unit),
then oversized bodies sent to a real gateway process by urllib, requests and curl (integration)."""

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
import warnings

import numpy as np
import pandas as pd
import pytest

from mlops_lab import datasets, gateway, quality, serving, training


@pytest.fixture(scope="module")
def example() -> pd.DataFrame:
    return training.credit_split(datasets.load_german_credit()).X_test.head(4)


@pytest.fixture(scope="module")
def contract(example) -> gateway.InputContract:
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gateway.InputContract.from_signature(infer_signature(example, np.zeros(len(example))))


@pytest.mark.unit
def test_the_corpus_has_at_least_30_requests_with_distinct_names(example):
    corpus = gateway.malformed_requests(example)
    assert len(corpus) >= 30
    assert len({case.name for case in corpus}) == len(corpus)


@pytest.mark.unit
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


@pytest.mark.unit
@pytest.mark.parametrize("fmt", serving.FORMATS)
def test_every_request_format_parses_to_the_same_typed_frame(contract, example, fmt):
    body, content_type = serving.payload(example, fmt)
    frame, params = contract.parse(body, content_type)
    assert params is None
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), example.reset_index(drop=True), check_dtype=False)
    assert frame["age"].dtype == np.int64 and frame["sex"].dtype == object


@pytest.mark.unit
def test_integral_floats_are_accepted_as_integers_and_charset_utf8_is_fine(contract, example):
    body = json.loads(serving.payload(example.head(1))[0])
    body["dataframe_split"]["data"][0][0] = 2.0
    frame, _ = contract.parse(json.dumps(body).encode(), "application/json; charset=UTF-8")
    assert frame.iloc[0, 0] == 2 and frame.dtypes.iloc[0] == np.int64


@pytest.mark.unit
def test_a_misnamed_column_gets_a_suggestion(contract, example):
    body = serving.payload(example.rename(columns={"credit_amount": "credit_amout"}))[0]
    with pytest.raises(gateway.RequestError, match="did you mean 'credit_amount' for 'credit_amout'"):
        contract.parse(body, "application/json")


@pytest.mark.unit
def test_optional_columns_accept_null():
    contract = gateway.InputContract((gateway.Column("a", "number"), gateway.Column("b", "string", required=False)))
    frame, _ = contract.parse(json.dumps({"inputs": [{"a": 1, "b": None}]}).encode(), "application/json")
    assert frame["b"].isna().all()
    with pytest.raises(gateway.RequestError, match="missing value"):
        contract.parse(json.dumps({"inputs": [{"a": None, "b": "x"}]}).encode(), "application/json")


@pytest.mark.unit
def test_a_model_without_a_signature_has_no_contract():
    with pytest.raises(ValueError, match="no signature"):
        gateway.InputContract.from_signature(None)


@pytest.mark.unit
def test_unknown_backend_and_proxy_without_upstream_are_refused(contract):
    with pytest.raises(ValueError, match="unknown back end"):
        gateway.make_backend("gpu", "models:/x", contract)
    with pytest.raises(ValueError, match="--upstream"):
        gateway.make_backend("proxy", "models:/x", contract)


@pytest.mark.unit
def test_the_frame_has_the_dtypes_the_signature_declares():
    contract = gateway.InputContract((gateway.Column("n", "integer", True, "integer"), gateway.Column("x", "number", True, "float"),
                                      gateway.Column("b", "boolean", True, "boolean"), gateway.Column("s", "string", True, "string")))
    frame, _ = contract.parse(json.dumps({"inputs": {"n": [1, 2], "x": [0.5, 1], "b": [True, False], "s": ["a", "b"]}}).encode(),
                              "application/json")
    assert [str(t) for t in frame.dtypes] == ["int32", "float32", "bool", "object"]
    with pytest.raises(gateway.RequestError, match="out of range"):  # int32 bounds for an 'integer' column
        contract.parse(json.dumps({"inputs": {"n": [2 ** 31], "x": [0.5], "b": [True], "s": ["a"]}}).encode(), "application/json")


@pytest.mark.unit
def test_numbers_too_large_for_a_float_are_refused_not_crashed():
    contract = gateway.InputContract((gateway.Column("x", "number", True, "double"),))
    with pytest.raises(gateway.RequestError, match="number out of range"):
        contract.parse(b'{"inputs": {"x": [1' + b"0" * 400 + b"]}}", "application/json")
    with pytest.raises(gateway.RequestError, match="expected a number"):
        contract.parse(b"x\n1_0\n", "text/csv")


@pytest.mark.unit
def test_messages_list_at_most_ten_names(contract, example):
    columns = list(example.columns) + [f"extra_{k}" for k in range(15)]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": [[0] * len(columns)]}}).encode()
    with pytest.raises(gateway.RequestError, match="and 5 more"):
        contract.parse(body, "application/json")


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_without_a_data_contract_the_same_values_are_scored(contract, example):
    for column, value in BAD_VALUES:
        frame, _ = contract.parse(one_row(example, column, value), "application/json")
        assert frame[column].iloc[0] == value


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_the_refuse_policy_counts_refused_rows_and_valid_traffic_leaves_the_counter_at_zero(guarded, example):
    with InProcess(gateway.build_app(guarded, ScoresZero())) as client:
        for _ in range(3):
            assert client.post("/invocations", content=serving.payload(example)[0]).status_code == 200
        assert metric(client, "sex_allowed", "refused") == 0
        answer = client.post("/invocations", content=one_row(example, "sex", "mael"))
        assert answer.status_code == 400 and answer.json() == {
            "error_code": "CONTRACT_VIOLATION", "message": "row 0, " + guarded.data_contract.problem("sex", "mael")}
        assert metric(client, "sex_allowed", "refused") == 1


@pytest.mark.unit
def test_the_policy_is_checked_before_a_server_starts(capsys):
    with pytest.raises(ValueError, match="contract policy"):
        serving.gateway_server("models:/credit-risk@champion", contract_policy="ignore")
    server = serving.gateway_server("models:/credit-risk@champion", contract_policy="flag")
    assert server.args[server.args.index("--contract-policy") + 1] == "flag" and not server.running
    with pytest.raises(SystemExit):
        gateway.main(["--model-uri", "models:/x", "--contract-policy", "ignore"])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err


# -- bodies over the limit: read_body drains them so that every client reads the 413 ----------------

def read(headers: dict[str, str], chunks: list[bytes], limit: int,
         drain_limit: int = 1_000) -> tuple[bytes | gateway.RequestError, int]:
    """``gateway.read_body`` on a Starlette request whose body arrives as ``chunks``: what it returned
    (or raised) and how many chunks it consumed."""
    from starlette.requests import Request

    consumed = 0

    async def receive():
        nonlocal consumed
        consumed += 1
        if consumed > len(chunks):
            raise AssertionError("read_body read past the end of the body")
        return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/invocations", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    try:
        result = asyncio.run(gateway.read_body(Request(scope, receive), limit, max_rows=7, drain_limit=drain_limit))
    except gateway.RequestError as error:
        result = error
    return result, consumed


@pytest.mark.unit
def test_read_body_returns_a_body_within_the_limit_and_refuses_a_bad_content_length():
    body, consumed = read({"Content-Length": "12"}, [b"abcd", b"efgh", b"ijkl"], limit=12)
    assert body == b"abcdefghijkl" and consumed == 3
    body, _ = read({}, [b"ab", b"cd"], limit=4)  # streamed, exactly at the limit
    assert body == b"abcd"
    for header in ("abc", "-1", "1.5"):
        refused, consumed = read({"Content-Length": header}, [b"x"], limit=10)
        assert isinstance(refused, gateway.RequestError) and refused.status == 400, header
        assert "Content-Length" in refused.message and consumed == 0


@pytest.mark.unit
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_read_body_drains_an_oversized_body_before_refusing_it_with_advice(declared):
    chunks = [b"x" * 10] * 30  # 300 bytes, limit 25, drain limit 1,000
    refused, consumed = read({"Content-Length": "300"} if declared else {}, chunks, limit=25)
    assert isinstance(refused, gateway.RequestError)
    assert (refused.status, refused.code) == (413, "PAYLOAD_TOO_LARGE")
    assert consumed == 30, "the whole body is read (and dropped) before the answer"
    assert refused.message.startswith("the body has 300 bytes; the limit is 25 bytes per request")
    assert "at most 7 rows" in refused.message and "score_over_http(client, X, chunk_size=" in refused.message
    assert "predict_file" in refused.message


@pytest.mark.unit
def test_read_body_gives_up_past_the_drain_limit_and_skips_bodies_it_need_not_read():
    refused, consumed = read({}, [b"x" * 100] * 50, limit=25, drain_limit=1_000)  # 5,000 bytes streamed
    assert refused.status == 413 and "more than 1,000 bytes" in refused.message
    assert consumed == 11, "reading stops at the first chunk past the drain limit"
    refused, consumed = read({"Content-Length": "5000"}, [b"x" * 100] * 50, limit=25, drain_limit=1_000)
    assert refused.status == 413 and "5,000 bytes" in refused.message and consumed == 0
    refused, consumed = read({"Content-Length": "300", "Expect": "100-continue"}, [b"x" * 10] * 30, limit=25)
    assert refused.status == 413 and consumed == 0, "the client waits for our answer before sending the body"
    assert gateway.DRAIN_LIMIT_BYTES == 64 * 2**20 and gateway.DRAIN_LIMIT_BYTES > 20 * gateway.MAX_BODY_BYTES


@pytest.fixture(scope="module")
def served(model):
    """A gateway process (ONNX back end) for the logged credit model, plus rows and their predictions."""
    X = model["X"].head(5)
    with serving.gateway_server(model["uri"], backend="onnx") as server:
        yield {"server": server, "url": server.url + "/invocations", "X": X, "expected": model["pipeline"].predict(X)}


def oversized(X: pd.DataFrame, size: int) -> bytes:
    """A well-formed scoring request of exactly ``size`` bytes (valid rows plus a padding key)."""
    head = serving.payload(X)[0][:-1] + b', "padding": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def send(client: str, url: str, body, tmp_path) -> tuple[int, dict, dict]:
    """POST ``body`` with ``client``: the status, the JSON answer and the response headers (lower-case)."""
    headers = {"Content-Type": "application/json"}
    if client == "urllib":
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=60) as answer:
                return answer.status, json.loads(answer.read()), {k.lower(): v for k, v in answer.headers.items()}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}
    if client == "requests":
        import requests

        answer = requests.post(url, data=body, headers=headers, timeout=60)
        return answer.status_code, answer.json(), {k.lower(): v for k, v in answer.headers.items()}
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (it is on PATH in the course's images)")
    path = tmp_path / "body.json"
    path.write_bytes(body)
    done = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "60", "--dump-header", "-",
                           "--write-out", "\n%{http_code}", "-H", "Content-Type: application/json",
                           "--data-binary", f"@{path}", url], capture_output=True, timeout=90)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    text, status = done.stdout.decode().rsplit("\n", 1)  # decoded by hand: text=True would drop the \r
    head, document = text.split("\r\n\r\n", 1) if "\r\n\r\n" in text else ("", text)
    while head.startswith("HTTP/1.1 100"):  # an interim answer to Expect: 100-continue
        head, document = document.split("\r\n\r\n", 1)
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
    return int(status), json.loads(document), {k.lower(): v for k, v in fields.items()}


def assert_refused_with_advice(status: int, document: dict, what) -> None:
    assert status == 413, (what, status, document)
    assert document["error_code"] == "PAYLOAD_TOO_LARGE", (what, document)
    message = document["message"]
    assert f"the limit is {gateway.MAX_BODY_BYTES:,} bytes" in message, (what, message)
    assert f"at most {gateway.MAX_ROWS:,} rows" in message and "score_over_http" in message, (what, message)
    assert "predict_file" in message, (what, message)


def assert_still_serving(served) -> None:
    answer = served["server"].client().post(*serving.payload(served["X"]))
    assert answer.status == 200 and answer.body == {"predictions": served["expected"].tolist()}, answer


@pytest.mark.integration
@pytest.mark.parametrize("size", [gateway.MAX_BODY_BYTES + 1, 20_000_000], ids=["1MB+1", "20MB"])
@pytest.mark.parametrize("client", ["urllib", "requests", "curl"])
def test_every_client_reads_the_413_of_an_oversized_body_and_the_server_keeps_serving(served, client, size, tmp_path):
    body = oversized(served["X"], size)
    assert len(body) == size and json.loads(body)["dataframe_split"]  # a well-formed request, only too large
    status, document, headers = send(client, served["url"], body, tmp_path)
    assert_refused_with_advice(status, document, client)
    assert f"the body has {size:,} bytes" in document["message"]
    assert headers.get("connection") == "close", headers
    assert_still_serving(served)


@pytest.mark.integration
@pytest.mark.parametrize("client", ["requests", "urllib"])
def test_a_chunked_oversized_body_without_content_length_gets_413_too(served, client, tmp_path):
    piece = b"x" * 2**16
    sent = []

    def body():
        yield serving.payload(served["X"])[0][:-1] + b', "padding": "'
        for _ in range(300):  # about 19.7 MB
            sent.append(len(piece))
            yield piece
        yield b'"}'

    if client == "requests":
        import requests

        answer = requests.post(served["url"], data=body(), headers={"Content-Type": "application/json"}, timeout=60)
        assert answer.request.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in answer.request.headers
        status, document = answer.status_code, answer.json()
    else:
        status, document, _ = send("urllib", served["url"], body(), tmp_path)  # an iterable: urllib sends it chunked
    assert_refused_with_advice(status, document, client)
    assert sum(sent) == 300 * len(piece), "the client sent the whole body"
    assert_still_serving(served)
