"""Prediction latency of one credit model three ways, side by side in one run.

scikit-learn (the fitted pipeline), MLflow pyfunc (the logged model, as `mlflow models serve` loads
it) and onnxruntime (the same pipeline converted with skl2onnx), each returning decisions (labels). Single-row p50/p95 and the time for
one 1,000-row batch; ratios against scikit-learn. Writes results/prediction.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import mlflow

from mlops_lab import config, datasets, packaging, training

OUT = Path(__file__).parent / "results"


def main(out: Path = OUT, single_rows: int = 300, repeats: int = 7) -> int:
    saved = os.environ.get("MLOPS_LAB_HOME")
    with tempfile.TemporaryDirectory(prefix="mlops-lab-bench-") as home:
        os.environ["MLOPS_LAB_HOME"] = home
        config.use_workspace("bench")
        split = training.credit_split(datasets.load_german_credit())
        tracked = training.fit_and_log_credit("gradient_boosting", split, n_estimators=100,
                                              learning_rate=0.04, max_depth=3, subsample=0.7)
        pyfunc = mlflow.pyfunc.load_model(tracked.model_uri)
        onnx = packaging.OnnxPredictor(packaging.to_onnx(tracked.pipeline, split.X_train))
        check = packaging.parity(tracked.pipeline, onnx, split.X_test)
        table = packaging.latency_table(
            {"scikit-learn": tracked.pipeline.predict, "pyfunc": pyfunc.predict, "onnxruntime": onnx.predict},
            split.X_test, baseline="scikit-learn", single_rows=single_rows, batch_rows=1000, repeats=repeats)
    if saved is None:
        os.environ.pop("MLOPS_LAB_HOME", None)
    else:
        os.environ["MLOPS_LAB_HOME"] = saved
    out.mkdir(parents=True, exist_ok=True)
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "parity": check}
    (out / "prediction.json").write_text(json.dumps({"meta": meta, "results": table.reset_index(names="path").to_dict("records")}, indent=2) + "\n")
    lines = ["# Prediction latency: scikit-learn vs MLflow pyfunc vs onnxruntime", "",
             f"Gradient-boosting credit pipeline, measured {meta['when']} on {meta['cpus']} CPUs "
             f"(Python {meta['python']}). ONNX parity: labels identical = {check['labels_identical']}, "
             f"max probability difference = {check['max_probability_diff']:.1e}.", "",
             "| path | single-row p50 (ms) | single-row p95 (ms) | 1,000-row batch (ms) | single-row speed-up | batch speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in table.iterrows():
        lines.append(f"| {name} | {row.single_p50_ms:.3f} | {row.single_p95_ms:.3f} | {row.batch_1000_ms:.2f} | "
                     f"{row.single_speedup:.1f}x | {row.batch_speedup:.1f}x |")
    (out / "prediction.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if check["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
