"""Splits, leakage checks and seeded scikit-learn pipelines for the two case studies.

Credit risk is split *stratified* (keep the 70/30 class balance in both parts); Bikeshare is split
*in time order* (train on earlier months, test on later ones: a random split would let the model
peek at the future). Pipelines bundle preprocessing with the estimator so what is logged, served
and evaluated is one object that takes raw columns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_lab.config import SEED

CREDIT_TARGET = "risk"
CREDIT_CATEGORICAL = ["sex", "housing", "saving_accounts", "checking_account", "purpose"]
CREDIT_NUMERIC = ["job", "credit_amount", "duration", "age"]
CREDIT_FEATURES = CREDIT_NUMERIC + CREDIT_CATEGORICAL

BIKE_TARGET = "bikers"
BIKE_LEAKY = ["casual", "registered"]  # they add up to the target: known only after the hour
BIKE_CATEGORICAL = ["weathersit"]
BIKE_NUMERIC = ["season", "hr", "holiday", "weekday", "workingday", "temp", "atemp", "hum", "windspeed"]
BIKE_FEATURES = BIKE_NUMERIC + BIKE_CATEGORICAL
BIKE_ENGINEERED_INPUT = BIKE_FEATURES + ["mnth"]  # the month feeds lesson 02's cyclic month rule

SKOPS_TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",  # random forests, gradient boosting
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hist gradient boosting
    "numpy.dtype",  # the imputers record the dtype they were fitted on
    "mlops_lab.features.FeatureTransformer",  # lesson 02's feature rules, inside the model
]
"""Types MLflow 3's skops serialisation must be told to trust for the course's tree models.

skops refuses to load types it does not know (pickle would run any code on load). Every type here
comes from scikit-learn or NumPy; the course passes this list as ``skops_trusted_types``."""


class SplitError(ValueError):
    """A split was asked for with data that cannot support it."""


@dataclass
class Split:
    """Features and target for training and testing."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "test": len(self.X_test)}

    def frame(self, part: str) -> pd.DataFrame:
        """Features and target of ``part`` ("train" or "test") as one DataFrame (for lineage, evaluate)."""
        X, y = (self.X_train, self.y_train) if part == "train" else (self.X_test, self.y_test)
        out = X.assign(**{y.name: y.values})
        out.attrs = dict(X.attrs)
        return out


def model_input(X: pd.DataFrame) -> pd.DataFrame:
    """Features as a model receives them over the wire: categories become plain strings.

    MLflow's schema enforcement accepts strings, not pandas ``category`` columns, and a serving
    request carries strings anyway.
    """
    X = X.copy()
    for column in X.columns:
        if isinstance(X[column].dtype, pd.CategoricalDtype):
            X[column] = X[column].astype(str).astype(object)
    return X


def credit_split(frame: pd.DataFrame, test_size: float = 0.3, seed: int = SEED) -> Split:
    """A stratified train/test split of German Credit (class balance kept in both parts)."""
    missing = [c for c in CREDIT_FEATURES + [CREDIT_TARGET] if c not in frame.columns]
    if missing:
        raise SplitError(f"German Credit data lacks the columns {missing}")
    X, y = model_input(frame[CREDIT_FEATURES]), frame[CREDIT_TARGET]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    return Split(X_train, X_test, y_train, y_test)


def time_split(frame: pd.DataFrame, train_months: list[str], test_months: list[str],
               features: list[str] | None = None) -> Split:
    """A time-ordered split of Bikeshare by month: every test hour comes after every train hour.

    ``features`` are the input columns (default :data:`BIKE_FEATURES`; lesson 02's engineered
    models take :data:`BIKE_ENGINEERED_INPUT`, which adds the month)."""
    features = BIKE_FEATURES if features is None else features
    missing = [c for c in features + [BIKE_TARGET, "mnth", "timestamp"] if c not in frame.columns]
    if missing:
        raise SplitError(f"Bikeshare data lacks the columns {missing}")
    train = frame[frame["mnth"].isin(train_months)]
    test = frame[frame["mnth"].isin(test_months)]
    if train.empty or test.empty:
        raise SplitError(f"No rows for train months {train_months} or test months {test_months}")
    if train["timestamp"].max() >= test["timestamp"].min():
        raise SplitError("Test months must all come after the training months (time order).")
    return Split(model_input(train[features]), model_input(test[features]),
                 train[BIKE_TARGET], test[BIKE_TARGET])


def leakage_report(frame: pd.DataFrame, target: str, features: list[str] | None = None,
                   threshold: float = 0.95) -> pd.DataFrame:
    """Numeric columns that predict the target suspiciously well (|correlation| >= threshold).

    A feature that is (almost) a function of the target is usually known only after the fact:
    Bikeshare's ``casual`` and ``registered`` add up to ``bikers``.
    """
    columns = [c for c in frame.columns if c != target] if features is None else features
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c]) and c != target]
    corr = frame[numeric].corrwith(frame[target]).abs().round(3)
    table = pd.DataFrame({"abs_correlation": corr, "suspicious": corr >= threshold})
    return table.sort_values("abs_correlation", ascending=False)


def overlap_rows(split: Split) -> int:
    """How many test rows also appear, identically, in the training features (duplicates leak)."""
    merged = split.X_test.merge(split.X_train.drop_duplicates(), how="inner", on=list(split.X_test.columns))
    return len(merged)


def _preprocessor(numeric: list[str], categorical: list[str], scale: bool, impute: bool = True) -> ColumnTransformer:
    num_steps = ([("impute", SimpleImputer(strategy="median"))] if impute else []) + \
        ([("scale", StandardScaler())] if scale else [])
    # A missing category needs no imputer: the encoder treats it as unknown (all zeros). Keeping the
    # categorical branch to one encoder also keeps the pipeline convertible to ONNX (lesson 07).
    cat_steps = [("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]
    return ColumnTransformer(
        [("num", Pipeline(num_steps) if num_steps else "passthrough", numeric),
         ("cat", Pipeline(cat_steps), categorical)],
        verbose_feature_names_out=False,
    )


CHAMPION_PARAMS = {"n_estimators": 100, "learning_rate": 0.04, "max_depth": 3, "subsample": 0.7, "min_samples_leaf": 9}
"""The hyperparameters of lesson 08's gradient-boosting champion (lesson 04's search chose them)."""

CREDIT_MODELS = {
    "logistic_regression": lambda seed, **p: LogisticRegression(max_iter=1000, random_state=seed, **p),
    "random_forest": lambda seed, **p: RandomForestClassifier(random_state=seed, n_jobs=1, **p),
    "gradient_boosting": lambda seed, **p: GradientBoostingClassifier(random_state=seed, **p),
}
BIKE_MODELS = {
    "linear_regression": lambda seed, **p: LinearRegression(**p),
    "ridge": lambda seed, **p: Ridge(**p),
    "random_forest": lambda seed, **p: RandomForestRegressor(random_state=seed, n_jobs=1, **p),
    "hist_gradient_boosting": lambda seed, **p: HistGradientBoostingRegressor(random_state=seed, **p),
}


def credit_pipeline(model: str = "logistic_regression", seed: int = SEED, *,
                    features: list[str] | None = None, impute: bool = True,
                    engineered: bool | list[str] = False, **params) -> Pipeline:
    """Preprocessing (imputation, scaling, one-hot) + a classifier for German Credit.

    ``params`` go to the model. ``features`` restricts the columns the model uses (other input
    columns are ignored), e.g. to leave out a protected attribute; ``impute=False`` drops the
    imputers, which makes models that cannot handle missing values brittle (lesson 06 shows it).
    ``engineered=True`` (or a list of rule names) puts lesson 02's :class:`~mlops_lab.features.FeatureTransformer`
    first: cleaning plus the derived features, inside the model.
    """
    if model not in CREDIT_MODELS:
        raise ValueError(f"Unknown credit model {model!r}; choose one of {sorted(CREDIT_MODELS)}")
    features = CREDIT_FEATURES if features is None else features
    if not features:
        raise ValueError("A credit model needs at least one feature")
    unknown = sorted(set(features) - set(CREDIT_FEATURES))
    if unknown:
        raise ValueError(f"Unknown credit features {unknown}; choose from {CREDIT_FEATURES}")
    numeric = [c for c in CREDIT_NUMERIC if c in features]
    categorical = [c for c in CREDIT_CATEGORICAL if c in features]
    scale = model == "logistic_regression"
    steps = []
    if engineered:
        steps, numeric, categorical = _engineered("german_credit", engineered, numeric, categorical)
    return Pipeline([*steps, ("prep", _preprocessor(numeric, categorical, scale, impute)),
                     ("model", CREDIT_MODELS[model](seed, **params))])


def _engineered(dataset: str, engineered: bool | list[str], numeric: list[str], categorical: list[str]):
    from mlops_lab import features

    chosen = None if engineered is True else list(engineered)
    derived = features.derived_columns(dataset, chosen)
    return ([("features", features.FeatureTransformer(dataset, chosen))],
            numeric + derived["numeric"], categorical + derived["categorical"])


def bike_pipeline(model: str = "random_forest", seed: int = SEED, *,
                  numeric: list[str] | None = None, engineered: bool | list[str] = False,
                  history: bool = False, **params) -> Pipeline:
    """Preprocessing + a regressor for Bikeshare demand; ``params`` go to the model.

    ``numeric`` replaces the numeric feature list (default :data:`BIKE_NUMERIC`), e.g. to show
    what the leaky columns would do. ``engineered=True`` (or a list of rule names) puts lesson 02's
    feature rules first; ``history=True`` also uses the history features the feature store serves
    (:data:`~mlops_lab.features.HISTORY_FEATURES`, which the input must then carry).
    """
    from mlops_lab.features import HISTORY_FEATURES

    if model not in BIKE_MODELS:
        raise ValueError(f"Unknown bike model {model!r}; choose one of {sorted(BIKE_MODELS)}")
    scale = model in ("linear_regression", "ridge")
    numeric = list(BIKE_NUMERIC if numeric is None else numeric) + (HISTORY_FEATURES if history else [])
    categorical, steps = list(BIKE_CATEGORICAL), []
    if engineered:
        steps, numeric, categorical = _engineered("bikeshare_hourly_2011", engineered, numeric, categorical)
    return Pipeline([*steps, ("prep", _preprocessor(numeric, categorical, scale)),
                     ("model", BIKE_MODELS[model](seed, **params))])


@dataclass
class TrackedModel:
    """A fitted pipeline and where MLflow keeps it: the run, the logged model's URI, its metrics."""

    pipeline: Pipeline
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def fit_and_log_credit(model: str, split: Split, *, run_name: str | None = None,
                       tags: dict[str, str] | None = None, seed: int = SEED,
                       features: list[str] | None = None, impute: bool = True,
                       intended_use: str | None = None,
                       contract: "str | quality.Contract | None" = "german_credit", **params) -> TrackedModel:
    """Train a credit pipeline in its own MLflow run and log everything a reviewer needs.

    Logged: parameters (model, hyperparameters, seed, sizes, features), tags (including the
    ``code_version`` and, when given, the ``intended_use``), the train and test data as dataset
    inputs (lineage), test metrics (including the credit cost), a confusion-matrix figure, and the
    model with signature, input example and the raw-input **data contract** (``contract``, German
    Credit's by default; ``None`` logs none), which the validating gateway enforces.
    """
    import matplotlib.pyplot as plt
    import mlflow

    from mlops_lab import datasets, evaluation, plots
    from mlops_lab.config import code_version

    pipeline = credit_pipeline(model, seed=seed, features=features, impute=impute, **params)
    with mlflow.start_run(run_name=run_name or model) as run:
        mlflow.log_params({"model": model, "seed": seed, **params, **{f"{k}_rows": v for k, v in split.sizes.items()}})
        if features is not None or not impute:
            mlflow.log_params({"features": ",".join(features or CREDIT_FEATURES), "impute": impute})
        mlflow.set_tags({"problem": "credit", "code_version": code_version(), **(tags or {})})
        if intended_use:
            mlflow.set_tag("intended_use", intended_use)
        datasets.log_dataset(split.frame("train"), context="training", name="german_credit-train")
        datasets.log_dataset(split.frame("test"), context="evaluation", name="german_credit-test")
        pipeline.fit(split.X_train, split.y_train)
        predicted = pipeline.predict(split.X_test)
        metrics = evaluation.classification_metrics(split.y_test, predicted,
                                                    pipeline.predict_proba(split.X_test)[:, 1])
        mlflow.log_metrics(metrics)
        fig = plots.confusion(split.y_test, predicted, title=run_name or model)
        mlflow.log_figure(fig, "confusion_matrix.png")
        plt.close(fig)
        info = log_sklearn_model(pipeline, split.X_train, contract=contract)
    return TrackedModel(pipeline, run.info.run_id, info.model_uri, metrics)


def with_biased_labels(split: Split, column: str, group: str, share: float, seed: int = SEED) -> Split:
    """A copy of ``split`` whose *training* labels turn ``share`` of the good ``group`` members bad.

    It simulates biased historical decisions (e.g. loans refused to women who would have repaid),
    the way a real training set can encode discrimination. The test labels stay true.
    """
    y = split.y_train.copy()
    members = y[(split.X_train[column].astype(str) == group) & (y == 1)].index
    rng = np.random.default_rng(seed)
    y.loc[rng.choice(members, int(share * len(members)), replace=False)] = 0
    return Split(split.X_train, split.X_test, y, split.y_test)


MODEL_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")
"""What a logged scikit-learn pipeline needs at serving time, nothing more."""


def model_requirements() -> list[str]:
    """``MODEL_PACKAGES`` pinned to the versions installed here (MLflow's own inference also picks
    up whatever the training process happened to import, test tools included)."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in MODEL_PACKAGES]


def log_sklearn_model(pipeline: Pipeline, X_example: pd.DataFrame, name: str = "model", *,
                      contract: "str | quality.Contract | None" = None, **kwargs):
    """Log a fitted pipeline to the active run with a signature, an input example and pinned requirements.

    Passes the course's :data:`SKOPS_TRUSTED_TYPES`, so tree models serialise with skops, and
    :func:`model_requirements` unless requirements are given (``pip_requirements``, or
    ``extra_pip_requirements`` to add to what MLflow infers). ``contract`` (a
    :class:`~mlops_lab.quality.Contract` or a dataset's name, e.g. ``"german_credit"``) stores the
    raw-input data contract in the model's metadata (``MLmodel``, key ``data_contract``): only the
    input columns of the signature, no target, so it travels wherever the model's files go and the
    validating gateway enforces it (:func:`mlops_lab.gateway.data_contract` reads it back). With a
    contract, ``X_example`` (pass the training inputs) must keep it: what serving would refuse is
    not trained on. Other ``metadata`` given is kept. A pipeline with lesson 02's
    :class:`~mlops_lab.features.FeatureTransformer` takes the course's feature code along
    (``code_paths``), so the model loads where ``mlops_lab`` is not installed. Returns MLflow's
    ``ModelInfo`` (``model_uri`` loads it back).
    """
    import mlflow
    from mlflow.models import infer_signature

    if not {"pip_requirements", "extra_pip_requirements", "conda_env"} & set(kwargs):
        kwargs["pip_requirements"] = model_requirements()
    example = model_input(X_example.head(5))
    if contract is not None:
        from mlops_lab import quality

        rules = quality.contract(contract) if isinstance(contract, str) else contract
        inputs = rules.inputs([str(c) for c in example.columns])
        if not inputs.columns:
            raise ValueError(f"the data contract {rules.name!r} has none of the model's input columns "
                             f"{list(example.columns)}: is it the contract of another dataset?")
        report = inputs.validate(model_input(X_example), name="training inputs")
        if not report.passed:
            raise quality.ContractError(
                f"the training inputs break the {rules.name} contract the model would carry: {report.verdict()} "
                f"First: {report.errors['message'].iloc[0]}. Validate batches with quality.accept_batch before training.")
        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), "data_contract": inputs.to_dict()}
    from mlops_lab.features import FeatureTransformer

    if any(isinstance(step, FeatureTransformer) for _, step in getattr(pipeline, "steps", [])) \
            and "code_paths" not in kwargs:
        from pathlib import Path

        import mlops_lab

        kwargs["code_paths"] = [str(Path(mlops_lab.__file__).parent)]
    with warnings.catch_warnings():
        # The hint that integer columns cannot hold missing values: our inputs are required.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, pipeline.predict(example))
        return mlflow.sklearn.log_model(
            pipeline, name=name, signature=signature, input_example=example,
            skops_trusted_types=SKOPS_TRUSTED_TYPES, **kwargs,
        )
