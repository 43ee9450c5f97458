"""The monitor's statistics, windows, label joins and metrics, on known distributions and real data.

Both directions everywhere: samples of one distribution raise no alarm (at the stated rate), a
shift raises one; labels that match are joined, labels that match nothing are counted or refused.
"""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_lab import datasets, monitoring, serving, training
from mlops_lab.deployment.log import InferenceLog, LogWriter
from mlops_lab.monitoring import MonitoringError, Thresholds, drift

pytestmark = pytest.mark.unit
NUMERIC, CATEGORICAL = training.BIKE_NUMERIC, training.BIKE_CATEGORICAL


@pytest.fixture(scope="module")
def bike():
    return datasets.load_bikeshare()


@pytest.fixture(scope="module")
def pools(bike):
    """A random reference of 4,000 hours and the remaining hours to draw no-drift windows from."""
    order = np.random.default_rng(0).permutation(len(bike))
    return bike.iloc[order[:4000]].reset_index(drop=True), bike.iloc[order[4000:]].reset_index(drop=True)


def normal(n, mean=0.0, seed=0):
    return pd.DataFrame({"x": np.random.default_rng(seed).normal(mean, 1.0, n)})


# -- statistics on known distributions -------------------------------------------------------------
def test_same_distribution_is_stable_and_a_half_sigma_shift_drifts():
    reference = normal(5000)
    same = drift.feature_drift(reference, normal(1000, seed=1))
    shifted = drift.feature_drift(reference, normal(1000, mean=0.5, seed=1))
    assert same.verdict == "stable" and not same.alarm
    assert shifted.verdict == "drift" and shifted.drifted == ["x"]
    row = shifted.table.loc["x"]
    assert row["p_value"] < 1e-10 and 0.4 < row["wasserstein"] < 0.6 and row["psi"] > 0.15
    assert "significant and material" in row["reason"]


def test_false_alarm_rate_on_no_drift_windows_is_within_target(pools):
    reference, pool = pools
    alarms = [drift.feature_drift(reference, pool.sample(1000, random_state=seed), numeric=NUMERIC,
                                  categorical=CATEGORICAL).alarm for seed in range(60)]
    assert np.mean(alarms) <= 0.05


def test_a_half_sigma_shift_in_one_real_feature_is_caught_in_the_first_window(pools):
    reference, pool = pools
    window = pool.sample(1000, random_state=3)
    window = window.assign(temp=window["temp"] + 0.5 * reference["temp"].std())
    report = drift.feature_drift(reference, window, numeric=NUMERIC, categorical=CATEGORICAL)
    assert report.drifted == ["temp"], report.table


def test_a_large_window_with_a_tiny_shift_is_significant_but_not_material():
    reference = normal(50_000)
    report = drift.feature_drift(reference, normal(50_000, mean=0.04, seed=2))
    row = report.table.loc["x"]
    assert row["p_value"] < 0.01 and row["wasserstein"] < 0.1 and row["verdict"] == "stable"
    assert "too small to matter" in row["reason"]


def test_categorical_drift_uses_chi_squared_and_names_new_categories():
    reference = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 500})
    same = drift.feature_drift(reference, pd.DataFrame({"c": ["a"] * 100 + ["b"] * 100}))
    moved = drift.feature_drift(reference, pd.DataFrame({"c": ["a"] * 150 + ["b"] * 20 + ["z"] * 30}))
    assert same.table.loc["c", "test"] == "chi2" and same.verdict == "stable"
    assert moved.verdict == "drift" and moved.table.loc["c", "new_categories"] == "z"
    assert "never seen in the reference: z" in moved.table.loc["c", "reason"]


def test_psi_of_identical_samples_is_zero_and_grows_with_the_shift():
    base = pd.Series(np.random.default_rng(0).normal(size=4000))
    assert drift.psi(base, base) == pytest.approx(0, abs=1e-12)
    small, large = drift.psi(base, base + 0.2), drift.psi(base, base + 1.0)
    assert 0 < small < large
    assert drift.psi(pd.Series(["a", "b"] * 50), pd.Series(["a"] * 100), categorical=True) > 1


def test_wasserstein_is_in_reference_sigmas_and_handles_constants():
    base = pd.Series(np.random.default_rng(0).normal(0, 10, 4000))
    assert drift.wasserstein(base, base + 5) == pytest.approx(0.5, rel=0.05)
    assert drift.wasserstein(pd.Series([1.0] * 200), pd.Series([1.0] * 50)) == 0
    assert np.isnan(drift.wasserstein(pd.Series([1.0] * 200), pd.Series([1.0, 2.0] * 25)))


def test_constant_columns_are_judged_not_crashed():
    reference = pd.DataFrame({"k": [3.0] * 300})
    assert drift.feature_drift(reference, pd.DataFrame({"k": [3.0] * 50})).verdict == "stable"
    varied = drift.feature_drift(reference, pd.DataFrame({"k": [3.0, 9.0] * 25}))
    assert varied.verdict == "drift" and "constant reference" in varied.table.loc["k", "reason"]


def test_missing_values_rising_is_drift_and_a_column_of_nans_is_not_stable():
    reference = normal(2000)
    window = normal(500, seed=3)
    window.loc[:149, "x"] = np.nan
    report = drift.feature_drift(reference, window)
    assert report.verdict == "drift" and "missing values rose from 0% to 30%" in report.table.loc["x", "reason"]
    empty_column = drift.feature_drift(reference, pd.DataFrame({"x": [np.nan] * 100}))
    assert empty_column.verdict == "drift"


def test_too_few_rows_cannot_be_judged_and_never_count_as_stable():
    small_window = drift.feature_drift(normal(2000), normal(10))
    assert small_window.verdict == "cannot judge" and not small_window.alarm
    assert "fewer than min_current=30" in small_window.summary()
    small_reference = drift.feature_drift(normal(50), normal(500))
    assert small_reference.verdict == "cannot judge" and "min_reference=100" in small_reference.table.loc["x", "reason"]
    empty = drift.feature_drift(normal(2000), pd.DataFrame())
    assert empty.verdict == "cannot judge" and "the window has no rows" in empty.summary()


def test_bad_input_gets_clear_errors(bike):
    with pytest.raises(MonitoringError, match="reference data is empty"):
        drift.feature_drift(bike.iloc[:0], bike)
    renamed = bike.rename(columns={"temp": "temperature"})
    with pytest.raises(MonitoringError, match=r"no column 'temp' \(did you mean 'atemp'\?\)|no column 'temp'"):
        drift.feature_drift(bike, renamed, numeric=["temp"])
    mistyped = bike.assign(hum=bike["hum"].astype(str).where(bike.index > 5, "high"))
    with pytest.raises(MonitoringError, match="should be numeric but holds 'high'"):
        drift.feature_drift(bike, mistyped, numeric=["hum"])
    with pytest.raises(MonitoringError, match="both numeric and categorical"):
        drift.feature_drift(bike, bike, numeric=["hr"], categorical=["hr"])
    with pytest.raises(MonitoringError, match="alpha must be in"):
        Thresholds(alpha=0)
    with pytest.raises(MonitoringError, match="psi must be a positive number"):
        Thresholds(psi=float("inf"))


def test_thresholds_decide_both_ways():
    reference, window = normal(4000), normal(1000, mean=0.15, seed=4)
    assert drift.feature_drift(reference, window).verdict == "drift"
    assert drift.feature_drift(reference, window, thresholds=Thresholds(wasserstein=0.3, psi=0.3)).verdict == "stable"


def test_prediction_drift_and_error_metrics():
    reference = pd.Series(np.random.default_rng(0).uniform(size=3000), name="p")
    assert monitoring.prediction_drift(reference, reference.sample(500, random_state=1)).verdict == "stable"
    assert monitoring.prediction_drift(reference, reference.sample(500, random_state=1) ** 0.3).verdict == "drift"
    classes = pd.Series(["good"] * 700 + ["bad"] * 300)
    assert monitoring.prediction_drift(classes, pd.Series(["bad"] * 400), categorical=True).verdict == "drift"
    assert monitoring.error([1, 2, None], [2, 2, 9], "mae") == pytest.approx(0.5)
    assert monitoring.error([1, 3], [2, 1], "rmse") == pytest.approx(np.sqrt(2.5))
    assert monitoring.error([0, 1, 1, None], [0, 0, 1, 1], "error_rate") == pytest.approx(1 / 3)
    assert np.isnan(monitoring.error([None], [1], "mae"))
    with pytest.raises(MonitoringError, match="Unknown error metric 'r2'"):
        monitoring.error([1], [1], "r2")


# -- windows ---------------------------------------------------------------------------------------
def test_fixed_windows_by_month_and_by_count(bike):
    months = list(monitoring.fixed(bike, "MS"))
    assert [w.name for w in months][:2] == ["2011-01", "2011-02"] and len(months) == 12
    assert sum(len(w) for w in months) == len(bike)
    counted = list(monitoring.fixed(bike, 1000))
    assert len(counted) == len(bike) // 1000 and all(len(w) == 1000 for w in counted)
    assert counted[1].frame["timestamp"].iloc[0] > counted[0].frame["timestamp"].iloc[-1]
    assert len(list(monitoring.fixed(bike, 1000, complete=False))) == len(counted) + 1


def test_sliding_windows_by_rows_and_by_time(bike):
    rows = list(monitoring.sliding(bike, 1000, 500))
    assert len(rows) == (len(bike) - 1000) // 500 + 1
    assert rows[1].frame["timestamp"].iloc[0] == rows[0].frame["timestamp"].iloc[500]
    weeks = list(monitoring.sliding(bike.iloc[:24 * 30], "7D", "1D"))
    assert all(w.frame["timestamp"].max() - w.frame["timestamp"].min() < pd.Timedelta("7D") for w in weeks)
    assert len(weeks) >= 23
    last = monitoring.latest(bike, 100)
    assert len(last) == 100 and last.frame["timestamp"].iloc[-1] == bike["timestamp"].max()
    with pytest.raises(MonitoringError, match="both be row counts or both be time offsets"):
        list(monitoring.sliding(bike, 100, "1D"))
    with pytest.raises(MonitoringError, match="positive whole number"):
        list(monitoring.fixed(bike, 0))
    with pytest.raises(MonitoringError, match="not a pandas frequency"):
        list(monitoring.fixed(bike, "monthly"))


def test_a_drift_starting_mid_stream_is_seen_by_a_sliding_window_before_the_month_ends(pools):
    reference, pool = pools
    stream = pool.sample(3000, random_state=5).reset_index(drop=True)
    stream.loc[2000:, "hum"] = stream.loc[2000:, "hum"] + 0.5 * reference["hum"].std()
    monitor = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    timeline = monitor.run(monitoring.sliding(stream, 500, 250, time=None))
    first = timeline.first_alarm()
    assert first is not None and int(first.split("-")[1]) <= 2500  # at most half a window after the change
    assert not any(c.alarm for c in timeline.checks if int(c.window.split("-")[1]) <= 2000)


# -- the monitor over real months ----------------------------------------------------------------------
def test_monitor_over_the_bikeshare_year(bike):
    split = training.time_split(bike, ["Jan", "Feb", "March"], ["April"])
    model = training.bike_pipeline("random_forest").fit(split.X_train, split.y_train)
    validation = split.X_test.assign(prediction=model.predict(split.X_test), bikers=split.y_test.to_numpy())
    monitor = monitoring.Monitor(validation, numeric=NUMERIC, categorical=CATEGORICAL, prediction="prediction",
                                 target="bikers")
    windows = [monitoring.Window(b.name, b.frame.assign(prediction=model.predict(b.frame[training.BIKE_FEATURES])))
               for b in datasets.monthly_batches(bike)]
    timeline = monitor.run(windows)
    frame = timeline.frame
    assert frame.loc["April", "verdict"] == "stable" and frame.loc["April", "performance"] == "ok"
    assert frame.loc["July", "verdict"] == "drift" and frame.loc["July", "performance"] == "degraded"
    assert "temp" in frame.loc["July", "features"]
    scores = timeline.scores("psi")
    assert scores.shape == (len(NUMERIC) + len(CATEGORICAL), 12) and scores.loc["temp", "July"] > 1
    assert timeline.decisions().loc["hr"].eq(False).all()  # the hour of day never drifts


# -- the feedback loop ---------------------------------------------------------------------------------
def write_log(path, frame: pd.DataFrame, *, start: float = 1.7e9, every: float = 60.0, status: int = 200):
    writer = LogWriter(path)
    for i in range(len(frame)):
        body, _ = serving.payload(frame.iloc[[i]])
        writer.put({"request_id": f"r{i}", "at": start + i * every, "role": "primary", "variant": "stable",
                    "version": "1", "replica": None, "status": status, "latency_ms": 1.0, "key": None,
                    "request": body.decode(), "response": json.dumps({"predictions": [i % 2]}), "error": None})
    writer.close()
    return InferenceLog(path)


@pytest.fixture(scope="module")
def credit():
    return datasets.load_german_credit()


def test_requests_frame_parses_every_answered_request(tmp_path, credit):
    log = write_log(tmp_path / "inference.db", credit[training.CREDIT_FEATURES].head(20))
    extra = LogWriter(log.path)
    extra.put({"request_id": "bad", "at": 1.8e9, "role": "primary", "status": 400, "request": "{}",
               "response": "{}", "variant": "stable"})
    extra.put({"request_id": "shadow", "at": 1.8e9, "role": "shadow", "status": 200, "request": "{}",
               "response": "{}", "variant": "canary"})
    extra.close()
    rows = monitoring.requests_frame(log)
    assert len(rows) == 20 and rows.attrs["skipped"] == 1
    assert list(rows["credit_amount"]) == list(credit["credit_amount"].head(20))
    assert list(rows["prediction"]) == [i % 2 for i in range(20)]


def test_labels_join_by_request_id_with_delays_pending_and_unknown(tmp_path, credit):
    log = write_log(tmp_path / "inference.db", credit[training.CREDIT_FEATURES].head(10))
    log.add_labels({f"r{i}": int(credit["risk"].iloc[i]) for i in range(6)}, at=1.7e9 + 3600)
    log.add_labels({"r0": 1 - int(credit["risk"].iloc[0]), "nobody": 1}, at=1.7e9 + 7200)  # a correction wins
    feedback = monitoring.join_labels(monitoring.requests_frame(log), log)
    assert len(feedback.labelled) == 6 and feedback.pending == 4 and feedback.coverage == pytest.approx(0.6)
    assert feedback.unknown == ["nobody"] and "1 label(s) for unknown request ids" in feedback.summary()
    assert feedback.frame.loc[0, "label"] == 1 - int(credit["risk"].iloc[0])
    assert feedback.frame.loc[1, "delay"] == pd.Timedelta(seconds=3600 - 60)
    with pytest.raises(MonitoringError, match="None of the 2 labels matches a logged request id"):
        monitoring.join_labels(monitoring.requests_frame(log), {"x": 1, "y": 0})


def test_multi_row_requests_take_one_label_per_row():
    predictions = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, 0], "at": pd.Timestamp("2026-01-01")})
    feedback = monitoring.join_labels(predictions, {"a": [1, 0], "b": 1})
    assert list(feedback.frame["label"]) == [1, 0, 1]
    with pytest.raises(MonitoringError, match="scored at least 2 rows but got 1 label"):
        monitoring.join_labels(predictions, {"a": [1]})
    with pytest.raises(MonitoringError, match="send a list of labels, one per row"):
        monitoring.join_labels(predictions, {"a": 1})
    cut = monitoring.join_labels(predictions.iloc[1:], {"a": np.array([1, 0])})  # a window holding one of a's rows
    assert list(cut.frame["label"]) == [0, None]
    numbered = monitoring.join_labels(predictions.assign(request_id=["1", "1", "2"]),
                                      pd.DataFrame({"request_id": [1, 2], "label": [[1, 1], 0]}))
    assert list(numbered.frame["label"]) == [1, 1, 0]  # ids given as numbers still match
    latest = monitoring.join_labels(predictions, pd.DataFrame({
        "request_id": ["b", "b"], "label": [0, 1],
        "at": [pd.Timestamp("2026-01-03", tz="UTC"), pd.Timestamp("2026-01-02", tz="UTC")]}))
    assert latest.frame["label"].iloc[2] == 0  # the label that arrived last wins, whatever the order given


# -- metrics and the service ---------------------------------------------------------------------------
def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_expose_the_check(pools):
    reference, pool = pools
    monitor = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    window = pool.sample(1000, random_state=3)
    metrics = monitoring.MonitorMetrics()
    metrics.update(monitor.check(window.assign(temp=window["temp"] + 0.2)), coverage=0.5, pending=10,
                   delay_seconds=30)
    found = samples(metrics.exposition().decode())
    assert found[("mlops_monitor_feature_drifted", (("feature", "temp"),))] == 1
    assert found[("mlops_monitor_feature_drifted", (("feature", "hr"),))] == 0
    assert found[("mlops_monitor_drift_score", (("feature", "temp"), ("statistic", "psi")))] > 0.2
    assert ("mlops_monitor_drift_score", (("feature", "weathersit"), ("statistic", "chi2"))) in found
    assert ("mlops_monitor_drift_score", (("feature", "weathersit"), ("statistic", "wasserstein"))) not in found
    assert found[("mlops_monitor_drifted_features_share", ())] == pytest.approx(0.1)
    assert found[("mlops_monitor_label_coverage", ())] == 0.5
    assert found[("mlops_monitor_checks_total", (("result", "ok"),))] == 1


@pytest.mark.integration
def test_the_service_watches_the_log_and_serves_metrics(tmp_path, credit):
    features = credit[training.CREDIT_FEATURES]
    stream = features.sample(240, random_state=0).reset_index(drop=True)
    stream.loc[120:, "credit_amount"] *= 3  # the last half of the traffic asks for three times the amount
    log = write_log(tmp_path / "inference.db", stream, start=time.time() - 240)
    settings = monitoring.ServiceConfig(log=str(log.path), reference=str(tmp_path / "reference.parquet"),
                                        numeric=training.CREDIT_NUMERIC, categorical=training.CREDIT_CATEGORICAL,
                                        window=100, interval=3600, categorical_prediction=True)
    reference = features.assign(prediction=credit["risk"].to_numpy(), label=credit["risk"].to_numpy())
    with monitoring.serve(settings, reference, home=tmp_path) as server:
        status = server.check()
        assert status["drifted"] == ["credit_amount"] and status["pending"] == 100 and status["coverage"] == 0
        log.add_labels({f"r{i}": i % 2 for i in range(140, 240)})
        status = server.check()
        assert status["coverage"] == 1 and status["performance"] == "ok"
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
            found = samples(answer.read().decode())
        assert found[("mlops_monitor_feature_drifted", (("feature", "credit_amount"),))] == 1
        assert found[("mlops_monitor_rolling_error", (("metric", "error_rate"),))] == 0
        assert found[("mlops_monitor_window_rows", ())] == 100
        for suffix in ("-wal", "-shm"):
            log.path.with_name(log.path.name + suffix).unlink(missing_ok=True)
        log.path.write_bytes(b"not a database" * 100)  # a broken log: the check fails, is counted, serving goes on
        status = server.check()
        assert "error" in status and "DatabaseError" in status["error"] and status["drifted"] == ["credit_amount"]
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
            assert samples(answer.read().decode())[("mlops_monitor_checks_total", (("result", "error"),))] == 1


# -- measuring the monitor -------------------------------------------------------------------------------
def test_calibration_measures_false_alarms_and_detection_delay_both_ways(pools):
    from mlops_lab.monitoring import calibration

    reference, pool = pools
    monitor = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    quiet = calibration.false_alarm_rate(monitor, pool, windows=20, size=1000)
    assert quiet["windows"] == 20 and quiet["rate"] <= 0.1
    strict = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL,
                                thresholds=Thresholds(alpha=1.0, psi=1e-6, wasserstein=1e-6))
    assert calibration.false_alarm_rate(strict, pool, windows=5, size=1000)["rate"] == 1  # it can fail
    caught = calibration.detection_delay(monitor, pool, "temp", sigmas=0.5, trials=4, before=1, after=3)
    assert caught["missed"] == 0 and caught["max"] <= 2 and caught["early"] == 0
    blind = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL,
                               thresholds=Thresholds(psi=5, wasserstein=5))
    missed = calibration.detection_delay(blind, pool, "temp", sigmas=0.5, trials=2, before=1, after=2)
    assert missed["missed"] == 2 and missed["max"] is None
    with pytest.raises(MonitoringError, match="not one of the monitor's numeric features"):
        calibration.detection_delay(monitor, pool, "weathersit")


def test_alert_states_follow_prometheus_for_semantics():
    from mlops_lab.monitoring.calibration import alert_states

    alarms = [False, True, True, False, True, True, True]
    assert alert_states(alarms, 0) == ["inactive", "firing", "firing", "inactive", "firing", "firing", "firing"]
    assert alert_states(alarms, 1) == ["inactive", "pending", "firing", "inactive", "pending", "firing", "firing"]
    assert alert_states(alarms, 2)[:3] == ["inactive", "pending", "pending"] and alert_states(alarms, 2)[-1] == "firing"


# -- would the course's alert fire on what the monitor exports? ------------------------------------------
def test_the_course_rules_fire_on_the_monitors_metrics_both_ways(pools):
    from promstack import need

    from mlops_lab.monitoring import alerts

    need("promtool")
    reference, pool = pools
    monitor = monitoring.Monitor(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    window = pool.sample(1000, random_state=3)
    pages = {}
    for name, frame in {"stable": window, "drifted": window.assign(temp=window["temp"] + 0.6 * reference["temp"].std())}.items():
        metrics = monitoring.MonitorMetrics()
        metrics.update(monitor.check(frame))
        pages[name] = metrics.exposition().decode()
    assert alerts.fires(alerts.RULES, pages["stable"], "FeatureShift") == []
    [shift] = alerts.fires(alerts.RULES, pages["drifted"], "FeatureShift")
    assert shift["feature"] == "temp" and shift["severity"] == "warning"
    assert alerts.fires(alerts.RULES, pages["drifted"], "FeatureShift", after="5m") == []  # for: 10m not yet over
    assert alerts.fires(alerts.RULES, pages["stable"], "LabelsMissing") == []  # no labels measured: not "missing"
    with pytest.raises(alerts.AlertRulesError, match="no alert named 'Nope'"):
        alerts.fires(alerts.RULES, pages["stable"], "Nope")
    broken = "groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: mlops_monitor_drift_score >>> 1\n"
    with pytest.raises(alerts.AlertRulesError, match="promtool could not evaluate"):
        alerts.fires(broken, pages["stable"], "Broken")


def test_the_log_reads_its_newest_answers_and_the_labels_asked_for(tmp_path, credit):
    log = write_log(tmp_path / "inference.db", credit[training.CREDIT_FEATURES].head(30))
    assert list(log.frame(last=5)["request_id"]) == [f"r{i}" for i in range(25, 30)]
    assert len(log.frame(last=100)) == 30 and len(log.frame()) == 30
    log.add_labels({"r1": 1, "r28": 0, "ghost": 1})
    assert set(log.labels(["r28", "r29"])["request_id"]) == {"r28"}
    assert log.labels([]).empty and len(log.labels()) == 3
    assert log.unknown_labels() == ["ghost"]
