"""The HPA rule on hand-built load traces: proposal, tolerance, stabilisation, rate limits, bad metrics."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlops_lab import scaling

pytestmark = pytest.mark.unit


def test_the_proposal_is_the_hpa_formula():
    scaler = scaling.Autoscaler(scaling.Policy(target=10, max_replicas=20))
    decision = scaler.decide(0, 4, 25.0)  # 4 replicas at 25 per replica, target 10: ceil(10) = 10
    assert decision.proposal == 10 and decision.ratio == 2.5
    assert decision.desired == 8  # but the scale-up rate allows +4 or +100 % per 15 s: 8
    assert "ceil(4 x 25 / 10) = 10" in decision.reason and "limited to 8 by the scale-up rate" in decision.reason
    assert scaler.decide(15, 8, 12.5).desired == 10  # a period later, the rest


def test_a_ratio_within_the_tolerance_changes_nothing_and_one_beyond_it_does():
    policy = scaling.Policy(target=10, max_replicas=10)
    assert scaling.Autoscaler(policy).decide(0, 3, 10.9).desired == 3
    assert "within the 10% tolerance" in scaling.Autoscaler(policy).decide(0, 3, 9.1).reason
    assert scaling.Autoscaler(policy).decide(0, 3, 11.1).desired == 4  # ceil(3.33)


def test_a_short_dip_does_not_remove_replicas_inside_the_scale_down_window():
    scaler = scaling.Autoscaler(scaling.Policy(target=10, max_replicas=8, scale_down_window_s=60))
    assert scaler.decide(0, 2, 20.0).desired == 4
    dip = scaler.decide(15, 4, 2.0)  # proposes 1, but 4 was proposed 15 s ago
    assert dip.proposal == 1 and dip.desired == 4 and "held at 4 by the scale-down window" in dip.reason
    assert scaler.decide(45, 4, 2.0).desired == 4
    later = scaler.decide(61, 4, 2.0)  # the proposal of 4 is older than 60 s now
    assert later.desired == 1 and later.change == -3


def test_a_scale_up_window_waits_for_a_sustained_rise():
    scaler = scaling.Autoscaler(scaling.Policy(target=10, max_replicas=8, scale_up_window_s=30, scale_down_window_s=0))
    assert scaler.decide(0, 2, 10.0).desired == 2
    spike = scaler.decide(15, 2, 30.0)  # the lowest proposal of the last 30 s is still 2
    assert spike.proposal == 6 and spike.desired == 2 and "scale-up window" in spike.reason
    assert scaler.decide(31, 2, 30.0).desired == 6  # only the two high proposals are left in the window


def test_limits_bound_every_decision():
    scaler = scaling.Autoscaler(scaling.Policy(target=10, min_replicas=2, max_replicas=5, scale_down_window_s=0))
    assert scaler.decide(0, 2, 1000.0).desired == 5
    assert scaler.decide(15, 5, 0.0).desired == 2


def test_the_scale_down_rate_limits_falls_per_period():
    scaler = scaling.Autoscaler(scaling.Policy(target=10, max_replicas=10, scale_down_window_s=0,
                                               scale_down_percent=50))
    first = scaler.decide(0, 8, 1.0)
    assert first.desired == 4 and "scale-down rate" in first.reason
    assert scaler.decide(5, 4, 2.0).desired == 4  # within the same 15 s: the 50 % are spent
    assert scaler.decide(16, 4, 2.0).desired == 2


@pytest.mark.parametrize("metric", [None, float("nan"), float("inf"), -1.0, "12"])
def test_a_missing_or_unusable_metric_makes_no_decision(metric):
    scaler = scaling.Autoscaler(scaling.Policy(target=10, max_replicas=8))
    decision = scaler.decide(0, 3, metric)
    assert decision.desired == 3 and decision.proposal is None and "no scaling decision" in decision.reason
    assert scaler.proposals == []  # nothing recorded to stabilise on later


@pytest.mark.parametrize("settings, words", [
    ({"target": 10, "min_replicas": 5, "max_replicas": 2}, "min_replicas (5) is above max_replicas (2)"),
    ({"target": 0}, "target must be a positive number"),
    ({"target": float("nan")}, "target must be a positive number"),
    ({"target": 10, "min_replicas": 0}, "min_replicas must be a whole number of at least 1"),
    ({"target": 10, "tolerance": 1.5}, "tolerance must be from 0 to below 1"),
    ({"target": 10, "scale_down_window_s": -5}, "scale_down_window_s cannot be negative"),
    ({"target": 10, "scale_down_percent": 150}, "scale_down_percent must be above 0 and at most 100"),
])
def test_limits_that_contradict_each_other_are_refused(settings, words):
    with pytest.raises(scaling.ScalingPolicyError, match=words.replace("(", r"\(").replace(")", r"\)")):
        scaling.Policy(**settings)


def test_time_going_backwards_and_zero_replicas_are_refused():
    scaler = scaling.Autoscaler(scaling.Policy(target=10))
    scaler.decide(30, 1, 5.0)
    with pytest.raises(ValueError, match="time went backwards"):
        scaler.decide(15, 1, 5.0)
    with pytest.raises(ValueError, match="at least 1"):
        scaler.decide(45, 0, 5.0)


def test_a_day_shaped_trace_scales_up_with_the_morning_and_down_after_the_window():
    hours = pd.DataFrame({"time_s": [15 * i for i in range(40)],
                          "load": [5] * 8 + [80] * 12 + [5] * 20})  # quiet, a rush, quiet again
    out = scaling.replay(scaling.Policy(target=10, max_replicas=6, scale_down_window_s=120), hours)
    assert list(out.columns[:3]) == ["time_s", "load", "current"]
    assert out["desired"].iloc[:8].eq(1).all()
    assert out["desired"].iloc[8] == 5 and "scale-up rate" in out["reason"].iloc[8]  # 80 wants 8: +4 at once
    assert out["desired"].iloc[9:20].eq(6).all()  # then max_replicas
    held = out["desired"].iloc[20:28]
    assert held.eq(6).all() and out["desired"].iloc[28] == 1  # 120 s of stabilisation: eight syncs held
    assert out["desired"].iloc[-1] == 1
    assert math.isnan(scaling.replay(scaling.Policy(target=10), pd.DataFrame(
        {"time_s": [0, 15], "load": [5.0, float("nan")]}))["metric"].iloc[1])
    with pytest.raises(ValueError, match="lacks the column"):
        scaling.replay(scaling.Policy(target=10), hours.rename(columns={"load": "rps"}))


def test_the_policy_as_kubernetes_objects_is_valid_and_says_the_same():
    from mlops_lab.deployment import manifests

    policy = scaling.Policy(target=2.5, min_replicas=1, max_replicas=4, scale_down_window_s=60, scale_up_pods=2)
    objects = scaling.manifests(policy, name="credit-risk", model_uri="models:/credit-risk/1",
                                artifact_uri="s3://models/credit-risk/1")
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"]
    checked = manifests.validate(objects)
    assert checked["ok"].all(), checked.to_dict("records")
    assert "Kubernetes 1.33 schema" in checked.set_index("kind").loc["HorizontalPodAutoscaler", "validated_against"]
    deployment, _, hpa, isvc = objects
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "2500m"}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 60 and behavior["scaleUp"]["policies"][0]["value"] == 2
    annotations = isvc["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/metric"] == "rps" and annotations["autoscaling.knative.dev/target"] == "2500m"
    assert annotations["autoscaling.knative.dev/scale-down-delay"] == "60s"
    assert (isvc["spec"]["predictor"]["minReplicas"], isvc["spec"]["predictor"]["maxReplicas"]) == (1, 4)
    hpa["spec"]["behavior"]["scaleUp"]["stabilisationWindow"] = 30  # a misspelt field, as kubectl would see it
    broken = manifests.validate(objects).set_index("kind").loc["HorizontalPodAutoscaler"]
    assert not broken["ok"] and "stabilisationWindow" in broken["message"]


# -- a day of traffic --------------------------------------------------------------------------------
def _bikes(day="2011-09-07", hours=range(24)):
    stamps = [pd.Timestamp(day) + pd.Timedelta(hours=h) for h in hours]
    return pd.DataFrame({"timestamp": stamps, "bikers": [10 + 5 * h for h in hours]})


def test_a_day_of_rentals_becomes_a_rate_peaking_where_the_riders_do():
    table = scaling.day_traffic(_bikes(), "2011-09-07", peak_rps=60, low_rps=5, seconds_per_hour=2)
    assert list(table["hour"]) == list(range(24))
    assert table["rate"].max() == 60 and table.loc[table["bikers"].idxmax(), "rate"] == 60
    assert table["rate"].min() == pytest.approx(max(5, 10 / 125 * 60))
    assert list(table["start_s"])[:3] == [0, 2, 4] and set(table["duration_s"]) == {2}
    assert scaling.phases(table)[23] == (60.0, 2.0)


def test_a_day_not_in_the_data_or_with_hours_missing_is_refused():
    with pytest.raises(ValueError, match="no Bikeshare hours on 2012-01-01"):
        scaling.day_traffic(_bikes(), "2012-01-01", peak_rps=10)
    with pytest.raises(ValueError, match=r"lacks the hour\(s\) \[3, 4\]"):
        scaling.day_traffic(_bikes(hours=[h for h in range(24) if h not in (3, 4)]), "2011-09-07", peak_rps=10)
    with pytest.raises(ValueError, match="low_rps"):
        scaling.day_traffic(_bikes(), "2011-09-07", peak_rps=10, low_rps=20)
    with pytest.raises(ValueError, match="positive"):
        scaling.day_traffic(_bikes(), "2011-09-07", peak_rps=0)


def test_the_real_data_has_the_lessons_day_complete():
    from mlops_lab import datasets

    table = scaling.day_traffic(datasets.load_bikeshare(), "2011-09-07", peak_rps=100)
    morning, night = table.loc[table["hour"] == 8, "rate"].item(), table.loc[table["hour"] == 3, "rate"].item()
    assert morning > 5 * night  # a working day: the commute peaks


def test_the_request_count_is_read_from_the_routers_exposition():
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    requests = Counter("mlops_router_requests", "Answers per variant and HTTP status code", ["variant", "code"],
                       registry=registry)  # as the router declares it
    requests.labels(variant="stable", code="200").inc(120)
    requests.labels(variant="stable", code="503").inc(3)
    requests.labels(variant="canary", code="200").inc(40)
    text = generate_latest(registry).decode()
    assert scaling.request_count(text, "stable") == 123.0
    assert scaling.request_count(text, "canary") == 40.0
    assert scaling.request_count(text, "blue") == 0.0


def test_replica_seconds_integrate_from_zero_to_the_end_only():
    table = pd.DataFrame({"time_s": [1.0, 3.0, 12.0], "alive": [1, 3, 1], "ready": [1, 1, 1]})
    assert scaling.replica_seconds(table, 10.0) == 1 * 1 + 1 * 2 + 3 * 7  # the row after the end is cut
    assert scaling.replica_seconds(table, 10.0, column="ready") == 10.0
    assert scaling.replica_seconds(table.iloc[:0], 10.0) == 0.0


def test_every_contradiction_is_listed_at_once():
    with pytest.raises(scaling.ScalingPolicyError) as raised:
        scaling.Policy(target=0, min_replicas=5, max_replicas=2)
    assert "target must be a positive number" in str(raised.value)
    assert "min_replicas (5) is above max_replicas (2)" in str(raised.value)
