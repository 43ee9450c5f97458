"""The Feast feature store: repo layout, point-in-time correctness, materialisation, serving, skew, bad input.

Two kinds of store, each built once per module in a temporary workspace of its own:

* ``tiny``: a hand-built demand series of a few hours with answers worked out by hand, on both
  offline engines (DuckDB, Feast's Dask ``file`` store), plus ten German Credit applicants (unit tests);
* ``year``: Bikeshare 2011 added month by month (the online store caught up after each month) and
  German Credit, served by one ``feast serve`` for the module (integration tests).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import psutil
import pytest

from mlops_lab import datasets, features
from mlops_lab import featurestore as fs
from mlops_lab.processes import group_members, port_in_use

HISTORY = [f"bike_history:{name}" for name in features.HISTORY_FEATURES]
UTC = "UTC"


def at(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace of this module's own: the stores and the server's log live here."""
    home = tmp_path_factory.mktemp("featurestore-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_LAB_HOME", str(home))
        yield home


# -- the tiny, hand-built store -------------------------------------------------------------------

# demand: 10:00 -> 5, 11:00 -> 7, 12:00 missing, 13:00 -> 11. bike_history stamps each row with the
# hour it becomes known: 11:00 carries 5 (the demand of 10:00), 12:00 carries 7, 13:00 nothing
# (12:00 is missing), 14:00 carries 11.
TINY_DEMAND = pd.DataFrame({"timestamp": pd.to_datetime(["2020-01-01 10:00", "2020-01-01 11:00", "2020-01-01 13:00"]),
                            "bikers": [5, 7, 11]})
TINY_LABELS = [  # (label time, demand_prev_hour the join must give; None = null)
    ("2020-01-01 09:00", None),   # before any feature row
    ("2020-01-01 11:00", 5.0),    # exactly at a feature timestamp: that row, never the label's own demand (7)
    ("2020-01-01 11:59", 5.0),    # the 12:00 row (7) is still in the future
    ("2020-01-01 12:00", 7.0),
    ("2020-01-01 13:30", None),   # the 13:00 row is known, and empty (12:00 was not recorded)
    ("2020-01-01 16:00", 11.0),   # the 14:00 row is exactly 2 h (the TTL) old: still current
    ("2020-01-01 16:01", None),   # one minute more: expired, null rather than stale
]


@pytest.fixture(scope="module", params=["duckdb", "file"])
def tiny(request, workspace):
    store = fs.create(workspace / f"tiny-{request.param}", offline=request.param)
    fs.write_bike_history(store, TINY_DEMAND)
    fs.write_applicants(store, datasets.load_german_credit().head(10))
    fs.materialize(store)
    return store


@pytest.mark.unit
def test_point_in_time_join_gives_the_hand_worked_answers(tiny):
    labels = pd.DataFrame({"series_id": features.SERIES_ID, "event_timestamp": at(*[t for t, _ in TINY_LABELS]),
                           "label": range(len(TINY_LABELS))})
    got = fs.training_set(tiny, labels, ["demand_prev_hour"])
    expected = [np.nan if v is None else v for _, v in TINY_LABELS]
    np.testing.assert_array_equal(got["demand_prev_hour"].to_numpy(), np.array(expected))
    assert list(got["label"]) == list(range(len(TINY_LABELS))), "the label column is kept, rows in input order"


@pytest.mark.unit
def test_training_set_keeps_order_duplicates_and_unknown_entities(tiny):
    labels = pd.DataFrame({"series_id": ["dc", "elsewhere", "dc", "dc"],
                           "event_timestamp": at("2020-01-01 12:00", "2020-01-01 12:00", "2020-01-01 11:00",
                                                 "2020-01-01 12:00"),
                           "y": [1, 2, 3, 4]}, index=[10, 20, 30, 40])
    got = fs.training_set(tiny, labels, HISTORY[:1])
    assert list(got.index) == [10, 20, 30, 40] and list(got["y"]) == [1, 2, 3, 4]
    np.testing.assert_array_equal(got["demand_prev_hour"].to_numpy(), [7.0, np.nan, 5.0, 7.0])
    assert list(got.columns) == ["series_id", "event_timestamp", "y", "demand_prev_hour"]


@pytest.mark.unit
def test_other_time_zones_are_refused_not_misread(tiny):
    # the store's timestamps are the data's clock times stamped UTC: a Paris label would be shifted by an hour
    labels = pd.DataFrame({"series_id": ["dc"],
                           "event_timestamp": pd.Series(pd.to_datetime(["2020-01-01 13:00"])).dt.tz_localize("Europe/Paris")})
    with pytest.raises(fs.FeatureStoreError, match="time zone Europe/Paris.*UTC wall times"):
        fs.training_set(tiny, labels, ["demand_prev_hour"])


@pytest.mark.unit
@pytest.mark.parametrize("key", [7, None])
def test_entity_keys_must_be_text(tiny, key):
    with pytest.raises(fs.FeatureStoreError, match=r"key 'series_id' must be text \(e.g. 'dc'\)"):
        fs.online(tiny, [{"series_id": key}], HISTORY)
    if key is not None:
        labels = pd.DataFrame({"series_id": [key], "event_timestamp": at("2020-01-01 12:00")})
        with pytest.raises(fs.FeatureStoreError, match="must be text"):
            fs.training_set(tiny, labels, HISTORY)


@pytest.mark.unit
def test_repo_has_the_config_and_no_python_file(tiny):
    files = sorted(p.relative_to(tiny.repo).as_posix() for p in tiny.repo.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".py")], files
    assert {"feature_store.yaml", "registry.db", "online.db", "data/bike_history.parquet",
            "data/applicant_profile.parquet"} <= set(files)
    yaml = (tiny.repo / "feature_store.yaml").read_text()
    for line in ("project: mlops_lab", "provider: local", "registry: registry.db", "type: sqlite",
                 "path: online.db", "entity_key_serialization_version: 3",
                 f"type: {tiny.offline}"):
        assert line in yaml, line
    assert tiny.views() == {"bike_history": features.HISTORY_FEATURES,
                            "applicant_profile": fs.APPLICANT_COLUMNS}


@pytest.mark.unit
def test_create_again_keeps_data_definitions_and_online_store(tiny):
    before_files = {p: p.read_bytes() for p in (tiny.repo / "data").iterdir()}
    before_online = fs.online(tiny, [{"series_id": "dc"}], HISTORY)
    before_end = tiny.feast.get_feature_view("bike_history").most_recent_end_time
    again = fs.create(tiny.repo, offline=tiny.offline)
    assert again.repo == tiny.repo and again.views() == tiny.views()
    assert {p: p.read_bytes() for p in (tiny.repo / "data").iterdir()} == before_files
    assert again.feast.get_feature_view("bike_history").most_recent_end_time == before_end
    pd.testing.assert_frame_equal(fs.online(again, [{"series_id": "dc"}], HISTORY), before_online)
    assert before_online["demand_prev_hour"].tolist() == [11.0]


@pytest.mark.unit
def test_online_serves_the_latest_row_and_unknown_entities_raise(tiny):
    rows = [{"series_id": "dc"}, {"series_id": "nowhere"}]
    with pytest.raises(fs.FeatureStoreError, match=r"never seen 1 entity: bike_history: \{'series_id': 'nowhere'\}"):
        fs.online(tiny, rows, HISTORY)
    got = fs.online(tiny, rows, HISTORY, missing="null")
    assert list(got.columns) == ["series_id", *features.HISTORY_FEATURES]
    assert got["demand_prev_hour"].tolist()[0] == 11.0 and math.isnan(got["demand_prev_hour"].tolist()[1])
    # a known entity whose feature is null is not "unknown": the 14:00 row has no 24 h mean (too few hours)
    assert math.isnan(fs.online(tiny, rows[:1], ["demand_mean_24h"])["demand_mean_24h"][0])


@pytest.mark.unit
def test_applicant_profile_in_the_store(tiny):
    credit = datasets.load_german_credit().head(10)
    ids = features.applicant_ids(credit)
    got = fs.online(tiny, pd.DataFrame({"applicant_id": ids}), ["age", "applicant_profile:purpose", "credit_amount"])
    assert got["age"].tolist() == credit["age"].tolist()
    assert got["purpose"].tolist() == credit["purpose"].astype(str).tolist()
    assert got["credit_amount"].tolist() == credit["credit_amount"].tolist()
    labels = pd.DataFrame({"applicant_id": ids[:2], "event_timestamp": at("2023-12-31", "2024-06-01"),
                           "risk": credit["risk"][:2]})
    joined = fs.training_set(tiny, labels, ["age"])
    assert math.isnan(joined["age"][0]), "a label before the snapshot cannot see it"
    assert joined["age"][1] == credit["age"][1]


@pytest.mark.unit
def test_applicant_profile_takes_derived_columns():
    credit = datasets.load_german_credit().head(5).assign(amount_per_month=lambda f: f.credit_amount / f.duration)
    profile = fs.applicant_profile(credit, extra_columns=["amount_per_month"])
    assert list(profile.columns) == ["applicant_id", "event_timestamp", *fs.APPLICANT_COLUMNS, "amount_per_month"]
    assert (profile["event_timestamp"] == features.APPLICANT_SNAPSHOT).all()
    assert profile["sex"].map(type).eq(str).all()
    with pytest.raises(fs.FeatureStoreError, match=r"extra columns \['nope'\]"):
        fs.applicant_profile(credit, extra_columns=["nope"])
    with pytest.raises(fs.FeatureStoreError, match=r"needs the columns \['age'\]"):
        fs.applicant_profile(credit.drop(columns="age"))


@pytest.mark.unit
def test_derived_columns_become_features(workspace):
    store = fs.create(workspace / "derived")
    credit = datasets.load_german_credit().head(4).assign(amount_per_month=lambda f: f.credit_amount / f.duration)
    fs.write_applicants(store, credit, extra_columns=["amount_per_month"])
    assert store.views()["applicant_profile"][-1] == "amount_per_month"
    fs.materialize(store, views=["applicant_profile"])
    got = fs.online(store, [{"applicant_id": features.applicant_ids(credit)[3]}], ["amount_per_month"])
    assert got["amount_per_month"][0] == pytest.approx(credit["amount_per_month"].iloc[3])
    assert fs.create(store.repo).views()["applicant_profile"][-1] == "amount_per_month", "create keeps the schema"


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("names, message", [
    (["demand_prev_hr"], r"Unknown feature 'demand_prev_hr'\. Did you mean 'bike_history:demand_prev_hour'"),
    (["bike_history:demand_prev_hr"], r"'bike_history' has no feature 'demand_prev_hr'\. "
                                      r"Did you mean 'bike_history:demand_prev_hour'"),
    (["bike_histroy:demand_prev_hour"], r"Unknown feature view 'bike_histroy'\. Did you mean 'bike_history'\?"),
    (["bike_history:age"], r"'bike_history' has no feature 'age'\. Its features: demand_prev_hour"),
    ([], r"no features requested"),
])
def test_unknown_features_and_views_are_named_with_suggestions(tiny, names, message):
    with pytest.raises(fs.FeatureStoreError, match=message):
        fs.online(tiny, [{"series_id": "dc"}], names)
    labels = pd.DataFrame({"series_id": ["dc"], "event_timestamp": at("2020-01-01 12:00")})
    with pytest.raises(fs.FeatureStoreError, match=message):
        fs.training_set(tiny, labels, names)


@pytest.mark.unit
@pytest.mark.parametrize("labels, message", [
    (pd.DataFrame({"series_id": ["dc"], "time": at("2020-01-01 12:00")}), r"entity_df lacks \['event_timestamp'\]"),
    (pd.DataFrame({"event_timestamp": at("2020-01-01 12:00")}), r"entity_df lacks \['series_id'\]"),
    (pd.DataFrame({"series_id": ["dc"], "event_timestamp": pd.to_datetime(["2020-01-01 12:00"])}),
     r"naive timestamps .*tz_localize\('UTC'\)"),
    (pd.DataFrame({"series_id": ["dc"], "event_timestamp": ["2020-01-01 12:00"]}), r"is object, not a time"),
    (pd.DataFrame({"series_id": pd.Series(dtype=str), "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]")}),
     r"entity_df is empty"),
    (pd.DataFrame({"series_id": ["dc"], "event_timestamp": pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")}),
     r"1 missing times"),
    ([{"series_id": "dc"}], r"must be a pandas DataFrame"),
])
def test_bad_entity_frames_say_what_is_expected(tiny, labels, message):
    with pytest.raises(fs.FeatureStoreError, match=message):
        fs.training_set(tiny, labels, HISTORY)


@pytest.mark.unit
def test_bad_entity_rows_and_options(tiny, workspace):
    with pytest.raises(fs.FeatureStoreError, match="no entity rows"):
        fs.online(tiny, [], HISTORY)
    with pytest.raises(fs.FeatureStoreError, match=r"entity row 0 lacks the key\(s\) \['series_id'\]"):
        fs.online(tiny, [{"station": "dc"}], HISTORY)
    with pytest.raises(fs.FeatureStoreError, match="missing must be 'raise' or 'null'"):
        fs.online(tiny, [{"series_id": "dc"}], HISTORY, missing="zero")
    with pytest.raises(fs.FeatureStoreError, match="offline must be 'duckdb' or 'file'"):
        fs.create(workspace / "never", offline="spark")
    with pytest.raises(fs.FeatureStoreError, match="has no time zone"):
        fs.materialize(tiny, start=pd.Timestamp("2020-01-01"))
    with pytest.raises(fs.FeatureStoreError, match="over HTTP give full references"):
        fs.online_over_http("http://127.0.0.1:9", [{"series_id": "dc"}], ["demand_prev_hour"])
    with pytest.raises(fs.FeatureStoreError, match="did not answer"):
        fs.online_over_http("http://127.0.0.1:9", [{"series_id": "dc"}], HISTORY, timeout=2)


@pytest.mark.unit
def test_a_lesson_can_run_twice_and_start_fresh(workspace):
    repo = workspace / "twice"
    batches = list(datasets.monthly_batches())
    store = fs.create(repo)
    first = fs.add_month(store, batches[0])
    again = fs.add_month(fs.create(repo), batches[0])  # the same month again: skipped, nothing changes
    assert again.rows_added == 0 and again.rows_total == first.rows_total
    zoned = batches[1].frame.assign(timestamp=batches[1].frame["timestamp"].dt.tz_localize("UTC"))
    assert fs.add_month(store, zoned).rows_added == 28 * 24  # UTC-zoned times are the same hours: February's grid
    fresh = fs.create(repo, fresh=True)
    assert fs.add_month(fresh, batches[0]).rows_total == first.rows_total  # starts again from nothing
    (workspace / "not-a-repo").mkdir()
    with pytest.raises(fs.FeatureStoreError, match="not a feature repo"):
        fs.create(workspace / "not-a-repo", fresh=True)


@pytest.mark.unit
def test_add_month_refuses_months_out_of_order(workspace):
    store = fs.create(workspace / "order")
    batches = list(datasets.monthly_batches())
    first = fs.add_month(store, batches[1])
    assert first.rows_added == first.rows_total == len(features.bike_history(batches[1].frame))
    changed = batches[1].frame.assign(bikers=batches[1].frame["bikers"] + 1)
    for batch in (changed, batches[0]):  # the same month with other values, an earlier month
        with pytest.raises(fs.FeatureStoreError, match="add months in time order, each once"):
            fs.add_month(store, batch)
    with pytest.raises(fs.FeatureStoreError, match="empty DataFrame"):
        fs.add_month(store, batches[2].frame.iloc[:0])
    with pytest.raises(fs.FeatureStoreError, match=r"needs the columns \['bikers'\]"):
        fs.add_month(store, batches[2].frame.drop(columns="bikers"))
    assert fs.add_month(store, batches[2]).rows_total > first.rows_total, "a failed call changed nothing"


# -- the year, month by month ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def year(workspace):
    """Bikeshare 2011 added month by month (online values recorded after each month) + German Credit."""
    store = fs.create(workspace / "feature_repo")
    bikes = datasets.load_bikeshare()
    after = {}
    for batch in datasets.monthly_batches(bikes):
        ingested = fs.add_month(store, batch)
        after[batch.name] = (ingested, fs.online(store, [{"series_id": "dc"}], HISTORY))
    credit = datasets.load_german_credit()
    fs.write_applicants(store, credit)
    fs.materialize(store, views=["applicant_profile"])
    store.bikes, store.credit, store.after = bikes, credit, after  # what the tests compare with
    return store


@pytest.fixture(scope="module")
def server(year):
    """One ``feast serve`` for the module (restarted if a test stopped it)."""
    srv = fs.feature_server(year)
    srv.start()
    yield srv
    srv.stop()


def _running(srv):
    if not srv.running:
        srv.start()
    return srv


@pytest.mark.integration
def test_each_month_catches_the_online_store_up(year):
    bikes = year.bikes
    for name in ("Jan", "Feb", "Dec"):
        month = bikes[bikes["mnth"] == name]
        last = month["timestamp"].max()
        ingested, served = year.after[name]
        assert ingested.online_as_of == pd.Timestamp(last, tz=UTC) + pd.Timedelta(hours=1)
        assert served["demand_prev_hour"][0] == month.loc[month["timestamp"] == last, "bikers"].item(), name
        mean = bikes[(bikes["timestamp"] > last - pd.Timedelta(hours=24)) & (bikes["timestamp"] <= last)]["bikers"]
        assert served["demand_mean_24h"][0] == pytest.approx(round(mean.mean(), 4)), name
    assert year.after["Jan"][1]["demand_prev_hour"][0] != year.after["Feb"][1]["demand_prev_hour"][0]
    intervals = year.feast.get_feature_view("bike_history").materialization_intervals
    assert len(intervals) == 12, "one full materialisation, then one incremental per month"
    assert all(a[1] == b[0] for a, b in zip(intervals, intervals[1:])), "each month starts where the last ended"


@pytest.mark.integration
def test_point_in_time_on_the_year_equals_brute_force(year):
    bikes = year.bikes
    demand = dict(zip(bikes["timestamp"], bikes["bikers"].astype(float)))
    # labels on the hour and half past: a join that took the next row would see the label's own demand
    stamps = pd.concat([bikes["timestamp"], bikes["timestamp"] + pd.Timedelta(minutes=30)], ignore_index=True)
    labels = pd.DataFrame({"series_id": "dc", "event_timestamp": stamps.dt.tz_localize(UTC),
                           "bikers": np.tile(bikes["bikers"].to_numpy(), 2)})
    got = fs.training_set(year, labels, HISTORY)
    assert len(got) == len(labels) == 2 * len(bikes)
    hour = stamps.dt.floor("h")

    def back(k):
        return np.array([demand.get(t - pd.Timedelta(hours=k), np.nan) for t in hour])

    prev, week = back(1), back(168)
    window = np.column_stack([back(k) for k in range(1, 25)])
    counts = (~np.isnan(window)).sum(axis=1)
    mean = np.where(counts >= 12, np.nansum(window, axis=1) / np.maximum(counts, 1), np.nan)
    np.testing.assert_array_equal(got["demand_prev_hour"].to_numpy(), prev)
    np.testing.assert_array_equal(got["demand_same_hour_last_week"].to_numpy(), week)
    np.testing.assert_allclose(got["demand_mean_24h"].to_numpy(), mean, rtol=0, atol=5.1e-5)  # stored rounded to 4 places
    own = got["demand_prev_hour"].to_numpy() == got["bikers"].to_numpy()
    leaked = int((own & (prev != got["bikers"].to_numpy())).sum())
    assert leaked == 0 and np.isfinite(prev).sum() > 16_000


@pytest.mark.integration
def test_online_in_process_equals_http_equals_offline(year, server):
    srv = _running(server)
    applicants = [{"applicant_id": i} for i in features.applicant_ids(year.credit)[:25]]
    profile = [f"applicant_profile:{c}" for c in fs.APPLICANT_COLUMNS]
    for rows, refs in (([{"series_id": "dc"}], HISTORY), (applicants, profile)):
        local = fs.online(year, rows, refs)
        remote = fs.online_over_http(srv.url, rows, refs)
        pd.testing.assert_frame_equal(local, remote)
        report = fs.skew(year, rows, refs)
        assert report.ok and report.mismatches == 0 and len(report.table) == len(rows) * len(refs)
        assert report.table["offline"].notna().any()
    served = fs.online_over_http(srv.url, [{"series_id": "dc"}], ["bike_history:demand_prev_hour"])
    assert served["demand_prev_hour"][0] == year.bikes["bikers"].iloc[-1], "the last hour of December"
    with pytest.raises(fs.FeatureStoreError, match=r"never seen 1 entity"):
        fs.online_over_http(srv.url, [{"series_id": "nowhere"}], HISTORY)
    nulls = fs.online_over_http(srv.url, [{"series_id": "nowhere"}], HISTORY, missing="null")
    assert nulls[features.HISTORY_FEATURES].isna().all(axis=None)
    with pytest.raises(fs.FeatureStoreError, match=r"refused the request \(500\).*Feature nope not found"):
        fs.online_over_http(srv.url, [{"series_id": "dc"}], ["bike_history:nope"])
    with pytest.raises(fs.FeatureStoreError, match=r"refused the request \(404\).*Feature view nope does not exist"):
        fs.online_over_http(srv.url, [{"series_id": "dc"}], ["nope:x"])


@pytest.mark.integration
def test_skew_detects_a_tampered_online_value(year, server):
    srv = _running(server)
    applicant = features.applicant_ids(year.credit)[7]
    age = int(year.credit["age"].iloc[7])
    row = fs.applicant_profile(year.credit.iloc[[7]]).assign(age=age + 1)
    try:
        year.feast.write_to_online_store("applicant_profile", df=row)
        report = fs.skew(year, [{"applicant_id": applicant}], ["age", "purpose"])
        assert not report.ok and report.mismatches == 1
        bad = report.table[~report.table["match"]].iloc[0]
        assert (bad["feature"], bad["offline"], bad["online"]) == ("applicant_profile:age", age, age + 1)
        assert fs.online_over_http(srv.url, [{"applicant_id": applicant}], ["applicant_profile:age"])["age"][0] == age + 1
    finally:
        fs.materialize(year, views=["applicant_profile"])
    assert fs.skew(year, [{"applicant_id": applicant}], ["age", "purpose"]).ok


@pytest.mark.integration
def test_skew_flags_unknown_entities_and_needs_materialisation(year, workspace):
    report = fs.skew(year, [{"series_id": "dc"}, {"series_id": "nowhere"}], ["demand_prev_hour"])
    assert report.mismatches == 0, "unknown online and unknown offline: both null, so they agree"
    fresh = fs.create(workspace / "partly-materialised")
    with pytest.raises(fs.FeatureStoreError, match="'bike_history' was never materialised"):
        fs.skew(fresh, [{"series_id": "dc"}], ["demand_prev_hour"])
    credit = datasets.load_german_credit()
    fs.write_applicants(fresh, credit.head(3))
    fs.materialize(fresh)
    fs.write_applicants(fresh, credit.head(4))  # the fourth applicant is offline only
    ids = features.applicant_ids(credit.head(4))
    assert fs.skew(fresh, [{"applicant_id": i} for i in ids[:3]], ["age", "sex"]).ok
    report = fs.skew(fresh, [{"applicant_id": ids[3]}], ["age", "sex"])
    assert report.mismatches == 2 and report.table["online"].isna().all() and report.table["offline"].notna().all()


@pytest.mark.integration
def test_feature_server_stops_with_nothing_left(server):
    srv = _running(server)
    pgid, port, runtime = srv.pgid, srv.port, srv.runtime_dir
    members = group_members(pgid)
    assert len(members) >= 2, "gunicorn's master and its worker"
    assert runtime.is_dir() and srv.log_path.parent.name == "logs"
    srv.stop()
    assert not group_members(pgid)
    assert not [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not port_in_use(port) and not runtime.exists()
    assert str(port) not in " ".join(" ".join(p.cmdline()) for p in psutil.process_iter() if _safe(p))


def _safe(proc) -> bool:
    try:
        return proc.pid != os.getpid() and "feast" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


# -- the lesson's check and measurements ----------------------------------------------------------

@pytest.mark.integration
def test_leaked_rows_is_zero_for_the_store_and_counts_a_leak(year):
    bikes = year.bikes.iloc[2000:2300]
    labels = pd.DataFrame({"series_id": "dc", "event_timestamp": bikes["timestamp"].dt.tz_localize(UTC)})
    train = fs.training_set(year, labels, HISTORY)
    assert fs.leaked_rows(train, year.bikes) == 0
    cheat = train.assign(demand_prev_hour=bikes["bikers"].to_numpy(dtype=float))  # the label's own demand
    assert fs.leaked_rows(cheat, year.bikes) == int((bikes["bikers"].to_numpy() != train["demand_prev_hour"]).sum()) > 250
    assert fs.leaked_rows(train.assign(demand_mean_24h=np.nan), year.bikes) == 0  # missing is not a leak


@pytest.mark.integration
def test_online_latencies_and_offline_throughput_measure_every_method(year, server):
    srv = _running(server)
    timings = fs.online_latencies(year, srv.url, lookups=20)
    assert list(timings) == ["dict (baseline)", "Feast, in process", "feature server, HTTP"]
    assert all(len(t) == 20 and min(t) > 0 for t in timings.values())
    assert list(fs.online_latencies(year, lookups=5)) == ["dict (baseline)", "Feast, in process"]
    labels = pd.DataFrame({"series_id": "dc", "event_timestamp": year.bikes["timestamp"].head(50).dt.tz_localize(UTC)})
    measured = fs.offline_throughput(year, labels)
    assert measured["rows"] == 50 and measured["rows_per_s"] == pytest.approx(50 / measured["seconds"])
