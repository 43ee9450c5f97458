"""What a drift check costs: the course's monitor beside Evidently, and the monitor service as its log grows.

**Per window**: one drift check of the ten Bikeshare features against a random reference of 4,000
hours, for windows of 1,000 and 5,000 rows drawn from the other hours: ``monitoring.feature_drift``
(KS or chi-squared, PSI, Wasserstein per feature) against Evidently's ``DataDriftPreset``
(``report.evidently_drift``: its own test per column, the baseline a team would otherwise run),
each repeated ``REPEATS`` times after a warm-up, in one process, one after the other. The decisions
of both are compared on the same windows (agreement rate), so speed is not bought with answers.

**Per check of the service**: the monitor service's check (``service.Watcher.tick``: read the
inference log, parse the requests, join labels, judge the last ``WINDOW`` rows, set the gauges) on
logs of 1,000 to 50,000 answers written as the router writes them, against the same check reading
the whole log first (what a naive monitor does). Goal: the service's check time stays flat as the
log grows (at most 1.5x from the smallest to the largest log), while the naive one grows with it.

Writes results/monitoring.json and .md.

    TQDM_DISABLE=1 python benchmarks/bench_monitoring.py [--repeats 5] [--logs 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
REPEATS = 5
WINDOWS = (1000, 5000)
LOGS = (1000, 10_000, 50_000)
WINDOW = 1000


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (imports, caches)
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def per_window(repeats: int, sizes: tuple[int, ...] = WINDOWS) -> dict:
    from mlops_lab import datasets, monitoring, training
    from mlops_lab.monitoring import calibration, report

    bikes = datasets.load_bikeshare()
    reference, pool = calibration.split_pool(bikes, 4000, seed=42)
    numeric, categorical = training.BIKE_NUMERIC, training.BIKE_CATEGORICAL
    rows = {}
    for size in sizes:
        window = pool.sample(min(size, len(pool)), random_state=1, replace=size > len(pool))
        ours_s, ours = _timed(lambda: monitoring.feature_drift(reference, window, numeric=numeric,
                                                               categorical=categorical), repeats)
        theirs_s, theirs = _timed(lambda: report.evidently_drift(reference, window, numeric=numeric,
                                                                 categorical=categorical), repeats)
        rows[size] = {"ours_ms": round(ours_s * 1000, 1), "evidently_ms": round(theirs_s * 1000, 1),
                      "evidently_over_ours": round(theirs_s / ours_s, 2),
                      "agreement": round(report.agreement(ours.table, theirs).rate, 3)}
    return rows


def _write_log(path: Path, count: int, frame) -> None:
    from mlops_lab import serving
    from mlops_lab.deployment.log import LogWriter

    writer = LogWriter(path)
    bodies = [serving.payload(frame.iloc[[i]])[0].decode() for i in range(len(frame))]
    start = time.time() - count
    for i in range(count):
        writer.put({"request_id": f"r{i}", "at": start + i, "role": "primary", "variant": "stable", "version": "1",
                    "replica": None, "status": 200, "latency_ms": 1.0, "key": None, "request": bodies[i % len(bodies)],
                    "response": json.dumps({"predictions": [i % 2]}), "error": None})
    writer.close()


def per_check(sizes: tuple[int, ...], repeats: int) -> dict:
    from mlops_lab import datasets, monitoring, training
    from mlops_lab.monitoring import feedback, service, windows

    credit = datasets.load_german_credit()
    X = credit[training.CREDIT_FEATURES]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as folder:
        reference = Path(folder) / "reference.parquet"
        X.assign(prediction=credit["risk"].to_numpy(), label=credit["risk"].to_numpy()).to_parquet(reference)
        for count in sizes:
            path = Path(folder) / f"log-{count}.db"
            _write_log(path, count, X)
            settings = service.ServiceConfig(log=str(path), reference=str(reference), numeric=training.CREDIT_NUMERIC,
                                             categorical=training.CREDIT_CATEGORICAL, window=WINDOW,
                                             categorical_prediction=True)
            watcher = service.Watcher(settings)
            watcher.log.add_labels({f"r{i}": i % 2 for i in range(0, count, 2)})
            tick_s, status = _timed(watcher.tick, repeats)
            assert "error" not in status, status

            def naive():  # the whole log, every time
                scored = feedback.join_labels(feedback.requests_frame(watcher.log), watcher.log).frame
                frame = windows.latest(scored, WINDOW, time="at").frame
                return watcher.monitor.check(frame)

            naive_s, _ = _timed(naive, max(1, repeats // 2))
            rows[count] = {"service_ms": round(tick_s * 1000, 1), "whole_log_ms": round(naive_s * 1000, 1),
                           "whole_log_over_service": round(naive_s / tick_s, 2), "verdict": status["verdict"]}
    smallest, largest = rows[min(sizes)], rows[max(sizes)]
    return {"rows": rows, "growth": round(largest["service_ms"] / smallest["service_ms"], 2),
            "naive_growth": round(largest["whole_log_ms"] / smallest["whole_log_ms"], 2)}


def main(out: Path = OUT, repeats: int = REPEATS, logs: tuple[int, ...] = LOGS,
         windows: tuple[int, ...] = WINDOWS) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "repeats": repeats, "window": WINDOW,
            "machine": platform.machine()}
    windows = per_window(repeats, tuple(windows))
    checks = per_check(tuple(logs), repeats)
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "per_window": windows, "per_check": checks}
    (out / "monitoring.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "monitoring.md").write_text(_markdown(meta, windows, checks))
    print(_markdown(meta, windows, checks))
    return 0


def _markdown(meta: dict, windows: dict, checks: dict) -> str:
    lines = ["# Monitoring: what a drift check costs", "",
             f"{meta['cpus']} CPUs, Python {meta['python']}, median of {meta['repeats']} runs after a warm-up.", "",
             "## One drift check of 10 Bikeshare features (reference: 4,000 hours)", "",
             "| window rows | course monitor (ms) | Evidently (ms) | Evidently / ours | decisions agree |",
             "|---:|---:|---:|---:|---:|"]
    for size, row in windows.items():
        lines.append(f"| {size:,} | {row['ours_ms']} | {row['evidently_ms']} | {row['evidently_over_ours']}x | "
                     f"{row['agreement']:.0%} |")
    lines += ["", f"## One check of the monitor service (window {meta['window']:,} rows)", "",
              "| logged answers | service check (ms) | reading the whole log (ms) | whole log / service |",
              "|---:|---:|---:|---:|"]
    for count, row in checks["rows"].items():
        lines.append(f"| {count:,} | {row['service_ms']} | {row['whole_log_ms']} | {row['whole_log_over_service']}x |")
    lines += ["", f"The service's check grows {checks['growth']}x from the smallest log to the largest (goal: at most "
              f"1.5x); reading the whole log grows {checks['naive_growth']}x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--logs", type=int, nargs="+", default=list(LOGS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.exit(main(args.out, args.repeats, tuple(args.logs)))
