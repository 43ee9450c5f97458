"""Serving throughput side by side: MLflow's scoring server with 1 and 2 workers vs the ONNX fast path.

The same gradient-boosting credit model (lesson 10's champion configuration) behind three servers,
each started and measured in turn on this machine, with the load generator on the same machine:

- ``mlflow models serve``, 1 uvicorn worker (the baseline);
- ``mlflow models serve``, 2 workers;
- the validating gateway of ``mlops_lab.gateway`` with the ONNX back end, 1 worker (the fast path:
  the same input checks, the pipeline run by onnxruntime).

For each: the **maximum throughput**, the highest offered rate (one-row requests, open loop,
raised by ``FACTOR`` per step) that the server keeps up with: answered within ``KEEP_UP_P99_MS`` at
the 99th percentile, under 1 % errors; then the **p50/p99 at 50 % of that rate**, a steady load of
``STEADY_SECONDS``. Ratios are to the 1-worker server. Latencies count from the intended send time
(no coordinated omission). Writes results/serving.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).parent / "results"
KEEP_UP_P99_MS = 500.0
FACTOR = 1.25
STEP_SECONDS = 3.0
STEADY_SECONDS = 6.0
TARGET = 3.0  # the fast path should reach at least 3x the 1-worker throughput at an equal or lower p99


def measure(server, body: dict, *, start_rate: float, step_seconds: float, steady_seconds: float,
            max_rate: float) -> dict:
    from mlops_lab import loadtest

    target = loadtest.Target.json(server.url + "/invocations", body)
    loadtest.run_open_loop(target, start_rate, min(2.0, step_seconds))  # warm-up: connections, caches
    best, table = loadtest.find_capacity(target, slo_p99_ms=KEEP_UP_P99_MS, start_rate=start_rate, factor=FACTOR,
                                         max_rate=max_rate, duration=step_seconds)
    if best is None:
        raise RuntimeError(f"{server.name} could not keep up with {start_rate}/s: {table.to_dict('records')}")
    row = table[table["rate"] == best].iloc[0]
    steady = loadtest.run_open_loop(target, best / 2, steady_seconds).summary()
    return {"max_rate": float(best), "max_throughput_rps": float(row["throughput_rps"]),
            "half_load_rps": best / 2, "p50_ms_at_half": steady["p50_ms"], "p99_ms_at_half": steady["p99_ms"],
            "errors_at_half": steady["error_rate"], "steps": len(table),
            "max_send_lag_ms": float(table["max_send_lag_ms"].max())}


def main(out: Path = OUT, step_seconds: float = STEP_SECONDS, steady_seconds: float = STEADY_SECONDS,
         start_rate: float = 40, max_rate: float = 4000) -> int:
    import mlflow

    from mlops_lab import config, datasets, serving, training

    saved = os.environ.get("MLOPS_LAB_HOME")
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlops-lab-bench-") as home:
        os.environ["MLOPS_LAB_HOME"] = home
        try:
            config.quiet_logs()
            config.use_workspace("bench-serving")
            split = training.credit_split(datasets.load_german_credit())
            tracked = training.fit_and_log_credit("gradient_boosting", split, n_estimators=100, learning_rate=0.04,
                                                  max_depth=3, subsample=0.7, min_samples_leaf=9)
            model = mlflow.artifacts.download_artifacts(tracked.model_uri, dst_path=str(Path(home) / "model"))
            body = json.loads(serving.payload(split.X_test.head(1))[0])
            servers = {"mlflow, 1 worker": lambda: serving.model_server(model, workers=1),
                       "mlflow, 2 workers": lambda: serving.model_server(model, workers=2),
                       "onnx gateway, 1 worker": lambda: serving.gateway_server(model, backend="onnx")}
            for name, make in servers.items():
                with make() as server:
                    results[name] = measure(server, body, start_rate=start_rate, step_seconds=step_seconds,
                                            steady_seconds=steady_seconds, max_rate=max_rate)
                print(f"{name}: {results[name]}", file=sys.stderr)
        finally:
            if saved is None:
                os.environ.pop("MLOPS_LAB_HOME", None)
            else:
                os.environ["MLOPS_LAB_HOME"] = saved
    base = results["mlflow, 1 worker"]
    for row in results.values():
        row["throughput_ratio"] = row["max_throughput_rps"] / base["max_throughput_rps"]
        row["p99_ratio"] = row["p99_ms_at_half"] / base["p99_ms_at_half"]
    fast = results["onnx gateway, 1 worker"]
    met = fast["throughput_ratio"] >= TARGET and fast["p99_ms_at_half"] <= base["p99_ms_at_half"]
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "keep_up_p99_ms": KEEP_UP_P99_MS,
            "factor": FACTOR, "step_seconds": step_seconds, "steady_seconds": steady_seconds,
            "target": f"fast path >= {TARGET}x the 1-worker throughput at equal or lower p99", "target_met": met}
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = ["# Serving throughput: MLflow scoring server (1 and 2 workers) vs the ONNX fast path", "",
             f"One-row credit requests, open-loop load from the same machine, measured {meta['when']} on "
             f"{meta['cpus']} CPUs (Python {meta['python']}). Maximum throughput: the highest offered rate "
             f"(steps of x{FACTOR}, {step_seconds:g} s each) answered with p99 <= {KEEP_UP_P99_MS:g} ms and < 1 % errors. "
             f"Latency at 50 % of that rate over {steady_seconds:g} s, from the intended send time.", "",
             "| server | max throughput (req/s) | p50 at 50 % (ms) | p99 at 50 % (ms) | throughput vs 1 worker | p99 vs 1 worker |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in results.items():
        lines.append(f"| {name} | {row['max_throughput_rps']:.0f} | {row['p50_ms_at_half']:.1f} | "
                     f"{row['p99_ms_at_half']:.1f} | {row['throughput_ratio']:.1f}x | {row['p99_ratio']:.2f}x |")
    limited = [name for name, row in results.items() if row["max_send_lag_ms"] > 100 or row["max_rate"] >= max_rate]
    if limited:
        lines += ["", f"For {', '.join(limited)}, the load generator (on the same cores) fell more than 100 ms behind "
                      "its schedule at the top rates, or the sweep reached its top rate: the client was the limit, so "
                      "the server's real maximum is at least the figure shown."]
    lines += ["", f"Target ({meta['target']}): {'met' if met else 'NOT met'}."]
    (out / "serving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
