"""The inference log: every request and answer the router saw, in one SQLite file in the workspace.

One row per answer: the request id, when, which variant and model version answered, which
replica, the HTTP status, the latency, the sticky key, the request body and the answer, and its
role (``primary``: what the client got; ``shadow``: the mirrored copy, never shown to anyone). The
router writes rows from a background thread in batches, off the response path; :meth:`InferenceLog.frame`
reads them back as a DataFrame. It is the input of the monitoring lesson: labels that arrive later
are joined by request id (:meth:`InferenceLog.add_labels`, :meth:`InferenceLog.labelled`).

SQLite (WAL mode) because it is in the standard library, survives a restart, and lets a notebook
read while the router writes; at larger scale the same rows go to a warehouse table or Parquet
(:meth:`InferenceLog.frame` ``.to_parquet(...)``).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

_log = logging.getLogger("mlops_lab.deployment.log")
COLUMNS = ("request_id", "at", "role", "variant", "version", "replica", "status", "latency_ms", "key",
           "request", "response", "error")
BODY_LIMIT = 65_536
"""Request and answer bodies longer than this (characters) are logged cut, with ``...`` at the end."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS inference (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL, at REAL NOT NULL, role TEXT NOT NULL, variant TEXT, version TEXT, replica TEXT,
    status INTEGER, latency_ms REAL, key TEXT, request TEXT, response TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS inference_request ON inference (request_id);
CREATE TABLE IF NOT EXISTS labels (request_id TEXT PRIMARY KEY, label TEXT, at REAL);
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=5, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


def cut(text: str | bytes | None) -> str | None:
    """A body as logged: text, at most :data:`BODY_LIMIT` characters."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT - 3] + "..."


class InferenceLog:
    """The inference log at ``path`` (a SQLite file): read it, label it, or (the router) write to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"InferenceLog({str(self.path)!r})"

    def frame(self, role: str | None = None, *, parse: bool = False, last: int | None = None) -> pd.DataFrame:
        """Every logged answer (oldest first) as a DataFrame; ``role`` keeps ``primary`` or ``shadow`` rows.

        ``at`` is a UTC timestamp. With ``parse=True`` the ``request`` and ``response`` columns hold
        the decoded JSON (``None`` where a body was not JSON or was cut). ``last=N`` reads only the
        N most recent answers (a monitor's window costs the same however long the log is)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=list(COLUMNS))
        query = f"SELECT seq, {', '.join(COLUMNS)} FROM inference"
        args: tuple = ()
        if role is not None:
            query, args = query + " WHERE role = ?", (role,)
        query += " ORDER BY seq DESC" + (f" LIMIT {int(last)}" if last is not None else "")
        with _connect(self.path) as connection:
            table = pd.read_sql_query(query, connection, params=args)
        connection.close()
        table = table.iloc[::-1].drop(columns="seq").reset_index(drop=True)
        table["at"] = pd.to_datetime(table["at"], unit="s", utc=True)
        if parse:
            for column in ("request", "response"):
                table[column] = table[column].map(decode_body)
        return table

    def __len__(self) -> int:
        if not self.path.is_file():
            return 0
        connection = _connect(self.path)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM inference").fetchone()[0])
        finally:
            connection.close()

    def add_labels(self, labels: dict[str, Any] | pd.Series, *, at: float | pd.Timestamp | None = None) -> int:
        """Record labels that arrived later, by request id (a dict or a Series indexed by request id).

        ``at`` is when they arrived (default: now; a replay of history passes the historical time).
        A label sent again for the same request replaces the first (the latest truth wins);
        returns how many labels were written."""
        items = list(labels.items())
        when = time.time() if at is None else (pd.Timestamp(at).timestamp() if not isinstance(at, (int, float))
                                                else float(at))
        connection = _connect(self.path)
        try:
            with connection:
                connection.executemany("INSERT OR REPLACE INTO labels (request_id, label, at) VALUES (?, ?, ?)",
                                       [(str(k), json.dumps(_plain(v)), when) for k, v in items])
        finally:
            connection.close()
        return len(items)

    def labels(self, request_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Every label received (or those of ``request_ids``): ``request_id``, ``label`` and ``at``
        (when it arrived, UTC)."""
        if not self.path.is_file():
            return pd.DataFrame({"request_id": pd.Series(dtype=str), "label": pd.Series(dtype=object),
                                 "at": pd.Series(dtype="datetime64[ns, UTC]")})
        connection = _connect(self.path)
        try:
            if request_ids is None:
                table = pd.read_sql_query("SELECT request_id, label, at FROM labels ORDER BY at, request_id",
                                          connection)
            else:
                wanted = list(dict.fromkeys(map(str, request_ids)))
                parts = [pd.read_sql_query("SELECT request_id, label, at FROM labels WHERE request_id IN "
                                           f"({', '.join('?' * len(chunk))})", connection, params=chunk)
                         for chunk in (wanted[i:i + 500] for i in range(0, len(wanted), 500))]
                table = (pd.concat(parts, ignore_index=True) if parts else
                         pd.DataFrame(columns=["request_id", "label", "at"])).sort_values(["at", "request_id"])
        finally:
            connection.close()
        table["label"] = table["label"].map(decode_body)
        table["at"] = pd.to_datetime(table["at"], unit="s", utc=True)
        return table

    def unknown_labels(self) -> list[str]:
        """Request ids of labels that match no logged answer (usually a caller's wrong ids)."""
        if not self.path.is_file():
            return []
        connection = _connect(self.path)
        try:
            rows = connection.execute("SELECT request_id FROM labels WHERE request_id NOT IN "
                                      "(SELECT request_id FROM inference) ORDER BY request_id").fetchall()
        finally:
            connection.close()
        return [r[0] for r in rows]

    def labelled(self, role: str = "primary") -> pd.DataFrame:
        """The log's ``role`` rows with a ``label`` column (NaN where no label has arrived yet)."""
        table = self.frame(role, parse=True)
        if not self.path.is_file():
            return table.assign(label=None)
        labels = dict(zip(*[self.labels()[c] for c in ("request_id", "label")]))
        table["label"] = table["request_id"].map(lambda r: labels.get(r))
        return table


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def decode_body(text: str | None) -> Any:
    """A logged body as JSON: None where it is not JSON or was cut at :data:`BODY_LIMIT`."""
    if text is None or (isinstance(text, str) and text.endswith("...") and len(text) >= BODY_LIMIT):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


class LogWriter:
    """The router's writer: rows queued by the request handlers, written in batches by one thread.

    ``put`` never blocks on the disk; ``close`` writes everything still queued before it returns,
    so a router that is stopped (SIGTERM) loses no row. A row is written once: the queue hands
    each row to the thread exactly once, and nothing is retried after a commit."""

    def __init__(self, path: str | Path, flush_every: float = 0.1) -> None:
        self.log = InferenceLog(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_every = flush_every
        self._stop = threading.Event()
        self._connection = _connect(self.log.path)
        self.written = 0
        self.failures = 0
        self._pending: list[tuple] = []
        self._waiting: list[threading.Event] = []
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def put(self, row: dict) -> None:
        self._queue.put(tuple(row.get(c) for c in COLUMNS))

    def _drain(self) -> tuple[list[tuple], list[threading.Event]]:
        rows, waiting = [], []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rows, waiting
            (waiting if isinstance(item, threading.Event) else rows).append(item)

    def _write(self, rows: list[tuple]) -> bool:
        if not rows:
            return True
        marks = ", ".join("?" * len(COLUMNS))
        try:
            with self._connection:  # one transaction: all of the batch or none of it
                self._connection.executemany(f"INSERT INTO inference ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
        except sqlite3.Error as error:  # e.g. locked for longer than the busy timeout, or a full disk
            self.failures += 1
            _log.error("could not write %d rows to %s (%s); keeping them for the next try", len(rows), self.log.path, error)
            return False
        self.written += len(rows)
        return True

    def _step(self) -> None:
        rows, waiting = self._drain()
        rows = self._pending + rows
        self._pending = [] if self._write(rows) else rows  # a failed batch is kept, never dropped
        self._waiting.extend(waiting)
        if not self._pending:
            for event in self._waiting:
                event.set()
            self._waiting.clear()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_every):
            self._step()
        self._step()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued before this call is committed (True), at most ``timeout`` s."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Write every queued row, stop the thread and close the file."""
        self._stop.set()
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._step()
            self._connection.close()
