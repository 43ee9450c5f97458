"""A real Feast feature store, offline on a laptop: point-in-time training sets, online serving, skew checks.

Lesson 02's stage C. :func:`create` makes a Feast feature repository in the workspace
(``<workspace>/feature_repo``): ``feature_store.yaml`` (provider ``local``, a registry file, parquet
files in ``data/`` as the offline store, a SQLite file as the online store), with two entities and
their feature views: ``series`` / ``bike_history`` (:func:`mlops_lab.features.bike_history`) and
``applicant`` / ``applicant_profile`` (the German Credit inputs). Everything else is Feast's own API:
``get_historical_features`` for training sets, ``materialize`` for the online store,
``get_online_features`` in process and ``feast serve`` over HTTP.

The hand-written parts exist because Feast leaves them to the caller:

* The definitions are built in Python here and applied with ``FeatureStore.apply``, so the repo
  folder holds no ``.py`` file (``feast apply`` would import every one it finds).
* The parquet files are queried by DuckDB (Feast's ``duckdb`` offline store) by default. Feast's
  ``file`` store (Dask) reads the same files but joins every label with *every* feature row of its
  entity before filtering by time: a year of hourly labels took 46 s and 8.5 GB here, DuckDB 1 s
  (``benchmarks/bench_features.py``). ``create(offline="file")`` gives the Dask engine.
* Feast is lenient where a student needs a clear message: an unknown feature or view, naive
  timestamps (silently read as UTC), a missing ``event_timestamp`` column, an entity the online
  store has never seen (Feast answers nulls). The functions here raise :class:`FeatureStoreError`
  with the fix.
* Neither engine keeps the label rows' order, and the ``file`` engine silently drops labels: those
  with no feature row within the TTL (before the first row, or after a gap) and repeated ones.
  :func:`training_set` returns one row per label, in input order, nulls where nothing is known.
* ``materialize_incremental`` starts at *now - TTL* the first time a view is materialised: for 2011
  data that loads nothing. :func:`add_month` materialises the first month in full, then incrementally.

Feast's logging, its "Materializing..." prints and DuckDB's deprecation warnings are kept out of the
notebooks; errors still surface.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mlops_lab import features as _features
from mlops_lab.processes import LOOPBACK, ManagedProcess, free_port

if TYPE_CHECKING:  # Feast takes seconds to import: only the functions that need it import it
    import feast
    import requests

PROJECT = "mlops_lab"
REPO_NAME = "feature_repo"
BIKE_VIEW = "bike_history"
APPLICANT_VIEW = "applicant_profile"
SERIES_KEY = "series_id"
APPLICANT_KEY = "applicant_id"
TIMESTAMP = "event_timestamp"
APPLICANT_COLUMNS = list(_features.CREDIT_ID_COLUMNS)
"""The German Credit inputs of the ``applicant_profile`` view (the target ``risk`` is a label, not a feature)."""

BIKE_TTL = timedelta(hours=2)
"""How old a ``bike_history`` row may be and still count as current in a point-in-time join.

A row stamped ``t`` says what is known when hour ``t`` starts. A label at ``t + 30 min`` must get it;
a label three hours after the last row (a gap in the data, or a feed that stopped) must get *nulls*,
not a "previous hour" that is three hours old. Every hour of the grid has a row, so 1 hour would
do; 2 hours tolerates a late row. Feast applies the TTL to offline joins only: the online store
serves the latest materialised row however old it is (and :func:`skew` flags that case)."""

APPLICANT_TTL = timedelta(days=3650)
"""Applicant profiles are one snapshot (:data:`mlops_lab.features.APPLICANT_SNAPSHOT`): valid for
any label up to ten years after it, and for none before it."""

OfflineEngine = Literal["duckdb", "file"]
_BIKE_SOURCE = "data/bike_history.parquet"
_DEMAND_FILE = "data/bike_demand.parquet"
_APPLICANT_SOURCE = "data/applicant_profile.parquet"
_SOURCES = {BIKE_VIEW: _BIKE_SOURCE, APPLICANT_VIEW: _APPLICANT_SOURCE}


class FeatureStoreError(ValueError):
    """A feature-store call got input it cannot answer: unknown feature, view or entity, bad timestamps."""


@dataclass
class Store:
    """A Feast feature store in a local repo folder: ``store.feast`` is the :class:`feast.FeatureStore`."""

    repo: Path
    feast: "feast.FeatureStore"
    offline: str

    def views(self) -> dict[str, list[str]]:
        """Feature view name -> its feature names, as the registry holds them now."""
        return {v.name: [f.name for f in v.features] for v in self._views()}

    def refs(self) -> list[str]:
        """Every feature reference ``view:feature`` the store can answer."""
        return [f"{view}:{name}" for view, names in self.views().items() for name in names]

    def _views(self) -> list:
        return self.feast.list_feature_views(allow_cache=True)  # the uncached call reads the registry file: ~3 ms

    def _view(self, name: str):
        views = {v.name: v for v in self._views()}
        if name not in views:
            raise FeatureStoreError(_unknown("feature view", name, views))
        return views[name]

    def join_keys(self, view: str) -> list[str]:
        """The entity columns of ``view`` (what an entity row must carry)."""
        return [c.name for c in self._view(view).entity_columns]

    def source(self, view: str) -> Path:
        """The parquet file the view reads (its offline data)."""
        return self.repo / _SOURCES[view]

    def __repr__(self) -> str:
        return f"Store(repo={str(self.repo)!r}, offline={self.offline!r}, views={sorted(self.views())})"


@dataclass(frozen=True)
class Ingested:
    """What :func:`add_month` did: rows appended offline, rows in total, the online store's new end time."""

    view: str
    rows_added: int
    rows_total: int
    online_as_of: pd.Timestamp


@dataclass(frozen=True)
class SkewReport:
    """Offline vs online values, one row per (entity, feature); ``ok`` when there is no mismatch."""

    table: pd.DataFrame
    mismatches: int

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


# -- quiet Feast ------------------------------------------------------------------------------

def quiet_logs() -> None:
    """Keep Feast's INFO chatter (registry, auth, materialisation) out of notebooks; warnings still show."""
    for name in ("feast", "fastapi", "ibis", "dask", "distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Drop Feast's prints and progress bars and DuckDB's deprecation warnings; keep other stderr lines."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="Cannot write empty")
            yield
    finally:
        kept = [line for line in err.getvalue().splitlines() if line.strip() and "\r" not in line and "it/s]" not in line]
        if kept:
            print("\n".join(kept), file=sys.stderr)


# -- the repo and its definitions -------------------------------------------------------------

def _yaml(offline: str) -> str:
    # relative paths: Feast resolves these two against the repo folder
    return "\n".join([
        f"project: {PROJECT}",
        "provider: local",
        "registry: registry.db",
        "online_store:",
        "  type: sqlite",
        "  path: online.db",
        "offline_store:",
        f"  type: {offline}",  # 'file' is Feast's Dask engine
        "entity_key_serialization_version: 3",
        "",
    ])


def _feast_type(dtype) -> Any:
    from feast import types

    if pd.api.types.is_bool_dtype(dtype):
        return types.Bool
    if pd.api.types.is_integer_dtype(dtype):
        return types.Int64
    if pd.api.types.is_float_dtype(dtype):
        return types.Float64
    return types.String


def _definitions(repo: Path) -> list:
    """Entities, sources and views. The applicant view's schema is read from its parquet file."""
    import pyarrow.parquet as pq
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, String
    from feast.value_type import ValueType

    series = Entity(name="series", join_keys=[SERIES_KEY], value_type=ValueType.STRING,
                    description="One hourly demand series (Bikeshare has one: 'dc').")
    applicant = Entity(name="applicant", join_keys=[APPLICANT_KEY], value_type=ValueType.STRING,
                       description="A German Credit application (id: features.applicant_ids).")
    # absolute paths: Feast's DuckDB store reads a relative path from the current folder, not the repo
    # (create() re-applies them, so a moved repo is fixed by calling it again)
    bike_source = FileSource(name="bike_history_source", path=str(repo / _BIKE_SOURCE), timestamp_field=TIMESTAMP)
    bike = FeatureView(
        name=BIKE_VIEW, entities=[series], ttl=BIKE_TTL, source=bike_source, online=True,
        schema=[Field(name=SERIES_KEY, dtype=String)]
        + [Field(name=name, dtype=Float64) for name in _features.HISTORY_FEATURES],
        description="Demand history known at the start of each hour (features.bike_history).",
    )
    schema = pq.read_schema(repo / _APPLICANT_SOURCE).empty_table().to_pandas().dtypes
    applicant_source = FileSource(name="applicant_profile_source", path=str(repo / _APPLICANT_SOURCE),
                                  timestamp_field=TIMESTAMP)
    profile = FeatureView(
        name=APPLICANT_VIEW, entities=[applicant], ttl=APPLICANT_TTL, source=applicant_source, online=True,
        schema=[Field(name=APPLICANT_KEY, dtype=String)]
        + [Field(name=c, dtype=_feast_type(t)) for c, t in schema.items() if c not in (APPLICANT_KEY, TIMESTAMP)],
        description="German Credit application inputs, stamped at features.APPLICANT_SNAPSHOT.",
    )
    return [series, applicant, bike_source, applicant_source, bike, profile]


def _empty_bike() -> pd.DataFrame:
    frame = pd.DataFrame({SERIES_KEY: pd.Series(dtype="object"),
                          TIMESTAMP: pd.Series(dtype="datetime64[ns, UTC]")})
    for name in _features.HISTORY_FEATURES:
        frame[name] = pd.Series(dtype="float64")
    return frame


def create(repo: Path | None = None, *, offline: OfflineEngine = "duckdb", fresh: bool = False) -> Store:
    """Create (or open) the feature repo and apply the definitions; returns a :class:`Store`.

    ``repo`` defaults to ``<workspace>/feature_repo``. The folder gets ``feature_store.yaml``, the
    registry, the SQLite online store and ``data/*.parquet`` (empty until :func:`write_bike_history`,
    :func:`add_month` or :func:`write_applicants`), and no ``.py`` file. Running it again on an
    existing repo keeps its data and online store; ``fresh=True`` deletes it first (a lesson that
    feeds the store from the start). ``offline`` picks the engine that queries the parquet files:
    ``"duckdb"`` (default) or Feast's ``"file"`` (Dask; slow on long histories).
    """
    from mlops_lab import config

    if offline not in ("duckdb", "file"):
        raise FeatureStoreError(f"offline must be 'duckdb' or 'file', got {offline!r}")
    quiet_logs()
    repo = Path(repo) if repo is not None else config.workspace() / REPO_NAME
    repo = repo.resolve()
    if fresh and repo.exists():
        if not (repo / "feature_store.yaml").is_file():
            raise FeatureStoreError(f"{repo} exists and is not a feature repo (no feature_store.yaml): not deleting it")
        shutil.rmtree(repo)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    yaml = repo / "feature_store.yaml"
    if not yaml.is_file() or yaml.read_text() != _yaml(offline):
        yaml.write_text(_yaml(offline))
    if not (repo / _BIKE_SOURCE).is_file():
        _empty_bike().to_parquet(repo / _BIKE_SOURCE, index=False)
    if not (repo / _APPLICANT_SOURCE).is_file():
        empty = pd.DataFrame({APPLICANT_KEY: pd.Series(dtype="object"), TIMESTAMP: pd.Series(dtype="datetime64[ns, UTC]")})
        for column in APPLICANT_COLUMNS:
            empty[column] = pd.Series(dtype="int64" if column in ("job", "credit_amount", "duration", "age") else "object")
        empty.to_parquet(repo / _APPLICANT_SOURCE, index=False)
    with _quietly():
        import feast

        store = feast.FeatureStore(repo_path=str(repo))
        store.apply(_definitions(repo))
    return Store(repo=repo, feast=store, offline=offline)


# -- ingest -----------------------------------------------------------------------------------

def _check_frame(frame: object, columns: Sequence[str], what: str) -> pd.DataFrame:
    frame = getattr(frame, "frame", frame)  # a datasets.Batch is fine too
    if not isinstance(frame, pd.DataFrame):
        raise FeatureStoreError(f"{what} needs a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeatureStoreError(f"{what} needs the columns {missing}; got {list(frame.columns)}")
    if frame.empty:
        raise FeatureStoreError(f"{what} got an empty DataFrame")
    return frame


def _hours(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Timestamp and demand of raw hourly rows; zoned times become UTC (the store keeps UTC wall times)."""
    stamps = pd.DatetimeIndex(frame["timestamp"])
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    return pd.DataFrame({"timestamp": stamps, "bikers": frame[target].to_numpy(dtype="float64")})


def write_bike_history(store: Store, frame: pd.DataFrame, *, target: str = "bikers") -> int:
    """Replace the Bikeshare offline data with the history features of ``frame`` (raw hourly rows).

    Writes ``features.bike_history(frame)`` as the view's parquet source (and the raw demand, which
    :func:`add_month` extends). The online store is not touched: call :func:`materialize`.
    Returns the number of feature rows written.
    """
    frame = _check_frame(frame, ["timestamp", target], "write_bike_history")
    demand = _hours(frame, target)
    history = _features.bike_history(demand)
    demand.to_parquet(store.repo / _DEMAND_FILE, index=False)
    history.to_parquet(store.source(BIKE_VIEW), index=False)
    return len(history)


def add_month(store: Store, batch: pd.DataFrame, *, target: str = "bikers") -> Ingested:
    """Append one month of raw Bikeshare rows (a ``datasets.Batch`` or its frame) and catch the online store up.

    The history features of the new hours need the hours before them (previous hour, last 24 hours,
    last week), so they are computed on the stored demand plus the batch; rows already offline do not
    change and are kept as they are. The batch must start after the last stored hour (a month stored
    before, with the same values, is skipped: a lesson can run twice). Then the online
    store is materialised up to the newest row: in full the first time (``materialize_incremental``
    would start at now - TTL), incrementally after that.
    """
    frame = _check_frame(batch, ["timestamp", target], "add_month")
    new = _hours(frame, target)
    demand_file = store.repo / _DEMAND_FILE
    old = pd.read_parquet(demand_file) if demand_file.is_file() else new.iloc[:0]
    if len(old) and new["timestamp"].isin(old["timestamp"]).all():
        stored = old.set_index("timestamp")["bikers"].reindex(new["timestamp"])
        if (stored.to_numpy() == new["bikers"].to_numpy()).all():  # the same month again: nothing to do
            view = store._view(BIKE_VIEW)
            total = len(pd.read_parquet(store.source(BIKE_VIEW), columns=[TIMESTAMP]))
            return Ingested(BIKE_VIEW, 0, total, pd.Timestamp(view.most_recent_end_time).tz_convert("UTC")
                            if view.most_recent_end_time else None)
    if len(old) and new["timestamp"].min() <= old["timestamp"].max():
        raise FeatureStoreError(
            f"add_month: the batch starts at {new['timestamp'].min()}, but the store already holds hours up "
            f"to {old['timestamp'].max()}; add months in time order, each once (write_bike_history replaces all)."
        )
    demand = pd.concat([old, new], ignore_index=True)
    history = _features.bike_history(demand)
    stored = pd.read_parquet(store.source(BIKE_VIEW))
    if len(stored):
        added = history[history[TIMESTAMP] > stored[TIMESTAMP].max()]
        history = pd.concat([stored, added], ignore_index=True)
    else:
        added = history
    demand.to_parquet(demand_file, index=False)
    history.to_parquet(store.source(BIKE_VIEW), index=False)
    end = history[TIMESTAMP].max()
    view = store._view(BIKE_VIEW)
    with _quietly():
        if view.most_recent_end_time is None:
            store.feast.materialize(start_date=history[TIMESTAMP].min().to_pydatetime(),
                                    end_date=end.to_pydatetime(), feature_views=[BIKE_VIEW])
        else:
            store.feast.materialize_incremental(end_date=end.to_pydatetime(), feature_views=[BIKE_VIEW])
    return Ingested(BIKE_VIEW, len(added), len(history), end)


def applicant_profile(frame: pd.DataFrame, extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The ``applicant_profile`` source frame: id, snapshot timestamp, the inputs and ``extra_columns``.

    ``frame`` is German Credit (raw, or with derived feature columns added); the id comes from the
    nine raw inputs (:func:`mlops_lab.features.applicant_ids`). Categories become strings.
    """
    frame = _check_frame(frame, APPLICANT_COLUMNS, "applicant_profile")
    extra = [c for c in extra_columns if c not in APPLICANT_COLUMNS]
    missing = [c for c in extra if c not in frame.columns]
    if missing:
        raise FeatureStoreError(f"applicant_profile: extra columns {missing} are not in the frame")
    reserved = [c for c in extra if c in (APPLICANT_KEY, TIMESTAMP)]
    if reserved:
        raise FeatureStoreError(f"applicant_profile: {reserved} are the key and timestamp, not features")
    out = frame[APPLICANT_COLUMNS + extra].copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(out[column]):
            out[column] = out[column].astype(str)
    out.insert(0, TIMESTAMP, _features.APPLICANT_SNAPSHOT)
    out.insert(0, APPLICANT_KEY, _features.applicant_ids(frame).to_numpy())
    return out.reset_index(drop=True)


def write_applicants(store: Store, frame: pd.DataFrame, extra_columns: Sequence[str] = ()) -> int:
    """Replace the applicant offline data with :func:`applicant_profile` of ``frame`` and re-apply the view.

    The view's schema follows the frame, so derived columns named in ``extra_columns`` become
    features. The online store is not touched: call :func:`materialize`. Returns the row count.
    """
    profile = applicant_profile(frame, extra_columns)
    profile.to_parquet(store.source(APPLICANT_VIEW), index=False)
    with _quietly():
        store.feast.apply(_definitions(store.repo))
    return len(profile)


def materialize(store: Store, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
                views: Sequence[str] | None = None) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Load the latest row per entity in ``[start, end]`` (both inclusive) into the online store.

    Defaults: every view with data, from its first to its last event timestamp. Returns, per view,
    the interval materialised. The SQLite store keeps the last write: materialising an earlier
    interval after a later one puts the older rows back online.
    """
    done = {}
    for name in views or list(_SOURCES):
        store._view(name)
        frame = pd.read_parquet(store.source(name), columns=[TIMESTAMP])
        if frame.empty:
            continue
        lo = _utc(start, "start") if start is not None else frame[TIMESTAMP].min()
        hi = _utc(end, "end") if end is not None else frame[TIMESTAMP].max()
        with _quietly():
            store.feast.materialize(start_date=lo.to_pydatetime(), end_date=hi.to_pydatetime(), feature_views=[name])
        done[name] = (lo, hi)
    return done


def _utc(value: object, what: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise FeatureStoreError(f"{what} {stamp} has no time zone; give a UTC time, e.g. pd.Timestamp('{stamp}', tz='UTC')")
    return stamp.tz_convert("UTC")


# -- feature references and entities ----------------------------------------------------------

def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}."


def resolve(store: Store, names: Sequence[str] | str) -> list[str]:
    """Feature references ``view:feature`` for ``names`` (a bare feature name is looked up in every view).

    An unknown view or feature raises :class:`FeatureStoreError` naming it, with the closest names.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise FeatureStoreError("no features requested; give names such as 'bike_history:demand_prev_hour'")
    views = store.views()
    refs = []
    for name in names:
        if ":" in name:
            view, feature = name.split(":", 1)
            if view not in views:
                raise FeatureStoreError(_unknown("feature view", view, views))
            if feature not in views[view]:
                close = difflib.get_close_matches(feature, views[view], n=3, cutoff=0.6)
                hint = f" Did you mean {' or '.join(repr(f'{view}:{c}') for c in close)}?" if close else ""
                raise FeatureStoreError(f"Feature view {view!r} has no feature {feature!r}.{hint} "
                                        f"Its features: {', '.join(views[view])}.")
            refs.append(name)
            continue
        owners = [view for view, names_ in views.items() if name in names_]
        if len(owners) > 1:
            raise FeatureStoreError(f"Feature {name!r} is in several views {owners}; write 'view:{name}'.")
        if not owners:
            by_name = {f: f"{v}:{f}" for v, fs in views.items() for f in fs}
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(by_name[c]) for c in close)}?" if close else ""
            raise FeatureStoreError(f"Unknown feature {name!r}.{hint} Known: {', '.join(by_name.values())}.")
        refs.append(f"{owners[0]}:{name}")
    return list(dict.fromkeys(refs))


def _keys_for(store: Store, refs: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for view in dict.fromkeys(r.split(":")[0] for r in refs):
        keys += [k for k in store.join_keys(view) if k not in keys]
    return keys


def _entity_rows(entity_rows: Any, keys: Sequence[str]) -> list[dict]:
    if isinstance(entity_rows, pd.DataFrame):
        rows = entity_rows.to_dict("records")
    elif isinstance(entity_rows, Mapping):
        rows = [dict(entity_rows)]
    else:
        rows = [dict(r) for r in entity_rows]
    if not rows:
        raise FeatureStoreError(f"no entity rows given; give e.g. [{{{keys[0]!r}: ...}}]" if keys else "no entity rows")
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise FeatureStoreError(f"entity row {i} lacks the key(s) {missing} (it has {sorted(row)}); "
                                    f"the requested features need {list(keys)}")
    for key in keys:
        _check_key_values(key, [row[key] for row in rows], "entity rows")
    return [{k: row[k] for k in keys} for row in rows]


def _check_key_values(key: str, values: list, where: str) -> None:
    """Every entity key of the course is text: refuse anything else with the value that is wrong."""
    bad = next((v for v in values if not isinstance(v, str)), _NONE)
    if bad is not _NONE:
        raise FeatureStoreError(f"{where}: key {key!r} must be text (e.g. {_KEY_EXAMPLES.get(key, 'an id')!r}), "
                                f"got {bad!r} ({type(bad).__name__})")


_NONE = object()
_KEY_EXAMPLES = {SERIES_KEY: _features.SERIES_ID, APPLICANT_KEY: "5242dd5a179bc80e"}


def _check_entity_df(entity_df: object, keys: Sequence[str]) -> pd.DataFrame:
    if not isinstance(entity_df, pd.DataFrame):
        raise FeatureStoreError(f"entity_df must be a pandas DataFrame, got {type(entity_df).__name__}")
    expected = f"columns {list(keys) + [TIMESTAMP]}, with {TIMESTAMP} as UTC times (datetime64[ns, UTC])"
    if entity_df.empty:
        raise FeatureStoreError(f"entity_df is empty; it needs one row per label: {expected}")
    missing = [c for c in [*keys, TIMESTAMP] if c not in entity_df.columns]
    if missing:
        raise FeatureStoreError(f"entity_df lacks {missing}; it needs {expected}. Got {list(entity_df.columns)}.")
    stamps = entity_df[TIMESTAMP]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise FeatureStoreError(f"entity_df[{TIMESTAMP!r}] is {stamps.dtype}, not a time; it needs {expected}.")
    if getattr(stamps.dt, "tz", None) is None:
        raise FeatureStoreError(
            f"entity_df[{TIMESTAMP!r}] has naive timestamps (no time zone); Feast would read them as UTC "
            f"silently. Say what they are: df[{TIMESTAMP!r}] = df[{TIMESTAMP!r}].dt.tz_localize('UTC')."
        )
    if str(stamps.dt.tz) != "UTC":
        raise FeatureStoreError(
            f"entity_df[{TIMESTAMP!r}] is in the time zone {stamps.dt.tz}, the store's timestamps are UTC wall "
            "times (the Bikeshare file's clock times, stamped UTC). Give label times the same way: "
            f"df[{TIMESTAMP!r}] = df[{TIMESTAMP!r}].dt.tz_localize(None).dt.tz_localize('UTC') if they are "
            "clock times of the data, or .dt.tz_convert('UTC') if they are true instants and your features are too."
        )
    if stamps.isna().any():
        raise FeatureStoreError(f"entity_df[{TIMESTAMP!r}] has {int(stamps.isna().sum())} missing times")
    for key in keys:
        if entity_df[key].isna().any():
            raise FeatureStoreError(f"entity_df[{key!r}] has {int(entity_df[key].isna().sum())} missing keys")
        _check_key_values(key, entity_df[key].tolist(), "entity_df")
    return entity_df


# -- retrieval --------------------------------------------------------------------------------

def training_set(store: Store, entity_df: pd.DataFrame, features: Sequence[str] | str) -> pd.DataFrame:
    """Point-in-time correct features for labelled rows: Feast's ``get_historical_features``.

    ``entity_df`` has the entity key column(s), ``event_timestamp`` (UTC: the time of each label)
    and any other columns (labels), which are kept. Each row gets, per view, the newest feature row
    with ``event_timestamp <= the label's time`` and not older than the view's TTL, else nulls:
    nothing from after the label. Returns one row per input row, in input order, with the features
    (bare names) after the input's columns.
    """
    refs = resolve(store, features)
    keys = _keys_for(store, refs)
    entity_df = _check_entity_df(entity_df, keys)
    base = entity_df.copy()
    base[TIMESTAMP] = base[TIMESTAMP].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    unique = base[[*keys, TIMESTAMP]].drop_duplicates().reset_index(drop=True)
    with _quietly():
        found = store.feast.get_historical_features(entity_df=unique, features=refs).to_df()
    names = [r.split(":", 1)[1] for r in refs]
    found[TIMESTAMP] = pd.to_datetime(found[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    found = found[[*keys, TIMESTAMP, *names]].drop_duplicates([*keys, TIMESTAMP])
    clash = [n for n in names if n in base.columns]
    if clash:
        raise FeatureStoreError(f"entity_df already has columns named like the features {clash}; drop or rename them")
    out = base.merge(found, on=[*keys, TIMESTAMP], how="left", validate="many_to_one")
    out.index = entity_df.index
    return out


def _frame(keys: Sequence[str], rows: list[dict], names: Sequence[str], values: Mapping[str, list],
           statuses: Mapping[str, list[str]], refs: Sequence[str], missing: str) -> pd.DataFrame:
    """One row per entity row: keys, then features in the requested order; unknown entities raise or stay null."""
    if missing not in ("raise", "null"):
        raise FeatureStoreError(f"missing must be 'raise' or 'null', got {missing!r}")
    if missing == "raise":
        unknown = []
        for view in dict.fromkeys(r.split(":")[0] for r in refs):
            own = [r.split(":", 1)[1] for r in refs if r.split(":")[0] == view]
            for i, row in enumerate(rows):
                if all(statuses[n][i] == "NOT_FOUND" for n in own):
                    unknown.append((view, row))
        if unknown:
            shown = "; ".join(f"{view}: {row}" for view, row in unknown[:10])
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise FeatureStoreError(
                f"the online store has never seen {len(unknown)} entit{'y' if len(unknown) == 1 else 'ies'}: "
                f"{shown}{more}. Materialise the data that has them, or pass missing='null' to get nulls."
            )
    data: dict[str, Any] = {k: [row[k] for row in rows] for k in keys}
    for n in names:
        column = values[n]
        present = [v for v in column if v is not None]
        if all(type(v) is int for v in present) and len(present) == len(column):
            data[n] = np.array(column, dtype="int64")
        elif all(type(v) in (int, float) for v in present):
            data[n] = np.array(column, dtype="float64")  # None -> NaN; a column of nulls only is float too
        else:
            data[n] = column
    return pd.DataFrame(data)


def online(store: Store, entity_rows: Sequence[Mapping[str, Any]] | pd.DataFrame, features: Sequence[str] | str,
           *, missing: Literal["raise", "null"] = "raise") -> pd.DataFrame:
    """The latest materialised features for each entity row, from the SQLite online store, in process.

    ``entity_rows``: dicts (or a DataFrame) with the entity keys, e.g. ``[{"series_id": "dc"}]``.
    Returns one row per entity row: the keys, then the features in the order asked. An entity the
    online store has never seen raises :class:`FeatureStoreError` listing it (Feast itself answers
    nulls, indistinguishable from a real missing value); ``missing="null"`` gives the nulls instead.
    """
    refs = resolve(store, features)
    keys = _keys_for(store, refs)
    rows = _entity_rows(entity_rows, keys)
    response = store.feast.get_online_features(features=refs, entity_rows=rows)
    from feast.feature_server_utils import _STATUS_NAMES

    result_names = list(response.proto.metadata.feature_names.val)
    statuses = {n: [_STATUS_NAMES.get(s, "INVALID") for s in vector.statuses]
                for n, vector in zip(result_names, response.proto.results)}
    values = response.to_dict()
    names = [r.split(":", 1)[1] for r in refs]
    return _frame(keys, rows, names, values, statuses, refs, missing)


def online_over_http(url: str, entity_rows: Sequence[Mapping[str, Any]] | pd.DataFrame, features: Sequence[str],
                     *, missing: Literal["raise", "null"] = "raise", session: "requests.Session | None" = None,
                     timeout: float = 10.0) -> pd.DataFrame:
    """The same as :func:`online`, asked of a Feast feature server (``POST {url}/get-online-features``).

    ``features`` must be full references ``view:feature`` (the client has no registry to look bare
    names up in). Pass a ``requests.Session`` to reuse one connection for many calls.
    """
    import requests

    if isinstance(features, str):
        features = [features]
    refs = list(dict.fromkeys(features))
    if not refs:
        raise FeatureStoreError("no features requested; give references such as 'bike_history:demand_prev_hour'")
    bare = [r for r in refs if ":" not in r]
    if bare:
        raise FeatureStoreError(f"over HTTP give full references 'view:feature', not {bare}")
    rows = [dict(r) for r in (entity_rows.to_dict("records") if isinstance(entity_rows, pd.DataFrame) else entity_rows)]
    if not rows:
        raise FeatureStoreError("no entity rows given")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    rows = _entity_rows(rows, keys)
    body: dict[str, Any] = {"features": refs, "entities": {k: [row[k] for row in rows] for k in keys}}
    http = session or requests
    try:
        answer = http.post(f"{url.rstrip('/')}/get-online-features", json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise FeatureStoreError(f"the feature server at {url} did not answer: {exc}") from exc
    if answer.status_code != 200:
        raise FeatureStoreError(f"the feature server at {url} refused the request ({answer.status_code}): "
                                f"{_server_message(answer)}")
    payload = answer.json()
    result_names = payload["metadata"]["feature_names"]
    values = {n: [_from_json(v) for v in vector["values"]] for n, vector in zip(result_names, payload["results"])}
    statuses = {n: vector["statuses"] for n, vector in zip(result_names, payload["results"])}
    names = [r.split(":", 1)[1] for r in refs]
    return _frame(keys, rows, names, values, statuses, refs, missing)


def _from_json(value: Any) -> Any:
    # the server writes non-finite doubles as the strings of the protobuf JSON mapping
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value) \
        if isinstance(value, str) else value


def _server_message(answer: "requests.Response") -> str:
    import json

    try:
        detail = answer.json()
    except ValueError:
        return answer.text[:300]
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return detail
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("detail") or detail)
    return str(detail)


# -- training/serving skew --------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def skew(store: Store, entity_rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
         features: Sequence[str] | str) -> SkewReport:
    """Compare what training would see with what serving sees, for each entity and feature.

    Offline: a point-in-time retrieval at the end of each view's last materialisation (what the
    online store should hold as "current"). Online: :func:`online`, with nulls for entities it has
    never seen. An entity present offline but missing online is a mismatch; one unknown to both is
    not. A value served online that the offline side considers expired (older than the TTL) is a
    mismatch too. Returns a :class:`SkewReport` (``table`` with keys, feature, offline, online,
    match; ``mismatches``; ``ok``).
    """
    refs = resolve(store, features)
    keys = _keys_for(store, refs)
    rows = _entity_rows(entity_rows, keys)
    served = online(store, rows, refs, missing="null")
    records = []
    for view in dict.fromkeys(r.split(":")[0] for r in refs):
        as_of = store._view(view).most_recent_end_time
        if as_of is None:
            raise FeatureStoreError(f"view {view!r} was never materialised, so nothing is served online; "
                                    "run materialize(store) (or add_month) first")
        view_refs = [r for r in refs if r.split(":")[0] == view]
        view_keys = store.join_keys(view)
        entity_df = pd.DataFrame([{k: row[k] for k in view_keys} for row in rows])
        entity_df[TIMESTAMP] = pd.Timestamp(as_of).tz_convert("UTC")
        offline_values = training_set(store, entity_df, view_refs)
        for i, row in enumerate(rows):
            for ref in view_refs:
                name = ref.split(":", 1)[1]
                a, b = _py(offline_values[name].iloc[i]), _py(served[name].iloc[i])
                records.append({**{k: row[k] for k in keys}, "feature": ref, "as_of": pd.Timestamp(as_of),
                                "offline": a, "online": b, "match": _same(a, b)})
    table = pd.DataFrame(records)
    return SkewReport(table=table, mismatches=int((~table["match"]).sum()))


def _py(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return value.item() if hasattr(value, "item") else value


# -- the feature server -----------------------------------------------------------------------

class FeatureServer(ManagedProcess):
    """``feast serve`` on loopback; ``url`` is its base URL once started."""

    def __init__(self, *args: Any, runtime_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime_dir = runtime_dir

    def start(self) -> "FeatureServer":
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            super().start()
        except BaseException:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            raise
        return self

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> "FeatureServer":
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        super().start()
        return self

    def __enter__(self) -> "FeatureServer":
        return self.start()

    def stop(self, grace: float = 10.0) -> None:
        try:
            super().stop(grace)
        finally:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


def feature_server(store: Store, port: int | None = None, *, timeout: float = 90.0,
                   workers: int = 1) -> FeatureServer:
    """Feast's own feature server for ``store`` (``feast -c REPO serve``) on ``127.0.0.1``, as a context manager.

    A free port is chosen unless ``port`` is given. Ready when ``GET /health`` answers (about 6 s
    here: the CLI imports all of Feast); stopped with its whole process group (gunicorn master and
    workers). Workers are not recycled (gunicorn's default restarts one every 1,000 requests).
    """
    from mlops_lab import config

    port = port or free_port()
    # gunicorn puts a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn, one path for every server:
    # give each server a short folder of its own (a Unix socket path must stay under 108 bytes)
    runtime = Path(tempfile.gettempdir()) / f"feast-{port}-{os.getpid()}"  # created by start
    args = [sys.executable, "-m", "feast.cli.cli", "-c", str(store.repo), "serve",
            "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--max-requests", "0"]
    return FeatureServer(
        args, name="feast-server", port=port, health_url=f"http://{LOOPBACK}:{port}/health", timeout=timeout,
        env={"XDG_RUNTIME_DIR": str(runtime)}, runtime_dir=runtime,
        log_path=config.workspace() / "logs" / f"feast-server-{port}.log",
    )


# -- checks and measurements the lesson shows -----------------------------------------------------

def leaked_rows(train: pd.DataFrame, raw: pd.DataFrame, *, target: str = "bikers") -> int:
    """Rows of a Bikeshare training set holding a history value that was not known at the label's time.

    Each value is recomputed by brute force from ``raw`` (the hourly rows): for a label at ``t``, the
    hour ``h`` that starts at or before ``t`` knows the demand of ``h-1``, the mean of ``h-24 ... h-1``
    (at least 12 recorded hours) and ``h-168``. A row counts when one of its non-missing values
    differs from that; a missing value is not a leak.
    """
    import numpy as np

    frame = _check_frame(raw, ["timestamp", target], "leaked_rows")
    hours_of_raw = _hours(frame, target)
    demand = dict(zip(pd.DatetimeIndex(hours_of_raw["timestamp"]).tz_localize("UTC"), hours_of_raw["bikers"]))
    hours = pd.to_datetime(train[TIMESTAMP], utc=True).dt.floor("h")

    def back(k: int) -> np.ndarray:
        return np.array([demand.get(t - pd.Timedelta(hours=k), np.nan) for t in hours])

    window = np.column_stack([back(k) for k in range(1, 25)])
    counts = (~np.isnan(window)).sum(axis=1)
    known = {"demand_prev_hour": back(1), "demand_same_hour_last_week": back(168),
             "demand_mean_24h": np.where(counts >= 12, np.round(np.nansum(window, axis=1) / np.maximum(counts, 1), 4),
                                         np.nan)}
    bad = np.zeros(len(train), dtype=bool)
    for name, expected in known.items():
        if name in train.columns:
            got = train[name].to_numpy(dtype="float64")
            bad |= ~np.isnan(got) & ~np.isclose(got, expected, rtol=0, atol=5.1e-5, equal_nan=False)
    return int(bad.sum())


def online_latencies(store: Store, url: str | None = None, *, lookups: int = 200, seed: int = 42
                     ) -> dict[str, list[float]]:
    """Milliseconds per single-applicant lookup: a dict (the floor), Feast in process, and Feast's
    feature server at ``url`` (one kept-alive HTTP connection), each over the same random applicants.

    The applicant view must be materialised (:func:`write_applicants`, then :func:`materialize`).
    ``make bench`` measures the same, longer and against more baselines.
    """
    import time

    import numpy as np
    import requests

    profile = pd.read_parquet(store.source(APPLICANT_VIEW))
    if profile.empty:
        raise FeatureStoreError("the applicant view is empty: write_applicants(store, credit) and materialize first")
    names = [n for n in store.views()[APPLICANT_VIEW]]
    refs = [f"{APPLICANT_VIEW}:{n}" for n in names]
    keys = list(np.random.default_rng(seed).choice(profile[APPLICANT_KEY].to_numpy(), size=lookups))
    table = {row[APPLICANT_KEY]: row for row in profile.to_dict("records")}
    methods = {"dict (baseline)": lambda key: table[key],
               "Feast, in process": lambda key: store.feast.get_online_features(
                   features=refs, entity_rows=[{APPLICANT_KEY: key}]).to_dict()}
    session = requests.Session()
    if url is not None:
        endpoint = f"{url.rstrip('/')}/get-online-features"
        methods["feature server, HTTP"] = lambda key: session.post(
            endpoint, json={"features": refs, "entities": {APPLICANT_KEY: [key]}}, timeout=10).raise_for_status()
    out = {}
    with session, _quietly():
        for name, call in methods.items():
            for key in keys[:10]:  # warm-up: connections, caches
                call(key)
            times = []
            for key in keys:
                started = time.perf_counter()
                call(key)
                times.append((time.perf_counter() - started) * 1000)
            out[name] = times
    return out


def offline_throughput(store: Store, entity_df: pd.DataFrame, features: Sequence[str] | None = None) -> dict:
    """Time one point-in-time retrieval of ``entity_df`` (default: the bike history features).

    Returns ``rows``, ``seconds`` and ``rows_per_s``; the result itself is checked to have one row
    per label.
    """
    import time

    names = list(features or _features.HISTORY_FEATURES)
    started = time.perf_counter()
    result = training_set(store, entity_df, names)
    seconds = time.perf_counter() - started
    if len(result) != len(entity_df):
        raise FeatureStoreError(f"the retrieval returned {len(result)} rows for {len(entity_df)} labels")
    return {"rows": len(entity_df), "seconds": seconds, "rows_per_s": len(entity_df) / seconds}
