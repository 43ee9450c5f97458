"""Custom MLflow models: a credit *decision* as one ``mlflow.pyfunc.PythonModel`` (lesson 16).

A served credit model that answers "P(good) = 0.71" leaves the business rules to every caller. The
:class:`CreditDecisionModel` answers what the lender acts on, in three stages inside one model:

1. **preprocessing**: the raw application checked against German Credit's data contract (the words
   of the training report and of the validating gateway; a broken row is refused, nothing is
   scored), then lesson 02's cleaning and feature rules (:class:`~mlops_lab.features.FeatureTransformer`,
   fitted on the training data);
2. **the model**: a gradient-boosting classifier on the rules' output;
3. **post-processing**: the probability of repaying, the decision at the business threshold (by
   default lesson 05's break-even point of the cost matrix, P(good) >= 5/6), and **reason codes**:
   the features that pushed this applicant's score towards the decision the most (SHAP values of
   the trees, summed per feature: a one-hot ``purpose_car`` counts for ``purpose``).

Two parameters travel with every request and are part of the signature (``ParamSchema``):
``threshold`` (a float in (0, 1)) and ``reasons`` (how many reason codes, 0 to 10). Both stages'
fitted objects are the model's **artifacts** (skops files, loaded once in :meth:`load_context`).

The same class is logged in either of MLflow's two forms (:func:`log_decision_model`): as a class
instance (serialised with cloudpickle) or as **models from code** (``python_model=`` the path of
``credit_decision.py`` in this package, which calls ``mlflow.models.set_model``: the code is stored
as source, nothing is pickled).

Written by hand because the decision *is* the lesson: MLflow supplies the container
(``PythonModel``, artifacts, params, signatures); the rules in between are the course's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_lab.config import SEED

try:  # MLflow is always installed with the course; the import only keeps this module light to read
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

MODEL_CODE = Path(__file__).with_name("credit_decision.py")
"""The models-from-code file: it builds a :class:`CreditDecisionModel` and hands it to ``set_model``."""

RULES_ARTIFACT = "rules"
CLASSIFIER_ARTIFACT = "classifier"
MAX_REASONS = 10
DEFAULT_REASONS = 3
PREDICT_PACKAGES = ("shap", "pandera", "PyYAML")
"""What ``predict`` imports beyond a scikit-learn model's requirements: SHAP for the reason codes,
the data contract's packages (:mod:`mlops_lab.quality` reads it with pandera and PyYAML)."""

OUTPUT_COLUMNS = ["probability_good", "decision", "label", "reasons"]
"""What the decision model answers per application: P(good), ``approve``/``refuse``, the decision
as the dataset's label (1 approve, 0 refuse: what evaluation compares with ``risk``), the reasons."""

def break_even_threshold() -> float:
    """Lesson 05's cost matrix as a threshold: approve when P(good) >= 5 / (5 + 1) = 0.833.

    Approving a bad applicant costs 5, refusing a good one costs 1: approving pays off once
    ``P(good) * 0 + (1 - P(good)) * 5 < P(good) * 1``."""
    from mlops_lab import evaluation

    return evaluation.COST_BAD_ACCEPTED / (evaluation.COST_BAD_ACCEPTED + evaluation.COST_GOOD_REFUSED)


class DecisionError(ValueError):
    """The decision model cannot load: an artifact is missing or holds types the course does not trust.

    (Bad requests raise MLflow's INVALID_PARAMETER_VALUE error instead, which the scoring server
    answers with 400.)"""


def _request_error(message: str):
    """An error the scoring server turns into a 400 with ``message`` (MLflow's INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


# -- training the two stages -------------------------------------------------------------------

@dataclass
class DecisionParts:
    """The fitted stages: lesson 02's rules and the classifier that reads their output.

    ``features`` are the raw columns an application arrives with (the input signature, the same
    as the champion's); the classifier may use fewer of them (not ``sex``)."""

    rules: object
    classifier: object
    features: list[str]

    def save(self, folder: Path | str) -> dict[str, str]:
        """Both stages as skops files in ``folder``; returns the ``artifacts`` mapping for ``log_model``."""
        import skops.io as sio

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {RULES_ARTIFACT: folder / "rules.skops", CLASSIFIER_ARTIFACT: folder / "classifier.skops"}
        sio.dump(self.rules, paths[RULES_ARTIFACT])
        sio.dump(self.classifier, paths[CLASSIFIER_ARTIFACT])
        return {name: str(path) for name, path in paths.items()}


def train_parts(split, *, seed: int = SEED, features: list[str] | None = None, **params) -> DecisionParts:
    """Fit lesson 02's rules and a gradient-boosting classifier on ``split``'s training rows.

    The model takes the whole application (the champion's input); ``features`` are the columns the
    classifier uses (default: all but ``sex``, as the champion); ``params`` go to the classifier
    (default: the champion's hyperparameters)."""
    from mlops_lab import training

    features = [f for f in training.CREDIT_FEATURES if f != "sex"] if features is None else list(features)
    params = {**training.CHAMPION_PARAMS, **params}
    pipeline = training.credit_pipeline("gradient_boosting", seed=seed, features=features, engineered=True, **params)
    pipeline.fit(split.X_train, split.y_train)
    return DecisionParts(pipeline[0], pipeline[1:], list(split.X_train.columns))


# -- the estimator the validation gate checks -------------------------------------------------

class DecisionEstimator:
    """The decision model's stages as a scikit-learn-style classifier, for the validation gate.

    ``predict`` is the decision at ``threshold`` (1 approve, 0 refuse), ``predict_proba`` the
    classifier's probabilities: what lesson 06's fairness and robustness checks need. It runs the
    registered artifacts themselves (rules, then classifier), without the contract check (the
    robustness checks send noisy and missing values on purpose). The latency check times
    ``served_predict`` instead, when given: the model's whole answer, reason codes included."""

    def __init__(self, rules, classifier, threshold: float, served_predict=None) -> None:
        from sklearn.pipeline import Pipeline

        self.rules, self.classifier, self.threshold = rules, classifier, float(threshold)
        self.pipeline = Pipeline([("features", rules), *classifier.steps])
        self.served_predict = served_predict  # the whole answer as a server computes it (timed by the gate)

    def __getitem__(self, index):
        """Steps of the underlying pipeline (``[:-1]`` preprocessing, ``[-1]`` the trees), for SHAP."""
        return self.pipeline[index]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.classifier.predict_proba(self.rules.transform(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(int)


# -- the pyfunc model --------------------------------------------------------------------------

def _trusted_types() -> list[str]:
    from mlops_lab import training

    return list(training.SKOPS_TRUSTED_TYPES)


def _load_artifact(context, name: str):
    import skops.io as sio

    path = (context.artifacts or {}).get(name)
    if path is None or not Path(path).is_file():
        raise DecisionError(f"the decision model's artifact {name!r} is missing ({path or 'not logged'}): "
                            "log the model again with the artifacts custom_models.log_decision_model saves")
    unknown = [t for t in sio.get_untrusted_types(file=path) if t not in _trusted_types()]
    if unknown:
        raise DecisionError(f"the artifact {name!r} holds types the course does not trust: {unknown}")
    return sio.load(path, trusted=_trusted_types())


def _source_columns(names: list[str], inputs: list[str]) -> list[str]:
    """The rule-output column each encoded feature comes from (``purpose_car`` -> ``purpose``)."""
    out = []
    for name in names:
        matches = [c for c in inputs if name == c or name.startswith(f"{c}_")]
        out.append(max(matches, key=len) if matches else name)
    return out


class CreditDecisionModel(PythonModel):
    """Preprocessing, model and post-processing of a credit decision as one MLflow model.

    ``predict(context, applications, params={"threshold": 0.833, "reasons": 3})`` returns one row
    per application with :data:`OUTPUT_COLUMNS`. Inputs that break the data contract, params of
    the wrong type or out of range raise MLflow's INVALID_PARAMETER_VALUE error (the scoring server
    answers 400 with the message); nothing is scored then."""

    def load_context(self, context) -> None:
        import shap

        from mlops_lab import quality

        self.rules = _load_artifact(context, RULES_ARTIFACT)
        self.classifier = _load_artifact(context, CLASSIFIER_ARTIFACT)
        self.inputs = list(self.rules.feature_names_in_)
        self.contract = quality.contract("german_credit").inputs(self.inputs)
        prep, model = self.classifier[:-1], self.classifier[-1]
        self.encoded = [str(n) for n in prep.get_feature_names_out()]
        rule_columns = [str(c) for c in self.rules.get_feature_names_out()]
        self.sources = _source_columns(self.encoded, rule_columns)
        self.explainer = shap.TreeExplainer(model)  # built once: predictions reuse it
        self.threshold = float((context.model_config or {}).get("threshold", break_even_threshold()))

    # the three stages, each callable on its own (the lesson shows them one by one)
    def preprocess(self, applications: pd.DataFrame) -> pd.DataFrame:
        """The contract check (a broken row refuses the whole request), then the feature rules."""
        missing = [c for c in self.inputs if c not in applications.columns]
        if missing:
            raise _request_error(f"the applications lack the column(s) {missing}; the model reads {self.inputs}")
        if applications.empty:
            raise _request_error("no application to decide on: send at least one row")
        X = applications[self.inputs].reset_index(drop=True)
        broken = self.contract.violations(X)  # the signature has checked names and types already
        if broken:
            from mlops_lab import quality

            raise _request_error(f"the request breaks the german_credit data contract: "
                                 f"{quality.describe_violations(broken)}")
        return self.rules.transform(X)

    def encode(self, features: pd.DataFrame) -> np.ndarray:
        """The rules' output as the trees read it (scaled, one-hot encoded)."""
        return np.asarray(self.classifier[:-1].transform(features), dtype=float)

    def score(self, encoded: np.ndarray) -> np.ndarray:
        """P(good) for each encoded row."""
        return self.classifier[-1].predict_proba(encoded)[:, 1]

    def reason_codes(self, encoded: np.ndarray, approve: np.ndarray, top: int) -> list[str]:
        """For each row, the ``top`` features that pushed its score towards its decision the most."""
        if top == 0:
            return [""] * len(encoded)
        values = np.asarray(self.explainer.shap_values(encoded, check_additivity=False))
        if values.ndim == 3:  # (rows, features, classes) on some SHAP versions: the positive class
            values = values[:, :, 1]
        per_source = pd.DataFrame(values, columns=self.sources).T.groupby(level=0, sort=False).sum().T
        names = np.asarray(per_source.columns)
        out = []
        for row, approved in zip(per_source.to_numpy(), approve):
            toward = row if approved else -row  # what raised P(good) explains an approval, what lowered it a refusal
            order = [i for i in np.argsort(-toward, kind="stable") if toward[i] > 0][:top]
            out.append(", ".join(names[order]))
        return out

    def postprocess(self, encoded: np.ndarray, proba_good: np.ndarray, threshold: float, reasons: int) -> pd.DataFrame:
        """The decision at ``threshold`` and its reason codes."""
        approve = proba_good >= threshold
        return pd.DataFrame({
            "probability_good": np.round(proba_good, 6),
            "decision": np.where(approve, "approve", "refuse"),
            "label": approve.astype("int64"),
            "reasons": self.reason_codes(encoded, approve, reasons),
        })

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        threshold, reasons = check_params(params, self.threshold)
        encoded = self.encode(self.preprocess(pd.DataFrame(model_input)))
        return self.postprocess(encoded, self.score(encoded), threshold, reasons)

    def as_classifier(self, threshold: float | None = None) -> DecisionEstimator:
        """The stages as a scikit-learn-style classifier (what the validation gate checks)."""
        return DecisionEstimator(self.rules, self.classifier, self.threshold if threshold is None else threshold,
                                 served_predict=lambda rows: self.predict(None, rows))


def check_params(params: dict | None, default_threshold: float | None = None) -> tuple[float, int]:
    """``threshold`` and ``reasons`` from a request's params, with the defaults; out of range raises.

    MLflow has already converted them to the signature's types (a text where a number belongs is
    refused before this runs, and params the signature does not declare are dropped with a
    warning); this checks what a type cannot say."""
    params = dict(params or {})
    threshold = params.get("threshold", break_even_threshold() if default_threshold is None else default_threshold)
    reasons = params.get("reasons", DEFAULT_REASONS)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < float(threshold) < 1 \
            or math.isnan(float(threshold)):
        raise _request_error(f"param 'threshold' must be a probability strictly between 0 and 1; got {threshold!r}")
    if isinstance(reasons, bool) or not isinstance(reasons, (int, np.integer)) or not 0 <= int(reasons) <= MAX_REASONS:
        raise _request_error(f"param 'reasons' must be a whole number from 0 to {MAX_REASONS}; got {reasons!r}")
    return float(threshold), int(reasons)


def threshold_table(parts: DecisionParts, data: pd.DataFrame, policy: dict | str = "credit_decision",
                    thresholds=None) -> pd.DataFrame:
    """What each decision threshold costs and how it treats the policy's protected groups.

    One row per threshold: the approval rate and the credit cost (lesson 05's
    :func:`~mlops_lab.evaluation.cost_by_threshold`) and the policy's group-fairness measures
    (lesson 06's checks, the same code the gate runs) with ``fair`` saying whether all of them
    pass. Individual fairness (counterfactual flips, consistency) is the gate's to check. ``data``
    holds the applications, ``risk`` and the protected attributes."""
    from mlops_lab import evaluation, validation

    policy = validation.load_policy(policy)
    spec = policy["checks"]["group_fairness"]
    groups = validation.protected_groups(data, policy)
    y = data[policy["target"]]
    proba = DecisionEstimator(parts.rules, parts.classifier, 0.5).predict_proba(data[parts.features])[:, 1]
    thresholds = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, round(break_even_threshold(), 6)] if thresholds is None else thresholds
    table = evaluation.cost_by_threshold(y, proba, thresholds).rename(columns={"cost": "credit_cost"})
    fairness = []
    for threshold in thresholds:
        checks = validation.check_group_fairness(spec, y, (proba >= threshold).astype(int), groups, {})
        fairness.append({**{c.name: round(c.number, 3) for c in checks if c.number is not None},
                         "fair": all(c.passed for c in checks)})
    table["threshold"] = thresholds  # exactly the values decided at
    return pd.concat([table, pd.DataFrame(fairness)], axis=1)


# -- logging -----------------------------------------------------------------------------------

def signature(parts: DecisionParts, example: pd.DataFrame, threshold: float | None = None):
    """Inputs (the raw columns), outputs (:data:`OUTPUT_COLUMNS`) and the two params with their defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from mlops_lab import training

    inputs = training.model_input(example[parts.features])
    kinds = {"i": "long", "f": "double", "b": "boolean"}
    return ModelSignature(
        inputs=Schema([ColSpec(kinds.get(inputs[c].dtype.kind, "string"), c) for c in inputs.columns]),
        outputs=Schema([ColSpec("double", "probability_good"), ColSpec("string", "decision"),
                        ColSpec("long", "label"), ColSpec("string", "reasons")]),
        params=ParamSchema([ParamSpec("threshold", "double", round(break_even_threshold() if threshold is None else threshold, 6)),
                            ParamSpec("reasons", "long", DEFAULT_REASONS)]),
    )


@dataclass
class LoggedDecisionModel:
    """Where a logged decision model lives: its URI, run, form and the run's metrics."""

    model_uri: str
    run_id: str
    form: str
    metrics: dict[str, float]


def log_decision_model(parts: DecisionParts, split, *, form: str = "code", threshold: float | None = None,
                       run_name: str = "credit-decision", name: str = "decision_model",
                       intended_use: str | None = None) -> LoggedDecisionModel:
    """Log the decision model in its own run, as ``form="code"`` (models from code) or ``"class"``.

    ``threshold`` is the decision's default (the signature's default param and the model's
    ``model_config``; by default :func:`break_even_threshold`); a request may pass another.

    Logged with it: the two artifacts, a signature with params, an input example, pinned
    requirements, the course package as code (``code_paths``: the class and the rules load where
    ``mlops_lab`` is not installed), the training and test data as inputs (lineage), the
    ``code_version`` and ``intended_use`` tags (what the validation gate's compliance checks
    read), German Credit's data contract in the model's metadata (as every credit model carries
    it: lesson 10's gateway enforces it) and the decision's test metrics at the default threshold."""
    import tempfile

    import mlflow

    import mlops_lab
    from mlops_lab import datasets, evaluation, quality, training
    from mlops_lab.config import code_version

    if form not in ("code", "class"):
        raise ValueError(f"form must be 'code' (models from code) or 'class' (a class instance), not {form!r}")
    python_model = str(MODEL_CODE) if form == "code" else CreditDecisionModel()
    threshold, _ = check_params({} if threshold is None else {"threshold": threshold})
    threshold = round(threshold, 6)  # as the signature shows it: one value everywhere
    example = training.model_input(split.X_train[parts.features].head(5))
    with mlflow.start_run(run_name=run_name) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"problem": "credit", "code_version": code_version(), "model_form": form})
        if intended_use:
            mlflow.set_tag("intended_use", intended_use)
        mlflow.log_params({"reasons": DEFAULT_REASONS, "inputs": ",".join(parts.features)})  # the threshold
        # is logged by MLflow itself, from the model_config
        datasets.log_dataset(split.frame("train"), context="training", name="german_credit-train")
        datasets.log_dataset(split.frame("test"), context="evaluation", name="german_credit-test")
        estimator = DecisionEstimator(parts.rules, parts.classifier, threshold)
        X_test = split.X_test[parts.features]
        metrics = evaluation.classification_metrics(split.y_test, estimator.predict(X_test),
                                                    estimator.predict_proba(X_test)[:, 1])
        mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=python_model, artifacts=parts.save(tmp),
            signature=signature(parts, example, threshold), input_example=example,
            model_config={"threshold": threshold},
            pip_requirements=training.model_requirements() + [_requirement(p) for p in PREDICT_PACKAGES],
            code_paths=[str(Path(mlops_lab.__file__).parent)],
            metadata={"data_contract": quality.contract("german_credit").inputs(parts.features).to_dict()},
        )
    return LoggedDecisionModel(info.model_uri, run.info.run_id, form, metrics)


def _requirement(package: str) -> str:
    from importlib.metadata import version

    return f"{package}=={version(package)}"
