"""A validating scoring server: MLflow's scoring protocol, strict about its input, with a fast path.

MLflow's own scoring server trusts its input more than a production endpoint should. Checked with
MLflow 3.17.2 and the course's credit model, it answers a deeply nested JSON body with 500, a missing
content type with 500, and silently predicts for a row with an extra column (dropped), ``true`` as an
age (read as 1) and ``2.5`` years as an integer (truncated). This module puts an
:class:`InputContract`, built from the model's signature, in front of the model:

- every request is parsed and checked before the model sees it: body size, content type, JSON
  syntax and nesting, exactly one known input key, the column names (missing, unexpected,
  misspelt: with a suggestion), one type per column, no null in a required column, no all-null
  row, no NaN or infinity, a row limit;
- every refusal is a 4xx with a JSON body ``{"error_code": ..., "message": ...}`` whose message
  names the problem (column, row, what was expected), never a 5xx and never a silent prediction;
- when the model carries a **data contract** (the raw-input rules of
  ``mlops_lab/specs/<dataset>.yaml``, logged in its ``MLmodel`` metadata by
  :func:`mlops_lab.training.log_sklearn_model`), every well-typed value is also checked against
  it: an unknown category, an amount below zero or an age of 7 gets 400 ``CONTRACT_VIOLATION``
  naming row, column, value and rule in the very words of the training-time validation report
  (:meth:`mlops_lab.quality.Contract.problem`). With ``contract_policy="flag"`` such rows are
  scored instead, the answer lists them under ``contract_violations`` and ``GET /metrics``
  (Prometheus text) counts them per rule.

The same server has three back ends behind the contract:

- ``pyfunc``: the MLflow model, loaded in-process (what ``mlflow models serve`` runs);
- ``onnx``: the same scikit-learn pipeline converted to ONNX and run by onnxruntime (the fast path;
  parity with scikit-learn is checked at start-up, on the model's input example);
- ``proxy``: a validating layer in front of a running MLflow scoring server (``--upstream``).

Run it with ``python -m mlops_lab.gateway --model-uri URI --backend onnx --port 5002``, or from
Python with :func:`mlops_lab.serving.gateway_server`. It answers ``/ping``, ``/health``,
``/version``, ``/invocations`` like MLflow's server, ``/contract`` with what it accepts and
``/metrics`` with its data-contract counters (one set per worker process).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import io
import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from mlops_lab import quality

MAX_BODY_BYTES = 1_000_000
"""Largest request body accepted (bytes); larger bodies get 413."""
MAX_ROWS = 5_000
"""Most rows accepted in one request; more get 413 (send them in chunks)."""
DRAIN_LIMIT_BYTES = 64 * 2**20
"""Most bytes :func:`read_body` reads and discards from a body over the limit before it answers 413
(so a client that sends the whole body before reading the answer, like ``urllib.request``, reads it);
beyond this it gives up and the connection is closed unread (the client may see a reset)."""
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
BACKENDS = ("pyfunc", "onnx", "proxy")
CONTRACT_POLICIES = ("refuse", "flag")
"""What the gateway does with a row that breaks the model's data contract: refuse the request
(400 ``CONTRACT_VIOLATION``) or score it and flag it (``contract_violations`` + a counter)."""
DATA_CONTRACT_KEY = "data_contract"
"""The key of the data contract in a logged model's metadata (``MLmodel``)."""
VIOLATIONS_METRIC = "mlops_gateway_contract_violations"
"""Prometheus counter (exposed as ``mlops_gateway_contract_violations_total{rule, action}``): rows
that broke a rule of the data contract, ``action="refused"`` or ``"flagged"`` (scored anyway)."""
FLOAT32_MAX = 3.4028234663852886e38
_log = logging.getLogger("mlops_lab.gateway")
_KIND_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false"}
_DTYPES = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32", "boolean": "bool", "string": "object"}
_MAX_NAMES_SHOWN = 10
_MLFLOW_KINDS = {"long": "integer", "integer": "integer", "double": "number", "float": "number",
                 "string": "string", "boolean": "boolean"}


class RequestError(ValueError):
    """A request the contract refuses: ``status`` (400, 413 or 415) and a message naming the problem."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def to_json(self) -> dict[str, str]:
        return {"error_code": self.code, "message": self.message}


class ContractViolation(RequestError):
    """A well-typed request whose values break the model's data contract (400 ``CONTRACT_VIOLATION``).

    ``violations`` lists every offending value as ``{"row", "column", "value", "rule", "message"}``;
    the message shows the first five, each as ``row R, <the training report's sentence>``."""

    def __init__(self, violations: list[dict]) -> None:
        super().__init__(400, quality.describe_violations(violations), "CONTRACT_VIOLATION")
        self.violations = violations


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object, refusing duplicated keys (json.loads would silently keep the last one)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        duplicated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})[:_MAX_NAMES_SHOWN]
        raise RequestError(400, f"duplicated key(s) {duplicated} in a JSON object")
    return out


def _names(names: list[str]) -> str:
    """At most the first ten names, for messages (a request may carry thousands)."""
    shown = [n[:60] for n in names[:_MAX_NAMES_SHOWN]]
    return f"{shown}" + (f" and {len(names) - _MAX_NAMES_SHOWN} more" if len(names) > _MAX_NAMES_SHOWN else "")


def _reject_constant(name: str) -> float:
    raise RequestError(400, f"the JSON body contains {name}: only finite numbers are valid inputs")


@dataclass(frozen=True)
class Column:
    """One input column: its name, its kind (integer, number, string, boolean), whether it is required."""

    name: str
    kind: str
    required: bool = True
    mlflow_type: str = ""  # long, integer, double, float, string, boolean: the dtype the model receives

    @property
    def dtype(self) -> str:
        return _DTYPES.get(self.mlflow_type) or {"integer": "int64", "number": "float64", "boolean": "bool"}.get(self.kind, "object")

    @property
    def bounds(self) -> tuple[int, int]:
        bits = 32 if self.mlflow_type == "integer" else 64
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class InputContract:
    """The inputs a model accepts, from its MLflow signature, and the parser that enforces them.

    ``data_contract`` (a :class:`~mlops_lab.quality.Contract`, normally the one logged with the
    model) adds the value rules of the raw input: allowed categories and ranges, checked on every
    present value of its columns after the type checks; ``contract_policy`` says what a row that
    breaks them gets (:data:`CONTRACT_POLICIES`). Signature columns the data contract does not
    cover are checked for their type only.
    """

    columns: tuple[Column, ...]
    max_rows: int = MAX_ROWS
    max_body_bytes: int = MAX_BODY_BYTES
    data_contract: quality.Contract | None = None
    contract_policy: str = "refuse"

    def __post_init__(self) -> None:
        if self.contract_policy not in CONTRACT_POLICIES:
            raise ValueError(f"unknown contract policy {self.contract_policy!r}; choose one of {CONTRACT_POLICIES}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def value_rules(self) -> tuple[quality.ColumnRule, ...]:
        """The data contract's rules for this model's columns, in the signature's order."""
        if self.data_contract is None:
            return ()
        return tuple(self.data_contract.columns[c.name] for c in self.columns if c.name in self.data_contract.columns)

    @cached_property
    def _screens(self) -> tuple:
        # (column, rule, allowed set or None): a C-speed first look at a whole column; a column it
        # cannot clear is checked value by value with Contract.problem, which has the last word
        return tuple((r.column, r, frozenset(r.allowed) if r.allowed is not None else None) for r in self.value_rules)

    @classmethod
    def from_signature(cls, signature, **kwargs) -> "InputContract":
        """The contract of an MLflow ``ModelSignature`` with named, typed columns."""
        if signature is None or signature.inputs is None:
            raise ValueError("The model has no signature: log it with one (see lesson 03) so inputs can be checked")
        columns = []
        for spec in signature.inputs.inputs:
            mlflow_type = getattr(spec.type, "name", str(spec.type))
            kind = _MLFLOW_KINDS.get(mlflow_type)
            if spec.name is None or kind is None:
                raise ValueError(f"Unsupported input in the signature: {spec} (named scalar columns only)")
            columns.append(Column(spec.name, kind, bool(getattr(spec, "required", True)), mlflow_type))
        return cls(tuple(columns), **kwargs)

    @classmethod
    def from_model(cls, model_uri: str, **kwargs) -> "InputContract":
        """The contract of a logged model: its signature and, when it carries one, its data contract
        (``data_contract=None`` leaves the data contract out; ``contract_policy`` is passed on)."""
        model = _local_model(model_uri)[1]
        if "data_contract" not in kwargs:
            kwargs["data_contract"] = _contract_in(model)
        return cls.from_signature(model.signature, **kwargs)

    def describe(self) -> dict:
        """What the server accepts, as JSON (served at ``/contract``), with the data contract's rules."""
        out = {"columns": [{"name": c.name, "type": c.kind, "required": c.required} for c in self.columns],
               "formats": [*INPUT_KEYS, "text/csv"], "max_rows": self.max_rows,
               "max_body_bytes": self.max_body_bytes}
        if self.data_contract is not None:
            rules = []
            for r in self.value_rules:
                rule = {"column": r.column, "rule": r.rule, "says": r.says}
                if r.allowed is not None:
                    rule["allowed"] = list(r.allowed)
                if r.range is not None:
                    rule["range"] = list(r.range)
                rules.append(rule)
            out["data_contract"] = {"name": self.data_contract.name, "version": self.data_contract.version,
                                    "policy": self.contract_policy, "rules": rules}
        return out

    # -- parsing ---------------------------------------------------------------------------------
    def parse(self, body: bytes, content_type: str | None) -> tuple[pd.DataFrame, dict | None]:
        """Check a request and return the model input (typed DataFrame) and its params, or raise
        :class:`RequestError`."""
        columns, params = self.parse_columns(body, content_type)
        return self.to_frame(columns), params

    def to_frame(self, columns: dict[str, list]) -> pd.DataFrame:
        """Checked columns (from :meth:`parse_columns`) as a DataFrame with one dtype per kind."""
        frame = pd.DataFrame(columns, columns=self.names)
        for column in self.columns:
            if column.kind == "integer" and not column.required and frame[column.name].isna().any():
                frame[column.name] = frame[column.name].astype("float64")  # missing values need a float column
            else:
                frame[column.name] = frame[column.name].astype(column.dtype)
        return frame

    def parse_columns(self, body: bytes, content_type: str | None) -> tuple[dict[str, list], dict | None]:
        """Like :meth:`parse`, but the checked values come as plain lists, one per column, in the
        contract's order (no pandas: the fast path feeds them to onnxruntime directly)."""
        columns, params = self.check_types(body, content_type)
        self.enforce(columns)
        return columns, params

    def enforce(self, columns: dict[str, list]) -> list[dict]:
        """Apply the data contract to checked columns: under ``refuse`` raise
        :class:`ContractViolation` if a value breaks it; under ``flag`` return the violations."""
        if not self.value_rules:
            return []
        found = self.violations(columns)
        if found and self.contract_policy == "refuse":
            raise ContractViolation(found)
        return found

    def violations(self, columns: dict[str, list]) -> list[dict]:
        """Every value of checked columns that breaks the data contract, in row order, as
        ``{"row", "column", "value", "rule", "message"}``; the message is exactly
        :meth:`~mlops_lab.quality.Contract.problem`'s (the training-time report's sentence)."""
        found = []
        for position, (name, rule, allowed) in enumerate(self._screens):
            values = columns[name]
            if allowed is not None:
                if allowed.issuperset(values):
                    continue
            elif rule.range is not None:
                try:
                    if rule.range[0] <= min(values) and max(values) <= rule.range[1]:
                        continue
                except (TypeError, ValueError):  # a null among them (an optional column): one by one
                    pass
            for row, value in enumerate(values):
                message = self.data_contract.problem(name, value)
                if message is not None:
                    found.append((row, position, {"row": row, "column": name, "value": value, "rule": rule.rule,
                                                  "message": message}))
        found.sort(key=lambda item: item[:2])
        return [item[2] for item in found]

    def check_types(self, body: bytes, content_type: str | None) -> tuple[dict[str, list], dict | None]:
        """The request's values checked against the signature (format, names, types), as plain lists;
        the data contract is :meth:`enforce`'s job."""
        if len(body) > self.max_body_bytes:
            raise _too_large(f"{len(body):,} bytes", self.max_body_bytes, self.max_rows)
        mime, charset = _content_type(content_type)
        if not body.strip():
            raise RequestError(400, "the request body is empty: send rows to score")
        try:
            text = body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise RequestError(400, f"the body is not valid {charset} text: {exc}") from exc
        if mime == "text/csv":
            return self._checked(*self._csv(text)), None
        try:
            document = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        except RecursionError:
            raise RequestError(400, "the JSON body is nested too deeply") from None
        except RequestError:
            raise
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except ValueError as exc:  # e.g. an integer literal with thousands of digits
            raise RequestError(400, f"the body is not valid JSON input: {str(exc)[:120]}") from None
        if not isinstance(document, dict):
            raise RequestError(400, f"the JSON body must be an object with one of the keys {list(INPUT_KEYS)}, "
                                    f"got {_type_name(document)}")
        unknown = [k for k in document if k not in (*INPUT_KEYS, "params")]
        given = [k for k in INPUT_KEYS if k in document]
        if unknown:
            raise RequestError(400, f"unknown key(s) {_names(unknown)} in the body; use exactly one of "
                                    f"{list(INPUT_KEYS)} (and optionally 'params')"
                                    + _suggest(unknown[:_MAX_NAMES_SHOWN], INPUT_KEYS))
        if len(given) != 1:
            raise RequestError(400, f"the body must have exactly one of {list(INPUT_KEYS)}, got {given or 'none'}")
        params = document.get("params")
        if params is not None:
            names = list(params)[:_MAX_NAMES_SHOWN] if isinstance(params, dict) else _type_name(params)
            raise RequestError(400, f"this model takes no params, got {names!r:.200}: its signature declares none")
        key = given[0]
        columns, rows = self._json_rows(key, document[key])
        return self._checked(columns, rows), None

    def _json_rows(self, key: str, data: Any) -> tuple[list[str], list[list]]:
        if key == "dataframe_split":
            if not isinstance(data, dict):
                raise RequestError(400, f"'dataframe_split' must be an object with 'columns' and 'data', got {_type_name(data)}")
            extra = [k for k in data if k not in ("columns", "data", "index")]
            if extra:
                raise RequestError(400, f"unknown key(s) {extra} in 'dataframe_split'; it takes 'columns', 'data' (and 'index')")
            columns, rows = data.get("columns"), data.get("data")
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise RequestError(400, "'dataframe_split' needs 'columns': a list of column names")
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise RequestError(400, "'dataframe_split' needs 'data': a list of rows, each a list of values")
            for i, row in enumerate(rows):
                if len(row) != len(columns):
                    raise RequestError(400, f"row {i} has {len(row)} values for {len(columns)} columns")
            return columns, rows
        if isinstance(data, dict) and key in ("inputs", "instances"):
            if not all(isinstance(v, list) for v in data.values()):
                raise RequestError(400, f"'{key}' as an object must map each column to a list of values")
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise RequestError(400, f"the columns in '{key}' have different lengths: {sorted(lengths)}")
            columns = list(data)
            return columns, [list(values) for values in zip(*data.values())] if columns else []
        if not isinstance(data, list):
            raise RequestError(400, f"'{key}' must be a list of records ({{column: value}}), got {_type_name(data)}")
        if not data:
            return self.names, []
        if not all(isinstance(r, dict) for r in data):
            bad = next(i for i, r in enumerate(data) if not isinstance(r, dict))
            raise RequestError(400, f"'{key}' must be a list of records ({{column: value}}); item {bad} is {_type_name(data[bad])}")
        columns = list(data[0])
        for i, record in enumerate(data):
            if list(record) != columns and set(record) != set(columns):
                raise RequestError(400, f"record {i} has the columns {sorted(record)}, record 0 has {sorted(columns)}")
        return columns, [[record[c] for c in columns] for record in data]

    def _csv(self, text: str) -> tuple[list[str], list[list]]:
        reader = csv.reader(io.StringIO(text))
        try:
            table = list(reader)
        except csv.Error as exc:
            raise RequestError(400, f"the CSV body cannot be read: {exc}") from None
        table = [row for row in table if row]
        if not table:
            raise RequestError(400, "the CSV body has no header row")
        header, rows = table[0], table[1:]
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise RequestError(400, f"CSV row {i + 1} has {len(row)} fields for {len(header)} columns")
        kinds = {c.name: c.kind for c in self.columns}
        converted = [[_from_csv(value, kinds.get(name)) for name, value in zip(header, row)] for row in rows]
        return header, converted

    def _checked(self, columns: list[str], rows: list[list]) -> dict[str, list]:
        if len(columns) > 2 * len(self.columns) + 10:
            raise RequestError(400, f"the request has {len(columns):,} columns; the model expects {len(self.columns)}: "
                                    f"{self.names}")
        bad_names = [c for c in columns if not isinstance(c, str) or not _valid_text(c)]
        if bad_names:
            raise RequestError(400, f"column names must be valid Unicode text, got {len(bad_names)} that are not")
        counts = Counter(columns)
        duplicated = sorted(c for c, n in counts.items() if n > 1)
        if duplicated:
            raise RequestError(400, f"duplicated column(s) {_names(duplicated)}")
        expected = set(self.names)
        missing = [c for c in self.names if c not in counts]
        unexpected = [c for c in columns if c not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing column(s) {_names(missing)}")
            if unexpected:
                parts.append(f"unexpected column(s) {_names(unexpected)}"
                             + _suggest(unexpected[:_MAX_NAMES_SHOWN], missing or self.names))
            raise RequestError(400, "; ".join(parts) + f". The model expects {self.names}")
        if not rows:
            raise RequestError(400, "the request has no rows to score")
        if len(rows) > self.max_rows:
            raise RequestError(413, f"the request has {len(rows):,} rows; the limit is {self.max_rows:,}: "
                                    "send them in chunks", "PAYLOAD_TOO_LARGE")
        position = {c: i for i, c in enumerate(columns)}
        problems: list[str] = []
        empty = {r for r, row in enumerate(rows) if all(v is None for v in row)}
        problems += [f"row {r} has no values (every column is null)" for r in sorted(empty)[:5]]
        out = {}
        for column in self.columns:
            i = position[column.name]
            values = []
            for r, row in enumerate(rows):
                value, problem = (None, None) if r in empty else _check(row[i], column)
                if problem and len(problems) < 5:
                    problems.append(f"row {r}, column '{column.name}': {problem}")
                values.append(value)
            out[column.name] = values
        if problems:
            more = "" if len(problems) < 5 else " (first 5 problems shown)"
            raise RequestError(400, "; ".join(problems[:5]) + more)
        return out


def _content_type(header: str | None) -> tuple[str, str]:
    if not header:
        raise RequestError(415, "the request has no Content-Type: send application/json or text/csv",
                           "UNSUPPORTED_MEDIA_TYPE")
    mime, *parameters = [part.strip() for part in header.split(";")]
    charset = "utf-8"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if mime.lower() not in ("application/json", "text/csv"):
        raise RequestError(415, f"unsupported Content-Type {mime!r}: send application/json or text/csv",
                           "UNSUPPORTED_MEDIA_TYPE")
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, f"unsupported charset {charset!r}: send UTF-8", "UNSUPPORTED_MEDIA_TYPE")
    return mime.lower(), "utf-8"


def _suggest(names: list[str], choices) -> str:
    lower = {c.lower(): c for c in choices}
    hints = [f"'{lower[m[0]]}' for '{n}'" for n in names
             if (m := difflib.get_close_matches(n.lower(), list(lower), n=1, cutoff=0.6))]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _check(value: Any, column: Column) -> tuple[Any, str | None]:
    """The value in the column's type, or a problem naming what was expected and what came."""
    if value is None:
        return None, ("missing value (null): every input of this model is required" if column.required else None)
    kind = column.kind
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"expected an integer, got {_type_name(value)} {_short(value)}"
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                return None, f"expected an integer, got {value!r}"
            value = int(value)
        low, high = column.bounds
        if not low <= value <= high:
            return None, f"integer out of range (the model takes {low:,} to {high:,}), got {_short(value)}"
        return value, None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"expected a number, got {_type_name(value)} {_short(value)}"
        try:
            number = float(value)
        except OverflowError:
            return None, f"number out of range, got {_short(value)}"
        if not math.isfinite(number):
            return None, f"expected a finite number, got {_short(value)}"
        return number, None
    if kind == "boolean":
        return (value, None) if isinstance(value, bool) else (None, f"expected true or false, got {_type_name(value)}")
    if not isinstance(value, str):
        return None, f"expected a string, got {_type_name(value)} {_short(value)}"
    if not _valid_text(value):
        return None, "the text is not valid Unicode (it holds a lone surrogate)"
    if column.required and not value.strip():
        return None, "empty text: every input of this model is required"
    return value, None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CSV_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_CSV_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")


def _from_csv(text: str, kind: str | None) -> Any:
    """A CSV field in the column's type (an empty field is null; bad values pass through to be refused)."""
    if text == "":
        return None
    if kind in ("integer", "number"):
        if _CSV_INTEGER.fullmatch(text):
            return int(text)
        if _CSV_NUMBER.fullmatch(text):
            return float(text)
        return text  # refused by the column check, which names it
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), text)
    return text


# -- back ends ------------------------------------------------------------------------------------

class Backend:
    """Scores a validated DataFrame; ``name`` says which back end it is."""

    name = "base"

    async def predict(self, frame: pd.DataFrame) -> tuple[int, dict]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class PyfuncBackend(Backend):
    name = "pyfunc"

    def __init__(self, model_uri: str) -> None:
        import mlflow

        self.model = mlflow.pyfunc.load_model(model_uri)

    async def predict(self, frame: pd.DataFrame) -> tuple[int, dict]:
        from starlette.concurrency import run_in_threadpool

        out = await run_in_threadpool(self.model.predict, frame)
        return 200, {"predictions": _jsonable(out)}


class OnnxBackend(Backend):
    """The fast path: the pipeline converted to ONNX, checked against scikit-learn on the input example."""

    name = "onnx"

    def __init__(self, model_uri: str, contract: InputContract) -> None:
        import mlflow

        from mlops_lab import packaging

        pipeline = mlflow.sklearn.load_model(model_uri)
        example = _input_example(model_uri, contract)
        self.predictor = packaging.OnnxPredictor(packaging.to_onnx(pipeline, example))
        check = packaging.parity(pipeline, self.predictor, example)
        if not check["within_tolerance"]:
            raise RuntimeError(f"ONNX and scikit-learn disagree on the input example: {check}")
        self.kinds = {c.name: c.kind for c in contract.columns}

    async def predict(self, frame: pd.DataFrame) -> tuple[int, dict]:
        return 200, {"predictions": _jsonable(self.predictor.predict(frame))}

    async def predict_columns(self, columns: dict[str, list]) -> tuple[int, dict]:
        """Checked columns straight into onnxruntime (numbers as float32, text as strings), no DataFrame."""
        import numpy as np

        feeds = {name: (np.asarray(values, dtype=np.float64) if self.kinds[name] in ("integer", "number")
                        else np.asarray(values, dtype=object)).reshape(-1, 1) for name, values in columns.items()}
        for name, values in feeds.items():
            if values.dtype == np.float64:
                if (np.abs(values) > FLOAT32_MAX).any():
                    raise RequestError(400, f"column '{name}': a value is too large for this model "
                                            f"(it computes in 32-bit floats, up to {FLOAT32_MAX:.3g})")
                feeds[name] = values.astype(np.float32)
        return 200, {"predictions": self.predictor.session.run(None, feeds)[0].tolist()}


class ProxyBackend(Backend):
    """A validating layer in front of an MLflow scoring server: only checked rows reach it."""

    name = "proxy"

    def __init__(self, upstream: str) -> None:
        import httpx

        self.upstream = upstream.rstrip("/")
        self.client = httpx.AsyncClient(base_url=self.upstream, timeout=60.0)

    async def predict(self, frame: pd.DataFrame) -> tuple[int, dict]:
        import httpx

        from mlops_lab.serving import payload

        body, content_type = payload(frame, "dataframe_split")
        try:
            answer = await self.client.post("/invocations", content=body, headers={"Content-Type": content_type})
        except httpx.HTTPError as exc:
            return 503, {"error_code": "UPSTREAM_UNAVAILABLE",
                         "message": f"the model server at {self.upstream} did not answer: {type(exc).__name__}"}
        try:
            document = answer.json()
        except ValueError:
            document = {"message": answer.text[:500]}
        if answer.status_code >= 500 or not isinstance(document, dict):
            _log.error("upstream %s answered %s: %.2000s", self.upstream, answer.status_code, document)
            return 502, {"error_code": "UPSTREAM_ERROR",
                         "message": f"the model server failed (HTTP {answer.status_code}); its log has the details"}
        if answer.status_code >= 400:  # pass the refusal on, without MLflow's stack trace
            return answer.status_code, {"error_code": str(document.get("error_code", "BAD_REQUEST")),
                                        "message": str(document.get("message", ""))[:2000]}
        return answer.status_code, document

    async def close(self) -> None:
        await self.client.aclose()


def _jsonable(values) -> list:
    import numpy as np

    return np.asarray(values).tolist()


def _local_model(model_uri: str):
    """The model's local folder and its ``MLmodel`` (downloaded once; a local path is used as is)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    local = download_artifacts(model_uri)
    return local, Model.load(local)


def _input_example(model_uri: str, contract: InputContract) -> pd.DataFrame:
    """The model's logged input example, parsed through the contract (so dtypes match requests)."""
    from mlops_lab import serving

    local, model = _local_model(model_uri)
    example = model.load_input_example(local)
    if example is None:
        raise ValueError(f"{model_uri} has no input example; the ONNX back end needs one to check parity")
    body, content_type = serving.payload(pd.DataFrame(example), "dataframe_split")
    return contract.to_frame(contract.check_types(body, content_type)[0])  # types only: parity, not policy


def _contract_in(model) -> quality.Contract | None:
    """The data contract in a loaded ``MLmodel``'s metadata, or ``None``."""
    spec = (model.metadata or {}).get(DATA_CONTRACT_KEY)
    return None if spec is None else quality.Contract.from_dict(spec)


def data_contract(model_uri: str) -> quality.Contract | None:
    """The data contract a logged model carries (its ``MLmodel`` metadata), or ``None`` if it has none.

    ``model_uri`` is anything MLflow resolves (``runs:/``, ``models:/name@alias``, ``models:/m-...``,
    a local folder); only the ``MLmodel`` file is read. It is the contract the gateway enforces."""
    from mlflow.models import Model

    return _contract_in(Model.load(model_uri))


# -- the app --------------------------------------------------------------------------------------

def build_app(contract: InputContract, backend: Backend):
    """A Starlette app speaking MLflow's scoring protocol, with ``contract`` in front of ``backend``.

    ``GET /metrics`` serves the data-contract counter :data:`VIOLATIONS_METRIC` in Prometheus text
    format: one series per rule, at zero until a row breaks it (each worker process counts its own)."""
    from importlib.metadata import version

    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client import Counter as PromCounter
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    mlflow_version = version("mlflow")
    fast = hasattr(backend, "predict_columns")
    flagging = contract.contract_policy == "flag"
    registry = CollectorRegistry()
    broken = PromCounter(VIOLATIONS_METRIC, "Rows that broke a rule of the model's data contract: refused "
                         "(the request got 400) or flagged (scored, and listed in the answer)",
                         ["rule", "action"], registry=registry)
    for rule in dict.fromkeys(r.rule for r in contract.value_rules):
        broken.labels(rule=rule, action="flagged" if flagging else "refused")  # a series at zero from the start

    def count(violations: list[dict], action: str) -> None:
        for _, rule in {(v["row"], v["rule"]) for v in violations}:  # rows per rule, not values
            broken.labels(rule=rule, action=action).inc()

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def version_route(request: Request) -> Response:
        return Response(mlflow_version, media_type="application/json")

    def answer(document: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        # json.dumps escapes non-ASCII, so even a lone surrogate echoed in a message cannot break the answer
        return Response(json.dumps(document), status_code=status, headers=headers, media_type="application/json")

    async def describe(request: Request) -> Response:
        return answer({**contract.describe(), "backend": backend.name})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def invocations(request: Request) -> Response:
        try:
            body = await read_body(request, contract.max_body_bytes, max_rows=contract.max_rows)
        except RequestError as error:  # the body was drained (or given up on): end the connection cleanly
            return answer(error.to_json(), error.status, headers={"Connection": "close"})
        try:
            columns, _ = contract.check_types(body, request.headers.get("content-type"))
            flagged = contract.enforce(columns)
        except ContractViolation as error:
            count(error.violations, "refused")
            return answer(error.to_json(), error.status)
        except RequestError as error:
            return answer(error.to_json(), error.status)
        try:
            if fast:
                status, document = await backend.predict_columns(columns)
            else:
                status, document = await backend.predict(contract.to_frame(columns))
        except RequestError as error:  # a value the back end cannot represent (e.g. beyond float32)
            return answer(error.to_json(), error.status)
        except Exception:  # a checked request should never get here: log the details, tell the client little
            _log.exception("the model failed on a checked request")
            return answer({"error_code": "INTERNAL_ERROR",
                           "message": "the model failed on a valid request; the server's log has the details"}, 500)
        if flagging and status == 200:
            count(flagged, "flagged")
            document = {**document, "contract_violations": flagged}
        return answer(document, status)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await backend.close()

    return Starlette(routes=[Route("/ping", ping), Route("/health", ping), Route("/version", version_route),
                             Route("/contract", describe), Route("/metrics", metrics),
                             Route("/invocations", invocations, methods=["POST"])],
                     lifespan=lifespan)


def _too_large(size: str, limit: int, max_rows: int = MAX_ROWS) -> RequestError:
    """The 413 ``PAYLOAD_TOO_LARGE`` for a body of ``size`` (words, e.g. ``"2,000,000 bytes"``): it states
    the limit and what to send instead."""
    return RequestError(413, f"the body has {size}; the limit is {limit:,} bytes per request. Send the rows in "
                             f"chunks of at most {max_rows:,} rows and {limit:,} bytes per request "
                             "(mlops_lab.serving.score_over_http(client, X, chunk_size=...) does it), or score "
                             "them as a batch job (mlops_lab.serving.predict_file)", "PAYLOAD_TOO_LARGE")


async def read_body(request, limit: int = MAX_BODY_BYTES, *, max_rows: int = MAX_ROWS,
                    drain_limit: int = DRAIN_LIMIT_BYTES) -> bytes:
    """The body of a Starlette ``request``, at most ``limit`` bytes, or :class:`RequestError`.

    - a ``Content-Length`` that is not a non-negative integer: 400 ``BAD_REQUEST``;
    - a body over ``limit`` bytes, declared by ``Content-Length`` or streamed (chunked): 413
      ``PAYLOAD_TOO_LARGE``, whose message states the limit and how to send the rows instead
      (``max_rows`` per request, or batch scoring). Before raising, the rest of the body is read and
      discarded, up to ``drain_limit`` bytes in all, so that clients which send the whole body before
      reading the answer (``urllib.request``) can read the 413 instead of a reset connection. A body
      declared larger than ``drain_limit``, or one announced with ``Expect: 100-continue`` (the client
      waits for the answer before sending it), is refused at once without reading it; a streamed body
      is read until it passes ``drain_limit``, then given up.

    Answer a :class:`RequestError` from here with a ``Connection: close`` header: the connection may
    hold the unread part of a body, so it must not carry another request.
    """
    from starlette.requests import ClientDisconnect

    header = request.headers.get("content-length")
    declared = None
    if header is not None:
        try:
            declared = int(header)
        except ValueError:
            declared = -1
        if declared < 0:
            raise RequestError(400, f"the Content-Length header {header[:40]!r} is not a number of bytes")
        if declared > limit and (declared > drain_limit
                                 or request.headers.get("expect", "").lower() == "100-continue"):
            raise _too_large(f"{declared:,} bytes", limit, max_rows)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > drain_limit:  # give up: a client must not keep the server reading
                raise _too_large(f"more than {drain_limit:,} bytes", limit, max_rows)  # streamed: none declared
            else:
                chunks.clear()  # over the limit: keep reading, keep nothing
    except ClientDisconnect:
        raise RequestError(400, f"the client closed the connection after {size:,} bytes of the body") from None
    if size > limit:
        raise _too_large(f"{size:,} bytes", limit, max_rows)
    return b"".join(chunks)


def make_backend(backend: str, model_uri: str, contract: InputContract, upstream: str | None = None) -> Backend:
    if backend == "pyfunc":
        return PyfuncBackend(model_uri)
    if backend == "onnx":
        return OnnxBackend(model_uri, contract)
    if backend == "proxy":
        if not upstream:
            raise ValueError("the proxy back end needs --upstream, the URL of a running MLflow scoring server")
        return ProxyBackend(upstream)
    raise ValueError(f"unknown back end {backend!r}; choose one of {BACKENDS}")


def app_from_env():
    """The app described by ``MLOPS_LAB_GATEWAY_*`` variables (uvicorn's factory for several workers)."""
    model_uri = os.environ["MLOPS_LAB_GATEWAY_MODEL_URI"]
    contract = InputContract.from_model(model_uri,
                                        contract_policy=os.environ.get("MLOPS_LAB_GATEWAY_CONTRACT_POLICY") or "refuse")
    backend = make_backend(os.environ.get("MLOPS_LAB_GATEWAY_BACKEND", "onnx"), model_uri, contract,
                           os.environ.get("MLOPS_LAB_GATEWAY_UPSTREAM") or None)
    return build_app(contract, backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="runs:/..., models:/name@alias, or models:/m-...")
    parser.add_argument("--backend", choices=BACKENDS, default="onnx")
    parser.add_argument("--upstream", help="URL of the MLflow scoring server (proxy back end)")
    parser.add_argument("--contract-policy", choices=CONTRACT_POLICIES, default="refuse",
                        help="a row that breaks the model's data contract: refuse the request (400) or "
                             "score it and flag it in the answer and in /metrics")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    import uvicorn

    os.environ.update({"MLOPS_LAB_GATEWAY_MODEL_URI": args.model_uri, "MLOPS_LAB_GATEWAY_BACKEND": args.backend,
                       "MLOPS_LAB_GATEWAY_UPSTREAM": args.upstream or "",
                       "MLOPS_LAB_GATEWAY_CONTRACT_POLICY": args.contract_policy})
    uvicorn.run("mlops_lab.gateway:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# -- the malformed-request corpus -----------------------------------------------------------------

@dataclass(frozen=True)
class BadRequest:
    """A malformed request, the status a strict server answers and words its message must contain."""

    name: str
    body: bytes
    content_type: str | None
    status: int
    says: str


def malformed_requests(example: pd.DataFrame, contract: quality.Contract | str | None = None) -> list[BadRequest]:
    """The corpus of malformed requests for a model whose input looks like ``example`` (one valid row or more).

    ``example`` needs at least one integer column and one string column (the credit model's input).
    Each entry is refused by :class:`InputContract` with ``status`` and a message containing ``says``.
    With the model's data ``contract`` (a :class:`~mlops_lab.quality.Contract` or a dataset's name),
    the corpus also holds well-typed requests that only the contract refuses: an unknown category,
    integers outside their range, an integer category outside its set (:func:`contract_requests`).
    """
    from mlops_lab.serving import _json_values

    columns = [str(c) for c in example.columns]
    row = _json_values(example.head(1))[0]
    integer = next((c for c in columns if example[c].dtype.kind in "iu"), None)
    text = next((c for c in columns if example[c].dtype == object), None)
    if integer is None or text is None:
        raise ValueError("malformed_requests needs an example with an integer column and a text (object) column; "
                         "pass training.model_input(X) so categories are plain strings")
    i, t = columns.index(integer), columns.index(text)

    def split(cols=None, data=None, **extra) -> bytes:
        body = {"dataframe_split": {"columns": columns if cols is None else cols, "data": [row] if data is None else data}}
        body.update(extra)
        return json.dumps(body).encode()

    def with_value(position: int, value) -> list:
        out = list(row)
        out[position] = value
        return out

    def raw_with(position: int, literal: str) -> bytes:
        values = [json.dumps(v) for v in row]
        values[position] = literal
        return ('{"dataframe_split": {"columns": %s, "data": [[%s]]}}' % (json.dumps(columns), ", ".join(values))).encode()

    record = dict(zip(columns, row))
    csv_header = ",".join(columns)
    csv_row = ",".join(str(v) for v in row)
    many = [row] * (MAX_ROWS + 1)
    J = "application/json"
    cases = [
        BadRequest("truncated JSON", b'{"dataframe_split": {"columns": [', J, 400, "not valid JSON"),
        BadRequest("trailing garbage", split() + b" }}", J, 400, "not valid JSON"),
        BadRequest("single quotes", b"{'dataframe_split': {}}", J, 400, "not valid JSON"),
        BadRequest("not UTF-8", b'{"inputs": "\xff\xfe"}', J, 400, "utf-8"),
        BadRequest("empty body", b"", J, 400, "empty"),
        BadRequest("whitespace body", b"  \n ", J, 400, "empty"),
        BadRequest("wrong content type", split(), "text/plain", 415, "Content-Type"),
        BadRequest("no content type", split(), None, 415, "Content-Type"),
        BadRequest("latin-1 charset", split(), "application/json; charset=latin-1", 415, "charset"),
        BadRequest("a JSON list", json.dumps([row]).encode(), J, 400, "must be an object"),
        BadRequest("a JSON string", b'"hello"', J, 400, "must be an object"),
        BadRequest("empty object", b"{}", J, 400, "exactly one"),
        BadRequest("unknown input key", json.dumps({"rows": [record]}).encode(), J, 400, "unknown key"),
        BadRequest("misspelt input key", json.dumps({"dataframe_splt": {}}).encode(), J, 400, "did you mean"),
        BadRequest("two input keys", json.dumps({"inputs": [record], "instances": [record]}).encode(), J, 400, "exactly one"),
        BadRequest("dataframe_split is a list", json.dumps({"dataframe_split": [row]}).encode(), J, 400, "must be an object"),
        BadRequest("dataframe_split without columns", json.dumps({"dataframe_split": {"data": [row]}}).encode(), J, 400, "'columns'"),
        BadRequest("row of the wrong length", split(data=[row[:-1]]), J, 400, "values for"),
        BadRequest("missing column", split(columns[1:], [row[1:]]), J, 400, "missing column"),
        BadRequest("extra column", split(columns + ["zip_code"], [row + [10115]]), J, 400, "unexpected column"),
        BadRequest("misnamed column", split([c.upper() if c == integer else c for c in columns]), J, 400, "did you mean"),
        BadRequest("duplicated column", split(columns + [integer], [row + [row[i]]]), J, 400, "duplicated"),
        BadRequest("text in an integer column", split(data=[with_value(i, "forty")]), J, 400, "expected an integer"),
        BadRequest("boolean in an integer column", split(data=[with_value(i, True)]), J, 400, "expected an integer"),
        BadRequest("fraction in an integer column", split(data=[with_value(i, 2.5)]), J, 400, "expected an integer"),
        BadRequest("number in a text column", split(data=[with_value(t, 7)]), J, 400, "expected a string"),
        BadRequest("list as a value", split(data=[with_value(i, [1, 2])]), J, 400, "got a list"),
        BadRequest("object as a value", split(data=[with_value(t, {"a": 1})]), J, 400, "got an object"),
        BadRequest("NaN", raw_with(i, "NaN"), J, 400, "NaN"),
        BadRequest("Infinity", raw_with(i, "Infinity"), J, 400, "Infinity"),
        BadRequest("-Infinity", raw_with(i, "-Infinity"), J, 400, "Infinity"),
        BadRequest("number overflowing to inf", raw_with(i, "1e400"), J, 400, "expected an integer"),
        BadRequest("null in a required column", split(data=[with_value(i, None)]), J, 400, "missing value"),
        BadRequest("all-null row", split(data=[row, [None] * len(columns)]), J, 400, "no values"),
        BadRequest("no rows", split(data=[]), J, 400, "no rows"),
        BadRequest("too many rows", split(data=many), J, 413, "limit"),
        BadRequest("huge payload", split(data=[row], padding="x" * (MAX_BODY_BYTES + 1)), J, 413, "limit"),
        BadRequest("deep nesting", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", J, 400, "nested too deeply"),
        BadRequest("nested rows", split(data=[[row]]), J, 400, "values for"),
        BadRequest("undeclared params", split(params={"threshold": 0.3}), J, 400, "params"),
        BadRequest("records with different columns", json.dumps({"dataframe_records": [record, {integer: 1}]}).encode(),
                   J, 400, "record 1"),
        BadRequest("instances as lists", json.dumps({"instances": [row]}).encode(), J, 400, "list of records"),
        BadRequest("inputs of different lengths", json.dumps({"inputs": {c: [v, v] if c == integer else [v]
                                                                         for c, v in record.items()}}).encode(),
                   J, 400, "different lengths"),
        BadRequest("CSV with a wrong header", (csv_header.replace(integer, integer + "_x") + "\n" + csv_row).encode(),
                   "text/csv", 400, "missing column"),
        BadRequest("CSV with text in a number", (csv_header + "\n" + ",".join("x" if k == i else str(v) for k, v in enumerate(row))).encode(),
                   "text/csv", 400, "expected an integer"),
        BadRequest("CSV with an empty field", (csv_header + "\n" + ",".join("" if k == i else str(v) for k, v in enumerate(row))).encode(),
                   "text/csv", 400, "missing value"),
        BadRequest("CSV ragged row", (csv_header + "\n" + csv_row + ",1").encode(), "text/csv", 400, "fields"),
        BadRequest("CSV header only", (csv_header + "\n").encode(), "text/csv", 400, "no rows"),
        BadRequest("integer beyond 64 bits", raw_with(i, "1" + "0" * 30), J, 400, "out of range"),
        BadRequest("integer with 5,000 digits", raw_with(i, "9" * 5000), J, 400, "not valid JSON"),
        BadRequest("duplicated JSON key", ('{"dataframe_records": [{%s, %s}]}' % (
            ", ".join(f'"{c}": {json.dumps(v)}' for c, v in record.items()), f'"{integer}": "forty"')).encode(),
                   J, 400, "duplicated key"),
        BadRequest("lone surrogate in text", raw_with(t, '"\\ud800"'), J, 400, "not valid Unicode"),
        BadRequest("empty text", split(data=[with_value(t, "")]), J, 400, "empty text"),
        BadRequest("thousands of columns", split([f"c{k}" for k in range(5000)], [[0] * 5000]), J, 400, "columns"),
        BadRequest("CSV integer with underscores", (csv_header + "\n" + ",".join("1_000" if k == i else str(v)
                                                                                 for k, v in enumerate(row))).encode(),
                   "text/csv", 400, "expected an integer"),
    ]
    return cases + (contract_requests(example, contract) if contract is not None else [])


def contract_requests(example: pd.DataFrame, contract: quality.Contract | str) -> list[BadRequest]:
    """Well-typed requests that break the data ``contract`` (400, ``says``: the refusal's exact words).

    For each kind of rule that the contract has among ``example``'s columns: an unknown category
    (``"mael"`` in the first text column with allowed values; also in the wrong case, in the third of
    three rows, and as CSV), a negative integer, integers below and above their range, and an
    integer category outside its set. The example's first row must keep the contract.
    """
    from mlops_lab.serving import _json_values

    rules = quality.contract(contract) if isinstance(contract, str) else contract
    columns = [str(c) for c in example.columns]
    rules = rules.inputs(columns)
    row = _json_values(example.head(1))[0]
    broken = [f"{c}: {rules.problem(c, v)}" for c, v in zip(columns, row) if c in rules.columns and rules.problem(c, v)]
    if broken:
        raise ValueError(f"the example's first row breaks the data contract itself: {broken}")
    J = "application/json"

    def kind(column: str) -> str:
        return "text" if example[column].dtype == object else "integer" if example[column].dtype.kind in "iu" else "other"

    def with_value(column: str, value) -> list:
        out = list(row)
        out[columns.index(column)] = value
        return out

    def split(*data: list) -> bytes:
        return json.dumps({"dataframe_split": {"columns": columns, "data": list(data)}}).encode()

    def says(column: str, value, at: int = 0) -> str:
        return f"row {at}, {rules.problem(column, value)}"

    def first_breaking(column: str, candidates) -> Any:
        return next((v for v in candidates if rules.problem(column, v)), None)

    cases = []
    categories = [c for c in columns if c in rules.columns and kind(c) == "text" and rules.columns[c].allowed]
    if categories:
        c = categories[0]
        bad = first_breaking(c, ["mael", "not a category"])
        wrong_case = first_breaking(c, [str(row[columns.index(c)]).title(), str(row[columns.index(c)]).upper()])
        cases.append(BadRequest("unknown category", split(with_value(c, bad)), J, 400, says(c, bad)))
        if wrong_case is not None:
            cases.append(BadRequest("category in the wrong case", json.dumps(
                {"dataframe_records": [dict(zip(columns, with_value(c, wrong_case)))]}).encode(), J, 400, says(c, wrong_case)))
        cases.append(BadRequest("unknown category in the third row", split(row, row, with_value(c, bad)), J, 400,
                                says(c, bad, 2)))
        csv_row = ",".join(str(v) for v in with_value(c, bad))
        cases.append(BadRequest("CSV with an unknown category", (",".join(columns) + "\n" + csv_row).encode(),
                                "text/csv", 400, says(c, bad)))
    ranged = [c for c in columns if c in rules.columns and kind(c) == "integer" and rules.columns[c].range]
    if ranged:
        low, high = (int(v) for v in rules.columns[ranged[0]].range)
        negative = first_breaking(ranged[0], [-abs(int(row[columns.index(ranged[0])])), -1, low - 1])
        if negative is not None:
            cases.append(BadRequest("negative integer", split(with_value(ranged[0], negative)), J, 400,
                                    says(ranged[0], negative)))
        c = ranged[-1]
        low, high = (int(v) for v in rules.columns[c].range)
        below = low - 11 if low > 11 else low - 1  # an age of 7
        cases.append(BadRequest("integer below its range", split(with_value(c, below)), J, 400, says(c, below)))
        c = ranged[1] if len(ranged) > 2 else ranged[0]
        high = int(rules.columns[c].range[1])
        cases.append(BadRequest("integer above its range", json.dumps(
            {"inputs": {k: [v] for k, v in zip(columns, with_value(c, high + 1))}}).encode(), J, 400, says(c, high + 1)))
    levels = [c for c in columns if c in rules.columns and kind(c) == "integer" and rules.columns[c].allowed]
    if levels:
        c = levels[0]
        bad = first_breaking(c, [9, max(rules.columns[c].allowed) + 1])
        cases.append(BadRequest("integer category outside its set", split(with_value(c, bad)), J, 400, says(c, bad)))
    return cases
