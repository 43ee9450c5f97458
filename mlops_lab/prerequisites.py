"""What a lesson needs from earlier lessons, built on demand in the current workspace.

Every notebook runs standalone in a fresh workspace, so a lesson that serves, tests or deploys a
model cannot rely on an earlier notebook having run. This course-level module brings the
workspace to the state a lesson starts from, and reuses what is already there:

- :func:`champion`: lesson 08's champion (a validated gradient-boosting credit model);
- :func:`challenger`: a second validated version of the same model, for the deployment lessons
  (a canary, a shadow, the B of an A/B test); the champion alias does not move.

Stage modules (training, governance, registry, serving, deployment) never call this module; it
calls them, in lifecycle order.
"""

from __future__ import annotations

from mlops_lab.config import SEED

CREDIT_MODEL = "credit-risk"
_INTENDED_USE = "Pre-screening of consumer credit applications; a credit officer reviews every refusal."


def _gated(name: str, *, run_name: str, seed: int, **params):
    """Train a credit model without the ``sex`` column, pass it through lesson 06's gate, register it."""
    from mlops_lab import datasets, governance, training, validation

    split = training.credit_split(datasets.load_german_credit(), seed=seed)
    features = [f for f in training.CREDIT_FEATURES if f != "sex"]
    tracked = training.fit_and_log_credit("gradient_boosting", split, run_name=run_name, features=features, seed=seed,
                                          intended_use=_INTENDED_USE, **params)
    result = governance.gate(validation.Candidate.from_tracked(run_name, tracked), None, "credit_risk",
                             split.frame("test"), registered_name=name)
    if not result.passed:
        raise RuntimeError(f"the {run_name} failed the validation gate: {result.report.failing}")
    return result.version


def _aliases(name: str) -> dict[str, str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return dict(mlflow.MlflowClient().get_registered_model(name).aliases)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # e.g. the tracking store cannot be reached: do not train over it
        return {}


def champion(name: str = CREDIT_MODEL, *, seed: int = SEED) -> str:
    """``models:/<name>@champion``, after training, validating and promoting one if ``name`` has none.

    The same champion lesson 08 ends with: a gradient-boosting credit model (without the ``sex``
    column) that passed the validation gate of lesson 06 and was promoted by
    :func:`mlops_lab.registry.promote`.
    """
    from mlops_lab import registry

    uri = f"models:/{name}@{registry.CHAMPION}"
    if registry.CHAMPION in _aliases(name):
        return uri
    version = _gated(name, run_name="champion-candidate", seed=seed, n_estimators=100, learning_rate=0.04,
                     max_depth=3, subsample=0.7, min_samples_leaf=9)
    registry.promote(name, version.version, reason="passed the validation gate; first champion", actor="course-setup")
    return uri


def challenger(name: str = CREDIT_MODEL, *, seed: int = SEED) -> str:
    """The version number of a validated challenger of ``name`` (alias ``challenger``), trained if missing.

    A second gradient-boosting credit model with other hyperparameters, through the same gate as
    the champion; it is registered and promotable but not promoted: the deployment lesson decides
    with live traffic. The champion is created first if there is none.
    """
    champion(name, seed=seed)
    aliases = _aliases(name)
    if "challenger" in aliases and aliases["challenger"] != aliases.get("champion"):
        return str(aliases["challenger"])
    version = _gated(name, run_name="challenger-candidate", seed=seed, n_estimators=150, learning_rate=0.05,
                     max_depth=2, subsample=0.8, min_samples_leaf=5)
    return str(version.version)
