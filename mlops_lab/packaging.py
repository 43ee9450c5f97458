"""Packaging: ONNX export with parity checks, latency side by side, Dockerfiles, reproduction.

ONNX turns the scikit-learn pipeline (imputer, scaler, one-hot encoder, model) into one graph that
onnxruntime executes without Python objects: the same predictions, far less overhead per call.
Each input column becomes one ONNX input of shape ``[None, 1]`` (numbers as float32, categories as
strings); :func:`onnx_feeds` builds those inputs from a DataFrame.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

PARITY_TOLERANCE = 1e-5
"""Largest difference in probabilities accepted between scikit-learn and onnxruntime."""


class PackagingError(RuntimeError):
    """A model cannot be converted, packaged or reproduced as asked."""


def _numeric(series: pd.Series) -> bool:
    return series.dtype.kind in "iuf"


def onnx_input_types(X: pd.DataFrame) -> list:
    """skl2onnx input declarations: one ``[None, 1]`` tensor per column (float32 or string)."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [(c, FloatTensorType([None, 1]) if _numeric(X[c]) else StringTensorType([None, 1])) for c in X.columns]


def onnx_feeds(X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The inputs onnxruntime expects for ``X``: a ``(rows, 1)`` array per column."""
    return {c: (X[c].to_numpy(dtype=np.float32) if _numeric(X[c]) else X[c].astype(str).to_numpy(dtype=object)).reshape(-1, 1)
            for c in X.columns}


def to_onnx(pipeline, X_sample: pd.DataFrame, target_opset: int = 18):
    """Convert a fitted classifier pipeline to ONNX (outputs: ``label`` and ``probabilities``)."""
    from skl2onnx import to_onnx as convert

    custom = [name for name, step in getattr(pipeline, "steps", []) if type(step).__module__.startswith("mlops_lab")]
    if custom:
        raise PackagingError(f"Cannot convert the pipeline to ONNX: its step(s) {custom} are the course's own Python "
                             "code (lesson 02's feature rules), which ONNX has no operator for. Serve it with the "
                             "pyfunc back end (gateway --backend pyfunc) or mlflow models serve.")
    try:
        return convert(pipeline, initial_types=onnx_input_types(X_sample),
                       options={id(pipeline[-1]): {"zipmap": False}}, target_opset=target_opset)
    except Exception as exc:  # skl2onnx raises many types; name the step it could not convert
        raise PackagingError(f"Cannot convert {type(pipeline[-1]).__name__} pipeline to ONNX: {exc}") from exc


class OnnxPredictor:
    """An onnxruntime session with the scikit-learn methods ``predict`` and ``predict_proba``.

    One intra-op thread that sleeps when idle: onnxruntime's default thread pool spins while it waits
    for work, which for one-row requests at ~80/s cost 13 ms of CPU per call instead of 0.35 ms here
    (measured), taking a whole core from the servers beside it. Pass ``threads`` for large batches.
    """

    def __init__(self, onnx_model, threads: int = 1) -> None:
        import onnxruntime as rt

        raw = onnx_model if isinstance(onnx_model, bytes) else onnx_model.SerializeToString()
        options = rt.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = rt.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])

    def run(self, X: pd.DataFrame):
        return self.session.run(None, onnx_feeds(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.run(X)[0]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.run(X)[1]


def parity(pipeline, predictor: OnnxPredictor, X: pd.DataFrame) -> dict[str, float | bool]:
    """Compare scikit-learn and ONNX on ``X``: identical labels? largest probability difference?"""
    labels = bool(np.array_equal(pipeline.predict(X), predictor.predict(X)))
    diff = float(np.abs(pipeline.predict_proba(X) - predictor.predict_proba(X)).max())
    return {"labels_identical": labels, "max_probability_diff": diff,
            "within_tolerance": labels and diff <= PARITY_TOLERANCE}


def log_onnx(onnx_model, X_example: pd.DataFrame, name: str = "onnx_model"):
    """Log an ONNX model with MLflow's onnx flavour (CPU provider, tensor signature, input example)."""
    import mlflow
    import mlflow.onnx
    from mlflow.models import infer_signature

    example = onnx_feeds(X_example.head(3))
    outputs = OnnxPredictor(onnx_model).session.run(None, example)
    signature = infer_signature(example, {"label": outputs[0], "probabilities": outputs[1]})
    return mlflow.onnx.log_model(onnx_model, name=name, signature=signature, input_example=example,
                                 onnx_execution_providers=["CPUExecutionProvider"])


def latency(predict: Callable[[pd.DataFrame], object], X: pd.DataFrame, *, single_rows: int = 200,
            batch_rows: int = 1000, repeats: int = 5) -> dict[str, float]:
    """Single-row p50/p95 latency (ms) and the time for one batch of ``batch_rows`` rows (ms, best of ``repeats``)."""
    rows = [X.iloc[[i % len(X)]] for i in range(single_rows)]
    for row in rows[:10]:
        predict(row)
    times = []
    for row in rows:
        started = time.perf_counter()
        predict(row)
        times.append((time.perf_counter() - started) * 1000)
    batch = pd.concat([X] * (batch_rows // len(X) + 1)).head(batch_rows)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict(batch)
        best = min(best, (time.perf_counter() - started) * 1000)
    return {"single_p50_ms": float(np.percentile(times, 50)), "single_p95_ms": float(np.percentile(times, 95)),
            "batch_1000_ms": best}


def latency_table(predictors: dict[str, Callable], X: pd.DataFrame, baseline: str, **kwargs) -> pd.DataFrame:
    """:func:`latency` for each predictor side by side, with speed-ups relative to ``baseline``."""
    table = pd.DataFrame({name: latency(fn, X, **kwargs) for name, fn in predictors.items()}).T
    table["single_speedup"] = table.loc[baseline, "single_p50_ms"] / table["single_p50_ms"]
    table["batch_speedup"] = table.loc[baseline, "batch_1000_ms"] / table["batch_1000_ms"]
    return table.round(3)


def _typed(text: str):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return {"True": True, "False": False, "None": None}.get(text, text)


def refit_from_run(run_id: str, split, *, allow_other_code: bool = False) -> object:
    """Retrain the credit pipeline a run recorded: same algorithm, seed, features and settings.

    The training data must be the data the run consumed (its MLflow digest is compared with the
    run's ``training`` dataset input) and the code must be the commit the run recorded as
    ``code_version`` (unless ``allow_other_code=True``); a mismatch raises :class:`PackagingError`.
    """
    import mlflow

    from mlops_lab import datasets, training
    from mlops_lab.config import code_version

    run = mlflow.get_run(run_id)
    recorded, current = run.data.tags.get("code_version"), code_version()
    if not allow_other_code and recorded != current:
        raise PackagingError(f"Run {run_id} was trained with code {recorded!r}, this checkout is {current!r}: "
                             "check out that commit, or pass allow_other_code=True to accept the difference")
    logged = [d.digest for d in datasets.training_inputs(run)]
    digest = datasets.as_mlflow_dataset(split.frame("train"), name="check").digest
    if not logged:
        raise PackagingError(f"Run {run_id} recorded no training data: it cannot be reproduced")
    if digest not in logged:
        raise PackagingError(f"The training data differs from run {run_id}'s (digest {digest} vs {logged}): "
                             "reproducing needs the same data version")
    params = {k: _typed(v) for k, v in run.data.params.items()}
    model, seed = params.pop("model"), params.pop("seed")
    features = params.pop("features", None)
    impute = params.pop("impute", True)
    for key in [k for k in params if k.endswith("_rows")]:
        params.pop(key)
    pipeline = training.credit_pipeline(model, seed=seed, impute=impute,
                                        features=features.split(",") if isinstance(features, str) else None, **params)
    return pipeline.fit(split.X_train, split.y_train)


def cli_predict(model_uri: str, input_csv: Path | str, output_json: Path | str, timeout: int = 300) -> list:
    """Score a CSV file with ``mlflow models predict`` (the command a batch job runs); returns the predictions."""
    import json

    from mlops_lab.config import child_env

    command = [sys.executable, "-m", "mlflow", "models", "predict", "-m", model_uri, "-i", str(input_csv),
               "-t", "csv", "-o", str(output_json), "--env-manager", "local"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **child_env()})
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-6:])
        raise PackagingError(f"mlflow models predict failed for {model_uri}:\n{tail}")
    return json.loads(Path(output_json).read_text())["predictions"]


def docker_available() -> bool:
    """True when a Docker *engine* answers (the client alone is not enough to build images)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def generate_dockerfile(model_uri: str, out_dir: Path | str, timeout: int = 300) -> Path:
    """Run ``mlflow models generate-dockerfile`` (offline, ``--env-manager local``); returns the folder.

    The folder holds the ``Dockerfile`` and a copy of the model (``model_dir/``): everything
    ``docker build`` needs, where a Docker engine exists.
    """
    from mlops_lab.config import child_env

    out_dir = Path(out_dir)
    command = [sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", model_uri,
               "-d", str(out_dir), "--env-manager", "local"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **child_env()})
    if result.returncode != 0 or not (out_dir / "Dockerfile").is_file():
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-8:])
        raise PackagingError(f"generate-dockerfile failed for {model_uri}:\n{tail}")
    return out_dir
