"""What a lesson needs from earlier lessons, built on demand in the current workspace.

Every notebook runs standalone in a fresh workspace, so a lesson that serves, tests or deploys a
model cannot rely on an earlier notebook having run. This course-level module brings the
workspace to the state a lesson starts from, and reuses what is already there:

- :func:`champion`: lesson 08's champion (a validated gradient-boosting credit model);
- :func:`challenger`: a second validated version of the same model, for the deployment lessons
  (a canary, a shadow, the B of an A/B test); the champion alias does not move.
- :func:`demand_champion`: a validated hourly Bikeshare demand model, for the batch-scoring lesson (15).

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
    from mlops_lab import registry, training

    uri = f"models:/{name}@{registry.CHAMPION}"
    if registry.CHAMPION in _aliases(name):
        return uri
    version = _gated(name, run_name="champion-candidate", seed=seed, **training.CHAMPION_PARAMS)
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


PRODUCTION = "credit-production"
"""The deployment whose inference log the monitoring lesson reads."""


def inference_log(name: str = PRODUCTION, *, requests: int = 400, drift_from: int = 200, seed: int = SEED):
    """The inference log of ``name``: the champion behind a router, after ``requests`` real requests.

    Lesson 12 ends with traffic flowing through the router; the monitoring lesson needs that
    traffic. The champion (:func:`champion`) is served by the ONNX gateway behind a ``single``
    router, and ``requests`` applications from German Credit's test split (drawn with a seed) are
    sent one by one with an ``X-User-Id``. From request ``drift_from`` on, the applications come
    from a campaign for larger loans: ``credit_amount`` is 1.8 times higher and ``duration`` 12
    months longer (a known, controlled drift). What the lender later learns (``risk`` of each
    application, by request id) is kept beside the log as ``truth.parquet``, for the lesson to send
    as delayed labels. Both are reused when the log already holds the requests.

    Returns the :class:`~mlops_lab.deployment.log.InferenceLog`.
    """
    import numpy as np
    import pandas as pd

    from mlops_lab import config, datasets, deployment, registry, serving, training

    from mlops_lab.deployment.routing import state_folder

    uri = champion(seed=seed)
    home = config.workspace()
    folder = state_folder(home, name)
    log = deployment.InferenceLog(folder / "inference.db")
    truth_file = folder / "truth.parquet"
    asked = {"requests": requests, "drift_from": drift_from, "seed": seed}
    if truth_file.is_file():
        truth = pd.read_parquet(truth_file)
        logged = log.frame("primary")["request_id"].tolist()
        if truth.attrs.get("traffic", {}) == asked and logged == truth["request_id"].tolist():
            return log
    for suffix in ("", "-wal", "-shm"):  # a log from other traffic (or a run cut short) is not this one
        (folder / f"inference.db{suffix}").unlink(missing_ok=True)
    truth_file.unlink(missing_ok=True)
    split = training.credit_split(datasets.load_german_credit(), seed=seed)
    rows = np.random.default_rng(seed).choice(len(split.X_test), requests, replace=True)
    X = split.X_test.iloc[rows].reset_index(drop=True)
    y = split.y_test.iloc[rows].reset_index(drop=True)
    X.loc[drift_from:, "credit_amount"] = (X.loc[drift_from:, "credit_amount"] * 1.8).round().astype(int)
    X.loc[drift_from:, "duration"] = X.loc[drift_from:, "duration"] + 12
    version = registry.version_for(CREDIT_MODEL, registry.CHAMPION).version
    spec = {"name": name, "model": CREDIT_MODEL, "strategy": "single",
            "variants": {"stable": {"version": str(version), "urls": []}}}
    ids = []
    with serving.gateway_server(uri) as gateway:
        spec["variants"]["stable"]["urls"] = [gateway.url]
        with deployment.router(spec) as router:
            client = router.scoring_client()
            for i in range(requests):
                answer = client.post(*serving.payload(X.iloc[[i]]), headers={"X-User-Id": f"applicant-{i}"})
                if not answer.ok:
                    raise RuntimeError(f"request {i} was refused ({answer.status}): {answer.message[:300]}")
                ids.append(answer.headers["X-Request-Id"])
            router.client().status(flush=True)
    truth = pd.DataFrame({"request_id": ids, "risk": y.to_numpy(), "drifted": np.arange(requests) >= drift_from})
    truth.attrs["traffic"] = asked  # kept in the Parquet file's metadata
    truth.to_parquet(truth_file)
    return log


DEMAND_MODEL = "bikeshare-demand"
"""The hourly demand model the batch lessons score (lesson 14's retraining pipeline owns ``bike-demand``)."""


def demand_champion(name: str = DEMAND_MODEL, *, seed: int = SEED) -> str:
    """``models:/<name>@champion``: an hourly Bikeshare demand model, trained and gated if ``name`` has none.

    A histogram gradient-boosting regressor on :data:`~mlops_lab.training.BIKE_FEATURES`, trained on
    January to June 2011, passed through the ``bikeshare_demand`` gate on July and August (the
    months after it, in time order) and promoted by :func:`mlops_lab.registry.promote`: what a
    batch job scoring the year would find in the registry.
    """
    import mlflow

    from mlops_lab import datasets, governance, registry, training, validation
    from mlops_lab.config import code_version

    uri = f"models:/{name}@{registry.CHAMPION}"
    if registry.CHAMPION in _aliases(name):
        return uri
    bikes = datasets.load_bikeshare()
    months = datasets.MONTHS
    split = training.time_split(bikes, train_months=months[:6], test_months=months[6:8])
    params = {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20}
    with mlflow.start_run(run_name="demand-champion-candidate") as run:
        mlflow.log_params({"model": "hist_gradient_boosting", "seed": seed, **params,
                           **{f"{k}_rows": v for k, v in split.sizes.items()}})
        mlflow.set_tags({"problem": "bikeshare", "code_version": code_version(),
                         "intended_use": "Next-day fleet planning: hourly rentals forecast in a nightly batch."})
        datasets.log_dataset(split.frame("train"), context="training", name="bikeshare-2011-Jan..June",
                             targets=training.BIKE_TARGET)
        pipeline = training.bike_pipeline("hist_gradient_boosting", seed=seed, **params)
        pipeline.fit(split.X_train, split.y_train)
        info = training.log_sklearn_model(pipeline, split.X_train)
    result = governance.gate(validation.Candidate("demand-champion-candidate", info.model_uri, run.info.run_id),
                             None, "bikeshare_demand", split.frame("test"), registered_name=name)
    if not result.passed:
        raise RuntimeError(f"the demand-champion-candidate failed the validation gate: {result.report.failing}")
    registry.promote(name, result.version.version, reason="passed the validation gate; first champion",
                     actor="course-setup")
    return uri
