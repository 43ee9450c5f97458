"""Checks for ``labs/13_monitoring.ipynb``: thresholds, the month drift starts, what moved, an alert rule.

The lab's stream is German Credit's applications arriving month by month: a random reference of
500 applications (what the model was validated on) and twelve monthly windows of
:data:`MONTH_SIZE` applications drawn from the other 500. From one month on, a broker channel
opens: its applicants ask for larger loans, and more of them for a business. The checks measure
what a student's choices do on that stream (false alarms, detection, the rule fired or silent
through ``promtool``), not what a variable claims.
"""

from __future__ import annotations

from mlops_lab.grading import Lab

EXPERIMENT = "lab-13-monitoring"
SEED = 42
MONTH_SIZE = 150
"""Applications per monthly window."""
ALERT = "LabFeatureDrift"
"""The name of the alert task 4 writes."""
STABLE_MONTH = "June"
"""A month without drift that the alert rule must stay silent on (its PSI on credit_amount is 0.15)."""
CALIBRATION_WINDOWS = 40
"""No-drift windows the thresholds check draws (its false-alarm target is at most 5 %)."""
_DRIFT_FROM = 7  # August (0-based month index): hidden from the student's view of the stream, not a secret
_AMOUNT_FACTOR, _BUSINESS_SHARE = 1.5, 0.3

LAB = Lab("13_monitoring", "Monitoring: choose thresholds, find the month drift starts, alert on it")


def stream():
    """``(reference, windows)``: the reference applications and twelve monthly :class:`Window` s."""
    import numpy as np

    from mlops_lab import datasets, monitoring, training
    from mlops_lab.monitoring import calibration

    applications = datasets.load_german_credit()[training.CREDIT_FEATURES]
    reference, pool = calibration.split_pool(applications, 500, seed=SEED)
    rng = np.random.default_rng(14)
    windows = []
    for index, month in enumerate(datasets.MONTHS):
        rows = pool.iloc[rng.choice(len(pool), MONTH_SIZE, replace=False)].reset_index(drop=True)
        if index >= _DRIFT_FROM:
            rows["credit_amount"] = (rows["credit_amount"] * _AMOUNT_FACTOR).round().astype(int)
            rows.loc[rng.random(len(rows)) < _BUSINESS_SHARE, "purpose"] = "business"
        windows.append(monitoring.Window(month, rows))
    return reference, windows


def calibration_data():
    """``(reference, pool)`` for measuring thresholds: another random split of the applications,
    so no window of the pool has drifted (what :func:`thresholds_measured` measures on)."""
    from mlops_lab import datasets, training
    from mlops_lab.monitoring import calibration

    applications = datasets.load_german_credit()[training.CREDIT_FEATURES]
    return calibration.split_pool(applications, 500, seed=SEED + 1)


def monitor_for(thresholds=None):
    """The lab's monitor on the reference (German Credit's numeric and categorical features)."""
    from mlops_lab import monitoring, training

    reference, _ = stream()
    return monitoring.Monitor(reference, numeric=training.CREDIT_NUMERIC, categorical=training.CREDIT_CATEGORICAL,
                              thresholds=thresholds)


def _truth():
    from mlops_lab import datasets

    return datasets.MONTHS[_DRIFT_FROM], {"credit_amount", "purpose"}


def _thresholds(ns: dict):
    from mlops_lab.monitoring import Thresholds

    thresholds = ns.get("thresholds")
    assert isinstance(thresholds, Thresholds), "`thresholds` should be a `monitoring.Thresholds(...)`"
    return thresholds


@LAB.check(
    "thresholds_measured",
    hint="`thresholds = monitoring.Thresholds(alpha=..., psi=..., wasserstein=...)`; measure them with "
    "`calibration.false_alarm_rate(monitor, pool, size=checks.MONTH_SIZE)` (at most 5 %) and "
    "`calibration.detection_delay(monitor, pool, 'credit_amount', size=checks.MONTH_SIZE)` (at most 2 windows).",
)
def thresholds_measured(ns: dict) -> None:
    from mlops_lab import monitoring, training
    from mlops_lab.monitoring import calibration

    thresholds = _thresholds(ns)
    reference, pool = calibration_data()
    monitor = monitoring.Monitor(reference, numeric=training.CREDIT_NUMERIC, categorical=training.CREDIT_CATEGORICAL,
                                 thresholds=thresholds)
    quiet = calibration.false_alarm_rate(monitor, pool, windows=CALIBRATION_WINDOWS, size=MONTH_SIZE, seed=SEED)
    assert quiet["rate"] <= 0.05, (f"these thresholds raise an alarm on {quiet['alarms']} of {quiet['windows']} windows "
                                   f"without drift ({quiet['rate']:.0%}, blaming {quiet['features']}): too eager")
    caught = calibration.detection_delay(monitor, pool, "credit_amount", sigmas=0.5, size=MONTH_SIZE, trials=5,
                                         before=1, after=3, seed=SEED)
    assert caught["missed"] == 0 and caught["max"] <= 2, (
        f"a 0.5-sigma shift in credit_amount went unseen in {caught['missed']} of 5 streams (delays "
        f"{caught['delays']}): too blind")


@LAB.check(
    "drift_month_found",
    hint="`timeline = monitor.run(windows)` with `monitor = checks.monitor_for(thresholds)`; "
    "`first_drift_month = timeline.first_alarm()`, and look at `timeline.frame` to be sure it is not noise.",
)
def drift_month_found(ns: dict) -> None:
    from mlops_lab import datasets
    from mlops_lab.monitoring import Timeline

    timeline = ns.get("timeline")
    assert isinstance(timeline, Timeline), "`timeline` should be what `monitor.run(windows)` returned"
    assert [c.window for c in timeline.checks] == datasets.MONTHS, "`timeline` should cover the twelve monthly windows"
    month, _ = _truth()
    found = ns.get("first_drift_month")
    assert found is not None, "set `first_drift_month` to the name of the first month that drifted (e.g. 'March')"
    assert found == month, (f"drift does not start in {found!r}: look at the months before and after it in "
                            "`timeline.frame`, and at how the thresholds decide")
    first = timeline.first_alarm()
    order = [c.window for c in timeline.checks]
    early = first is not None and order.index(first) < order.index(month)
    assert first == month, (f"your timeline's first alarm is in {first!r}, not {month!r}: with these thresholds "
                            + ("it raises a false alarm before the drift" if early else "it misses the drift's start"))


@LAB.check(
    "features_explained",
    hint="`moved = [...]`: the features `timeline.checks[...]` marks drifted in the month drift starts; "
    "`check.drift.table[['psi', 'p_value', 'reason']]` explains each.",
)
def features_explained(ns: dict) -> None:
    moved = ns.get("moved")
    assert isinstance(moved, (list, tuple, set)) and moved, "`moved` should list the features that moved"
    _, truth = _truth()
    missing, extra = truth - set(moved), set(moved) - truth
    assert not missing, f"{sorted(missing)} moved too"
    assert not extra, f"{sorted(extra)} did not move: their changes are within noise"


@LAB.check(
    "alert_rule_written",
    hint=f"`alert_rules` is the text of a Prometheus rules file with one alert named {ALERT!r}: "
    "`groups: [{name: lab, rules: [{alert: ..., expr: 'mlops_monitor_drift_score{statistic=\"psi\"} > ...', "
    "for: 10m, labels: {severity: warning}}]}]`. `checks.try_rule(alert_rules, first_drift_month)` tells you whether it fires.",
)
def alert_rule_written(ns: dict) -> None:
    from mlops_lab.monitoring import alerts

    text = ns.get("alert_rules")
    assert isinstance(text, str) and text.strip(), "`alert_rules` should hold the text of a rules file"
    try:
        rules = alerts.parse_rules(text, "alert_rules")
    except alerts.AlertRulesError as error:
        raise AssertionError(str(error)) from None
    assert any(r.name == ALERT and r.kind == "alert" for r in rules), f"the rules file has no alert named {ALERT!r}"
    assert alerts.promtool() is not None, f"the rule cannot be tested without promtool: {alerts.INSTALL_HINT}"
    month, _ = _truth()
    assert try_rule(text, month), f"{ALERT} stays silent on {month}, where drift starts"
    assert not try_rule(text, STABLE_MONTH), f"{ALERT} fires on {STABLE_MONTH}, a month without drift"


def month_metrics(month: str, thresholds=None) -> str:
    """The monitor's ``/metrics`` page after checking ``month`` (what Prometheus would scrape)."""
    from mlops_lab import monitoring

    _, windows = stream()
    window = next((w for w in windows if w.name == month), None)
    if window is None:
        raise ValueError(f"no month {month!r}; the months are {[w.name for w in windows]}")
    metrics = monitoring.MonitorMetrics()
    metrics.update(monitor_for(thresholds).check(window))
    return metrics.exposition().decode()


def try_rule(rules_text: str, month: str) -> bool:
    """Whether alert :data:`ALERT` in ``rules_text`` fires after 30 minutes of ``month``'s metrics (``promtool``)."""
    from mlops_lab.monitoring import alerts

    return bool(alerts.fires(rules_text, month_metrics(month), ALERT, job="monitor"))
