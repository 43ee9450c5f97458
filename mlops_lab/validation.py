"""The validation gate: is this model safe, fair and reliable enough to deploy?

One call, :func:`validate`, takes a candidate, a baseline (or none), a *policy* and evaluation
data, and returns a :class:`GateReport`: every check with its value, its threshold, pass/fail and
the reason. The policy is a small YAML document (``mlops_lab/policies/credit_risk.yaml``), so it
is readable, reviewable and versioned with the code. Checks, by section of the policy:

* ``metrics``: thresholds, absolute and relative to the baseline, decided by MLflow's
  ``mlflow.validate_evaluation_results`` (MLflow 3's home for what MLflow 2 did inside evaluate);
* ``latency``: p95 single-row prediction latency (CPU time, so a busy machine does not fail a fast model);
* ``group_fairness``: fairlearn's demographic parity and equalized odds differences per protected
  attribute, with the per-group selection rate, TPR and FPR (``MetricFrame``);
* ``individual_fairness``: counterfactual flips of a protected attribute, and consistency of
  decisions among nearest neighbours;
* ``robustness``: noise, missing values, unseen categories, out-of-range values, slices;
* ``explainability``: SHAP global importance; protected attributes must not drive decisions;
* ``compliance``: required metadata present (data digest and source, code version, signature,
  input example, intended use), read from MLflow, not assumed.

A check that cannot run (the model crashes on missing values, say) *fails* with the reason; a
policy naming an unknown metric or section, or data lacking a protected attribute, raises before
anything runs. Nothing here passes silently.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_lab.config import SEED

POLICY_DIR = Path(__file__).parent / "policies"

SECTIONS = {"metrics", "latency", "group_fairness", "individual_fairness", "robustness",
            "explainability", "compliance"}
KNOWN_METRICS = {"roc_auc", "accuracy_score", "precision_score", "recall_score", "f1_score",
                 "log_loss", "precision_recall_auc", "credit_cost"}
REGRESSOR_METRICS = {"mean_absolute_error", "mean_squared_error", "root_mean_squared_error", "r2_score",
                     "max_error", "mean_absolute_percentage_error"}
"""What ``mlflow.models.evaluate(model_type="regressor")`` computes and a regressor's policy may name."""
MODEL_TYPES = {"classifier": KNOWN_METRICS, "regressor": REGRESSOR_METRICS}
CLASSIFIER_ONLY = {"group_fairness", "individual_fairness", "robustness", "explainability"}
"""Sections measured on decisions and class probabilities: a regressor's policy cannot use them."""
COMPLIANCE_ITEMS = {"training_data_digest", "training_data_source", "code_version", "signature",
                    "input_example", "intended_use"}
SECTION_KEYS = {
    "latency": {"p95_ms_max", "rows"},
    "group_fairness": {"demographic_parity_difference_max", "equalized_odds_difference_max", "min_group_rows"},
    "individual_fairness": {"counterfactual_flip_rate_max", "consistency_min", "neighbours"},
    "robustness": {"noise_level", "noise_auc_drop_max", "missing_rate", "missing_auc_drop_max",
                   "unseen_categories", "out_of_range", "slice_by", "slice_auc_min", "slice_min_rows"},
    "explainability": {"protected_not_in_top", "rows"},
    "compliance": {"required", "allow_uncommitted_code"},
}
"""The settings each policy section accepts: a misspelt key is an error, not a skipped check."""
PAIRED_KEYS = {"noise_level": "noise_auc_drop_max", "missing_rate": "missing_auc_drop_max"}


class PolicyError(ValueError):
    """The policy is malformed: an unknown section, metric, attribute or setting."""


class ValidationInputError(ValueError):
    """The candidate, baseline or data cannot be validated as given."""


# -- policy ----------------------------------------------------------------------------------------

def load_policy(source: str | Path | dict) -> dict:
    """Read and check a policy: a YAML file, the name of a shipped policy, or a dict.

    ``load_policy("credit_risk")`` reads ``mlops_lab/policies/credit_risk.yaml``. Unknown
    sections, metrics, compliance items and protected attributes raise :class:`PolicyError`.
    """
    import yaml

    if isinstance(source, dict):
        policy = dict(source)
    else:
        path = Path(source)
        if not path.suffix:
            path = POLICY_DIR / f"{source}.yaml"
        if not path.is_file():
            raise PolicyError(f"No policy file {path}")
        policy = yaml.safe_load(path.read_text())
    if not isinstance(policy, dict) or "checks" not in policy:
        raise PolicyError("A policy is a mapping with 'name', 'version', 'target' and 'checks'")
    for key in ("name", "version", "target"):
        if key not in policy:
            raise PolicyError(f"The policy has no {key!r}")
    unknown = sorted(set(policy["checks"]) - SECTIONS)
    if unknown:
        raise PolicyError(f"Unknown check section(s) {unknown}; known sections: {sorted(SECTIONS)}")
    model_type = policy.setdefault("model_type", "classifier")
    if model_type not in MODEL_TYPES:
        raise PolicyError(f"model_type must be one of {sorted(MODEL_TYPES)}, not {model_type!r}")
    if model_type == "regressor" and CLASSIFIER_ONLY & set(policy["checks"]):
        raise PolicyError(f"Section(s) {sorted(CLASSIFIER_ONLY & set(policy['checks']))} measure a classifier's "
                          "decisions; a regressor's policy can use metrics, latency and compliance")
    known_metrics = MODEL_TYPES[model_type]
    column = policy.get("prediction_column")
    if column is not None and (model_type != "classifier" or not isinstance(column, str) or not column):
        raise PolicyError("prediction_column names the output column a classifier that answers a table decides "
                          f"with (e.g. 'label'); got {column!r} for a {model_type}")
    for section, spec in policy["checks"].items():
        if not spec:
            raise PolicyError(f"Check section {section!r} is empty: remove it or give it settings")
        if section in SECTION_KEYS:
            extra = sorted(set(spec) - SECTION_KEYS[section])
            if extra:
                raise PolicyError(f"Unknown setting(s) {extra} in {section!r}; allowed: {sorted(SECTION_KEYS[section])}")
            for key, partner in PAIRED_KEYS.items():
                if (key in spec) != (partner in spec):
                    raise PolicyError(f"{section!r}: {key!r} and {partner!r} go together")
    for rule in policy["checks"].get("metrics", []):
        if rule.get("metric") not in known_metrics:
            kind = "" if model_type == "classifier" else f" for a {model_type}"
            raise PolicyError(f"Unknown metric {rule.get('metric')!r}{kind} in the policy; known: {sorted(known_metrics)}")
        if len({"min", "max"} & set(rule)) != 1:
            raise PolicyError(f"Metric rule {rule} needs exactly one of 'min' or 'max'")
        extra = sorted(set(rule) - {"metric", "min", "max", "better_than_baseline_by"})
        if extra:
            raise PolicyError(f"Unknown setting(s) {extra} in the metric rule for {rule['metric']!r}")
        if rule.get("better_than_baseline_by", 1) <= 0:
            raise PolicyError("'better_than_baseline_by' must be > 0 (MLflow's min_absolute_change)")
    items = set(policy["checks"].get("compliance", {}).get("required", []))
    if items - COMPLIANCE_ITEMS:
        raise PolicyError(f"Unknown compliance item(s) {sorted(items - COMPLIANCE_ITEMS)}; known: {sorted(COMPLIANCE_ITEMS)}")
    protected = policy.get("protected_attributes", {})
    named = [("group_fairness", "demographic_parity_difference_max"),
             ("group_fairness", "equalized_odds_difference_max"),
             ("individual_fairness", "counterfactual_flip_rate_max")]
    for section, limit in named:
        for attr in policy["checks"].get(section, {}).get(limit, {}):
            if attr not in protected:
                raise PolicyError(f"{section}.{limit} names {attr!r}, which is not a protected attribute")
    for column in policy["checks"].get("robustness", {}).get("slice_by", []):
        if not isinstance(column, str):
            raise PolicyError(f"robustness.slice_by takes column names, not {column!r}")
    return policy


# -- report ----------------------------------------------------------------------------------------

@dataclass
class Check:
    """One check of the gate: what was measured, against what, and the verdict."""

    name: str
    section: str
    value: str
    threshold: str
    passed: bool
    reason: str = ""
    number: float | None = None  # the measured value as a number, logged as a metric


@dataclass
class GateReport:
    """Everything the gate found. ``passed`` only when every check passed."""

    policy: str
    policy_version: Any
    candidate: str
    baseline: str | None
    checks: list[Check]
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failing(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_frame(self) -> pd.DataFrame:
        """The checks as a table: section, value, threshold, passed, reason."""
        rows = [{k: v for k, v in asdict(c).items() if k != "number"} for c in self.checks]
        return pd.DataFrame(rows).set_index("name")

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "policy_version": self.policy_version,
                "candidate": self.candidate, "baseline": self.baseline, "passed": self.passed,
                "failing": self.failing, "checks": [asdict(c) for c in self.checks]}

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else f"FAILED ({', '.join(self.failing)})"
        lines = [f"# Validation report: {self.candidate}", "",
                 f"Policy `{self.policy}` version {self.policy_version}; baseline `{self.baseline}`.", "",
                 f"**Verdict: {verdict}**", "",
                 "| check | section | value | threshold | result | reason |", "|---|---|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {c.section} | {c.value} | {c.threshold} | "
                         f"{'pass' if c.passed else 'FAIL'} | {c.reason} |")
        return "\n".join(lines) + "\n"


# -- the candidate ---------------------------------------------------------------------------------

@dataclass
class Candidate:
    """A model to validate: its name, logged-model URI and training run.

    ``pipeline`` is kept for convenience (plots, experiments); the gate itself always checks the
    model loaded from ``model_uri``, the artifact that would be registered and served.
    """

    name: str
    model_uri: str
    run_id: str | None = None
    pipeline: Any = None

    def load(self):
        """The model as logged in MLflow: what the gate checks is what gets registered.

        A scikit-learn model loads as its pipeline. A custom ``pyfunc`` model (lesson 16) loads
        through MLflow, and its Python model's ``as_classifier()`` gives the estimator the checks
        call (``predict`` and ``predict_proba`` over the model's own artifacts); a custom model
        without one cannot be checked and is refused."""
        import mlflow
        from mlflow.models import get_model_info

        if "sklearn" in get_model_info(self.model_uri).flavors:
            return mlflow.sklearn.load_model(self.model_uri)
        python_model = mlflow.pyfunc.load_model(self.model_uri).unwrap_python_model()
        if not hasattr(python_model, "as_classifier"):
            raise ValidationInputError(
                f"The candidate {self.model_uri!r} is neither a scikit-learn model nor a custom model with "
                "as_classifier(): the gate's checks need predict and predict_proba.")
        return python_model.as_classifier()

    @classmethod
    def from_tracked(cls, name: str, tracked) -> "Candidate":
        """A candidate from :class:`mlops_lab.training.TrackedModel`."""
        return cls(name, tracked.model_uri, tracked.run_id, tracked.pipeline)


def _input_schema(model_uri: str, who: str) -> dict[str, str]:
    """Column name -> type of a logged model's input signature; a model without one is refused."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None:
        raise ValidationInputError(
            f"The {who} {model_uri!r} has no input signature: the gate cannot know which columns it "
            "takes. Log it with a signature (training.log_sklearn_model does)."
        )
    return {spec.name: str(spec.type) for spec in signature.inputs.inputs}


def _output_columns(model_uri: str) -> list[str]:
    """The column names of a logged model's output signature (none for a model that answers a vector)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    outputs = signature.outputs if signature is not None else None
    return [] if outputs is None else [str(name) for name in outputs.input_names() if name is not None]


@dataclass
class _Timed:
    """A prediction function in the shape the latency check times (``.predict``)."""

    predict: Any


def bands(values: pd.Series, edges: list[float]) -> pd.Series:
    """Numeric values cut into labelled bands, e.g. ages into ``<25``, ``25-40``, ``40-60``, ``60+``."""
    labels = [f"<{edges[1]}"] + [f"{a}-{b}" for a, b in zip(edges[1:-2], edges[2:-1])] + [f"{edges[-2]}+"]
    return pd.cut(values, edges, labels=labels, right=False).astype(str)


def protected_groups(data: pd.DataFrame, policy: dict) -> dict[str, pd.Series]:
    """The protected attribute of each row, banded where the policy says so."""
    groups = {}
    for attr, spec in policy.get("protected_attributes", {}).items():
        if attr not in data.columns:
            raise ValidationInputError(
                f"The evaluation data has no protected attribute {attr!r}: fairness cannot be checked. "
                f"Keep {attr!r} in the evaluation data even if the model does not use it."
            )
        series = data[attr]
        groups[attr] = bands(series, spec["bands"]) if spec and "bands" in spec else series.astype(str)
    return groups


# -- checks ----------------------------------------------------------------------------------------

def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def check_metrics(rules: list[dict], candidate_result, baseline_result) -> list[Check]:
    """Each metric rule through ``mlflow.validate_evaluation_results`` (one call per rule)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold

    checks = []
    for rule in rules:
        metric = rule["metric"]
        higher = "min" in rule
        limit = rule["min"] if higher else rule["max"]
        change = rule.get("better_than_baseline_by")
        threshold = MetricThreshold(threshold=float(limit), greater_is_better=higher,
                                    min_absolute_change=float(change) if change and baseline_result else None)
        value = float(candidate_result.metrics[metric])
        text = f"{'>=' if higher else '<='} {limit}"
        if change and not baseline_result:
            text += " (no baseline: the relative part was not applied)"
        if change and baseline_result:
            base = float(baseline_result.metrics[metric])
            text += f" and {'>=' if higher else '<='} baseline {_fmt(base)} {'+' if higher else '-'} {change}"
        try:
            mlflow.validate_evaluation_results({metric: threshold}, candidate_result, baseline_result)
            passed, reason = True, ""
        except MlflowException as exc:
            passed, reason = False, str(exc.message).strip().splitlines()[-1].strip()
        checks.append(Check(f"metric_{metric}", "metrics", _fmt(value), text, passed, reason, value))
    return checks


def check_latency(pipeline, X: pd.DataFrame, p95_ms_max: float, rows: int = 100) -> list[Check]:
    """p95 of single-row ``predict`` latency over ``rows`` rows, after a short warm-up.

    Each call is timed in CPU time of this process (all its threads), not wall-clock time: the gate
    judges what the model costs, and a machine busy with other work (a CI runner on two cores,
    tests in parallel) must not fail a fast model. A model that waits for something other than the
    CPU is timed at serving, where load tests measure what a caller waits for (lessons 10-11).
    """
    sample = X.head(rows)
    for i in range(min(5, len(sample))):
        pipeline.predict(sample.iloc[[i]])
    times = []
    for i in range(len(sample)):
        started = time.process_time()
        pipeline.predict(sample.iloc[[i]])
        times.append((time.process_time() - started) * 1000)
    p95 = float(np.percentile(times, 95))
    passed = p95 <= p95_ms_max
    return [Check("latency_p95", "latency", f"{p95:7.1f} ms", f"<= {p95_ms_max} ms", passed,
                  "" if passed else "single-row predictions are too slow", p95)]


def group_metrics(y_true, y_pred, groups: pd.Series):
    """fairlearn ``MetricFrame`` of selection rate, TPR and FPR by group."""
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate

    return MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                                "fpr": false_positive_rate},
                       y_true=y_true, y_pred=y_pred, sensitive_features=groups)


def check_group_fairness(spec: dict, y_true, y_pred, groups: dict[str, pd.Series], details: dict) -> list[Check]:
    """Demographic parity and equalized odds differences per protected attribute (fairlearn)."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    checks = []
    min_rows = int(spec.get("min_group_rows", 10))
    measurable = {}
    for attr, g in groups.items():
        counts = g.value_counts()
        big = counts[counts >= min_rows]
        measurable[attr] = len(big) >= 2
        if not measurable[attr]:
            checks.append(Check(f"groups_{attr}", "group_fairness", f"{len(big)} group(s)",
                                f">= 2 groups of >= {min_rows} rows", False,
                                f"the evaluation data cannot compare {attr} groups: {counts.to_dict()}"))
    measures = {"demographic_parity_difference_max": ("dpd", demographic_parity_difference),
                "equalized_odds_difference_max": ("eod", equalized_odds_difference)}
    for key, (short, fn) in measures.items():
        for attr, limit in spec.get(key, {}).items():
            if not measurable[attr]:
                continue
            value = float(fn(y_true, y_pred, sensitive_features=groups[attr]))
            passed = value <= limit
            reason = "" if passed else f"decisions differ too much between {attr} groups"
            checks.append(Check(f"{short}_{attr}", "group_fairness", _fmt(value), f"<= {limit}", passed, reason, value))
    details["group_metrics"] = {attr: group_metrics(y_true, y_pred, g).by_group.round(3) for attr, g in groups.items()}
    return checks


def _neighbour_space(X: pd.DataFrame, protected: list[str]) -> np.ndarray:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = X.drop(columns=[c for c in protected if c in X.columns])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    prep = ColumnTransformer([("num", StandardScaler(), numeric),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)])
    return prep.fit_transform(features)


def counterfactual(X: pd.DataFrame, attr: str, spec: dict | None) -> pd.DataFrame:
    """``X`` with only ``attr`` changed: the other value of a two-valued attribute, or, for a banded
    numeric one (``spec`` has ``bands``), the middle of the next band (the last band wraps to the first)."""
    if spec and "bands" in spec:
        edges = spec["bands"]
        lows = [max(a, X[attr].min()) for a in edges[:-1]]
        highs = [min(b, X[attr].max()) for b in edges[1:]]
        middles = [round((lo + hi) / 2) for lo, hi in zip(lows, highs)]
        band = np.clip(np.digitize(X[attr], edges[1:-1]), 0, len(middles) - 1)
        moved = [middles[(b + 1) % len(middles)] for b in band]
        return X.assign(**{attr: np.asarray(moved, dtype=X[attr].dtype)})
    values = sorted(X[attr].astype(str).unique())
    if len(values) != 2:
        raise ValidationInputError(f"Counterfactual flips need a two-valued or banded attribute; {attr!r} has {values}")
    return X.assign(**{attr: X[attr].astype(str).map({values[0]: values[1], values[1]: values[0]})})


def check_individual_fairness(spec: dict, pipeline, X: pd.DataFrame, y_pred, protected: dict) -> list[Check]:
    """Counterfactual flips of each named protected attribute, and kNN consistency."""
    from sklearn.neighbors import NearestNeighbors

    checks = []
    for attr, limit in spec.get("counterfactual_flip_rate_max", {}).items():
        rate = float(np.mean(pipeline.predict(counterfactual(X, attr, protected.get(attr))) != y_pred))
        passed = rate <= limit
        reason = "" if passed else f"changing only {attr} changes {rate:.0%} of decisions"
        checks.append(Check(f"counterfactual_{attr}", "individual_fairness", _fmt(rate), f"<= {limit}",
                            passed, reason, rate))
    minimum = spec.get("consistency_min")
    if minimum is not None:
        k = int(spec.get("neighbours", 5))
        space = _neighbour_space(X, list(protected))
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(space).kneighbors(space)
        preds = np.asarray(y_pred, dtype=float)
        consistency = float(1 - np.mean(np.abs(preds - preds[idx[:, 1:]].mean(axis=1))))
        passed = consistency >= minimum
        reason = "" if passed else "similar applicants get different decisions"
        checks.append(Check("consistency", "individual_fairness", _fmt(consistency), f">= {minimum}",
                            passed, reason, consistency))
    return checks


def _auc(pipeline, X, y) -> float:
    from sklearn.metrics import roc_auc_score

    proba = pipeline.predict_proba(X)[:, 1]
    if not np.all(np.isfinite(proba)):
        raise ValueError("the model returned non-finite probabilities")
    return float(roc_auc_score(y, proba))


def check_robustness(spec: dict, pipeline, X: pd.DataFrame, y: pd.Series, groups: dict[str, pd.Series],
                     seed: int = SEED) -> list[Check]:
    """Stress the model: noise, missing values, unseen categories, out-of-range values, slices."""
    rng = np.random.default_rng(seed)
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    clean = _auc(pipeline, X, y)
    checks = []

    def attempt(name: str, fn, threshold: str) -> None:
        try:
            value, passed, reason, number = fn()
        except Exception as exc:  # a crash under stress is a failed check, with the cause
            value, passed, reason, number = "crashed", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", None
        checks.append(Check(name, "robustness", value, threshold, passed, reason, number))

    if "noise_level" in spec:
        level, limit = spec["noise_level"], spec["noise_auc_drop_max"]

        def noise():
            noisy = X.copy()
            for c in numeric:
                noisy[c] = noisy[c] + rng.normal(0, level * X[c].std(), len(X))
            drop = clean - _auc(pipeline, noisy, y)
            return _fmt(drop), drop <= limit, "" if drop <= limit else "AUC falls under small noise", drop

        attempt("noise", noise, f"AUC drop <= {limit}")
    if "missing_rate" in spec:
        rate, limit = spec["missing_rate"], spec["missing_auc_drop_max"]

        def missing():
            holes = X.copy().astype({c: float for c in numeric})
            for c in X.columns:
                mask = rng.random(len(X)) < rate
                holes.loc[mask, c] = np.nan
            drop = clean - _auc(pipeline, holes, y)
            return _fmt(drop), drop <= limit, "" if drop <= limit else "AUC falls with missing values", drop

        attempt("missing_values", missing, f"no crash, AUC drop <= {limit}")
    if spec.get("unseen_categories"):
        def unseen():
            odd = X.copy()
            for c in categorical:
                odd[c] = "__never_seen__"
            predictions = pipeline.predict(odd)
            ok = set(np.unique(predictions)) <= {0, 1}
            return "ok" if ok else "invalid output", ok, "" if ok else "predictions outside {0, 1}", None

        attempt("unseen_categories", unseen, "no crash, valid output")
    if spec.get("out_of_range"):
        def out_of_range():
            extreme = X.copy()
            for c in numeric:
                extreme[c] = X[c].max() * 10
            proba = pipeline.predict_proba(extreme)[:, 1]
            ok = bool(np.all((proba >= 0) & (proba <= 1)))
            return "ok" if ok else "invalid output", ok, "" if ok else "probabilities outside [0, 1]", None

        attempt("out_of_range", out_of_range, "no crash, probabilities in [0, 1]")
    if "slice_auc_min" in spec:
        limit, min_rows = spec["slice_auc_min"], spec.get("slice_min_rows", 30)

        def slices():
            worst, where = 1.0, ""
            for column in spec.get("slice_by", []):
                keys = groups[column] if column in groups else X[column].astype(str)
                for value in sorted(keys.unique()):
                    rows = keys == value
                    if rows.sum() < min_rows or y[rows].nunique() < 2:
                        continue
                    auc = _auc(pipeline, X[rows], y[rows])
                    if auc < worst:
                        worst, where = auc, f"{column}={value}"
            if not where:
                return "no slice measured", False, f"no slice has {min_rows} rows and both classes", None
            ok = worst >= limit
            return f"{_fmt(worst)} ({where})", ok, "" if ok else f"weak on the slice {where}", worst

        attempt("worst_slice_auc", slices, f">= {limit}")
    return checks


def check_explainability(spec: dict, pipeline, X: pd.DataFrame, protected: list[str], details: dict) -> list[Check]:
    """SHAP global importance; no protected attribute among the top drivers of the model."""
    from mlops_lab import explain

    top = int(spec.get("protected_not_in_top", 3))
    try:
        explanation = explain.explain(pipeline, X, max_rows=int(spec.get("rows", 200)))
    except Exception as exc:
        return [Check("protected_not_top_drivers", "explainability", "not computed", f"none in top {top}",
                      False, f"SHAP failed: {type(exc).__name__}: {exc}")]
    table = explain.global_importance(explanation)
    details["shap_global"] = table
    details["shap_local"] = explain.local_explanation(explanation, 0)
    details["shap_explanation"] = explanation
    drivers = list(table["feature"].head(top))
    flagged = [f for f in drivers if any(f == p or f.startswith(f"{p}_") for p in protected)]
    passed = not flagged
    return [Check("protected_not_top_drivers", "explainability", ", ".join(drivers), f"none of {protected} in top {top}",
                  passed, "" if passed else f"protected attribute drives decisions: {flagged}")]


def check_compliance(required: list[str], candidate: Candidate, allow_uncommitted_code: bool = False) -> list[Check]:
    """Required metadata, read from MLflow: lineage, code version, signature, input example, intended use."""
    import mlflow
    from mlflow.models import get_model_info

    from mlops_lab import datasets

    info = get_model_info(candidate.model_uri)
    run = mlflow.get_run(candidate.run_id) if candidate.run_id else None
    training_inputs = datasets.training_inputs(run) if run is not None else []
    tags = dict(run.data.tags) if run else {}
    model_id = getattr(info, "model_id", None)
    if model_id:
        try:
            tags.update(mlflow.get_logged_model(model_id).tags)
        except Exception:  # noqa: BLE001 (older model formats have no logged-model record)
            pass
    found = {
        "training_data_digest": ", ".join(d.digest for d in training_inputs if d.digest) or None,
        "training_data_source": ", ".join(datasets.source_file(d.source) for d in training_inputs if d.source) or None,
        "code_version": tags.get("code_version") or tags.get("mlflow.source.git.commit"),
        "signature": "present" if info.signature is not None else None,
        "input_example": "present" if info.saved_input_example_info else None,
        "intended_use": tags.get("intended_use"),
    }
    checks = []
    for item in required:
        value = found[item]
        present = value is not None and bool(str(value).strip())
        shown = str(value)[:40]
        passed, reason = present, "" if present else f"no {item.replace('_', ' ')} recorded"
        if present and item == "code_version":
            commit = str(value).removesuffix("-dirty")
            shown = f"commit {commit[:12]}" if len(commit) == 40 else commit
        if present and item == "code_version" and str(value).endswith("-dirty"):
            reason = f"trained from uncommitted code ({value})"
            passed = allow_uncommitted_code
            if passed:
                reason += " (allowed by the policy)"
        checks.append(Check(f"has_{item}", "compliance", shown if present else "missing", "present",
                            passed, reason))
    return checks


# -- the gate --------------------------------------------------------------------------------------

def validate(candidate: Candidate, baseline: Candidate | None, policy: dict | str, data: pd.DataFrame) -> GateReport:
    """Run every check of ``policy`` on ``candidate`` (vs ``baseline``) with evaluation ``data``.

    ``data`` holds the features, the target and the protected attributes. MLflow's evaluation of
    both models is logged to the active run (one is started if none is active).
    """
    import mlflow

    from mlops_lab import evaluation

    policy = load_policy(policy)
    target = policy["target"]
    checks_spec = policy["checks"]
    if target not in data.columns:
        raise ValidationInputError(f"The evaluation data has no target column {target!r}")
    groups = protected_groups(data, policy)
    protected = policy.get("protected_attributes", {})
    schema = _input_schema(candidate.model_uri, "candidate")
    if baseline is not None:
        base_schema = _input_schema(baseline.model_uri, "baseline")
        if base_schema != schema:
            raise ValidationInputError(
                f"The baseline's signature {base_schema} differs from the candidate's {schema}: "
                "they cannot be compared on the same data."
            )
    columns = list(schema)
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValidationInputError(f"The evaluation data lacks the model's input columns {missing}")
    X, y = data[columns], data[target]
    full_X = data.drop(columns=[target])
    for attr in checks_spec.get("individual_fairness", {}).get("counterfactual_flip_rate_max", {}):
        counterfactual(full_X.head(50), attr, protected.get(attr))  # fails now, before anything is logged
    pipeline = candidate.load()
    y_pred = pipeline.predict(X)
    details: dict[str, Any] = {}
    checks: list[Check] = []

    own_run = mlflow.active_run() is None
    if own_run:
        mlflow.start_run(run_name=f"validate-{candidate.name}")
    try:
        if "metrics" in checks_spec:
            kind = policy["model_type"]
            extras = {"extra_metrics": [evaluation.credit_cost_metric()] if kind == "classifier" else []}
            decided = policy.get("prediction_column")  # a model that answers a table: its decision column

            def arguments(model_uri: str) -> dict:  # per model: a decision model may be either side
                if decided is None or decided not in _output_columns(model_uri):
                    return extras
                return {"predictions": decided,
                        "extra_metrics": extras["extra_metrics"] + [evaluation.probability_auc_metric()]}

            with mlflow.start_run(run_name=f"evaluate-{candidate.name}", nested=True):
                cand_result = evaluation.evaluate(candidate.model_uri, data[columns + [target]], target, kind,
                                                  **arguments(candidate.model_uri))
            base_result = None
            if baseline is not None:
                with mlflow.start_run(run_name=f"evaluate-baseline-{baseline.name}", nested=True):
                    base_result = evaluation.evaluate(baseline.model_uri, data[columns + [target]], target, kind,
                                                      **arguments(baseline.model_uri))
            checks += check_metrics(checks_spec["metrics"], cand_result, base_result)
        if "latency" in checks_spec:
            spec = checks_spec["latency"]
            served = getattr(pipeline, "served_predict", None)  # a custom model's whole answer, when it has one
            checks += check_latency(pipeline if served is None else _Timed(served), X, spec["p95_ms_max"],
                                    spec.get("rows", 100))
        if "group_fairness" in checks_spec:
            checks += check_group_fairness(checks_spec["group_fairness"], y, y_pred, groups, details)
        if "individual_fairness" in checks_spec:
            checks += check_individual_fairness(checks_spec["individual_fairness"], pipeline, full_X, y_pred, protected)
        if "robustness" in checks_spec:
            checks += check_robustness(checks_spec["robustness"], pipeline, X, y, groups)
        if "explainability" in checks_spec:
            checks += check_explainability(checks_spec["explainability"], pipeline, X, protected, details)
        if "compliance" in checks_spec:
            spec = checks_spec["compliance"]
            checks += check_compliance(spec.get("required", []), candidate, spec.get("allow_uncommitted_code", False))
    finally:
        if own_run:
            mlflow.end_run()
    return GateReport(policy["name"], policy["version"], candidate.name, baseline.name if baseline else None,
                      checks, details)
