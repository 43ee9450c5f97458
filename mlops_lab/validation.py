"""The validation gate: is this model safe, fair and reliable enough to deploy?

One call, :func:`validate`, takes a candidate, a baseline (or none), a *policy* and evaluation
data, and returns a :class:`GateReport`: every check with its value, its threshold, pass/fail and
the reason. The policy is a small YAML document (``mlops_lab/policies/credit_risk.yaml``), so it
is readable, reviewable and versioned with the code. Checks, by section of the policy:

* ``metrics``: thresholds, absolute and relative to the baseline, decided by MLflow's
  ``mlflow.validate_evaluation_results`` (MLflow 3's home for what MLflow 2 did inside evaluate);
* ``latency``: p95 single-row prediction latency;
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
COMPLIANCE_ITEMS = {"training_data_digest", "training_data_source", "code_version", "signature",
                    "input_example", "intended_use"}


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
        policy = source
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
    for rule in policy["checks"].get("metrics", []):
        if rule.get("metric") not in KNOWN_METRICS:
            raise PolicyError(f"Unknown metric {rule.get('metric')!r} in the policy; known: {sorted(KNOWN_METRICS)}")
        if not ({"min", "max"} & set(rule)):
            raise PolicyError(f"Metric rule {rule} needs 'min' or 'max'")
        if rule.get("better_than_baseline_by", 1) <= 0:
            raise PolicyError("'better_than_baseline_by' must be > 0 (MLflow's min_absolute_change)")
    items = set(policy["checks"].get("compliance", {}).get("required", []))
    if items - COMPLIANCE_ITEMS:
        raise PolicyError(f"Unknown compliance item(s) {sorted(items - COMPLIANCE_ITEMS)}; known: {sorted(COMPLIANCE_ITEMS)}")
    protected = policy.get("protected_attributes", {})
    for section in ("group_fairness",):
        for limit in ("demographic_parity_difference_max", "equalized_odds_difference_max"):
            for attr in policy["checks"].get(section, {}).get(limit, {}):
                if attr not in protected:
                    raise PolicyError(f"{section}.{limit} names {attr!r}, which is not a protected attribute")
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
    """A model to validate: its name, logged-model URI, training run, and (optionally) the pipeline."""

    name: str
    model_uri: str
    run_id: str | None = None
    pipeline: Any = None

    def load(self):
        """The scikit-learn pipeline, loaded from MLflow when it was not given."""
        if self.pipeline is None:
            import mlflow

            self.pipeline = mlflow.sklearn.load_model(self.model_uri)
        return self.pipeline

    @classmethod
    def from_tracked(cls, name: str, tracked) -> "Candidate":
        """A candidate from :class:`mlops_lab.training.TrackedModel`."""
        return cls(name, tracked.model_uri, tracked.run_id, tracked.pipeline)


def _input_names(model_uri: str) -> list[str] | None:
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    return None if signature is None or signature.inputs is None else signature.inputs.input_names()


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
    """p95 of single-row ``predict`` latency over ``rows`` rows, after a short warm-up."""
    sample = X.head(rows)
    for i in range(min(5, len(sample))):
        pipeline.predict(sample.iloc[[i]])
    times = []
    for i in range(len(sample)):
        started = time.perf_counter()
        pipeline.predict(sample.iloc[[i]])
        times.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(times, 95))
    passed = p95 <= p95_ms_max
    return [Check("latency_p95", "latency", f"{p95:.1f} ms", f"<= {p95_ms_max} ms", passed,
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
    measures = {"demographic_parity_difference_max": ("dpd", demographic_parity_difference),
                "equalized_odds_difference_max": ("eod", equalized_odds_difference)}
    for key, (short, fn) in measures.items():
        for attr, limit in spec.get(key, {}).items():
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


def check_individual_fairness(spec: dict, pipeline, X: pd.DataFrame, y_pred, protected: list[str]) -> list[Check]:
    """Counterfactual flips (swap a two-valued protected attribute) and kNN consistency."""
    from sklearn.neighbors import NearestNeighbors

    checks = []
    limit = spec.get("counterfactual_flip_rate_max")
    if limit is not None:
        for attr in spec.get("counterfactual_attributes", []):
            values = sorted(X[attr].astype(str).unique())
            if len(values) != 2:
                raise PolicyError(f"Counterfactual flips need a two-valued attribute; {attr!r} has {values}")
            flipped = X.assign(**{attr: X[attr].astype(str).map({values[0]: values[1], values[1]: values[0]})})
            rate = float(np.mean(pipeline.predict(flipped) != y_pred))
            passed = rate <= limit
            reason = "" if passed else f"changing only {attr} changes {rate:.0%} of decisions"
            checks.append(Check(f"counterfactual_{attr}", "individual_fairness", _fmt(rate), f"<= {limit}",
                                passed, reason, rate))
    minimum = spec.get("consistency_min")
    if minimum is not None:
        k = int(spec.get("neighbours", 5))
        space = _neighbour_space(X, protected)
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


def _source_name(source: str) -> str:
    """The file name of a dataset source (MLflow stores it as JSON with a ``uri``)."""
    import json

    try:
        uri = json.loads(source).get("uri", source)
    except (json.JSONDecodeError, AttributeError):
        uri = source
    return Path(str(uri)).name


def check_compliance(required: list[str], candidate: Candidate) -> list[Check]:
    """Required metadata, read from MLflow: lineage, code version, signature, input example, intended use."""
    import mlflow
    from mlflow.models import get_model_info

    info = get_model_info(candidate.model_uri)
    run = mlflow.get_run(candidate.run_id) if candidate.run_id else None
    training_inputs = []
    if run is not None:
        training_inputs = [i.dataset for i in run.inputs.dataset_inputs
                           if any(t.key == "mlflow.data.context" and t.value == "training" for t in i.tags)]
    tags = dict(run.data.tags) if run else {}
    model_id = getattr(info, "model_id", None)
    if model_id:
        try:
            tags.update(mlflow.get_logged_model(model_id).tags)
        except Exception:  # noqa: BLE001 (older model formats have no logged-model record)
            pass
    found = {
        "training_data_digest": ", ".join(d.digest for d in training_inputs if d.digest) or None,
        "training_data_source": ", ".join(_source_name(d.source) for d in training_inputs if d.source) or None,
        "code_version": tags.get("code_version") or tags.get("mlflow.source.git.commit"),
        "signature": "present" if info.signature is not None else None,
        "input_example": "present" if info.saved_input_example_info else None,
        "intended_use": tags.get("intended_use"),
    }
    checks = []
    for item in required:
        value = found[item]
        checks.append(Check(f"has_{item}", "compliance", (str(value)[:40] if value else "missing"), "present",
                            value is not None, "" if value is not None else f"no {item.replace('_', ' ')} recorded"))
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
    protected = list(policy.get("protected_attributes", {}))
    candidate_inputs = _input_names(candidate.model_uri)
    if candidate_inputs is None and "compliance" not in checks_spec:
        raise ValidationInputError(f"{candidate.name} has no signature: log it with one, or check compliance")
    if baseline is not None:
        base_inputs = _input_names(baseline.model_uri)
        if candidate_inputs is not None and base_inputs is not None and set(base_inputs) != set(candidate_inputs):
            raise ValidationInputError(
                f"The baseline's signature {sorted(base_inputs)} differs from the candidate's "
                f"{sorted(candidate_inputs)}: they cannot be compared on the same data."
            )
    columns = candidate_inputs or [c for c in data.columns if c != target]
    X, y = data[columns], data[target]
    full_X = data.drop(columns=[target])
    pipeline = candidate.load()
    y_pred = pipeline.predict(X)
    details: dict[str, Any] = {}
    checks: list[Check] = []

    own_run = mlflow.active_run() is None
    if own_run:
        mlflow.start_run(run_name=f"validate-{candidate.name}")
    try:
        if "metrics" in checks_spec:
            extras = {"extra_metrics": [evaluation.credit_cost_metric()]}
            with mlflow.start_run(run_name=f"evaluate-{candidate.name}", nested=True):
                cand_result = evaluation.evaluate(candidate.model_uri, data[columns + [target]], target, "classifier", **extras)
            base_result = None
            if baseline is not None:
                with mlflow.start_run(run_name=f"evaluate-baseline-{baseline.name}", nested=True):
                    base_result = evaluation.evaluate(baseline.model_uri, data[columns + [target]], target, "classifier", **extras)
            checks += check_metrics(checks_spec["metrics"], cand_result, base_result)
        if "latency" in checks_spec:
            spec = checks_spec["latency"]
            checks += check_latency(pipeline, X, spec["p95_ms_max"], spec.get("rows", 100))
        if "group_fairness" in checks_spec:
            checks += check_group_fairness(checks_spec["group_fairness"], y, y_pred, groups, details)
        if "individual_fairness" in checks_spec:
            checks += check_individual_fairness(checks_spec["individual_fairness"], pipeline, full_X, y_pred, protected)
        if "robustness" in checks_spec:
            checks += check_robustness(checks_spec["robustness"], pipeline, X, y, groups)
        if "explainability" in checks_spec:
            checks += check_explainability(checks_spec["explainability"], pipeline, X, protected, details)
        if "compliance" in checks_spec:
            checks += check_compliance(checks_spec["compliance"].get("required", []), candidate)
    finally:
        if own_run:
            mlflow.end_run()
    return GateReport(policy["name"], policy["version"], candidate.name, baseline.name if baseline else None,
                      checks, details)
