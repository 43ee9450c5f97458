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
