"""A/B experiments: sticky assignment, sample size, SRM, the verdict, A/A tests and peeking."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from mlops_lab.deployment import experiment
from mlops_lab.deployment.experiment import (
    aa_false_positive_rate,
    assign,
    bucket,
    decide,
    peeking_table,
    sample_size,
    srm_check,
)

pytestmark = pytest.mark.unit

KEYS = [f"user-{i}" for i in range(100_000)]
HALF = {"a": 50, "b": 50}


def _shares(assigned: list[str], variants) -> dict[str, float]:
    return {v: 100 * sum(a == v for a in assigned) / len(assigned) for v in variants}


def _users(rates: dict[str, float], per_arm: int, seed: int = 0) -> pd.DataFrame:
    """One row per simulated user: variant and a Bernoulli(rate) success."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "variant": np.repeat(list(rates), per_arm),
        "success": np.concatenate([(rng.random(per_arm) < r).astype(int) for r in rates.values()]),
    })


# --- sticky assignment --------------------------------------------------------------------------

def test_bucket_is_the_documented_hash():
    digest = hashlib.sha256(b"exp1:alice").digest()
    assert bucket("alice", "exp1") == int.from_bytes(digest[:8], "big") / 2**64
    assert 0 <= bucket("alice") < 1
    assert bucket("alice", "exp1") != bucket("alice", "exp2")


def test_assign_is_deterministic_and_the_salt_reshuffles():
    weights = {"a": 50, "b": 50}
    first = [assign(k, weights, salt="exp1") for k in KEYS[:2000]]
    assert first == [assign(k, weights, salt="exp1") for k in KEYS[:2000]]
    other = [assign(k, weights, salt="exp2") for k in KEYS[:2000]]
    moved = sum(x != y for x, y in zip(first, other)) / len(first)
    assert 0.4 < moved < 0.6, f"an independent salt should move about half the users, moved {moved:.2f}"


def test_canary_growth_keeps_canary_users_and_matches_the_weights():
    on_canary = []
    for share in (10, 25, 50):
        weights = {"stable": 100 - share, "canary": share}
        assigned = [assign(k, weights, salt="credit-canary") for k in KEYS]
        shares = _shares(assigned, weights)
        for v, w in weights.items():
            assert abs(shares[v] - w) < 1.0, f"{v} got {shares[v]:.2f}% of 100k keys for a weight of {w}"
        on_canary.append({k for k, a in zip(KEYS, assigned) if a == "canary"})
    assert on_canary[0] < on_canary[1] < on_canary[2], "a growing canary must only gain users"


def test_a_weight_of_zero_never_gets_traffic():
    for weights in ({"off": 0, "a": 50, "b": 50}, {"a": 50, "off": 0, "b": 50}, {"a": 50, "b": 50, "off": 0}):
        assigned = {assign(k, weights) for k in KEYS[:20_000]}
        assert assigned == {"a", "b"}, weights
    assert {assign(k, {"a": 100, "b": 0}) for k in KEYS[:1000]} == {"a"}


@pytest.mark.parametrize("weights, message", [
    ({"a": 50, "b": 40}, "sum to 100; these sum to 90"),
    ({"a": 110, "b": -10}, r"weights\['b'\] must be >= 0; got -10"),
    ({"a": float("nan"), "b": 50}, r"weights\['a'\] must be a number"),
    ({"a": "50", "b": 50}, r"weights\['a'\] must be a number .* got '50'"),
    ({"a": True, "b": 99}, r"weights\['a'\] must be a number"),
    ({}, "weights must map variants"),
])
def test_bad_weights_are_refused_with_the_argument_named(weights, message):
    with pytest.raises(ValueError, match=message):
        assign("alice", weights)


def test_a_key_must_be_a_string():
    with pytest.raises(TypeError, match="key must be a string .* int 42"):
        assign(42, HALF)


def test_the_vectorised_split_is_the_same_as_assign():
    weights = {"a": 30, "off": 0, "b": 45, "c": 25}
    keys = KEYS[:5000]
    u = experiment._buckets(keys, salt="s")
    assert u.tolist() == [bucket(k, "s") for k in keys]
    names = list(weights)
    fast = [names[i] for i in experiment._assign_indices(u, weights)]
    assert fast == [assign(k, weights, salt="s") for k in keys]


# --- sample size --------------------------------------------------------------------------------

def test_sample_size_matches_the_power_formula():
    assert sample_size(0.3, 0.05) == 1376
    # cross-check: for Cohen's h the normal approximation is n = 2 * ((z_(1-alpha/2) + z_power) / h)^2
    h = proportion_effectsize(0.35, 0.30)
    by_hand = 2 * ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / h) ** 2
    assert math.ceil(by_hand) == 1376


def test_smaller_effects_and_stricter_tests_need_more_users():
    sizes = [sample_size(0.3, e) for e in (0.10, 0.05, 0.02, 0.01)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert 3.5 < sample_size(0.3, 0.025) / sample_size(0.3, 0.05) < 4.5  # half the effect, ~4x the users
    assert sample_size(0.3, 0.05, alpha=0.01) > sample_size(0.3, 0.05)
    assert sample_size(0.3, 0.05, power=0.9) > sample_size(0.3, 0.05)
    assert sample_size(0.3, 0.05, ratio=2) < sample_size(0.3, 0.05)  # a bigger treatment arm helps control


@pytest.mark.parametrize("kwargs, message", [
    (dict(baseline=0.0, minimum_effect=0.05), "baseline must be strictly between 0 and 1; got 0.0"),
    (dict(baseline=0.3, minimum_effect=0), "minimum_effect must be a non-zero"),
    (dict(baseline=0.98, minimum_effect=0.05), "baseline \\+ minimum_effect must stay between 0 and 1"),
    (dict(baseline=0.3, minimum_effect=0.05, power=1.2), "power must be strictly between 0 and 1; got 1.2"),
    (dict(baseline=0.3, minimum_effect=0.05, ratio=0), "ratio .* must be > 0; got 0"),
])
def test_sample_size_refuses_impossible_plans(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_size(**kwargs)


# --- sample ratio mismatch ----------------------------------------------------------------------

def test_srm_flags_a_broken_split_and_passes_a_healthy_one():
    broken = srm_check({"a": 5200, "b": 4800}, HALF)
    assert broken.mismatch and broken.p_value == pytest.approx(6.3e-5, rel=0.02)
    assert "sample ratio mismatch" in broken.message
    assert broken.expected == {"a": 5000.0, "b": 5000.0}
    healthy = srm_check({"a": 5030, "b": 4970}, HALF)
    assert not healthy.mismatch and healthy.p_value > 0.5
    assert not srm_check({"stable": 9040, "canary": 960}, {"stable": 90, "canary": 10}).mismatch
    assert srm_check({"stable": 5000, "canary": 5000}, {"stable": 90, "canary": 10}).mismatch


def test_srm_flags_traffic_on_a_weight_zero_variant_and_names_unknown_variants():
    stray = srm_check({"a": 5000, "b": 4990, "off": 10}, {"a": 50, "b": 50, "off": 0})
    assert stray.mismatch and "weight-0" in stray.message
    assert not srm_check({"a": 5000, "b": 5000}, {"a": 50, "b": 50, "off": 0}).mismatch
    with pytest.raises(ValueError, match=r"not in weights: \['c'\]"):
        srm_check({"a": 10, "c": 10}, HALF)
    with pytest.raises(ValueError, match=r"counts\['a'\] must be a non-negative whole number; got -1"):
        srm_check({"a": -1, "b": 10}, HALF)


# --- the verdict --------------------------------------------------------------------------------

def test_decide_refuses_a_verdict_on_a_sample_ratio_mismatch():
    # a big, real difference that would "win" easily, on a split that is visibly broken
    decision = decide({"a": (1500, 5000), "b": (1800, 4000)}, HALF)
    assert decision.verdict == "no verdict: sample ratio mismatch"
    assert decision.winner is None and decision.p_value is None and decision.difference is None
    assert decision.srm.mismatch
    assert str(decision).startswith("no verdict: sample ratio mismatch")


def test_decide_finds_a_real_effect():
    decision = decide(_users({"a": 0.30, "b": 0.40}, 3000), HALF)
    assert decision.verdict == "treatment wins" and decision.winner == "b"
    assert decision.p_value < 1e-6 and 0 < decision.ci_low < decision.difference < decision.ci_high
    frame = decision.to_frame()
    assert frame["variant"].tolist() == ["a", "b"] and frame["trials"].tolist() == [3000, 3000]
    assert frame.loc[1, "rate"] == pytest.approx(0.40, abs=0.03)
    summary = decision.summary()
    assert summary["winner"] == "b" and summary["difference"] == round(decision.difference, 4)
    assert str(decision).startswith("treatment wins: b ")
    # the same users as counts give the same decision; with the roles swapped the control wins
    counts = {v: (int(g.sum()), len(g)) for v, g in _users({"a": 0.30, "b": 0.40}, 3000).groupby("variant")["success"]}
    assert decide(counts, HALF).p_value == pytest.approx(decision.p_value)
    assert decide(counts, {"b": 50, "a": 50}).verdict == "control wins"


def test_decide_says_no_difference_for_equal_rates():
    decision = decide(_users({"a": 0.30, "b": 0.30}, 3000, seed=1), HALF)
    assert decision.verdict == "no significant difference" and decision.winner is None
    assert decision.p_value >= 0.05 and decision.ci_low < 0 < decision.ci_high


def test_decide_waits_for_the_planned_sample_size():
    early = decide(_users({"a": 0.30, "b": 0.40}, 400), HALF, minimum_effect=0.05, baseline=0.30)
    assert early.verdict == "not enough data yet (need 1376 per arm)" and early.winner is None
    assert early.p_value is not None and early.required == (1376, 1376)  # still reported
    later = decide(_users({"a": 0.30, "b": 0.40}, 3000), HALF, minimum_effect=0.05, baseline=0.30)
    assert later.verdict == "treatment wins"


def test_decide_rejects_what_it_cannot_read():
    with pytest.raises(ValueError, match="exactly two variants"):
        decide({"a": (1, 10), "b": (1, 10), "c": (1, 10)}, {"a": 40, "b": 30, "c": 30})
    with pytest.raises(ValueError, match=r"outcomes\['success'\] must hold only 0 and 1; got \[2\]"):
        decide(pd.DataFrame({"variant": ["a", "b"], "success": [1, 2]}), HALF)
    with pytest.raises(ValueError, match="missing \\['success'\\]"):
        decide(pd.DataFrame({"variant": ["a", "b"]}), HALF)
    with pytest.raises(ValueError, match=r"more successes than trials"):
        decide({"a": (11, 10), "b": (1, 10)}, HALF)
    with pytest.raises(ValueError, match="give minimum_effect too"):
        decide({"a": (1, 10), "b": (1, 10)}, HALF, baseline=0.3)


# --- A/A tests and peeking ----------------------------------------------------------------------

def test_the_numpy_z_test_is_statsmodels_z_test():
    s1, n1, s2, n2 = np.array([30, 310, 0]), np.array([100, 1000, 50]), np.array([41, 290, 0]), np.array([95, 1010, 40])
    ours = experiment._z_test_p(s1, n1, s2, n2)
    for i in range(2):
        assert ours[i] == pytest.approx(proportions_ztest([s1[i], s2[i]], [n1[i], n2[i]])[1], rel=1e-9)
    assert ours[2] == 1.0  # no successes anywhere: no test possible, no winner


RUNS, USERS = 500, 1000


def test_an_aa_test_read_once_is_wrong_about_alpha_of_the_time():
    fpr = aa_false_positive_rate(runs=RUNS, users=USERS, alpha=0.05, seed=42)
    # two binomial standard errors of a 5 % rate over RUNS runs: the noise margin of the estimate
    margin = 2 * math.sqrt(0.05 * 0.95 / RUNS)
    assert fpr <= 0.05 + margin, f"A/A false positive rate {fpr:.3f} above 0.05 + {margin:.3f}"
    assert fpr >= 0.05 - margin, f"A/A false positive rate {fpr:.3f} suspiciously low (is a test run at all?)"
    split = experiment._aa_assignments(RUNS, USERS).mean()
    assert abs(split - 0.5) < 0.01, f"the A/A split should be 50/50, got {split:.3f}"


def test_peeking_inflates_the_false_positive_rate():
    fpr = aa_false_positive_rate(runs=RUNS, users=USERS, alpha=0.05, peek_every=100, seed=42)
    assert fpr > 0.10, f"peeking every 100 users should declare far more false winners, got {fpr:.3f}"


def test_peeking_table_grows_with_the_number_of_looks():
    table = peeking_table(runs=RUNS, users=USERS, peeks=(None, 500, 100), seed=42)
    assert table.columns.tolist() == ["peek_every", "looks", "false_positive_rate", "noise_margin"]
    assert table["looks"].tolist() == [1, 2, 10]
    assert pd.isna(table.loc[0, "peek_every"]) and table.loc[2, "peek_every"] == 100
    # nested looks on the same simulated users: more looks can only add false winners
    assert table["false_positive_rate"].is_monotonic_increasing
    assert table.loc[2, "false_positive_rate"] > table.loc[0, "false_positive_rate"] + 0.05
    with pytest.raises(ValueError, match="peek_every must be a whole number >= 1; got 0"):
        aa_false_positive_rate(runs=2, users=10, peek_every=0)
