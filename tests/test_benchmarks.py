"""The benchmark scripts run and write their results (the figures themselves are never asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_prediction_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_prediction", ROOT / "benchmarks" / "bench_prediction.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, single_rows=10, repeats=1) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    data = json.loads((tmp_path / "prediction.json").read_text())
    assert [r["path"] for r in data["results"]] == ["scikit-learn", "pyfunc", "onnxruntime"]
    assert data["meta"]["parity"]["labels_identical"]
    assert "| onnxruntime |" in (tmp_path / "prediction.md").read_text()


@pytest.mark.integration
def test_serving_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "benchmarks" / "bench_serving.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, step_seconds=0.5, steady_seconds=0.5, start_rate=40, max_rate=80) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    data = json.loads((tmp_path / "serving.json").read_text())
    assert list(data["results"]) == ["mlflow, 1 worker", "mlflow, 2 workers", "onnx gateway, 1 worker"]
    assert data["results"]["mlflow, 1 worker"]["throughput_ratio"] == 1.0
    assert all(row["max_throughput_rps"] > 0 for row in data["results"].values())
    assert "| onnx gateway, 1 worker |" in (tmp_path / "serving.md").read_text()


@pytest.mark.integration
def test_auth_benchmark_writes_json_and_markdown(tmp_path, home):
    import math
    import os

    spec = importlib.util.spec_from_file_location("bench_auth", ROOT / "benchmarks" / "bench_auth.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, seconds=0.5, warmup_seconds=0.2, clients=2) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark leaves the workspace it found"
    data = json.loads((tmp_path / "auth.json").read_text())
    assert list(data["results"]) == ["no auth", "basic auth", "basic auth, cache 60 s"]
    for row in data["results"].values():
        assert list(row) == ["read", "write"]
        assert all(r["throughput_rps"] > 0 and r["requests"] > 0 for r in row.values())
    assert data["meta"]["clients"] == 2 and data["meta"]["cpus"] == os.cpu_count()
    for request in ("read", "write"):
        ratios = data["ratios"][request]
        assert set(ratios) == {"auth_vs_no_auth", "cached_auth_vs_no_auth", "cached_auth_vs_auth"}
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in ratios.values())
        assert set(data["ratios_worker_cpu"][request]) == set(ratios)
    assert not list(home.iterdir()), "each server runs in a temporary home of its own"
    text = (tmp_path / "auth.md").read_text()
    assert "| basic auth, cache 60 s | read |" in text and "cached auth / auth" in text
    assert "@" not in (tmp_path / "auth.json").read_text(), "no URL with credentials in the results"


@pytest.mark.integration
def test_features_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_features", ROOT / "benchmarks" / "bench_features.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, lookups=20, sizes=(300, 600), series=20, hours=24, naive_rows=50,
                      check_rows=40, max_dask_pairs=10_000, warmup=5) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    assert not list(home.iterdir()), "the stores and the server live in a temporary home of their own"
    data = json.loads((tmp_path / "features.json").read_text())
    online = {r["method"]: r for r in data["online"]}
    assert list(online) == ["python dict (baseline)", "Feast SQLite, in process", "mlops_lab.featurestore.online",
                            "Feast feature server, HTTP"]
    assert all(r["correct"] and r["mismatches"] == 0 and r["lookups"] == 20 for r in online.values())
    assert online["python dict (baseline)"]["p99_ratio"] == 1.0
    assert online["Feast feature server, HTTP"]["server_startup_s"] > 0
    assert set(data["goals"]) == {"in_process_p99_ms", "server_p99_ms"}
    offline = data["offline"]
    assert {r["size"] for r in offline} == {300, 600}
    measured = [r for r in offline if not r["skipped"]]
    for r in measured:
        assert r["leaked_future_rows"] == 0 and r["expired_rows_served"] == 0 and r["mismatches"] == 0
        assert r["checked_rows"] > 0 and r["rows_per_s"] > 0
    by = {(r["method"], r["size"]): r for r in offline}
    for size in (300, 600):
        assert by[("pandas merge_asof (baseline)", size)]["throughput_ratio"] == 1.0
        assert by[("Feast DuckDB offline store", size)]["correct"]
    dask = by[("Feast file offline store (Dask)", 300)]
    assert dask["rows_dropped"] > 0 and not dask["correct"], "Feast's Dask store drops labels with nothing in the TTL"
    assert by[("Feast file offline store (Dask)", 600)]["skipped"].startswith("not run: ")
    assert by[("naive filter per label", 300)]["entity_rows"] == 50 and ("naive filter per label", 600) not in by
    text = (tmp_path / "features.md").read_text()
    duckdb = by[("Feast DuckDB offline store", 600)]
    assert f"| Feast DuckDB offline store | {duckdb['entity_rows']:,} | {duckdb['rows_per_s']:,.0f} | " in text
    assert "| Feast feature server, HTTP | 20 |" in text and f"on {os.cpu_count()} CPUs" in text


@pytest.mark.integration
def test_deployment_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_deployment", ROOT / "benchmarks" / "bench_deployment.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, step_seconds=0.3, round_seconds=0.3, rounds_count=1, start_rate=20, max_rate=40,
                      gateway_step_seconds=0.3, gateway_rounds=1, gateway_round_seconds=0.3, gateway_start_rate=50,
                      gateway_max_rate=100) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    assert not list(home.iterdir()), "the servers and routers live in a temporary home of their own"
    data = json.loads((tmp_path / "deployment.json").read_text())
    assert list(data["results"]) == ["mlflow scoring server", "onnx gateway"]
    for row in data["results"].values():
        assert row["direct"]["max_throughput_rps"] > 0 and row["router"]["max_throughput_rps"] > 0
        assert row["direct"]["rate"] == row["router"]["rate"], "both paths measured at the same rate"
        assert row["router"]["router_cpu_ms_per_request"] >= 0
    shadow = data["shadow"]
    assert shadow["mirroring on"]["rate"] == shadow["mirroring off"]["rate"]
    assert shadow["mirrored"]["answered"] > 0 and shadow["mirrored_null"]["answered"] > 0, "the shadow routers mirrored"
    assert set(data["targets"]) == {"router_p99_added", "router_throughput", "shadow_p99"}
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    text = (tmp_path / "deployment.md").read_text()
    assert "| mlflow scoring server | router |" in text and "| onnx gateway | direct |" in text
    assert text.count("- Target, ") == 3


@pytest.mark.integration
def test_monitoring_benchmark_writes_json_and_markdown(tmp_path, home):
    spec = importlib.util.spec_from_file_location("bench_monitoring", ROOT / "benchmarks" / "bench_monitoring.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, repeats=1, logs=(200, 400), windows=(500,)) == 0
    data = json.loads((tmp_path / "monitoring.json").read_text())
    assert list(data["per_window"]) == ["500"] and data["per_window"]["500"]["ours_ms"] > 0
    assert list(data["per_check"]["rows"]) == ["200", "400"]
    assert all(row["verdict"] in ("stable", "drift") for row in data["per_check"]["rows"].values())
    assert "| 400 |" in (tmp_path / "monitoring.md").read_text()


@pytest.mark.integration
def test_pipeline_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "bench_pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, repeats=1, warmup=0, with_daemon=False) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    assert not list(home.iterdir()), "every run has a temporary workspace of its own"
    data = json.loads((tmp_path / "pipeline.json").read_text())
    assert list(data["rows"]) == ["direct", "dagster"] and "daemon" not in data
    assert data["rows"]["direct"]["full_over_direct"] == 1.0
    for row in data["rows"].values():
        assert row["full_s"] > 0 and row["rerun_s"] > 0 and row["outcomes"] == ["promoted/1/skipped"]
    assert set(data["steps_ms"]) == {"ingest", "validate", "features", "retrain", "evaluate", "gate", "decide", "record"}
    text = (tmp_path / "pipeline.md").read_text()
    assert "| Dagster, in process |" in text and "| step functions, direct | " in text
    assert bench._parse(["--quick"])["with_daemon"] is False


@pytest.mark.integration
def test_custom_models_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_custom_models", ROOT / "benchmarks" / "bench_custom_models.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, single_rows=10, repeats=1) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    data = json.loads((tmp_path / "custom_models.json").read_text())
    paths = [row["path"] for row in data["results"]]
    assert paths == ["champion (pyfunc, a class)", "decision model, no reasons", "decision model, 3 reasons"]
    assert data["results"][0]["single_speedup"] == 1.0 and data["meta"]["pyfunc_matches_its_parts"]
    assert all(row["single_p50_ms"] > 0 and row["batch_1000_ms"] > 0 for row in data["results"])
    assert "| decision model, 3 reasons |" in (tmp_path / "custom_models.md").read_text()


@pytest.mark.integration
def test_spark_benchmark_writes_json_and_markdown(tmp_path, home):
    import os

    spec = importlib.util.spec_from_file_location("bench_spark", ROOT / "benchmarks" / "bench_spark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(out=tmp_path, sizes=(300,), repeats=1, http=False) == 0
    assert os.environ["MLOPS_LAB_HOME"] == str(home), "the benchmark restores the workspace it found"
    data = json.loads((tmp_path / "spark.json").read_text())
    methods = [row["method"] for row in data["results"]]
    assert methods == ["pandas (pyfunc)", "spark local[1]", "spark local[2]"]
    assert data["results"][0]["vs_pandas"] == 1.0 and all(row["rows_per_s"] > 0 for row in data["results"])
    assert data["meta"]["fastest"]["300"] in methods
    assert "| 300 |" in (tmp_path / "spark.md").read_text()
