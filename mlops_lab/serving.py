"""Local inference serving: ``mlflow models serve`` as a managed process, a typed client, batch scoring.

    with serving.model_server("models:/credit-risk@champion") as server:
        client = server.client()
        client.predict(X.head(3))                      # -> array of predictions

The server speaks MLflow's scoring protocol: ``GET /ping`` and ``/health`` (200 once the model is
loaded), ``GET /version`` (the MLflow version) and ``POST /invocations`` with a JSON body holding
one of ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (plus optional
``params``), or a CSV body. :class:`ScoringClient` builds each of those bodies from a DataFrame, so
a lesson can show every format and check they all give the same answer.

Batch scoring three ways (identical results, a test proves it): :func:`predict_file` runs
``mlflow models predict`` on a CSV file, :func:`predict_in_chunks` calls a loaded pyfunc model
chunk by chunk with a progress bar, :func:`score_over_http` sends chunks to a running server.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs", "csv")
"""The request formats of MLflow's scoring protocol, as :meth:`ScoringClient.payload` builds them."""


class ServingError(RuntimeError):
    """A scoring request was refused or failed; ``status`` is the HTTP status (0: no response)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Response:
    """What a server answered: the HTTP status, the content type and the body (parsed JSON when it is JSON)."""

    status: int
    content_type: str
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The error message of a refused request (MLflow puts it in ``message``; ours too)."""
        if isinstance(self.body, dict):
            return str(self.body.get("message", self.body))
        return str(self.body)

    @property
    def reason(self) -> str:
        """The refusal without the echo of the input: MLflow's server repeats the whole table it could
        not score (``Failed to predict data '...'.``, ``Failed to enforce schema of data '...' with
        schema '...'.``) before ``Error: <what went wrong>``."""
        message = self.message
        head, marker, rest = message.rpartition("Error: ")
        echoed = message.startswith(("Failed to predict data", "Failed to enforce schema of data"))
        return rest.strip() if marker and echoed else message


class ModelServer(ManagedProcess):
    """A running scoring server on loopback; ``url`` is its base URL once started."""

    model_uri: str = ""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, timeout: float = 30.0) -> "ScoringClient":
        return ScoringClient(self.url, timeout=timeout)


def model_server(model_uri: str, *, port: int | None = None, workers: int = 1, timeout: float = 120.0,
                 request_timeout: int = 60, env: dict[str, str] | None = None) -> ModelServer:
    """``mlflow models serve`` for ``model_uri`` on ``127.0.0.1`` (a free port unless ``port`` is given).

    Runs in the current environment (``--env-manager local``: no conda or virtualenv is built, so it
    works offline) with ``workers`` uvicorn worker processes. Ready when ``/ping`` answers; use it as
    a context manager, and the server and its workers stop on exit. ``models:/name@alias`` URIs are
    resolved against the course's tracking store.
    """
    from mlops_lab import config

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    port = port or free_port()
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--host", LOOPBACK,
            "--port", str(port), "--workers", str(workers), "--env-manager", "local",
            "--timeout", str(request_timeout)]
    server = ModelServer(args, name="model-server", port=port, health_url=f"http://{LOOPBACK}:{port}/ping",
                         timeout=timeout, env=config.child_env(env),
                         log_path=config.workspace() / "logs" / f"model-server-{port}.log")
    server.model_uri = model_uri
    return server


def gateway_server(model_uri: str, *, backend: str = "onnx", upstream: str | None = None, port: int | None = None,
                   workers: int = 1, timeout: float = 120.0, env: dict[str, str] | None = None,
                   contract_policy: str = "refuse") -> ModelServer:
    """The validating scoring server of :mod:`mlops_lab.gateway` for ``model_uri``, as a managed process.

    ``backend`` is ``onnx`` (the fast path), ``pyfunc`` (the MLflow model in-process) or ``proxy``
    (a validating layer in front of the MLflow scoring server at ``upstream``). Same protocol as
    :func:`model_server`; malformed requests get a 4xx that names the problem. When the model
    carries a data contract, ``contract_policy="refuse"`` answers a row that breaks it with 400;
    ``"flag"`` scores it, lists it in the answer and counts it on ``/metrics``.
    """
    from mlops_lab import config
    from mlops_lab.gateway import CONTRACT_POLICIES

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if contract_policy not in CONTRACT_POLICIES:
        raise ValueError(f"unknown contract policy {contract_policy!r}; choose one of {CONTRACT_POLICIES}")
    port = port or free_port()
    args = [sys.executable, "-m", "mlops_lab.gateway", "--model-uri", model_uri, "--backend", backend,
            "--host", LOOPBACK, "--port", str(port), "--workers", str(workers), "--contract-policy", contract_policy]
    if upstream:
        args += ["--upstream", upstream]
    server = ModelServer(args, name=f"gateway-{backend}", port=port, health_url=f"http://{LOOPBACK}:{port}/ping",
                         timeout=timeout, env=config.child_env(env),
                         log_path=config.workspace() / "logs" / f"gateway-{backend}-{port}.log")
    server.model_uri = model_uri
    return server


# -- the client ---------------------------------------------------------------------------------

def _json_values(frame: pd.DataFrame) -> list[list]:
    """Rows as plain Python values (numpy scalars become int/float/str; NaN stays NaN)."""
    return [[v.item() if isinstance(v, np.generic) else v for v in row] for row in frame.itertuples(index=False)]


def payload(X: pd.DataFrame, fmt: str = "dataframe_split", params: dict | None = None) -> tuple[bytes, str]:
    """The request body and content type for ``X`` in one of :data:`FORMATS`.

    ``dataframe_split`` is ``{"columns": [...], "data": [[...], ...]}``; ``dataframe_records`` and
    ``instances`` are lists of ``{column: value}`` records; ``inputs`` is ``{column: [values]}``;
    ``csv`` is a CSV file with a header row (it cannot carry ``params``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown request format {fmt!r}; choose one of {FORMATS}")
    if fmt == "csv":
        if params:
            raise ValueError("A CSV request cannot carry params; use a JSON format")
        return X.to_csv(index=False).encode(), "text/csv"
    columns, rows = list(map(str, X.columns)), _json_values(X)
    if fmt == "dataframe_split":
        data: Any = {"columns": columns, "data": rows}
    elif fmt in ("dataframe_records", "instances"):
        data = [dict(zip(columns, row)) for row in rows]
    else:  # inputs: one list per column
        data = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
    body = {fmt: data, **({"params": params} if params else {})}
    return json.dumps(body).encode(), "application/json"


class ScoringClient:
    """A small client for MLflow's scoring protocol (``/ping``, ``/health``, ``/version``, ``/invocations``)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        """Close the client's connections."""
        self._session.close()

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, path: str):
        import requests

        try:
            return self._session.get(self.url + path, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServingError(0, f"no answer from {self.url + path}: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        """True when the server answers ``/ping`` with 200 (the model is loaded)."""
        try:
            return self._get("/ping").status_code == 200
        except ServingError:
            return False

    def health(self) -> bool:
        """True when ``/health`` answers 200."""
        try:
            return self._get("/health").status_code == 200
        except ServingError:
            return False

    def version(self) -> str:
        """The MLflow version the server runs."""
        return self._get("/version").text.strip()

    def post(self, body: bytes | str | dict | list, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> Response:
        """Send any body to ``/invocations`` and return what came back, without raising on 4xx/5xx.

        Use it to see how a server answers a malformed request; a dict or list is JSON-encoded.
        ``headers`` go along (e.g. a router's ``X-User-Id``); the answer's headers are in ``headers``.
        """
        import requests

        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        try:
            answer = self._session.post(self.url + "/invocations", data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServingError(0, f"no answer from {self.url}/invocations: {type(exc).__name__}: {exc}") from exc
        kind = answer.headers.get("content-type", "")
        try:
            parsed: Any = answer.json()
        except ValueError:
            parsed = answer.text
        return Response(answer.status_code, kind, parsed, answer.headers)  # case-insensitive names

    def predict(self, X: pd.DataFrame, fmt: str = "dataframe_split", params: dict | None = None,
                headers: dict[str, str] | None = None) -> np.ndarray:
        """Predictions for ``X`` sent in format ``fmt``; a refused request raises :class:`ServingError`."""
        body, content_type = payload(X, fmt, params)
        answer = self.post(body, content_type, headers)
        if not answer.ok:
            raise ServingError(answer.status, answer.message)
        if not isinstance(answer.body, dict) or "predictions" not in answer.body:
            raise ServingError(answer.status, f"the answer has no 'predictions': {str(answer.body)[:200]}")
        return np.asarray(answer.body["predictions"])

    def predict_table(self, X: pd.DataFrame, fmt: str = "dataframe_split", params: dict | None = None,
                      headers: dict[str, str] | None = None) -> pd.DataFrame:
        """The answer of a model that returns a table (one record per row, e.g. lesson 16's decision
        model) as a DataFrame; ``params`` travel with the request. Refusals raise :class:`ServingError`."""
        body, content_type = payload(X, fmt, params)
        answer = self.post(body, content_type, headers)
        if not answer.ok:
            raise ServingError(answer.status, answer.message)
        rows = answer.body.get("predictions") if isinstance(answer.body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ServingError(answer.status, f"the answer is not a table of records: {str(answer.body)[:200]}")
        return pd.DataFrame(rows)


def verdict(status: int) -> str:
    """How a server treated a malformed request: refused (4xx), crashed (5xx), answered (2xx), dropped (0)."""
    if status == 0:
        return "connection dropped"
    if 200 <= status < 300:
        return "silent prediction"
    if 400 <= status < 500:
        return "refused (4xx)"
    return "server error (5xx)" if status >= 500 else f"HTTP {status}"


def try_requests(corpus: Iterable, urls: dict[str, str]) -> pd.DataFrame:
    """Send each request of a malformed-request corpus to each server: one row per request, one
    status column per server (0 when the connection dropped), and what a strict server answers."""
    rows = []
    for case in corpus:
        row = {"request": case.name, "expected": case.status}
        for name, url in urls.items():
            try:  # a new connection per request: one request's fate does not depend on the one before
                with ScoringClient(url) as client:
                    row[name] = client.post(case.body, case.content_type).status
            except ServingError:
                row[name] = 0
        rows.append(row)
    return pd.DataFrame(rows)


# -- batch scoring ------------------------------------------------------------------------------

def chunks(X: pd.DataFrame, size: int) -> Iterable[pd.DataFrame]:
    """``X`` in consecutive chunks of at most ``size`` rows."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for start in range(0, len(X), size):
        yield X.iloc[start:start + size]


def predict_in_chunks(predict: Callable[[pd.DataFrame], Any], X: pd.DataFrame, chunk_size: int = 1000,
                      progress: bool = True, desc: str = "scoring") -> np.ndarray:
    """Call ``predict`` (e.g. a loaded pyfunc model's ``predict``) chunk by chunk, with a progress bar."""
    from tqdm.auto import tqdm

    total = math.ceil(len(X) / chunk_size) if len(X) else 0
    parts = [np.asarray(predict(part)).reshape(len(part), -1)
             for part in tqdm(chunks(X, chunk_size), total=total, desc=desc, unit="chunk", disable=not progress)]
    if not parts:
        return np.empty(0)
    out = np.concatenate(parts)
    return out.ravel() if out.shape[1] == 1 else out


def score_over_http(client: ScoringClient, X: pd.DataFrame, chunk_size: int = 1000, fmt: str = "dataframe_split",
                    progress: bool = False) -> np.ndarray:
    """Score ``X`` through a running server, ``chunk_size`` rows per request."""
    return predict_in_chunks(lambda part: client.predict(part, fmt), X, chunk_size, progress, desc="requests")


def predict_file(model_uri: str, input_csv: Path | str, output_json: Path | str, timeout: int = 600) -> np.ndarray:
    """Score a CSV file with ``mlflow models predict`` (what a scheduled batch job runs)."""
    from mlops_lab.packaging import cli_predict

    return np.asarray(cli_predict(model_uri, input_csv, output_json, timeout=timeout))
