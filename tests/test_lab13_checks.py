"""Lab 13's checks decide both ways on wrong answers, not only on the untouched copy."""

from __future__ import annotations

import pytest

from mlops_lab import monitoring
from mlops_lab.grading import drift_monitoring as checks

pytestmark = pytest.mark.unit

RULE = """
groups:
  - name: lab
    rules:
      - alert: LabFeatureDrift
        expr: mlops_monitor_drift_score{{statistic="psi"}} > {threshold}
        for: 10m
        labels: {{severity: warning}}
"""


def test_thresholds_too_eager_or_too_blind_fail_and_sensible_ones_pass():
    assert checks.thresholds_measured({"thresholds": monitoring.Thresholds(alpha=0.01, psi=0.25, wasserstein=0.15)}).passed
    eager = checks.thresholds_measured({"thresholds": monitoring.Thresholds(alpha=0.5, psi=0.02, wasserstein=0.02)})
    assert not eager.passed and "too eager" in eager.detail
    blind = checks.thresholds_measured({"thresholds": monitoring.Thresholds(psi=3, wasserstein=3)})
    assert not blind.passed and "too blind" in blind.detail


def test_the_wrong_month_and_the_wrong_features_fail():
    reference, windows = checks.stream()
    timeline = checks.monitor_for().run(windows)
    month = timeline.first_alarm()
    assert checks.drift_month_found({"timeline": timeline, "first_drift_month": month}).passed
    assert not checks.drift_month_found({"timeline": timeline, "first_drift_month": "Jan"}).passed
    assert checks.features_explained({"moved": ["credit_amount", "purpose"]}).passed
    assert "did not move" in checks.features_explained({"moved": ["credit_amount", "purpose", "age"]}).detail
    assert "moved too" in checks.features_explained({"moved": ["credit_amount"]}).detail


def test_a_rule_must_fire_on_the_drift_month_and_stay_silent_on_the_stable_one():
    from promstack import need

    need("promtool")
    assert checks.alert_rule_written({"alert_rules": RULE.format(threshold=0.3)}).passed
    noisy = checks.alert_rule_written({"alert_rules": RULE.format(threshold=0.12)})
    assert not noisy.passed and "fires on June" in noisy.detail
    deaf = checks.alert_rule_written({"alert_rules": RULE.format(threshold=2)})
    assert not deaf.passed and "stays silent on Aug" in deaf.detail
    renamed = checks.alert_rule_written({"alert_rules": RULE.format(threshold=0.3).replace("LabFeatureDrift", "X")})
    assert "no alert named 'LabFeatureDrift'" in renamed.detail
    broken = checks.alert_rule_written({"alert_rules": "groups:\n  - name: lab\n    rules:\n      - alert: LabFeatureDrift\n"})
    assert not broken.passed and "expr" in broken.detail
