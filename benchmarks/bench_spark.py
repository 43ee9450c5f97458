"""Batch-scoring throughput side by side: pandas, the scoring server over HTTP, Spark on 1 and 2 cores.

The same gradient-boosting credit model (lesson 08's champion configuration, logged in a temporary
workspace) scores German Credit enlarged by resampling (``spark.enlarge``) to each of ``SIZES``
rows, four ways, one after the other on this machine:

- **pandas**: ``mlflow.pyfunc.load_model(...).predict`` on the whole frame in memory (the baseline);
- **scoring server (HTTP)**: ``mlflow models serve`` (1 worker), ``CHUNK_ROWS`` rows per request
  (``serving.score_over_http``), client on the same machine;
- **Spark local[1]** and **local[2]**: a job that reads the rows from Parquet, scores them with
  ``mlflow.pyfunc.spark_udf(env_manager="local")`` and computes every prediction (Spark's ``noop``
  sink: no output cost).

Start-up is excluded everywhere (loading the model, starting the server or the session); each
figure is the best of ``REPEATS`` runs after one warm-up. Ratios are rows/s against pandas at the
same size. Writes results/spark.json and .md.

    TQDM_DISABLE=1 python benchmarks/bench_spark.py [--sizes 10000 50000 200000] [--repeats 2] [--no-http]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).parent / "results"
SIZES = (10_000, 50_000, 200_000)
REPEATS = 2
CHUNK_ROWS = 1000


def main(out: Path = OUT, sizes=SIZES, repeats: int = REPEATS, http: bool = True) -> int:
    import mlflow

    from mlops_lab import config, datasets, spark, training

    saved = os.environ.get("MLOPS_LAB_HOME")
    with tempfile.TemporaryDirectory(prefix="mlops-lab-bench-") as home:
        os.environ["MLOPS_LAB_HOME"] = home
        try:
            config.quiet_logs()
            config.use_workspace("bench-spark")
            split = training.credit_split(datasets.load_german_credit())
            tracked = training.fit_and_log_credit("gradient_boosting", split, **training.CHAMPION_PARAMS)
            model = mlflow.artifacts.download_artifacts(tracked.model_uri, dst_path=str(Path(home) / "model"))
            table = spark.throughput(model, datasets.load_german_credit(), sizes=tuple(sizes), http=http,
                                     repeats=repeats, chunk_size=CHUNK_ROWS)
        finally:
            mlflow.set_tracking_uri(None)
            if saved is None:
                os.environ.pop("MLOPS_LAB_HOME", None)
            else:
                os.environ["MLOPS_LAB_HOME"] = saved
    print(table.to_string(index=False), file=sys.stderr)
    results = [{k: (float(v) if k != "method" else v) if k != "rows" else int(v) for k, v in row.items()}
               for row in table.to_dict("records")]
    best = {}
    for size in sizes:
        at = [r for r in results if r["rows"] == size]
        best[str(size)] = max(at, key=lambda r: r["rows_per_s"])["method"]
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "sizes": list(sizes), "repeats": repeats,
            "chunk_rows": CHUNK_ROWS, "fastest": best}
    out.mkdir(parents=True, exist_ok=True)
    (out / "spark.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    methods = list(dict.fromkeys(r["method"] for r in results))
    lines = ["# Batch scoring: pandas vs the scoring server vs Spark on 1 and 2 cores", "",
             f"Gradient-boosting credit model, German Credit resampled to each size, measured {meta['when']} on "
             f"{meta['cpus']} CPUs (Python {meta['python']}). Rows per second, best of {repeats} after a warm-up, "
             f"start-up excluded; HTTP sends {CHUNK_ROWS:,} rows per request; Spark reads Parquet and computes "
             "every prediction (noop sink). Ratio: against pandas at the same size.", "",
             "| rows | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for size in sizes:
        cells = []
        for method in methods:
            row = next(r for r in results if r["rows"] == size and r["method"] == method)
            cells.append(f"{row['rows_per_s']:,.0f} ({row['vs_pandas']:.2f}x)")
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    lines += ["", "Fastest at each size: " + "; ".join(f"{int(s):,} rows: {m}" for s, m in best.items()) + "."]
    (out / "spark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _parse(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="rows to score, each size")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="measured runs per method and size")
    parser.add_argument("--no-http", dest="http", action="store_false", help="skip the scoring server")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for spark.json and spark.md")
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main(**_parse()))
