"""Windows over a stream of production rows: fixed (a month, N requests) and sliding.

A monitor never sees "the production data"; it sees the rows that arrived in some window. A
**fixed** window (tumbling: every calendar month, every 1,000 requests) gives one decision per
window and is what a monthly report shows. A **sliding** window (the last N rows, moved every
``step`` rows or the last 7 days moved every day) sees drift while traffic flows, at the price
of overlapping, correlated decisions. Both are a few lines of pandas over a time-ordered frame;
Prometheus computes the same kind of windows over metrics (``rate(...[5m])``), not over rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_lab.monitoring.drift import MonitoringError, check_columns


@dataclass
class Window:
    """The rows of one window, with its name and the time span they cover."""

    name: str
    frame: pd.DataFrame
    start: object = None
    end: object = None

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"<Window {self.name}: {len(self.frame)} rows, {self.start} .. {self.end}>"


def _ordered(frame: pd.DataFrame, time: str | None) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise MonitoringError("windows are cut from a pandas DataFrame of rows.")
    if time is None:
        return frame.reset_index(drop=True)
    check_columns(frame, [time], "stream")
    if pd.api.types.is_numeric_dtype(frame[time]):
        raise MonitoringError(f"Column {time!r} holds numbers, not times: convert it first, e.g. "
                              f"pd.to_datetime(frame[{time!r}], unit='s', utc=True).")
    try:
        stamps = pd.to_datetime(frame[time], errors="coerce")
    except (TypeError, ValueError):  # naive and zone-aware times mixed: compare them all in UTC
        stamps = pd.to_datetime(frame[time], errors="coerce", utc=True)
    if stamps.isna().any():
        raise MonitoringError(f"Column {time!r} has {int(stamps.isna().sum())} value(s) that are not times.")
    return frame.assign(**{time: stamps}).sort_values(time, kind="stable").reset_index(drop=True)


def _span(part: pd.DataFrame, time: str | None) -> tuple:
    if time is None or not len(part):
        return (int(part.index[0]) if len(part) else None, int(part.index[-1]) if len(part) else None)
    return part[time].iloc[0], part[time].iloc[-1]


def _count(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MonitoringError(f"{name} must be a positive whole number of rows or a pandas offset such as '7D', "
                              f"got {value!r}.")
    return int(value)


def fixed(frame: pd.DataFrame, every: int | str, *, time: str | None = "timestamp",
          complete: bool = True) -> Iterator[Window]:
    """Tumbling windows: ``every`` rows (an int) or every calendar period (``"MS"`` months, ``"7D"``).

    Rows are ordered by ``time`` first (``time=None`` keeps the frame's order). With
    ``complete=True`` a last window of fewer than ``every`` rows is left out (it is still filling)."""
    rows = _ordered(frame, time)
    if isinstance(every, str):
        if time is None:
            raise MonitoringError("calendar windows need a time column (time=...).")
        try:
            groups = rows.groupby(pd.Grouper(key=time, freq=every), sort=True)
        except ValueError as error:
            raise MonitoringError(f"{every!r} is not a pandas frequency (try 'MS' for months, '7D', '1h').") from error
        for start, part in groups:
            if len(part):
                name = start.strftime("%Y-%m") if every in ("MS", "M", "ME") else str(start)
                yield Window(name, part.reset_index(drop=True), *_span(part, time))
        return
    size = _count(every, "every")
    for number, begin in enumerate(range(0, len(rows), size), start=1):
        part = rows.iloc[begin:begin + size]
        if complete and len(part) < size:
            break
        yield Window(f"rows {begin + 1}-{begin + len(part)}", part.reset_index(drop=True), *_span(part, time))


def sliding(frame: pd.DataFrame, size: int | str, step: int | str, *, time: str | None = "timestamp") -> Iterator[Window]:
    """Overlapping windows of the last ``size`` rows (or the last ``size`` of time, e.g. ``"14D"``),
    moved on by ``step`` rows (or ``step`` of time, e.g. ``"1D"``). The first window ends when
    ``size`` rows (or ``size`` of time) have arrived."""
    rows = _ordered(frame, time)
    if isinstance(size, str) != isinstance(step, str):
        raise MonitoringError("size and step must both be row counts or both be time offsets.")
    if isinstance(size, str):
        if time is None:
            raise MonitoringError("time windows need a time column (time=...).")
        try:
            width, move = pd.Timedelta(size), pd.Timedelta(step)
        except ValueError as error:
            raise MonitoringError(f"{size!r} / {step!r}: not time offsets (try '14D' and '1D').") from error
        if width <= pd.Timedelta(0) or move <= pd.Timedelta(0):
            raise MonitoringError("size and step must be positive.")
        if not len(rows):
            return
        first, last = rows[time].iloc[0], rows[time].iloc[-1]
        end = first + width
        while end <= last + move:
            part = rows[(rows[time] >= end - width) & (rows[time] < end)]
            if len(part):
                yield Window(f"until {end}", part.reset_index(drop=True), end - width, end)
            end += move
        return
    width, move = _count(size, "size"), _count(step, "step")
    for end in range(width, len(rows) + 1, move):
        part = rows.iloc[end - width:end]
        yield Window(f"rows {end - width + 1}-{end}", part.reset_index(drop=True), *_span(part, time))


def latest(frame: pd.DataFrame, size: int, *, time: str | None = "timestamp") -> Window:
    """The sliding window as it is now: the last ``size`` rows (fewer if fewer have arrived)."""
    rows = _ordered(frame, time)
    part = rows.iloc[-_count(size, "size"):] if len(rows) else rows
    return Window(f"last {size} rows", part.reset_index(drop=True), *_span(part, time))
