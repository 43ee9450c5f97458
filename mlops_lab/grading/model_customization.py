"""Checks for ``labs/16_model_customization.ipynb``: a custom pyfunc model with a lending limit and
two params, logged with its signature, tried locally, served and called.

The student writes ``LimitedCreditDecision``, an ``mlflow.pyfunc.PythonModel`` that wraps the lab's
credit champion (the artifact :data:`ARTIFACT`) and answers, per application, the probability of
repaying, a decision and its reason: an application whose ``credit_amount`` is above the
``max_amount`` param is refused whatever its score (:data:`ABOVE_LIMIT`); the others are approved
when P(good) reaches the ``threshold`` param, else refused (:data:`BELOW_THRESHOLD`).

The checks measure what the code does: the class is loaded with a fresh copy of the champion and
called with params (:func:`rule_problem` compares every row with the rule, at several params), the
logged model is loaded back through MLflow and called the same way, and the served answers are
compared with the logged model's own local answers, never with what a variable claims.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from mlops_lab.grading import Lab

EXPERIMENT = "lab-16-model-customization"
REGISTERED_MODEL = "lab-16-credit-risk"
CHAMPION = f"models:/{REGISTERED_MODEL}@champion"
CLASS_NAME = "LimitedCreditDecision"
ARTIFACT = "classifier"
"""The key of the champion in the model's ``artifacts`` (``context.artifacts[ARTIFACT]`` is its folder)."""
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_AMOUNT = 10_000
"""The params' defaults: approve from P(good) 0.5; no loan above 10,000 DM (the bank's lending limit)."""
APPROVE, REFUSE = "approve", "refuse"
ABOVE_LIMIT = "amount above limit"
BELOW_THRESHOLD = "score below threshold"
OUTPUT_COLUMNS = ["probability_good", "decision", "reason"]
"""What the model answers per application; ``reason`` is empty for an approval."""
TRIALS = ({}, {"threshold": 0.3}, {"threshold": 0.8}, {"max_amount": 2_500},
          {"threshold": 0.7, "max_amount": 6_000})
"""The params the checks call the model with (``{}``: the defaults)."""

LAB = Lab("16_model_customization", "Model customization: a pyfunc model with a business rule and params, served")


# -- what the rule says, from the champion's own probabilities -----------------------------------

def _tracking() -> None:
    import os

    import mlflow

    from mlops_lab import config

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(config.tracking_uri())


def applications():
    """The applications the checks score: German Credit's test split (raw columns, as served)."""
    from mlops_lab import datasets, training

    return training.credit_split(datasets.load_german_credit()).X_test


def champion_probabilities(X):
    """P(good) of each row of ``X`` by the lab's champion (loaded through MLflow's scikit-learn flavour)."""
    import mlflow

    _tracking()
    return mlflow.sklearn.load_model(CHAMPION).predict_proba(X)[:, 1]


def _expected(X, proba, params: dict | None = None):
    """The rule's answer for ``X`` whose P(good) is ``proba``, at ``params`` (the defaults for what is missing)."""
    import numpy as np
    import pandas as pd

    params = params or {}
    threshold = params.get("threshold", DEFAULT_THRESHOLD)
    limit = params.get("max_amount", DEFAULT_MAX_AMOUNT)
    above = X["credit_amount"].to_numpy() > limit
    approve = (np.asarray(proba) >= threshold) & ~above
    return pd.DataFrame({"probability_good": np.asarray(proba, dtype=float),
                         "decision": np.where(approve, APPROVE, REFUSE),
                         "reason": np.where(above, ABOVE_LIMIT, np.where(approve, "", BELOW_THRESHOLD))})


def _describe(params: dict) -> str:
    return f"params={params}" if params else "no params (the defaults)"


def rule_problem(answer, X, proba, params: dict | None = None) -> str | None:
    """Why ``answer`` (a model's output for ``X``) does not follow the rule at ``params``; ``None`` when it does."""
    import numpy as np
    import pandas as pd

    when = _describe(params or {})
    if not isinstance(answer, pd.DataFrame):
        return f"with {when} the model answered a {type(answer).__name__}, not a DataFrame with {OUTPUT_COLUMNS}"
    missing = [c for c in OUTPUT_COLUMNS if c not in answer.columns]
    if missing:
        return f"the answer has no column(s) {missing} (it has {list(answer.columns)})"
    if len(answer) != len(X):
        return f"{len(answer)} answers for {len(X)} applications"
    want = _expected(X, proba, params)
    answer = answer.reset_index(drop=True)
    got = pd.to_numeric(answer["probability_good"], errors="coerce").to_numpy(dtype=float)
    off = ~np.isclose(got, want["probability_good"].to_numpy(), atol=1e-6)
    if off.any():
        i = int(np.argmax(off))
        return (f"row {i}: probability_good is {got[i]!r}, the champion's P(good) is {want['probability_good'][i]:.6f} "
                f"(use predict_proba(...)[:, 1] of the artifact {ARTIFACT!r})")
    for column in ("decision", "reason"):
        values = answer[column].fillna("").astype(str).str.strip()
        wrong = values.to_numpy() != want[column].to_numpy()
        if wrong.any():
            i = int(np.argmax(wrong))
            amount = X["credit_amount"].iloc[i]
            return (f"with {when}, row {i} (credit_amount {amount}, P(good) {want['probability_good'][i]:.3f}) should be "
                    f"{want['decision'][i]!r} with reason {want['reason'][i]!r}; the model answered "
                    f"{answer['decision'][i]!r} with reason {answer['reason'][i]!r} ({int(wrong.sum())} rows wrong)")
    return None


# -- task 1: the class -------------------------------------------------------------------------------

def _champion_copy() -> Path:
    """The champion's model folder, downloaded once per version into ``<workspace>/lab-16/`` (the pristine
    copy each check copies from)."""
    import mlflow

    from mlops_lab import config

    _tracking()
    version = mlflow.MlflowClient().get_model_version_by_alias(REGISTERED_MODEL, "champion").version
    folder = config.workspace() / "lab-16" / f"champion-v{version}"
    if not (folder / "MLmodel").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=folder.parent) as tmp:
            downloaded = mlflow.artifacts.download_artifacts(CHAMPION, dst_path=tmp)
            shutil.move(downloaded, folder)
    return folder


def load_class(model_class):
    """Your class loaded as MLflow loads it: ``load_context`` with a context whose ``artifacts`` hold a
    fresh copy of the champion under :data:`ARTIFACT`. The copy is deleted once ``load_context`` has
    run (what predict needs must have been loaded by then). Returns ``(model, context)``."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="lab16-artifact-") as folder:
        path = shutil.copytree(_champion_copy(), Path(folder) / ARTIFACT)
        context = mlflow.pyfunc.PythonModelContext(artifacts={ARTIFACT: str(path)}, model_config={})
        model = model_class()
        model.load_context(context)
    return model, context


def try_class(model_class, X, params: dict | None = None):
    """Your class's answer for ``X`` at ``params``, run as MLflow runs it (see :func:`load_class`)."""
    model, context = load_class(model_class)
    return model.predict(context, X, params)


@LAB.check(
    "decision_rule",
    hint=f"In `load_context`, load the champion once: `self.classifier = mlflow.sklearn.load_model(context.artifacts"
    f"[{ARTIFACT!r}])`. In `predict`, read `threshold` and `max_amount` from `params` (defaults "
    f"{DEFAULT_THRESHOLD} and {DEFAULT_MAX_AMOUNT} when `params` is None or lacks them), take P(good) = "
    "`predict_proba(model_input)[:, 1]`, and return a DataFrame with probability_good, decision ('approve' / "
    f"'refuse') and reason: {ABOVE_LIMIT!r} when credit_amount > max_amount (whatever the score), "
    f"{BELOW_THRESHOLD!r} when P(good) < threshold, '' for an approval.",
)
def decision_rule(ns: dict) -> None:
    import mlflow

    model_class = ns.get(CLASS_NAME)
    assert model_class is not None, f"there is no class `{CLASS_NAME}`"
    assert isinstance(model_class, type) and issubclass(model_class, mlflow.pyfunc.PythonModel), \
        f"`{CLASS_NAME}` should be a class that subclasses mlflow.pyfunc.PythonModel"
    X = applications()
    proba = champion_probabilities(X)
    model, context = load_class(model_class)  # the artifact's folder is gone now: a predict that reads it fails
    try:
        answer = model.predict(context, X)
    except (OSError, mlflow.exceptions.MlflowException) as exc:
        raise AssertionError(f"predict failed once the artifact's folder was gone ({type(exc).__name__}: {exc}): "
                             "predict reads the artifact again; load it once, in load_context, and keep it on self") from exc
    problem = rule_problem(answer, X, proba)
    assert problem is None, problem
    for params in TRIALS[1:]:
        problem = rule_problem(model.predict(context, X, params), X, proba, params)
        assert problem is None, problem


# -- task 2: logged with its signature ---------------------------------------------------------------

_NUMBERS = {"double", "float", "long", "integer"}


def _signature_problem(signature) -> str | None:
    if signature is None:
        return "the model has no signature"
    params = {p.name: p for p in (signature.params.params if signature.params else [])}
    if not params:
        return "the signature has no params: pass `params=` to infer_signature (or a ParamSchema)"
    wanted = {"threshold": (DEFAULT_THRESHOLD, {"double", "float"}), "max_amount": (DEFAULT_MAX_AMOUNT, _NUMBERS)}
    for name, (default, kinds) in wanted.items():
        if name not in params:
            return f"the signature's params {sorted(params)} lack {name!r}"
        spec = params[name]
        kind = getattr(spec.dtype, "name", str(spec.dtype))
        if kind not in kinds or spec.shape is not None:
            return f"param {name!r} is a {kind}{'' if spec.shape is None else ' array'}, not a single number"
        if spec.default is None or not math.isclose(float(spec.default), default):
            return f"param {name!r} has default {spec.default!r}, not {default!r}"
    inputs = set(signature.inputs.input_names()) if signature.inputs is not None else set()
    from mlops_lab import training

    missing = [c for c in training.CREDIT_FEATURES if c not in inputs]
    if missing:
        return f"the signature's inputs lack {missing}: infer it from the applications' raw columns"
    outputs = set(signature.outputs.input_names()) if signature.outputs is not None else set()
    if not set(OUTPUT_COLUMNS) <= outputs:
        return f"the signature's outputs should name {OUTPUT_COLUMNS} (infer them from a real answer)"
    return None


def logged_model(model_uri: str):
    """The model at ``model_uri`` loaded through MLflow (``mlflow.pyfunc.load_model``)."""
    import mlflow

    _tracking()
    return mlflow.pyfunc.load_model(model_uri)


@LAB.check(
    "model_logged",
    hint="`signature = infer_signature(example, answer, params={'threshold': checks.DEFAULT_THRESHOLD, 'max_amount': "
    "checks.DEFAULT_MAX_AMOUNT})` with `answer` your model's output for `example`; then in a run, "
    f"`info = mlflow.pyfunc.log_model(name='decision', python_model={CLASS_NAME}(), artifacts={{{ARTIFACT!r}: "
    "checks.CHAMPION}, signature=signature, input_example=example)` and `model_uri = info.model_uri`.",
)
def model_logged(ns: dict) -> None:
    import mlflow

    model_uri = ns.get("model_uri")
    assert isinstance(model_uri, str) and model_uri, "there is no variable `model_uri` (the logged model's URI)"
    model = logged_model(model_uri)
    meta = model.metadata
    pyfunc = meta.flavors.get("python_function", {})
    artifacts = pyfunc.get("artifacts") or {}
    assert "python_model" in pyfunc or pyfunc.get("loader_module") == "mlflow.pyfunc.model", \
        f"{model_uri} is not a custom pyfunc model: log your class with mlflow.pyfunc.log_model(python_model=...)"
    assert ARTIFACT in artifacts, f"the model's artifacts are {sorted(artifacts)}: log the champion as {ARTIFACT!r}"
    python_model = model.unwrap_python_model()
    assert isinstance(python_model, mlflow.pyfunc.PythonModel) and type(python_model).__name__ == CLASS_NAME, \
        f"the logged Python model is a {type(python_model).__name__}, not your {CLASS_NAME}"
    problem = _signature_problem(meta.signature)
    assert problem is None, problem
    assert meta.saved_input_example_info is not None, "the model has no input example: pass `input_example=`"
    X = applications()
    proba = champion_probabilities(X)
    for params in TRIALS:  # {} first: MLflow fills in the signature's defaults
        problem = rule_problem(model.predict(X, params=params or None), X, proba, params)
        assert problem is None, f"the logged model: {problem}"


# -- task 3: the rule and the params, tried locally --------------------------------------------------

@LAB.check(
    "rule_demonstrated",
    hint="`model = mlflow.pyfunc.load_model(model_uri)`; `approval_rates = {t: (model.predict(applications, "
    "params={'threshold': t})['decision'] == 'approve').mean() for t in (0.3, 0.5, 0.7)}`; `overruled` = the rows of "
    f"the default answer that the score alone approves (probability_good >= {DEFAULT_THRESHOLD}) but the limit "
    "refuses.",
)
def rule_demonstrated(ns: dict) -> None:
    import pandas as pd

    rates, overruled, model_uri = ns.get("approval_rates"), ns.get("overruled"), ns.get("model_uri")
    assert isinstance(model_uri, str), "log the model first (task 2): there is no `model_uri`"
    assert isinstance(rates, dict) and rates, "`approval_rates` should be a dict: threshold -> share approved"
    thresholds = sorted(float(t) for t in rates)
    assert len(thresholds) >= 3 and all(0 < t < 1 for t in thresholds), \
        f"try at least three thresholds between 0 and 1 (got {thresholds})"
    X = applications()
    model = logged_model(model_uri)
    for t, rate in rates.items():
        true = float((model.predict(X, params={"threshold": float(t)})["decision"] == APPROVE).mean())
        assert rate is not None and math.isclose(float(rate), true, abs_tol=5e-4), \
            (f"at threshold {t} the model approves {true:.3f} of the applications (at the default limit), "
             f"not {rate!r}")
    answer = model.predict(X)
    truth = answer[(answer["probability_good"] >= DEFAULT_THRESHOLD) & (answer["reason"] == ABOVE_LIMIT)]
    assert isinstance(overruled, pd.DataFrame), "`overruled` should be the rows of the answer (a DataFrame)"
    assert {"probability_good", "reason"} <= set(overruled.columns), "`overruled` should keep the answer's columns"
    assert len(overruled) == len(truth), (f"the limit overrules {len(truth)} applications the score alone approves "
                                          f"(at the defaults); `overruled` holds {len(overruled)}")
    assert (overruled["reason"] == ABOVE_LIMIT).all() and (overruled["probability_good"] >= DEFAULT_THRESHOLD).all(), \
        f"every row of `overruled` should have P(good) >= {DEFAULT_THRESHOLD} and reason {ABOVE_LIMIT!r}"


# -- task 4: served and called -----------------------------------------------------------------------

def difference(served, local) -> str | None:
    """Where a served answer differs from the local one (probabilities to 1e-6, decisions and reasons exactly)."""
    import numpy as np

    missing = [c for c in OUTPUT_COLUMNS if c not in served.columns]
    if missing:
        return f"the served answer has no column(s) {missing}"
    if len(served) != len(local):
        return f"the server answered {len(served)} rows, the model answers {len(local)} locally"
    served, local = served.reset_index(drop=True), local.reset_index(drop=True)
    off = ~np.isclose(served["probability_good"].astype(float), local["probability_good"].astype(float), atol=1e-6)
    for column in ("decision", "reason"):
        off |= served[column].fillna("").astype(str).to_numpy() != local[column].fillna("").astype(str).to_numpy()
    if off.any():
        i = int(np.argmax(off))
        return (f"row {i} was served as {served.loc[i, OUTPUT_COLUMNS].to_dict()} but the logged model answers "
                f"{local.loc[i, OUTPUT_COLUMNS].to_dict()} locally ({int(off.sum())} rows differ)")
    return None


@LAB.check(
    "served_like_local",
    hint="`with serving.model_server(model_uri) as server:` then `client = server.client()`, `served = "
    "client.predict_table(sample, params=served_params)` with `served_params` that change some decisions, and "
    "`refused = client.post(*serving.payload(sample, params={'threshold': 'high'}))` (print `refused.status` and "
    "`refused.reason`).",
)
def served_like_local(ns: dict) -> None:
    import pandas as pd

    from mlops_lab.serving import ModelServer, Response

    server, model_uri = ns.get("server"), ns.get("model_uri")
    assert isinstance(server, ModelServer), "there is no variable `server` holding the model server you started"
    assert isinstance(model_uri, str) and server.model_uri == model_uri, \
        f"the server served {server.model_uri!r}, not your model_uri {model_uri!r}"
    assert server.pgid is not None, "the server was never started"
    served, params, sample = ns.get("served"), ns.get("served_params"), ns.get("sample")
    assert isinstance(sample, pd.DataFrame) and len(sample), "there is no DataFrame `sample` (the rows you sent)"
    assert isinstance(params, dict) and params, "there is no dict `served_params` (the params sent with the request)"
    assert isinstance(served, pd.DataFrame), "there is no DataFrame `served` (client.predict_table's answer)"
    model = logged_model(model_uri)
    local = model.predict(sample, params=params)
    problem = difference(served, local)
    assert problem is None, f"with served_params={params}, {problem}"
    default = model.predict(sample)
    assert (default["decision"].to_numpy() != local["decision"].to_numpy()).any(), \
        (f"`served_params` {params} change no decision of `sample`: pick params (or rows) whose answer differs from "
         "the defaults, so the answer proves the params reached the model")
    log = server.log_path.read_text(errors="replace") if server.log_path and server.log_path.is_file() else ""
    assert '"POST /invocations HTTP/1.1" 200' in log, \
        "the server's log shows no answered request: send `sample` to it with `client.predict_table(...)`"
    assert '"POST /invocations HTTP/1.1" 400' in log, \
        "the server's log shows no refused request: send it a param of the wrong type with `client.post(...)`"
    refused = ns.get("refused")
    assert isinstance(refused, Response), "there is no `refused` (the Response to a request with a param of the wrong type)"
    assert refused.status == 400, f"the request in `refused` got HTTP {refused.status}, not 400: send a param of the wrong type"
    assert any(name in refused.reason for name in ("threshold", "max_amount")), \
        f"the refusal does not name a param: {refused.reason[:200]!r}"


@LAB.check(
    "server_stopped",
    hint="Serve inside `with serving.model_server(model_uri) as server:` (it stops when the block ends), or call "
    "`server.stop()`.",
)
def server_stopped(ns: dict) -> None:
    from mlops_lab.processes import group_members, port_in_use

    server = ns.get("server")
    assert server is not None, "there is no variable `server`"
    assert server.pgid is not None, "the server was never started"
    assert not server.running and not group_members(server.pgid), "the server (or one of its workers) is still running"
    assert not port_in_use(server.port), f"port {server.port} is still bound"
