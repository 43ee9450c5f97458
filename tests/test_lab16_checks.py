"""Lab 16's checks decide both ways on wrong answers, not only on the untouched copy.

The rule's own semantics are unit tests on made-up probabilities. The class, logging and local
checks run real models: the lab's champion trained and gated once for this module (``lab``, about
20 s), the student's class loaded with a copy of it, models logged and loaded back through MLflow.
One test serves a logged model with ``mlflow models serve`` and calls it as the lab does.
"""

from __future__ import annotations

import sys

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from mlops_lab import config, prerequisites, serving
from mlops_lab.grading import model_customization as checks

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the served test model loads where this file is not importable
QUICK = ["mlflow", "scikit-learn", "pandas"]  # pip_requirements: skips MLflow's requirement inference (seconds per model)


# -- the rule, on made-up probabilities --------------------------------------------------------------

@pytest.mark.unit
def test_the_rule_refuses_above_the_limit_first_and_approves_at_the_threshold():
    X = pd.DataFrame({"credit_amount": [500, 10_000, 10_001, 12_000, 800]})
    proba = np.array([0.5, 0.9, 0.99, 0.2, 0.49])
    want = checks._expected(X, proba)
    assert want["decision"].tolist() == ["approve", "approve", "refuse", "refuse", "refuse"]
    assert want["reason"].tolist() == ["", "", checks.ABOVE_LIMIT, checks.ABOVE_LIMIT, checks.BELOW_THRESHOLD]
    lower = checks._expected(X, proba, {"threshold": 0.4, "max_amount": 12_000})
    assert lower["decision"].tolist() == ["approve", "approve", "approve", "refuse", "approve"]
    assert checks.rule_problem(want, X, proba) is None
    assert "should be 'refuse' with reason 'amount above limit'" in checks.rule_problem(
        want.assign(decision="approve", reason=""), X, proba)
    assert "has no column(s) ['reason']" in checks.rule_problem(want.drop(columns="reason"), X, proba)
    assert "not a DataFrame" in checks.rule_problem(want["decision"].to_numpy(), X, proba)
    assert "probability_good is" in checks.rule_problem(want.assign(probability_good=1 - proba), X, proba)
    assert "4 answers for 5" in checks.rule_problem(want.head(4), X, proba)


@pytest.mark.unit
def test_a_served_answer_must_match_the_local_one_row_by_row():
    local = pd.DataFrame({"probability_good": [0.9, 0.2], "decision": ["approve", "refuse"],
                          "reason": ["", checks.BELOW_THRESHOLD]})
    assert checks.difference(local.copy(), local) is None
    assert checks.difference(local.assign(reason=[None, checks.BELOW_THRESHOLD]), local) is None  # JSON null = ""
    assert "row 1 was served as" in checks.difference(local.assign(decision="approve"), local)
    assert "answered 1 rows" in checks.difference(local.head(1), local)


# -- students' classes -------------------------------------------------------------------------------

class LimitedCreditDecision(mlflow.pyfunc.PythonModel):
    """A right answer: the champion loaded once, the limit first, then the threshold."""

    def load_context(self, context):
        self.classifier = mlflow.sklearn.load_model(context.artifacts[checks.ARTIFACT])

    def settings(self, params):
        params = params or {}
        return params.get("threshold", checks.DEFAULT_THRESHOLD), params.get("max_amount", checks.DEFAULT_MAX_AMOUNT)

    def probability(self, model_input):
        return self.classifier.predict_proba(model_input)[:, 1]

    def decide(self, probability, amount, threshold, max_amount):
        above = amount > max_amount
        approve = (probability >= threshold) & ~above
        reason = np.select([above, ~approve], [checks.ABOVE_LIMIT, checks.BELOW_THRESHOLD], default="")
        return approve, reason

    def predict(self, context, model_input, params=None):
        threshold, max_amount = self.settings(params)
        probability = self.probability(model_input)
        approve, reason = self.decide(probability, model_input["credit_amount"].to_numpy(), threshold, max_amount)
        return pd.DataFrame({"probability_good": probability, "decision": np.where(approve, "approve", "refuse"),
                             "reason": reason})


class IgnoresLimit(LimitedCreditDecision):
    def decide(self, probability, amount, threshold, max_amount):
        approve = probability >= threshold
        return approve, np.where(approve, "", checks.BELOW_THRESHOLD)


class ScoreFirst(LimitedCreditDecision):
    def decide(self, probability, amount, threshold, max_amount):
        approve, _ = super().decide(probability, amount, threshold, max_amount)
        reason = np.select([probability < threshold, amount > max_amount], [checks.BELOW_THRESHOLD, checks.ABOVE_LIMIT],
                           default="")
        return approve, reason


class IgnoresParams(LimitedCreditDecision):
    def settings(self, params):
        return checks.DEFAULT_THRESHOLD, checks.DEFAULT_MAX_AMOUNT


class NeedsParams(LimitedCreditDecision):
    def settings(self, params):
        return params["threshold"], params["max_amount"]


class LoadsInPredict(LimitedCreditDecision):
    def load_context(self, context):
        self.path = context.artifacts[checks.ARTIFACT]

    def probability(self, model_input):
        return mlflow.sklearn.load_model(self.path).predict_proba(model_input)[:, 1]


class ProbabilityOfBad(LimitedCreditDecision):
    def probability(self, model_input):
        return self.classifier.predict_proba(model_input)[:, 0]


class AnswersAnArray(LimitedCreditDecision):
    def predict(self, context, model_input, params=None):
        return super().predict(context, model_input, params)["decision"].to_numpy()


class Untouched(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise NotImplementedError("Complete this task, then run the check below.")

    def predict(self, context, model_input, params=None):
        raise NotImplementedError("Complete this task, then run the check below.")


class NotAPythonModel:
    def predict(self, model_input):
        return model_input


# -- the lab's workspace, once for this module -------------------------------------------------------

def log(model=None, *, signature="right", example=True, artifacts=True, run_name="test-model"):
    """Log ``model`` (default: the right class) as the lab does, with the parts a test leaves out."""
    model = model if model is not None else LimitedCreditDecision()
    rows = checks.applications().head(5)
    answer = checks.try_class(LimitedCreditDecision, rows)
    params = {"threshold": checks.DEFAULT_THRESHOLD, "max_amount": checks.DEFAULT_MAX_AMOUNT}
    signatures = {"right": infer_signature(rows, answer, params=params), "no-params": infer_signature(rows, answer),
                  "other-default": infer_signature(rows, answer, params={**params, "threshold": 0.6})}
    with mlflow.start_run(run_name=run_name):
        info = mlflow.pyfunc.log_model(name="decision", python_model=model,
                                       artifacts={checks.ARTIFACT: checks.CHAMPION} if artifacts else None,
                                       signature=signatures[signature], input_example=rows if example else None,
                                       pip_requirements=QUICK)
    return info.model_uri


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab's workspace with its champion and a rightly logged model."""
    root = tmp_path_factory.mktemp("lab16")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_LAB_HOME", str(root))
        patch.delenv("MLOPS_LAB_TRACKING_URI", raising=False)
        config.use_workspace(checks.EXPERIMENT)
        prerequisites.champion(checks.REGISTERED_MODEL)
        uri = log()
    return {"home": root, "model_uri": uri}


@pytest.fixture
def in_lab(lab, monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_HOME", str(lab["home"]))
    config.use_workspace(checks.EXPERIMENT)
    yield lab
    mlflow.set_tracking_uri(None)


# -- task 1 ------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_a_class_that_follows_the_rule_passes(in_lab):
    result = checks.decision_rule({checks.CLASS_NAME: LimitedCreditDecision})
    assert result.passed, result.detail
    answer = checks.try_class(LimitedCreditDecision, checks.applications().head(3), {"max_amount": 1})
    assert answer["reason"].eq(checks.ABOVE_LIMIT).all()


@pytest.mark.integration
@pytest.mark.parametrize("model_class, words", [
    (IgnoresLimit, "should be 'refuse' with reason 'amount above limit'"),
    (ScoreFirst, "with reason 'amount above limit'; the model answered 'refuse' with reason 'score below threshold'"),
    (IgnoresParams, "with params={'threshold': 0.3}"),
    (NeedsParams, "TypeError"),
    (LoadsInPredict, "predict reads the artifact again"),
    (ProbabilityOfBad, "probability_good is"),
    (AnswersAnArray, "not a DataFrame"),
    (Untouched, "NotImplementedError"),
    (NotAPythonModel, "subclasses mlflow.pyfunc.PythonModel"),
    (None, "there is no class `LimitedCreditDecision`"),
], ids=["ignores-limit", "score-first", "ignores-params", "needs-params", "loads-in-predict", "p-bad", "array",
        "untouched", "not-pyfunc", "missing"])
def test_classes_that_break_the_rule_or_load_badly_fail_with_what_is_wrong(in_lab, model_class, words):
    result = checks.decision_rule({checks.CLASS_NAME: model_class} if model_class is not None else {})
    assert not result.passed and words in result.detail, result.detail
    assert "load_context" in result.hint and checks.ABOVE_LIMIT in result.hint


# -- task 2 ------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_the_logged_model_passes_with_its_params_and_example(in_lab):
    result = checks.model_logged({"model_uri": in_lab["model_uri"]})
    assert result.passed, result.detail
    params = {p.name: p.default for p in mlflow.pyfunc.load_model(in_lab["model_uri"]).metadata.signature.params}
    assert params == {"threshold": checks.DEFAULT_THRESHOLD, "max_amount": checks.DEFAULT_MAX_AMOUNT}


@pytest.mark.integration
@pytest.mark.parametrize("how, words", [
    ({"signature": "no-params"}, "the signature has no params"),
    ({"signature": "other-default"}, "param 'threshold' has default 0.6, not 0.5"),
    ({"example": False}, "no input example"),
    ({"model": IgnoresLimit()}, "not your LimitedCreditDecision"),
], ids=["no-params", "other-default", "no-example", "other-class"])
def test_a_model_logged_without_its_params_example_or_class_fails(in_lab, how, words):
    result = checks.model_logged({"model_uri": log(**how)})
    assert not result.passed and words in result.detail, result.detail
    assert "infer_signature" in result.hint


@pytest.mark.integration
def test_a_logged_model_that_breaks_the_rule_or_is_not_custom_fails(in_lab):
    class LimitedCreditDecision(IgnoresLimit):  # the right name, the wrong rule
        pass

    broken = checks.model_logged({"model_uri": log(LimitedCreditDecision())})
    assert not broken.passed and broken.detail.startswith("the logged model: ") and "amount above limit" in broken.detail
    champion = checks.model_logged({"model_uri": checks.CHAMPION})
    assert not champion.passed and "not a custom pyfunc model" in champion.detail
    assert "there is no variable `model_uri`" in checks.model_logged({}).detail


# -- task 3 ------------------------------------------------------------------------------------------

def demonstrated(model_uri: str) -> dict:
    model = mlflow.pyfunc.load_model(model_uri)
    X = checks.applications()
    rates = {t: (model.predict(X, params={"threshold": t})["decision"] == "approve").mean() for t in (0.3, 0.5, 0.7)}
    answer = model.predict(X)
    overruled = answer[(answer["probability_good"] >= checks.DEFAULT_THRESHOLD) & (answer["reason"] == checks.ABOVE_LIMIT)]
    return {"model_uri": model_uri, "approval_rates": rates, "overruled": overruled, "answer": answer}


@pytest.mark.integration
def test_approval_rates_and_overruled_rows_must_be_what_the_model_answers(in_lab):
    ns = demonstrated(in_lab["model_uri"])
    assert len(ns["overruled"]) > 0 and ns["approval_rates"][0.3] > ns["approval_rates"][0.7]
    assert checks.rule_demonstrated(ns).passed
    rounded = {**ns, "approval_rates": {str(t): round(r, 3) for t, r in ns["approval_rates"].items()}}
    assert checks.rule_demonstrated(rounded).passed

    def detail(**changes):
        result = checks.rule_demonstrated({**ns, **changes})
        assert not result.passed and "approval_rates" in result.hint
        return result.detail

    assert "at threshold 0.5 the model approves" in detail(approval_rates={**ns["approval_rates"], 0.5: 0.9})
    assert "at least three thresholds" in detail(approval_rates={0.3: 0.9, 0.5: 0.8})
    every_limit = ns["answer"][ns["answer"]["reason"] == checks.ABOVE_LIMIT]
    assert f"overrules {len(ns['overruled'])} applications" in detail(overruled=every_limit)
    assert "should be the rows of the answer" in detail(overruled=len(ns["overruled"]))
    assert "log the model first" in checks.rule_demonstrated({}).detail


# -- task 4 ------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_served_answers_with_params_and_a_refusal_pass_and_claims_that_do_not_hold_fail(in_lab):
    uri = in_lab["model_uri"]
    sample = checks.applications().head(8)
    params = {"threshold": 0.7, "max_amount": 5_000}
    with serving.model_server(uri) as server:
        client = server.client()
        served = client.predict_table(sample, params=params)
        refused = client.post(*serving.payload(sample, params={"max_amount": "a lot"}))
        accepted = client.post(*serving.payload(sample, params=params))
        running = checks.server_stopped({"server": server})
    assert not running.passed and "still running" in running.detail
    ns = {"server": server, "model_uri": uri, "sample": sample, "served": served, "served_params": params,
          "refused": refused}
    assert refused.status == 400 and "max_amount" in refused.reason and "Failed to predict" not in refused.reason
    assert checks.served_like_local(ns).passed
    assert checks.server_stopped(ns).passed

    def detail(**changes):
        result = checks.served_like_local({**ns, **changes})
        assert not result.passed and "predict_table" in result.hint
        return result.detail

    assert "row 0 was served as" in detail(served_params={"threshold": 0.3})
    defaults = {"threshold": checks.DEFAULT_THRESHOLD}
    assert "change no decision" in detail(served_params=defaults, served=mlflow.pyfunc.load_model(uri).predict(sample))
    assert "got HTTP 200, not 400" in detail(refused=accepted)
    assert "never started" in detail(server=serving.model_server(uri))
    assert "not your model_uri" in detail(server=serving.model_server(checks.CHAMPION))
    assert "there is no DataFrame `served`" in detail(served=served.to_dict())
    missing = checks.served_like_local({})
    assert "there is no variable `server`" in missing.detail
    assert "there is no variable `server`" in checks.server_stopped({}).detail
