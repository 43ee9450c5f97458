"""Measuring the monitor itself: how often it cries wolf, how fast it sees a real shift.

Thresholds are a trade-off, so a course measures both sides instead of quoting defaults:

- :func:`false_alarm_rate`: windows drawn from the same rows as nothing but sampling noise;
  every alarm on them is false;
- :func:`detection_delay`: a stream of windows where a known shift (``k`` reference sigmas added
  to one feature) starts at a known window; the delay is how many windows pass before the first
  alarm (0: the first shifted window already alarms).
- :func:`alert_states`: what Prometheus' ``for:`` does to a sequence of alarms (inactive,
  pending, firing), so a notebook can show alert decisions over a year without a server.

Windows are drawn at random (with a seed) from a pool of real rows: the hours of a year are not
independent, so a no-drift window must be a random sample, not a calendar period.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlops_lab.monitoring.drift import MonitoringError
from mlops_lab.monitoring.monitor import Monitor


def split_pool(frame: pd.DataFrame, reference_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random reference of ``reference_rows`` rows and the rest as a pool of no-drift rows."""
    if not 0 < reference_rows < len(frame):
        raise MonitoringError(f"reference_rows must be between 1 and {len(frame) - 1}, got {reference_rows}.")
    order = np.random.default_rng(seed).permutation(len(frame))
    return (frame.iloc[order[:reference_rows]].reset_index(drop=True),
            frame.iloc[order[reference_rows:]].reset_index(drop=True))


def _sample(pool: pd.DataFrame, size: int, rng: np.random.Generator) -> pd.DataFrame:
    if size > len(pool):
        raise MonitoringError(f"window of {size} rows asked from a pool of {len(pool)}.")
    return pool.iloc[rng.choice(len(pool), size, replace=False)].reset_index(drop=True)


def false_alarm_rate(monitor: Monitor, pool: pd.DataFrame, *, windows: int = 100, size: int = 1000,
                     seed: int = 0) -> dict:
    """Alarms raised on ``windows`` random no-drift windows of ``size`` rows (all of them false).

    Returns ``rate`` (share of windows with an alarm), ``alarms``, ``windows`` and ``features``
    (how often each feature was, wrongly, judged drifted)."""
    rng = np.random.default_rng(seed)
    alarms, blamed = 0, pd.Series(0, index=monitor.features)
    for _ in range(windows):
        report = monitor.check(_sample(pool, size, rng)).drift
        alarms += report.alarm
        blamed[report.drifted] += 1
    return {"rate": alarms / windows, "alarms": alarms, "windows": windows, "size": size,
            "features": blamed[blamed > 0].sort_values(ascending=False).to_dict()}


def detection_delay(monitor: Monitor, pool: pd.DataFrame, feature: str, *, sigmas: float = 0.5, size: int = 1000,
                    before: int = 3, after: int = 5, trials: int = 20, seed: int = 0) -> dict:
    """Windows from the start of a shift of ``sigmas`` reference standard deviations in ``feature``
    to the first alarm naming it, over ``trials`` streams of ``before`` clean and ``after``
    shifted windows of ``size`` rows.

    Returns the ``delays`` (None where the shift was never caught), their ``mean`` and ``max``,
    ``missed`` trials, and ``early`` alarms on ``feature`` before the shift started."""
    if feature not in monitor.numeric:
        raise MonitoringError(f"{feature!r} is not one of the monitor's numeric features {monitor.numeric}.")
    shift = sigmas * float(monitor.reference[feature].std())
    rng = np.random.default_rng(seed)
    delays: list[int | None] = []
    early = 0
    for _ in range(trials):
        delay = None
        for index in range(before + after):
            window = _sample(pool, size, rng)
            shifted = index >= before
            if shifted:
                window[feature] = window[feature] + shift
            caught = feature in monitor.check(window).drift.drifted
            if caught and not shifted:
                early += 1
            if caught and shifted:
                delay = index - before
                break
        delays.append(delay)
    found = [d for d in delays if d is not None]
    return {"delays": delays, "mean": float(np.mean(found)) if found else float("nan"),
            "max": max(found) if found else None, "missed": delays.count(None), "early": early,
            "trials": trials, "size": size, "sigmas": sigmas}


def alert_states(alarms: Sequence[bool], for_windows: int = 1) -> list[str]:
    """Prometheus' alert states over a sequence of per-window alarms with ``for:`` = ``for_windows`` windows.

    A condition that holds starts ``pending``; it is ``firing`` once it has held for
    ``for_windows`` consecutive evaluations after the first (``for_windows=0`` fires at once);
    any evaluation where it does not hold resets it to ``inactive``."""
    if for_windows < 0:
        raise MonitoringError("for_windows must be 0 or more.")
    states, held = [], 0
    for alarm in alarms:
        held = held + 1 if alarm else 0
        states.append("inactive" if not held else "firing" if held > for_windows else "pending")
    return states
