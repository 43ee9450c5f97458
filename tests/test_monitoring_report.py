"""Evidently's drift report: decisions on known distributions, its switch of tests by sample size,
a self-contained HTML file (also as an MLflow artifact), agreement with our statistics, bad input."""

from __future__ import annotations

import re
import socket

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_lab import config, datasets, training
from mlops_lab.monitoring import report
from mlops_lab.monitoring.report import Agreement, ReportError

pytestmark = pytest.mark.unit
FIRST_HALF = datasets.MONTHS[:6]


@pytest.fixture(scope="module")
def bikes() -> pd.DataFrame:
    return datasets.load_bikeshare()


@pytest.fixture(scope="module")
def july(bikes, tmp_path_factory):
    """Bikeshare's first half-year (reference) against July, run once for the module with the network cut off.

    Every attempt to open an internet socket while Evidently is imported and run is recorded (and fails)."""
    attempts: list = []
    original = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError("network disabled in this test")
        return original(sock, address)

    reference, current = bikes[bikes["mnth"].isin(FIRST_HALF)], bikes[bikes["mnth"] == "July"]
    columns = {"numeric": training.BIKE_NUMERIC, "categorical": training.BIKE_CATEGORICAL}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        frame = report.evidently_drift(reference, current, **columns)
        path = report.evidently_report(reference, current, **columns, title="July <vs> first half",
                                       path=tmp_path_factory.mktemp("reports") / "july.html")
    return {"frame": frame, "path": path, "attempts": attempts, "reference": reference, "current": current}


def _normal(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Two numeric columns drawn from fixed distributions, a three-level category and a binary one.

    The categories come in exactly the same proportions in every frame (shuffled), so "no drift" is
    true by construction: Evidently's chi-square flags same-distribution samples far more often
    than 5 % of the time (see test_evidentlys_chi_square_is_a_goodness_of_fit_test)."""
    rng = np.random.default_rng(seed)

    def exact(levels: list[str], shares: list[float]) -> np.ndarray:
        counts = [round(n * share) for share in shares[:-1]]
        return rng.permutation(np.repeat(levels, [*counts, n - sum(counts)]))

    return pd.DataFrame({
        "x": rng.normal(10 + shift, 2, n),
        "y": rng.exponential(1.0, n),
        "colour": exact(["red", "green", "blue"], [0.5, 0.3, 0.2]),
        "member": exact(["yes", "no"], [0.7, 0.3]),
    })


COLUMNS = {"numeric": ["x", "y"], "categorical": ["colour", "member"]}


# ------------------------------------------------------------------------------------ real data


def test_july_drifts_away_from_the_first_half_year(july):
    frame = july["frame"]
    assert list(frame.index) == training.BIKE_NUMERIC + training.BIKE_CATEGORICAL
    assert list(frame.columns[:4]) == ["method", "score", "threshold", "drifted"]
    assert frame["drifted"].dtype == bool
    # summer is warmer: the temperatures moved by more than a reference standard deviation
    assert frame.loc[["temp", "atemp"], "drifted"].all() and (frame.loc[["temp", "atemp"], "score"] > 1).all()
    assert not frame.loc["hr", "drifted"]  # the hours of a day do not change with the month
    # 4,250 reference rows: distances, with their fixed threshold of 0.1
    assert (frame["reference_rows"] == len(july["reference"])).all() and len(july["reference"]) > 1000
    assert frame.loc["temp", "method"] == "Wasserstein distance (normed)"
    assert frame.loc["weathersit", "method"] == "Jensen-Shannon distance"
    assert frame.loc["season", "method"] == "Jensen-Shannon distance"  # numeric, but only a few values
    assert (frame["threshold"] == 0.1).all()
    assert frame.attrs["share_drifted"] == pytest.approx(frame["drifted"].mean())
    assert frame.attrs["drifted_count"] == frame["drifted"].sum()
    assert frame.attrs["dataset_drift"] is bool(frame["drifted"].mean() >= 0.5)


def test_no_network_and_no_telemetry(july):
    from evidently.telemetry import event_logger

    assert july["attempts"] == []
    assert not event_logger.is_enabled()


def test_the_html_report_is_self_contained(july):
    path = july["path"]
    assert path.is_file() and path.name == "july.html"
    page = path.read_text(encoding="utf-8")
    assert len(page) > 1_000_000  # Evidently's JavaScript, fonts and data, inlined
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", page, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page, re.IGNORECASE)
    assert "url(data:font/ttf;base64," in page
    assert "<title>July &lt;vs&gt; first half</title>" in page and "<h1" in page
    assert "4,250 rows" in page and "744 rows" in page
    assert all(f'"{column}"' in page for column in ["temp", "weathersit", "windspeed"])


# ------------------------------------------------------------------------------------ known distributions


def test_same_distribution_is_stable_small_and_large():
    small = report.evidently_drift(_normal(800, seed=1), _normal(400, seed=2), **COLUMNS)
    assert list(small["method"]) == ["K-S p_value", "K-S p_value", "chi-square p_value", "Z-test p_value"]
    assert not small["drifted"].any(), small
    assert (small["score"] > small["threshold"]).all()
    assert small.attrs["share_drifted"] == 0 and small.attrs["dataset_drift"] is False

    large = report.evidently_drift(_normal(5000, seed=3), _normal(2000, seed=4), **COLUMNS)
    assert list(large["method"]) == ["Wasserstein distance (normed)"] * 2 + ["Jensen-Shannon distance"] * 2
    assert not large["drifted"].any(), large
    assert (large["score"] < 0.05).all()  # far under the threshold of 0.1


def test_a_shifted_column_drifts_small_and_large():
    for n_reference, n_current in [(800, 400), (5000, 2000)]:
        frame = report.evidently_drift(_normal(n_reference, seed=5), _normal(n_current, seed=6, shift=1.0),
                                       **COLUMNS)  # x moves by half a standard deviation
        assert frame["drifted"].to_dict() == {"x": True, "y": False, "colour": False, "member": False}, frame
        assert frame.attrs["share_drifted"] == 0.25 and frame.attrs["drifted_count"] == 1


def test_evidently_switches_tests_above_1000_reference_rows():
    rng = np.random.default_rng(7)

    def frame(n):
        return pd.DataFrame({"x": rng.normal(size=n), "level": rng.integers(0, 3, n), "flag": rng.integers(0, 2, n),
                             "colour": rng.choice(["red", "blue", "green"], n), "member": rng.choice(["y", "n"], n)})

    columns = {"numeric": ["x", "level", "flag"], "categorical": ["colour", "member"]}
    current = frame(300)
    at_limit = report.evidently_drift(frame(1000), current, **columns)
    assert at_limit["method"].to_dict() == {"x": "K-S p_value", "level": "chi-square p_value", "flag": "Z-test p_value",
                                            "colour": "chi-square p_value", "member": "Z-test p_value"}
    assert (at_limit["threshold"] == 0.05).all()
    over = report.evidently_drift(frame(1001), current, **columns)
    assert over["method"].to_dict() == {"x": "Wasserstein distance (normed)", "level": "Jensen-Shannon distance",
                                        "flag": "Jensen-Shannon distance", "colour": "Jensen-Shannon distance",
                                        "member": "Jensen-Shannon distance"}
    assert (over["threshold"] == 0.1).all()
    # the rule counts non-missing reference values: 1,001 rows with one missing value are 1,000
    with_gap = frame(1001)
    with_gap.loc[0, "x"] = np.nan
    counted = report.evidently_drift(with_gap, current, numeric=["x"], categorical=[])
    assert counted.loc["x", "method"] == "K-S p_value" and counted.loc["x", "reference_rows"] == 1000


def test_evidentlys_chi_square_is_a_goodness_of_fit_test():
    """Why agreement() says Evidently's chi-square "flags drift more often": it takes the reference
    proportions as exact, so two samples of one distribution fail it far more often than 5 % of the time."""
    from scipy.stats import chi2_contingency

    from evidently.legacy.calculations.stattests import chi_stat_test
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(12)
    theirs = ours = 0
    for _ in range(400):
        reference, current = (pd.Series(rng.choice(["a", "b", "c"], 500)) for _ in range(2))
        theirs += chi_stat_test(reference, current, ColumnType.Categorical, None).drifted
        counts = pd.DataFrame({"r": reference.value_counts(), "c": current.value_counts()}).fillna(0)
        ours += chi2_contingency(counts.T.to_numpy(), correction=False).pvalue < 0.05
    assert theirs / 400 > 0.15 and ours / 400 < 0.1 and theirs > 2 * ours  # nominal: 5 % each


# ------------------------------------------------------------------------------------ files and MLflow


def test_default_path_is_in_the_workspace(home):
    reference, current = _normal(300, seed=8), _normal(200, seed=9)
    path = report.evidently_report(reference, current, **COLUMNS, title="Week 12 vs. training (v2)")
    assert path == home.resolve() / "monitoring" / "reports" / "week-12-vs-training-v2.html"
    assert path.stat().st_size > 100_000
    again = report.evidently_report(reference, current, **COLUMNS)  # default title; a folder as path
    assert again.name == "data-drift.html"
    into = report.evidently_report(reference, current, **COLUMNS, path=home)
    assert into == home.resolve() / "data-drift.html"


def test_log_to_mlflow_needs_a_run_and_logs_the_file(home):
    reference, current = _normal(300, seed=10), _normal(200, seed=11)
    config.use_workspace("monitoring-report")
    with pytest.raises(ReportError, match=r"mlflow\.start_run\(\)"):
        report.evidently_report(reference, current, **COLUMNS, title="no run", log_to_mlflow=True)
    assert not (home / "monitoring" / "reports" / "no-run.html").exists()  # refused before any work
    with mlflow.start_run() as run:
        path = report.evidently_report(reference, current, **COLUMNS, title="Week 1", log_to_mlflow=True)
    logged = [item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id, "monitoring")]
    assert logged == ["monitoring/week-1.html"]
    copy = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="monitoring/week-1.html",
                                               dst_path=str(home / "download"))
    assert open(copy, encoding="utf-8").read() == path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ agreement


def _ours(rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["test", "verdict", "reason"])
    frame["drifted"] = frame["verdict"] == "drift"
    frame.index.name = "feature"
    return frame


def _theirs(rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["method", "score", "threshold", "drifted", "type",
                                                                 "reference_rows", "distinct"])
    frame.index.name = "feature"
    return frame


WASSERSTEIN, JS = "Wasserstein distance (normed)", "Jensen-Shannon distance"


def test_agreement_rate_excludes_what_we_cannot_judge():
    ours = _ours({"temp": ("ks", "drift", ""), "hr": ("ks", "stable", ""), "weathersit": ("chi2", "stable", ""),
                  "hum": ("ks", "drift", "KS p = 1e-05, PSI 0.12, Wasserstein 0.060 sigma: significant and material"),
                  "windspeed": ("ks", "cannot judge", "3 values in the window, fewer than min_current=30")})
    theirs = _theirs({"temp": (WASSERSTEIN, 1.6, 0.1, True, "numeric", 4380, 48),
                      "hr": (WASSERSTEIN, 0.02, 0.1, False, "numeric", 4380, 24),
                      "weathersit": (JS, 0.05, 0.1, False, "categorical", 4380, 4),
                      "hum": (WASSERSTEIN, 0.06, 0.1, False, "numeric", 4380, 87),
                      "windspeed": (WASSERSTEIN, 0.5, 0.1, True, "numeric", 4380, 3)})
    result = report.agreement(ours, theirs)
    assert isinstance(result, Agreement)
    assert (result.rate, result.judged, result.agreed, result.cannot_judge) == (0.75, 4, 3, ["windspeed"])
    assert list(result.table.columns) == ["ours", "theirs", "method", "agree", "why"]
    assert result.table.index.name == "feature"
    assert pd.isna(result.table.loc["windspeed", "agree"]) and "cannot judge" in result.table.loc["windspeed", "why"]
    assert list(result.disagreements.index) == ["hum"]
    why = result.disagreements.loc["hum", "why"]
    assert "Evidently used Wasserstein distance (normed) because the reference has 4,380 rows (> 1,000)" in why
    assert "not its significance" in why and "our KS test found a significant shift" in why and "0.060" in why
    assert result.table.loc[["temp", "hr", "weathersit"], "why"].eq("").all()
    no_reasons = report.agreement(ours.assign(reason=np.nan), theirs)
    assert "nan" not in no_reasons.disagreements.loc["hum", "why"]
    assert no_reasons.table.loc["windspeed", "why"] == "left out: our statistics cannot judge this feature"
    assert str(result) == result.summary() == (
        "Evidently agrees on 3 of 4 features (75 %); our statistics cannot judge 1 more (windspeed)")
    assert "rate=0.75" in repr(result) and "why" not in repr(result)


@pytest.mark.parametrize("mine, other, words", [
    (("chi2", "stable", "chi2 p = 0.09, PSI 0.010: within sampling noise"),
     ("chi-square p_value", 0.01, 0.05, True, "categorical", 800, 3),
     ["ran a chi-square test because the reference has 800 rows (≤ 1,000)", "goodness-of-fit",
      "noise in both samples"]),
    (("ks", "stable", "KS p = 0.3, PSI 0.01, Wasserstein 0.02 sigma: within sampling noise"),
     ("chi-square p_value", 0.001, 0.05, True, "numeric", 600, 4),
     ["'season' has only 4 distinct values (≤ 5)", "while our KS test found no drift"]),
    (("ks", "stable", "KS p = 0.001, PSI 0.01, Wasserstein 0.02 sigma: significant but too small to matter"),
     ("K-S p_value", 0.001, 0.05, True, "numeric", 900, 60),
     ["ran a K-S test", "p-value alone", "large enough to matter"]),
    (("ks", "stable", "KS p = 0.4, PSI 0.01, Wasserstein 0.02 sigma: within sampling noise"),
     (JS, 0.2, 0.1, True, "numeric", 5000, 2),
     ["Evidently used Jensen-Shannon distance", "5,000 rows (> 1,000)", "only 2 distinct values",
      "reaches Evidently's threshold 0.1"]),
    (("ks", "stable", "KS p = 1, PSI 0.12, Wasserstein 0.15 sigma: within sampling noise"),
     ("Z-test p_value", 0.033, 0.05, True, "numeric", 900, 2),
     ["Evidently ran a Z-test because the reference has 900 rows (≤ 1,000) and 'season' has only 2 distinct"]),
    (("ks", "drift", "missing values rose from 0% to 40%"),
     (WASSERSTEIN, 0.01, 0.1, False, "numeric", 5000, 50),
     ["rise in missing values", "drops missing values"]),
])
def test_each_disagreement_is_explained(mine, other, words):
    result = report.agreement(_ours({"season": mine}), _theirs({"season": other}))
    assert result.rate == 0 and list(result.disagreements.index) == ["season"]
    why = result.disagreements.loc["season", "why"]
    for word in words:
        assert word in why, why
    assert why.endswith(f"Ours: {mine[2]}.") and "test test" not in why


def test_agreement_with_evidentlys_own_frame(july):
    theirs = july["frame"]
    ours = pd.DataFrame({"test": ["chi2" if f in training.BIKE_CATEGORICAL else "ks" for f in theirs.index],
                         "drifted": theirs["drifted"].to_numpy()}, index=theirs.index)
    ours["verdict"] = np.where(ours["drifted"], "drift", "stable")
    assert report.agreement(ours, theirs).summary() == "Evidently agrees on 10 of 10 features (100 %)"
    ours.loc["temp", ["drifted", "verdict"]] = [False, "stable"]
    ours.loc["hr", "verdict"] = "cannot judge"
    result = report.agreement(ours, theirs)
    assert (result.judged, result.agreed, list(result.disagreements.index)) == (9, 8, ["temp"])
    assert "4,250 rows (> 1,000)" in result.disagreements.loc["temp", "why"]


def test_nothing_judged_and_bad_frames():
    ours = _ours({"a": ("ks", "cannot judge", "")})
    theirs = _theirs({"a": (WASSERSTEIN, 0.5, 0.1, True, "numeric", 5000, 40)})
    result = report.agreement(ours, theirs)
    assert np.isnan(result.rate) and result.judged == 0
    assert result.summary() == "No feature to compare: our statistics cannot judge any of 1 (a)"
    with pytest.raises(ReportError, match=r"ours lacks column\(s\) 'verdict'"):
        report.agreement(ours.drop(columns="verdict"), theirs)
    with pytest.raises(ReportError, match=r"theirs lacks column\(s\) 'method'"):
        report.agreement(ours, theirs.drop(columns="method"))
    with pytest.raises(ReportError, match=r"only Evidently's has \['b'\]"):
        report.agreement(ours, pd.concat([theirs, theirs.rename(index={"a": "b"})]))
    with pytest.raises(ReportError, match="verdict"):
        report.agreement(ours.assign(verdict="maybe"), theirs)
    with pytest.raises(ReportError, match="more than once"):
        report.agreement(pd.concat([ours, ours]), theirs)


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_gets_clear_errors(bikes):
    reference, current = bikes.iloc[:500], bikes.iloc[500:800]
    columns = {"numeric": ["temp", "hum"], "categorical": ["weathersit"]}
    assert issubclass(ReportError, ValueError)
    with pytest.raises(ReportError, match="current data has no rows"):
        report.evidently_drift(reference, current.iloc[:0], **columns)
    with pytest.raises(ReportError, match="reference data has no rows"):
        report.evidently_report(reference.iloc[:0], current, **columns)
    with pytest.raises(ReportError, match=r"no column 'tmp' \(did you mean 'temp'"):
        report.evidently_drift(reference, current, numeric=["tmp"], categorical=[])
    with pytest.raises(ReportError, match="current data has no column 'hum'"):
        report.evidently_drift(reference, current.drop(columns="hum"), **columns)
    with pytest.raises(ReportError, match="'hum' listed as both numeric and categorical"):
        report.evidently_drift(reference, current, numeric=["temp", "hum"], categorical=["hum"])
    with pytest.raises(ReportError, match="'weathersit' is listed as numeric"):
        report.evidently_drift(reference, current, numeric=["weathersit"], categorical=[])
    with pytest.raises(ReportError, match="'hum' has no values in the current data"):
        report.evidently_drift(reference, current.assign(hum=np.nan), **columns)
    with pytest.raises(ReportError, match="No columns to compare"):
        report.evidently_drift(reference, current, numeric=[], categorical=[])
    with pytest.raises(ReportError, match="must be a pandas DataFrame"):
        report.evidently_drift(reference, current["temp"], **columns)
