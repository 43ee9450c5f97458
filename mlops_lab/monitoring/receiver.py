"""The course's alert receiver: where Alertmanager's webhook delivers, and what it recorded.

Alertmanager sends a notification as JSON (webhook version ``"4"``) to ``POST /alerts``: one group
of alerts, each firing or resolved. The receiver checks its shape (a malformed body gets a 400 with
a message, and nothing is stored) and records every alert of every notification as one row of a
SQLite file in the workspace (``<workspace>/monitoring/alerts.db``). It does not de-duplicate:
that is Alertmanager's job, and the rows show what Alertmanager actually delivered.

    GET  /alerts                 every recorded row, oldest first (?status=firing, ?alertname=...)
    GET  /health                 {"status": "ok", ...}
    POST /alerts                 Alertmanager's webhook

Run it as a process of its own (the monitoring stack does)::

    python -m mlops_lab.monitoring.receiver --port 9095 --store <workspace>/monitoring/alerts.db

and read what arrived from Python without HTTP (the retraining lesson does)::

    store = AlertStore(store_path())
    store.firing()          # alerts whose latest notification says firing
    store.frame()           # every row, as a DataFrame
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

MAX_BODY_BYTES = 1_000_000
"""The largest notification accepted (Alertmanager's are a few kB per alert)."""
STATUSES = ("firing", "resolved")
COLUMNS = ("id", "notification", "received_at", "status", "alertname", "labels", "annotations", "starts_at",
           "ends_at", "fingerprint", "group_key", "receiver", "group_status", "generator_url")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    notification  TEXT NOT NULL,  -- one id per webhook call; the alerts it carried share it
    received_at   TEXT NOT NULL,  -- when the receiver got it (UTC, ISO 8601)
    status        TEXT NOT NULL,  -- this alert: firing or resolved
    alertname     TEXT NOT NULL,
    labels        TEXT NOT NULL,  -- JSON object
    annotations   TEXT NOT NULL,  -- JSON object
    starts_at     TEXT NOT NULL,
    ends_at       TEXT,
    fingerprint   TEXT NOT NULL,  -- Alertmanager's id of the alert (a hash of its labels)
    group_key     TEXT NOT NULL,  -- which group (route + grouping labels) the notification is for
    receiver      TEXT,
    group_status  TEXT,           -- the whole notification: firing while any of its alerts fires
    generator_url TEXT
);
CREATE INDEX IF NOT EXISTS alerts_by_name ON alerts (alertname, status);
"""
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


class PayloadError(ValueError):
    """A webhook body that is not an Alertmanager notification; the message lists what is wrong."""


def store_path(home: Path | None = None) -> Path:
    """``<workspace>/monitoring/alerts.db``: where the receiver records notifications."""
    from mlops_lab import config

    return (Path(home) if home else config.workspace()) / "monitoring" / "alerts.db"


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _text_map(value: object, what: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append(f"{what} must be an object of names to strings")
        return {}
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        problems.append(f"{what}: the values of {', '.join(map(repr, bad[:5]))} must be strings")
    return {k: v for k, v in value.items() if isinstance(v, str)}


def parse_notification(document: Any) -> list[dict[str, Any]]:
    """The rows to record for one webhook body (already decoded JSON); :class:`PayloadError` otherwise.

    The shape is Alertmanager's webhook version 4: ``version``, ``groupKey``, ``status``,
    ``receiver`` and a non-empty list of ``alerts``, each with ``status``, ``labels`` (with an
    ``alertname``), ``annotations``, ``startsAt``, ``endsAt`` and ``fingerprint``.
    """
    if not isinstance(document, dict):
        raise PayloadError("the body must be a JSON object (an Alertmanager webhook notification)")
    problems: list[str] = []
    if document.get("version") != "4":
        problems.append(f"version must be \"4\" (Alertmanager's webhook format), got {document.get('version')!r}")
    group_key = document.get("groupKey")
    if not isinstance(group_key, str) or not group_key:
        problems.append("groupKey must be a non-empty string")
    if document.get("status") not in STATUSES:
        problems.append(f"status must be firing or resolved, got {document.get('status')!r}")
    receiver = document.get("receiver", "")
    if not isinstance(receiver, str):
        problems.append("receiver must be a string")
    alerts = document.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        problems.append("alerts must be a non-empty list")
        alerts = []
    notification, received = uuid.uuid4().hex, _now()
    rows = []
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            problems.append(f"{where} must be an object")
            continue
        before = len(problems)
        status = alert.get("status")
        if status not in STATUSES:
            problems.append(f"{where}.status must be firing or resolved, got {status!r}")
        labels = _text_map(alert.get("labels"), f"{where}.labels", problems)
        if not labels.get("alertname"):
            problems.append(f"{where}.labels must have an alertname")
        annotations = _text_map(alert.get("annotations", {}), f"{where}.annotations", problems)
        starts = alert.get("startsAt")
        if not isinstance(starts, str) or not _TIME.match(starts):
            problems.append(f"{where}.startsAt must be an RFC 3339 time, got {starts!r}")
        ends = alert.get("endsAt")
        if ends is not None and (not isinstance(ends, str) or not _TIME.match(ends)):
            problems.append(f"{where}.endsAt must be an RFC 3339 time, got {ends!r}")
        fingerprint = alert.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            problems.append(f"{where}.fingerprint must be a non-empty string")
        generator = alert.get("generatorURL")
        if len(problems) > before:
            continue
        rows.append({"notification": notification, "received_at": received, "status": status,
                     "alertname": labels["alertname"], "labels": labels, "annotations": annotations,
                     "starts_at": starts, "ends_at": ends, "fingerprint": fingerprint, "group_key": group_key,
                     "receiver": receiver, "group_status": document.get("status"),
                     "generator_url": generator if isinstance(generator, str) else None})
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise PayloadError("not an Alertmanager notification: " + "; ".join(problems[:10]) + more)
    return rows


def notification(alertname: str, status: str = "firing", labels: dict[str, str] | None = None,
                 summary: str = "") -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) for one alert: what Alertmanager would POST to the
    receiver, for a lesson or a test that needs an alert without running Prometheus."""
    labels = {"alertname": alertname, **(labels or {})}
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {"version": "4", "groupKey": f"{{}}:{{alertname=\"{alertname}\"}}", "status": status, "receiver": "course",
            "alerts": [{"status": status, "labels": labels, "annotations": {"summary": summary or alertname},
                        "startsAt": _now(), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint}]}


class AlertStore:
    """The receiver's SQLite file, read (and written) in process.

    ``notifications()`` gives every recorded row as a dict (labels and annotations decoded), oldest
    first; ``firing()`` the alerts whose latest notification says firing; ``frame()`` a DataFrame.
    A store that does not exist yet reads as empty.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else store_path()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.row_factory = sqlite3.Row
        return connection

    def create(self) -> "AlertStore":
        """Create the file and its table if needed (the receiver does this when it starts)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # readers in other processes never block the receiver
            connection.executescript(_SCHEMA)
        finally:
            connection.close()
        return self

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Record rows (from :func:`parse_notification`) in one transaction; how many."""
        connection = self._connect()
        try:
            with connection:
                connection.executemany(
                    f"INSERT INTO alerts ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * (len(COLUMNS) - 1))})",
                    [tuple(json.dumps(row[c], sort_keys=True) if c in ("labels", "annotations") else row[c]
                           for c in COLUMNS[1:]) for row in rows])
        finally:
            connection.close()
        return len(rows)

    def notifications(self, status: str | None = None, alertname: str | None = None) -> list[dict[str, Any]]:
        """Every recorded row, oldest first; only ``status`` (firing/resolved) or ``alertname`` if given."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be firing or resolved, got {status!r}")
        if not self.path.exists():
            return []
        where, values = [], []
        for column, value in (("status", status), ("alertname", alertname)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        connection = self._connect()
        try:
            rows = connection.execute(sql, values).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            connection.close()
        out = []
        for row in rows:
            item = dict(row)
            item["labels"] = json.loads(item["labels"])
            item["annotations"] = json.loads(item["annotations"])
            out.append(item)
        return out

    def firing(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """The alerts firing now as far as notifications tell: the latest row of each alert
        (fingerprint) says firing, no resolved notification came after it."""
        latest: dict[str, dict] = {}
        for row in self.notifications(alertname=alertname):
            latest[row["fingerprint"]] = row
        return [row for row in latest.values() if row["status"] == "firing"]

    def frame(self):
        """Every recorded row as a pandas DataFrame, with ``feature`` and ``severity`` taken from the labels."""
        import pandas as pd

        rows = self.notifications()
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        frame["feature"] = [row["labels"].get("feature") for row in rows]
        frame["severity"] = [row["labels"].get("severity") for row in rows]
        return frame

    def wait_for(self, alertname: str, status: str = "firing", count: int = 1, timeout: float = 60.0,
                 interval: float = 0.2) -> list[dict[str, Any]]:
        """Wait until at least ``count`` rows of ``alertname`` with ``status`` are recorded; those rows.

        Raises TimeoutError (with what did arrive) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.notifications(status=status, alertname=alertname)
            if len(rows) >= count:
                return rows
            if time.monotonic() > deadline:
                seen = [(r["alertname"], r["status"]) for r in self.notifications()]
                raise TimeoutError(f"{count} {status} notification(s) of {alertname} did not arrive within "
                                   f"{timeout:g} s; recorded: {seen or 'nothing'}")
            time.sleep(interval)

    def __len__(self) -> int:
        return len(self.notifications())


# -- the web app ------------------------------------------------------------------------------------
def build_app(store: str | Path, *, max_body_bytes: int = MAX_BODY_BYTES):
    """The receiver's Starlette app, recording into the SQLite file ``store``."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    alert_store = AlertStore(store).create()

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "store": str(alert_store.path)})

    async def receive(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return refuse(413 if declared.isdigit() else 400,
                          f"the body must be at most {max_body_bytes:,} bytes of JSON (Content-Length {declared[:20]})")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    return refuse(413, f"the body must be at most {max_body_bytes:,} bytes of JSON")
                chunks.append(chunk)
        except ClientDisconnect:
            return refuse(400, "the client closed the connection before the body was complete")
        try:
            document = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            return refuse(400, f"the body is not valid JSON ({exc})")
        try:
            rows = parse_notification(document)
        except PayloadError as exc:
            return refuse(400, str(exc))
        alert_store.add(rows)
        return JSONResponse({"stored": len(rows), "notification": rows[0]["notification"]})

    async def listing(request: Request) -> JSONResponse:
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            return refuse(400, f"status must be firing or resolved, got {status!r}")
        return JSONResponse(alert_store.notifications(status=status,
                                                      alertname=request.query_params.get("alertname")))

    async def alerts(request: Request) -> JSONResponse:
        return await (receive(request) if request.method == "POST" else listing(request))

    return Starlette(routes=[Route("/health", health), Route("/alerts", alerts, methods=["GET", "POST"])])


class Receiver(ManagedProcess):
    """The receiver process; ``url`` is its base URL, ``webhook_url`` what Alertmanager posts to."""

    store: AlertStore

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/alerts"


def receiver(*, port: int | None = None, store: str | Path | None = None, log_path: Path | None = None,
             timeout: float = 30.0) -> Receiver:
    """A receiver process on ``127.0.0.1`` (a free port unless given), recording into ``store``
    (default: ``<workspace>/monitoring/alerts.db``). Use it as a context manager."""
    store = Path(store) if store else store_path()
    port = port or free_port()
    args = [sys.executable, "-m", "mlops_lab.monitoring.receiver", "--host", LOOPBACK, "--port", str(port),
            "--store", str(store)]
    process = Receiver(args, name="alert-receiver", port=port, health_url=f"http://{LOOPBACK}:{port}/health",
                       timeout=timeout, log_path=log_path)
    process.store = AlertStore(store)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.monitoring.receiver",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--store", default=None, help="the SQLite file (default: <workspace>/monitoring/alerts.db)")
    args = parser.parse_args(argv)
    import uvicorn

    app = build_app(Path(args.store) if args.store else store_path())
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
