"""What lesson 16's decision model costs per prediction, side by side in one run.

The champion as lesson 08 serves it (a scikit-learn pipeline through MLflow's pyfunc, answering a
class) against the custom decision model (pyfunc: the data contract, lesson 02's rules, the
classifier, the threshold) without reason codes (``reasons=0``) and with three (SHAP on every
answer). Single-row p50/p95 and a 1,000-row batch; ratios against the champion. Writes
results/custom_models.json and .md.
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
import numpy as np

from mlops_lab import config, custom_models, datasets, packaging, training

OUT = Path(__file__).parent / "results"


def main(out: Path = OUT, single_rows: int = 200, repeats: int = 5) -> int:
    saved = os.environ.get("MLOPS_LAB_HOME")
    with tempfile.TemporaryDirectory(prefix="mlops-lab-bench-") as home:
        os.environ["MLOPS_LAB_HOME"] = home
        config.use_workspace("bench")
        split = training.credit_split(datasets.load_german_credit())
        features = [f for f in training.CREDIT_FEATURES if f != "sex"]
        champion = training.fit_and_log_credit("gradient_boosting", split, features=features, n_estimators=100,
                                               learning_rate=0.04, max_depth=3, subsample=0.7, min_samples_leaf=9)
        parts = custom_models.train_parts(split)
        logged = custom_models.log_decision_model(parts, split, form="code")
        plain = mlflow.pyfunc.load_model(champion.model_uri)
        decision = mlflow.pyfunc.load_model(logged.model_uri)
        X = training.model_input(split.X_test)
        core = custom_models.DecisionEstimator(parts.rules, parts.classifier, 0.5)
        same = bool(np.allclose(decision.predict(X, params={"reasons": 0})["probability_good"],
                                core.predict_proba(X)[:, 1], atol=1e-6))
        table = packaging.latency_table(
            {"champion (pyfunc, a class)": plain.predict,
             "decision model, no reasons": lambda rows: decision.predict(rows, params={"reasons": 0}),
             "decision model, 3 reasons": lambda rows: decision.predict(rows, params={"reasons": 3})},
            X, baseline="champion (pyfunc, a class)", single_rows=single_rows, batch_rows=1000, repeats=repeats)
    if saved is None:
        os.environ.pop("MLOPS_LAB_HOME", None)
    else:
        os.environ["MLOPS_LAB_HOME"] = saved
    out.mkdir(parents=True, exist_ok=True)
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "pyfunc_matches_its_parts": same}
    (out / "custom_models.json").write_text(json.dumps(
        {"meta": meta, "results": table.reset_index(names="path").to_dict("records")}, indent=2) + "\n")
    lines = ["# What a custom decision model costs per prediction", "",
             f"German Credit, gradient boosting; measured {meta['when']} on {meta['cpus']} CPUs (Python "
             f"{meta['python']}). Ratios are the champion's time over each path's (below 1: slower).", "",
             "| path | single-row p50 (ms) | single-row p95 (ms) | 1,000-row batch (ms) | single-row ratio | batch ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in table.iterrows():
        lines.append(f"| {name} | {row.single_p50_ms:.2f} | {row.single_p95_ms:.2f} | {row.batch_1000_ms:.1f} | "
                     f"{row.single_speedup:.2f}x | {row.batch_speedup:.2f}x |")
    (out / "custom_models.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
