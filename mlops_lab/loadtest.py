"""Open-loop HTTP load tests that see server stalls, plus the scenarios of the pre-deployment lesson.

Why not locust (or ab, hey, ...)? Those tools run *closed-loop* users: each user sends, waits for the
answer, then sends again. When the server stalls, the users stop sending and every latency is
measured from the moment a request was actually sent, so the requests that *should* have gone out
during the stall are never sent and never measured. The stall almost disappears from the
percentiles. This is called coordinated omission. ``wrk2``, which avoids it, is not packaged for
this course, so this module does the same thing with asyncio + aiohttp:

* :func:`run_open_loop` sends at a constant arrival rate on a fixed schedule (request ``i`` is due
  at ``i / rate`` seconds) and never waits for an answer before sending the next request;
* each latency is measured from the request's *intended* send time, so time spent queued behind a
  stall counts (:attr:`LoadResult.latency`); ``service_time`` is the naive, send-based number.

:func:`run_closed_loop` exists to show the difference. On top of these: a rate sweep
(:func:`step_load`, :func:`capacity`, :func:`find_capacity`), an overload-and-recovery scenario
(:func:`stress`), a load that changes over time (:func:`run_phases`), a release gate (:func:`gate`, :func:`log_gate`) and three figures.

    target = Target.json("http://127.0.0.1:5001/invocations", {"dataframe_records": [row]})
    result = run_open_loop(target, rate=200, duration=10)
    result.summary()   # offered_rps, error_rate, p50_ms, p99_ms, max_send_lag_ms, ...

All functions are synchronous and safe to call from a Jupyter notebook: the asyncio loop runs in a
thread of its own. All timestamps come from one monotonic clock (``loop.time()``) and are stored
as seconds from the start of the schedule.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import numbers
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

SCHEDULE_LAG_WARNING_S = 0.1
"""A run whose worst send lag exceeds this many seconds warns: the generator could not keep up."""

_START_DELAY_S = 0.02
"""The schedule starts this long after the client session is ready (lets the loop settle)."""

_DRAIN_MARGIN_S = 2.0
"""How much longer than the per-request timeout the end of a run waits for stragglers."""


# -- what to send --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One HTTP request, sent again and again: method, full URL, body and its content type."""

    url: str
    body: bytes = b""
    content_type: str = "application/json"
    method: str = "POST"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"Target url must be a full http:// or https:// URL with a host, got {self.url!r} "
                "(e.g. 'http://127.0.0.1:5001/invocations')."
            )
        if not isinstance(self.body, (bytes, bytearray)):
            raise ValueError(
                f"Target body must be bytes, got {type(self.body).__name__}; "
                "use Target.json(url, payload) for a JSON payload."
            )
        if not isinstance(self.method, str) or not self.method.isalpha():
            raise ValueError(f"Target method must be an HTTP method such as 'POST', got {self.method!r}.")

    @classmethod
    def json(cls, url: str, payload: dict) -> "Target":
        """A POST of ``payload`` encoded once as JSON (e.g. an MLflow ``/invocations`` request)."""
        return cls(url=url, body=json.dumps(payload).encode("utf-8"), content_type="application/json")


# -- what came back ------------------------------------------------------------------------------
def _percentile_ms(values: np.ndarray, p: float) -> float:
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(values, p) * 1000.0)


def _percentile_key(p: float) -> str:
    return f"p{p:g}_ms"


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in errors.items())


@dataclass
class LoadResult:
    """Every request of one run: when it was due, sent and done (seconds from start), and its outcome.

    ``latency`` (done - intended) is the number to report: it includes the time a request would
    have waited because the server was stalled. ``service_time`` (done - sent) is what a
    closed-loop tool reports; for a closed-loop run both are the same.
    """

    kind: str
    rate: float | None
    duration: float
    intended: np.ndarray
    sent: np.ndarray
    done: np.ndarray
    status: np.ndarray
    errors: list[str]

    def __len__(self) -> int:
        return len(self.intended)

    @property
    def latency(self) -> np.ndarray:
        """Seconds from the intended send time to completion (coordinated-omission-correct)."""
        return self.done - self.intended

    @property
    def service_time(self) -> np.ndarray:
        """Seconds from the actual send time to completion (what closed-loop tools measure)."""
        return self.done - self.sent

    @property
    def ok(self) -> np.ndarray:
        """True for each request answered with a 2xx status."""
        return (self.status >= 200) & (self.status < 300)

    def percentiles(self, ps: Sequence[float] = (50, 95, 99), correct: bool = True) -> dict[str, float]:
        """Latency percentiles in milliseconds over all requests, failed ones included.

        ``correct=False`` uses the service time instead (the number coordinated omission produces).
        Keys look like ``"p99_ms"``; an empty result gives NaN.
        """
        values = self.latency if correct else self.service_time
        return {_percentile_key(p): _percentile_ms(values, p) for p in ps}

    def error_counts(self) -> dict[str, int]:
        """How many requests failed, by kind (``"http 503"``, ``"timeout"``, ...), most frequent first."""
        return dict(Counter(e for e in self.errors if e).most_common())

    def summary(self) -> dict:
        """The numbers a load test report needs (see the module docstring for their meaning).

        ``throughput_rps`` is successful completions per second of actual elapsed time, from the
        first intended send to the last completion; ``max_send_lag_ms`` is how far behind its
        schedule the generator sent (large values mean the generator, not the server, was the
        bottleneck).
        """
        n = len(self)
        ok = int(self.ok.sum())
        elapsed = float(self.done.max() - self.intended.min()) if n else 0.0
        return {
            "offered_rps": n / self.duration if self.duration > 0 else float("nan"),
            "sent": n,
            "ok": ok,
            "error_rate": (n - ok) / n if n else float("nan"),
            "throughput_rps": ok / elapsed if elapsed > 0 else float("nan"),
            **self.percentiles((50, 95, 99)),
            "max_ms": float(self.latency.max() * 1000.0) if n else float("nan"),
            "max_send_lag_ms": float((self.sent - self.intended).max() * 1000.0) if n else float("nan"),
            "errors": self.error_counts(),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per request: times in seconds, latency and service time in ms, status, error."""
        return pd.DataFrame(
            {
                "intended": self.intended,
                "sent": self.sent,
                "done": self.done,
                "latency_ms": self.latency * 1000.0,
                "service_ms": self.service_time * 1000.0,
                "status": self.status,
                "ok": self.ok,
                "error": list(self.errors),
            }
        )


# -- the asyncio machinery -----------------------------------------------------------------------
def _error_kind(exc: BaseException) -> str:
    """A short name for a failed request: "timeout", "connection refused", ... or the class name."""
    import aiohttp

    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    os_error = getattr(exc, "os_error", None) or exc
    code = getattr(os_error, "errno", None)
    if isinstance(os_error, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused"
    if (
        isinstance(os_error, (ConnectionResetError, BrokenPipeError))
        or code in (errno.ECONNRESET, errno.EPIPE)
        or isinstance(exc, aiohttp.ServerDisconnectedError)
    ):
        return "connection reset"
    return type(exc).__name__


def _run_in_thread(make: Callable[[threading.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``make(stop)`` with ``asyncio.run`` in a new thread, wait for it and return its result.

    A thread of its own keeps this usable where an event loop is already running (Jupyter). An
    exception from the coroutine is re-raised here; Ctrl-C (KeyboardInterrupt) asks the run to stop
    sending, waits for it to wind down, then propagates.
    """
    stop = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["value"] = asyncio.run(make(stop))
        except BaseException as exc:  # noqa: BLE001 (handed to the calling thread)
            box["error"] = exc

    thread = threading.Thread(target=main, name="mlops-lab-loadtest", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        stop.set()
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def _session(max_connections: int, timeout: float):
    import aiohttp

    # ceil thresholds at infinity: aiohttp otherwise rounds timeouts of 5 s or more up to the next
    # whole second of the loop clock, which would blur "latency ≈ timeout".
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, timeout_ceil_threshold=math.inf, force_close=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, ceil_threshold=math.inf),
        auto_decompress=False,
    )


def _request_function(session, target: Target, t0_box: list[float], results: tuple) -> Callable:
    """A coroutine function ``send(i)`` that sends the target once and records request ``i``."""
    sent, done, status, errors = results
    loop = asyncio.get_running_loop()
    clock = loop.time
    method, url, body = target.method.upper(), target.url, bytes(target.body)
    headers = {"Content-Type": target.content_type} if body else {}
    request = session.request

    async def send(i: int) -> None:
        t0 = t0_box[0]
        sent[i] = clock() - t0
        try:
            async with request(method, url, data=body or None, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                code = resp.status
            status[i] = code
            if not 200 <= code < 300:
                errors[i] = f"http {code}"
        except asyncio.CancelledError:
            errors[i] = "timeout"  # still running when the end-of-run wait gave up
            done[i] = clock() - t0
            raise
        except Exception as exc:  # noqa: BLE001 (every failure is a data point, not a crash)
            errors[i] = _error_kind(exc)
        done[i] = clock() - t0

    return send


async def _drain(tasks: set, timeout: float) -> None:
    """Wait for outstanding requests, at most ``timeout`` + a margin; cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=timeout + _DRAIN_MARGIN_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def _open_loop(
    target: Target, schedule: np.ndarray, timeout: float, max_connections: int, stop: threading.Event
) -> tuple:
    """Send request ``i`` at ``schedule[i]`` seconds from start; return the recorded arrays."""
    n = len(schedule)
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int64)
    errors = [""] * n
    loop = asyncio.get_running_loop()
    clock = loop.time
    t0_box = [0.0]
    async with _session(max_connections, timeout) as session:
        send = _request_function(session, target, t0_box, (sent, done, status, errors))
        tasks: set[asyncio.Task] = set()
        discard = tasks.discard
        create_task = loop.create_task
        t0 = clock() + _START_DELAY_S
        t0_box[0] = t0
        due = (schedule + t0).tolist()
        i = 0
        while i < n:
            if stop.is_set():
                break
            now = clock()
            if due[i] > now:
                await asyncio.sleep(due[i] - now)
                continue
            # Fire everything that is due (all of it at once if the loop fell behind).
            while i < n and due[i] <= now:
                task = create_task(send(i))
                tasks.add(task)
                task.add_done_callback(discard)
                i += 1
        await _drain(tasks, timeout)
    if i < n:  # stopped early: keep only what was sent
        return sent[:i], done[:i], status[:i], errors[:i], schedule[:i]
    return sent, done, status, errors, schedule


async def _closed_loop(
    target: Target, concurrency: int, duration: float, timeout: float, stop: threading.Event
) -> tuple:
    """``concurrency`` users, each: send, wait for the answer, repeat until ``duration`` is over."""
    loop = asyncio.get_running_loop()
    clock = loop.time
    # Plain lists that only grow: a request in flight keeps writing to the right slot.
    sent: list[float] = []
    done: list[float] = []
    status: list[int] = []
    errors: list[str] = []
    t0_box = [0.0]
    async with _session(concurrency, timeout) as session:
        send = _request_function(session, target, t0_box, (sent, done, status, errors))

        async def user() -> None:
            end = t0_box[0] + duration
            while clock() < end and not stop.is_set():
                i = len(sent)
                sent.append(math.nan)
                done.append(math.nan)
                status.append(0)
                errors.append("")
                await send(i)

        t0_box[0] = clock() + _START_DELAY_S
        await asyncio.sleep(_START_DELAY_S)
        users = [loop.create_task(user()) for _ in range(concurrency)]
        await _drain(set(users), duration + timeout)
    s = np.asarray(sent, dtype=float)
    order = np.argsort(s, kind="stable")
    return (
        s[order],
        np.asarray(done, dtype=float)[order],
        np.asarray(status, dtype=np.int64)[order],
        [errors[j] for j in order],
    )


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}.")
    return float(value)


def _check_target(target: Target) -> Target:
    if not isinstance(target, Target):
        raise ValueError(f"target must be a Target (e.g. Target.json(url, payload)), got {type(target).__name__}.")
    return target


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _schedule(phases: Sequence[tuple[float, float]]) -> np.ndarray:
    """Intended send times for consecutive (rate, duration) phases: request i of a phase at i / rate."""
    parts, start = [], 0.0
    for rate, duration in phases:
        # every i with i / rate < duration (the small epsilon keeps rate * duration = 400.0 at 400)
        n = int(math.ceil(rate * duration - 1e-9))
        parts.append(start + np.arange(n) / rate)
        start += duration
    return np.concatenate(parts) if parts else np.zeros(0)


def _run_schedule(
    target: Target, schedule: np.ndarray, duration: float, rate: float, timeout: float, max_connections: int
) -> LoadResult:
    sent, done, status, errors, intended = _run_in_thread(
        lambda stop: _open_loop(target, schedule, timeout, max_connections, stop)
    )
    result = LoadResult(
        kind="open", rate=rate, duration=duration, intended=np.asarray(intended, dtype=float),
        sent=sent, done=done, status=status, errors=errors,
    )
    if len(result):
        lag = float(np.nanmax(result.sent - result.intended))
        if lag > SCHEDULE_LAG_WARNING_S:
            warnings.warn(
                f"The load generator fell {lag * 1000:.0f} ms behind its schedule at {rate:g} req/s: "
                "the client, not only the server, was saturated. Latencies are still measured from "
                "the intended send times, but use a lower rate or a faster machine for a clean test.",
                RuntimeWarning,
                stacklevel=3,
            )
    return result


# -- the runs ------------------------------------------------------------------------------------
def run_open_loop(
    target: Target, rate: float, duration: float, *, timeout: float = 5.0, max_connections: int = 256
) -> LoadResult:
    """Send ``target`` at a constant ``rate`` (req/s) for ``duration`` seconds, open loop.

    Request ``i`` is due at ``i / rate`` seconds, whatever happened to earlier requests, so exactly
    ``ceil(rate * duration)`` requests are sent. Each may take up to ``timeout`` seconds from its
    send (status 0, error "timeout" after that); at most ``max_connections`` are on the wire at
    once, further ones queue inside the client (and that waiting counts in their latency). Returns
    once every request has completed or timed out.
    """
    _check_target(target)
    rate = _check_positive("rate", rate)
    duration = _check_positive("duration", duration)
    timeout = _check_positive("timeout", timeout)
    max_connections = _check_count("max_connections", max_connections)
    return _run_schedule(target, _schedule([(rate, duration)]), duration, rate, timeout, max_connections)


def run_phases(
    target: Target, phases: Sequence[tuple[float, float]], *, timeout: float = 5.0, max_connections: int = 256
) -> LoadResult:
    """Open loop over consecutive ``(rate, duration)`` phases: a load that changes over time.

    One schedule covers every phase (a queue built in one phase carries into the next), request
    ``i`` of a phase due at ``i / rate`` seconds into it. ``result.rate`` is the mean rate over the
    whole run; :func:`timeline` shows it window by window. Lesson 20 replays a day of Bikeshare
    traffic this way.
    """
    _check_target(target)
    phases = [(float(r), float(d)) for r, d in phases]
    if not phases:
        raise ValueError("phases must list at least one (rate, duration) pair.")
    for rate, duration in phases:
        _check_positive("each phase's rate", rate)
        _check_positive("each phase's duration", duration)
    timeout = _check_positive("timeout", timeout)
    max_connections = _check_count("max_connections", max_connections)
    schedule = _schedule(phases)
    total = sum(d for _, d in phases)
    return _run_schedule(target, schedule, total, len(schedule) / total, timeout, max_connections)


def run_closed_loop(target: Target, concurrency: int, duration: float, *, timeout: float = 5.0) -> LoadResult:
    """``concurrency`` users, each sending, waiting for the answer and sending again, for ``duration`` s.

    This is how locust-style tools work, and it under-reports stalls (coordinated omission): while
    the server is stuck, nobody sends. ``intended`` equals ``sent`` because there is no schedule.
    Use it to compare with :func:`run_open_loop`, not to sign off a release.
    """
    _check_target(target)
    concurrency = _check_count("concurrency", concurrency)
    duration = _check_positive("duration", duration)
    timeout = _check_positive("timeout", timeout)
    sent, done, status, errors = _run_in_thread(
        lambda stop: _closed_loop(target, concurrency, duration, timeout, stop)
    )
    return LoadResult(
        kind="closed", rate=None, duration=duration, intended=sent.copy(), sent=sent, done=done,
        status=status, errors=errors,
    )


# -- rate sweeps and capacity ----------------------------------------------------------------------
def _summary_row(rate: float, result: LoadResult) -> dict:
    summary = result.summary()
    summary["errors"] = _errors_text(summary["errors"])
    return {"rate": float(rate), **summary}


def step_load(
    target: Target, rates: Sequence[float], duration: float, *, pause: float = 0.5, **kw: Any
) -> pd.DataFrame:
    """One open-loop run per rate (in the given order), ``pause`` seconds apart; one row per rate.

    Columns: ``rate`` and the fields of :meth:`LoadResult.summary` (``errors`` as text, e.g.
    ``"http 503: 4, timeout: 1"``). ``kw`` goes to :func:`run_open_loop` (``timeout``,
    ``max_connections``). The :class:`LoadResult` of each row is in ``table.attrs["results"]``
    (a list in row order).
    """
    _check_target(target)
    rates = list(rates)
    if not rates:
        raise ValueError("rates must list at least one rate (req/s).")
    for rate in rates:
        _check_positive("each rate", rate)
    if pause < 0:
        raise ValueError(f"pause must be >= 0 seconds, got {pause!r}.")
    rows, results = [], []
    for k, rate in enumerate(rates):
        if k and pause:
            time.sleep(pause)  # let a server that fell behind drain before the next step
        result = run_open_loop(target, rate, duration, **kw)
        rows.append(_summary_row(rate, result))
        results.append(result)
    table = pd.DataFrame(rows)
    table.attrs["results"] = results
    return table


def _passes(row: pd.Series | dict, slo_p99_ms: float, max_error_rate: float) -> bool:
    return bool(row["p99_ms"] <= slo_p99_ms and row["error_rate"] < max_error_rate)


def capacity(table: pd.DataFrame, slo_p99_ms: float, max_error_rate: float = 0.01) -> float | None:
    """The highest rate of a :func:`step_load` table that meets the SLO, with every lower rate too.

    A rate passes when its ``p99_ms <= slo_p99_ms`` and its ``error_rate < max_error_rate``. Rates
    are taken in increasing order and the first failure ends the search (a lucky pass above a
    failure does not count). ``None`` when the lowest rate already fails.
    """
    missing = {"rate", "p99_ms", "error_rate"} - set(table.columns)
    if missing:
        raise ValueError(f"capacity() needs a step_load table; columns {sorted(missing)} are missing.")
    _check_positive("slo_p99_ms", slo_p99_ms)
    best = None
    for _, row in table.sort_values("rate", kind="stable").iterrows():
        if not _passes(row, slo_p99_ms, max_error_rate):
            break
        best = float(row["rate"])
    return best


def find_capacity(
    target: Target,
    *,
    slo_p99_ms: float,
    start_rate: float = 20,
    factor: float = 1.5,
    max_rate: float = 5000,
    min_rate: float = 1.0,
    duration: float = 3.0,
    max_error_rate: float = 0.01,
    pause: float = 0.5,
    **kw: Any,
) -> tuple[float | None, pd.DataFrame]:
    """Raise the rate geometrically (``start_rate``, ``*factor``, ...) until a step breaks the SLO.

    Stops at the first failing step or after the step at ``max_rate``. If ``start_rate`` itself
    fails (a guess too high, or a machine busier than expected), the search walks down instead
    (``start_rate / factor``, ...) until a step passes or the rate would drop below ``min_rate``.
    Returns ``(capacity, table)`` where ``table`` is a :func:`step_load`-style table of the steps
    run, in increasing rate, and ``capacity`` is :func:`capacity` of it (None if even the lowest
    rate tried fails; equal to ``max_rate`` if nothing failed, which means the real capacity is
    higher). ``kw`` goes to :func:`run_open_loop`.
    """
    _check_target(target)
    _check_positive("slo_p99_ms", slo_p99_ms)
    rate = _check_positive("start_rate", start_rate)
    max_rate = _check_positive("max_rate", max_rate)
    _check_positive("duration", duration)
    if not (isinstance(factor, numbers.Real) and factor > 1):
        raise ValueError(f"factor must be > 1 so that the rate grows, got {factor!r}.")
    min_rate = _check_positive("min_rate", min_rate)
    if max_rate < rate:
        raise ValueError(f"max_rate ({max_rate:g}) must be >= start_rate ({rate:g}).")
    if min_rate > rate:
        raise ValueError(f"min_rate ({min_rate:g}) must be <= start_rate ({rate:g}).")
    rows, results = [], []

    def step(at: float) -> bool:
        if rows and pause:
            time.sleep(pause)
        result = run_open_loop(target, at, duration, **kw)
        rows.append(_summary_row(at, result))
        results.append(result)
        return _passes(rows[-1], slo_p99_ms, max_error_rate)

    if step(rate):
        while rate < max_rate:
            rate = min(rate * factor, max_rate)
            if not step(rate):
                break
    else:
        while rate / factor >= min_rate:
            rate /= factor
            if step(rate):
                break
    order = sorted(range(len(rows)), key=lambda i: rows[i]["rate"])
    table = pd.DataFrame([rows[i] for i in order]).reset_index(drop=True)
    table.attrs["results"] = [results[i] for i in order]
    return capacity(table, slo_p99_ms, max_error_rate), table


# -- overload and recovery -----------------------------------------------------------------------
def timeline(result: LoadResult, window: float = 0.5) -> pd.DataFrame:
    """Per-window counts and latency, bucketed by *intended* send time.

    Columns: ``t`` (window start, s), ``offered``, ``ok``, ``errors`` (request counts), their
    per-second rates ``offered_rps`` and ``ok_rps``, and ``p50_ms`` / ``p99_ms`` of the latency of
    the requests due in the window (NaN for an empty window).
    """
    window = _check_positive("window", window)
    span = max(result.duration, float(result.intended.max()) if len(result) else 0.0)
    count = max(1, int(math.ceil(span / window - 1e-9)))
    if len(result) and result.intended.max() >= count * window:
        count += 1
    index = np.clip((result.intended // window).astype(int), 0, count - 1) if len(result) else np.zeros(0, int)
    ok = result.ok
    latency = result.latency
    rows = []
    for k in range(count):
        mask = index == k
        n, good = int(mask.sum()), int(ok[mask].sum())
        rows.append(
            {
                "t": k * window,
                "offered": n,
                "ok": good,
                "errors": n - good,
                "offered_rps": n / window,
                "ok_rps": good / window,
                "p50_ms": _percentile_ms(latency[mask], 50),
                "p99_ms": _percentile_ms(latency[mask], 99),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class StressResult:
    """An overload followed by a lighter load: when did it break, and did it come back?

    ``timeline`` has one row per window (see :func:`timeline`) plus ``phase`` ("stress" for
    windows starting before the load drop, else "recovery"). A window is *healthy* when it has no
    errors and its p99 is within the SLO; empty windows are skipped.
    """

    result: LoadResult
    rate: float
    recovery_rate: float
    overload_seconds: float
    slo_p99_ms: float
    window: float
    timeline: pd.DataFrame
    goodput_rps: float
    error_kinds: dict[str, int]
    time_to_fail: float | None
    recovery_time: float | None

    def summary(self) -> dict:
        """The scenario's headline numbers, flat (suitable for a table or MLflow metrics)."""
        stress_part = self.timeline[self.timeline["phase"] == "stress"]
        return {
            "rate": self.rate,
            "recovery_rate": self.recovery_rate,
            "overload_seconds": self.overload_seconds,
            "slo_p99_ms": self.slo_p99_ms,
            "goodput_rps": self.goodput_rps,
            "stress_p99_ms": _percentile_ms(self.result.latency[self.result.intended < self.overload_seconds], 99),
            "worst_window_p99_ms": float(stress_part["p99_ms"].max()) if len(stress_part) else float("nan"),
            "time_to_fail_s": self.time_to_fail,
            "recovery_time_s": self.recovery_time,
            "error_rate": self.result.summary()["error_rate"],
            "errors": _errors_text(self.error_kinds),
        }


def stress(
    target: Target,
    *,
    rate: float,
    duration: float,
    recovery_rate: float,
    recovery_duration: float,
    slo_p99_ms: float,
    window: float = 0.5,
    timeout: float = 5.0,
    max_connections: int = 256,
) -> StressResult:
    """Overload at ``rate`` for ``duration`` s, then drop to ``recovery_rate`` for ``recovery_duration`` s.

    One open-loop schedule covers both phases, so the queue built up during the overload carries
    into the recovery phase. Reports ``time_to_fail`` (start of the first unhealthy window, s),
    ``recovery_time`` (from the load drop to the start of the first recovery window from which on
    every window is healthy; None if the end of the run is still unhealthy) and ``goodput_rps``
    (2xx answers within the SLO per second of the stress phase). ``result.rate`` of the returned
    run is the mean rate over both phases.
    """
    _check_target(target)
    rate = _check_positive("rate", rate)
    duration = _check_positive("duration", duration)
    recovery_rate = _check_positive("recovery_rate", recovery_rate)
    recovery_duration = _check_positive("recovery_duration", recovery_duration)
    slo_p99_ms = _check_positive("slo_p99_ms", slo_p99_ms)
    window = _check_positive("window", window)
    timeout = _check_positive("timeout", timeout)
    max_connections = _check_count("max_connections", max_connections)
    result = run_phases(target, [(rate, duration), (recovery_rate, recovery_duration)], timeout=timeout,
                        max_connections=max_connections)
    return _stress_result(result, rate, recovery_rate, duration, slo_p99_ms, window)


def _stress_result(
    result: LoadResult, rate: float, recovery_rate: float, duration: float, slo_p99_ms: float, window: float
) -> StressResult:
    table = timeline(result, window)
    table["phase"] = np.where(table["t"] < duration - 1e-9, "stress", "recovery")
    healthy = (table["errors"] == 0) & (table["p99_ms"] <= slo_p99_ms)
    seen = table["offered"] > 0

    time_to_fail = None
    failing = table[seen & ~healthy]
    if len(failing):
        time_to_fail = float(failing["t"].iloc[0])

    recovery_time = None
    recovery = table[(table["phase"] == "recovery") & seen]
    if len(recovery):
        bad = ~healthy[recovery.index]
        if not bad.any():
            recovery_time = float(recovery["t"].iloc[0] - duration)
        elif not bad.iloc[-1]:
            last_bad = bad[bad].index[-1]
            after = recovery.loc[recovery.index > last_bad]
            recovery_time = float(after["t"].iloc[0] - duration)

    in_stress = result.intended < duration
    good = result.ok & (result.latency * 1000.0 <= slo_p99_ms) & in_stress
    errors = [e for e, s in zip(result.errors, in_stress) if s and e]
    return StressResult(
        result=result,
        rate=rate,
        recovery_rate=recovery_rate,
        overload_seconds=duration,
        slo_p99_ms=slo_p99_ms,
        window=window,
        timeline=table,
        goodput_rps=float(good.sum()) / duration,
        error_kinds=dict(Counter(errors).most_common()),
        time_to_fail=time_to_fail,
        recovery_time=recovery_time,
    )


# -- the release gate ----------------------------------------------------------------------------
@dataclass
class GateResult:
    """The verdict of :func:`gate`: passed only if every check passed."""

    passed: bool
    checks: list[dict] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """One row per check: name, value, op, limit, passed."""
        return pd.DataFrame(self.checks, columns=["name", "value", "op", "limit", "passed"])

    def summary_line(self) -> str:
        """One line for a log or a notebook, e.g. ``gate FAILED: p99_ms 412 <= 200 (fail), ...``."""
        parts = [
            f"{c['name']} {c['value']:.4g} {c['op']} {c['limit']:.4g} ({'ok' if c['passed'] else 'FAIL'})"
            for c in self.checks
        ]
        return f"gate {'passed' if self.passed else 'FAILED'}: " + ", ".join(parts)


def gate(
    summary: dict, *, p99_ms: float, error_rate: float, min_throughput_rps: float | None = None
) -> GateResult:
    """Check a load test summary against release budgets.

    ``summary`` is :meth:`LoadResult.summary` (or one row of a :func:`step_load` table as a dict).
    Checks ``p99_ms <= p99_ms``, ``error_rate <= error_rate`` and, when given,
    ``throughput_rps >= min_throughput_rps``. A missing measurement (NaN) fails its check.
    """
    if isinstance(summary, pd.Series):
        summary = summary.to_dict()
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict such as LoadResult.summary(), got {type(summary).__name__}.")
    _check_positive("p99_ms", p99_ms)
    if not (isinstance(error_rate, numbers.Real) and 0 <= error_rate <= 1):
        raise ValueError(f"error_rate budget must be between 0 and 1, got {error_rate!r}.")
    budgets = [("p99_ms", "<=", p99_ms), ("error_rate", "<=", error_rate)]
    if min_throughput_rps is not None:
        _check_positive("min_throughput_rps", min_throughput_rps)
        budgets.append(("throughput_rps", ">=", min_throughput_rps))
    checks = []
    for name, op, limit in budgets:
        if name not in summary:
            raise ValueError(f"summary has no {name!r}; pass LoadResult.summary() or a step_load row.")
        value = float(summary[name])
        ok = value <= limit if op == "<=" else value >= limit  # NaN compares False: fails
        checks.append({"name": name, "value": value, "op": op, "limit": float(limit), "passed": bool(ok)})
    return GateResult(passed=all(c["passed"] for c in checks), checks=checks)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def log_gate(gate_result: GateResult, summary: dict, *, name: str = "predeployment") -> None:
    """Record a gate verdict in the active MLflow run.

    Logs metrics ``{name}_{key}`` for each finite numeric summary value, ``{name}_gate_passed``
    (1/0) and per check ``{name}_{check}_limit`` and ``{name}_{check}_passed``; the artifact
    ``{name}/gate.json`` (checks and summary); and the tag ``{name}_gate`` = "passed" / "failed".
    """
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError(
            "log_gate() needs an active MLflow run: call it inside `with mlflow.start_run():` "
            "(or after mlflow.start_run())."
        )
    if not name or not all(ch.isalnum() or ch in "_-." for ch in name):
        raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {name!r}.")
    metrics = {
        f"{name}_{key}": float(value)
        for key, value in summary.items()
        if _is_number(value) and math.isfinite(float(value))
    }
    metrics[f"{name}_gate_passed"] = float(gate_result.passed)
    for check in gate_result.checks:
        metrics[f"{name}_{check['name']}_limit"] = float(check["limit"])
        metrics[f"{name}_{check['name']}_passed"] = float(check["passed"])
    mlflow.log_metrics(metrics)

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (np.bool_, bool)):
            return bool(value)
        if _is_number(value):
            value = float(value) if isinstance(value, (float, np.floating)) else int(value)
            return value if not (isinstance(value, float) and not math.isfinite(value)) else None
        return value

    payload = {
        "passed": bool(gate_result.passed),
        "checks": [plain(check) for check in gate_result.checks],
        "summary": plain(dict(summary)),
    }
    mlflow.log_dict(payload, f"{name}/gate.json")
    mlflow.set_tag(f"{name}_gate", "passed" if gate_result.passed else "failed")


# -- figures -------------------------------------------------------------------------------------
def plot_latency_vs_rate(table: pd.DataFrame, slo_p99_ms: float | None = None):
    """p50 / p95 / p99 latency (ms, log scale) against the offered rate; the SLO as a dashed line.

    Steps with errors are marked with a red cross on their p99.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    data = table.sort_values("rate")
    for column, color in (("p50_ms", "#2a9d8f"), ("p95_ms", "#e9c46a"), ("p99_ms", "#e76f51")):
        ax.plot(data["rate"], data[column], marker="o", color=color, label=column.replace("_ms", ""))
    failed = data[data["error_rate"] > 0]
    if len(failed):
        ax.scatter(failed["rate"], failed["p99_ms"], marker="x", s=80, color="red", zorder=3, label="errors")
    if slo_p99_ms is not None:
        ax.axhline(slo_p99_ms, color="#264653", ls="--", lw=1, label=f"SLO p99 {slo_p99_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("latency from intended send (ms)")
    ax.set_title("Latency percentiles vs offered load", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_histogram(result: LoadResult, bins: int = 50):
    """Histogram of the latencies (ms, log count scale) with p50 and p99 marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    latency_ms = result.latency * 1000.0
    if len(latency_ms) == 0:
        ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.hist(latency_ms, bins=bins, color="#457b9d")
        ax.set_yscale("log")
        for key, color in (("p50_ms", "#2a9d8f"), ("p99_ms", "#e76f51")):
            value = result.percentiles((50, 99))[key]
            ax.axvline(value, color=color, ls="--", label=f"{key.replace('_ms', '')} = {value:.1f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency from intended send (ms)")
    ax.set_ylabel("requests")
    rate = f" at {result.rate:g} req/s" if result.rate else ""
    ax.set_title(f"Latency distribution, {result.kind} loop{rate}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_timeline(stress_result: StressResult):
    """p99 per window (top, with the SLO) and ok / error answers per second (bottom); recovery shaded."""
    import matplotlib.pyplot as plt

    table = stress_result.timeline
    window = stress_result.window
    end = float(table["t"].max() + window) if len(table) else stress_result.overload_seconds
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    centers = table["t"] + window / 2
    top.plot(centers, table["p99_ms"], marker="o", color="#e76f51", label="p99 per window")
    top.axhline(stress_result.slo_p99_ms, color="#264653", ls="--", lw=1, label="SLO")
    top.set_yscale("log")
    top.set_ylabel("p99 (ms)")
    # Answers are counted when they arrive (what the server delivered), requests when they were due.
    result = stress_result.result
    edges = np.arange(0.0, max(end, float(np.nanmax(result.done, initial=0.0))) + window, window)
    ok_counts, _ = np.histogram(result.done[result.ok], bins=edges)
    error_counts, _ = np.histogram(result.done[~result.ok], bins=edges)
    bottom.step(table["t"], table["offered"] / window, where="post", color="#264653", lw=1, label="requests due/s")
    bottom.bar(edges[:-1], ok_counts / window, width=window, align="edge", color="#2a9d8f", label="ok answers/s")
    bottom.bar(edges[:-1], error_counts / window, width=window, align="edge", bottom=ok_counts / window,
               color="#e63946", label="errors/s")
    bottom.set_ylabel("per second")
    bottom.set_xlabel("seconds from start (p99: by intended send time; answers: by arrival)")
    for ax in (top, bottom):
        ax.axvspan(stress_result.overload_seconds, end, color="#a8dadc", alpha=0.3, lw=0)
        ax.legend(fontsize=8, loc="upper right")
    title = f"Stress at {stress_result.rate:g} req/s, then {stress_result.recovery_rate:g} req/s (shaded)"
    top.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
