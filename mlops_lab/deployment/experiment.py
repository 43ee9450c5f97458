"""A/B experiments on the router's traffic: sticky assignment, sample size, SRM, a verdict, A/A tests.

The statistics come from the libraries: statsmodels gives the effect size and the power analysis
(``proportion_effectsize``, ``NormalIndPower``), the two-proportion z-test (``proportions_ztest``)
and the confidence interval of the difference (``confint_proportions_2indep``); scipy gives the
chi-square goodness-of-fit test (``scipy.stats.chisquare``). This module writes by hand only what
they do not do:

* :func:`assign` and :func:`bucket`, the **sticky assignment** the traffic router runs on every
  request: a SHA-256 hash of ``salt:key`` turned into a number ``u`` in [0, 1), then the variant
  whose slice of the cumulative weights contains ``u * 100``. The same user always lands on the
  same variant, and when a later-listed variant (a canary) grows from 10 % to 25 % to 50 %, every
  user already on it stays on it. No library call is needed and none is used: it must be fast and
  identical everywhere the split is computed (router, notebooks, tests).
* :func:`srm_check`, the **sample-ratio-mismatch** guard of Microsoft's ExP platform: the chi-square
  test comes from scipy, but deciding that a p-value below 0.001 means the split itself is broken
  (and that no result should be read) is the experimentation practice this module encodes.
* :func:`decide`, the **verdict**: counts per variant, the SRM check first (a broken split gets no
  verdict at all), then the z-test, the interval and, when a minimum effect is given, a refusal to
  conclude before the planned sample size is reached.
* :func:`aa_false_positive_rate` and :func:`peeking_table`, an **A/A simulation** showing that a
  test at ``alpha = 0.05`` is wrong about 5 % of the time when read once, and far more often when
  read after every batch of users ("peeking"). The z statistic at every look is computed with numpy
  on cumulative counts, because calling statsmodels once per look and per run would be thousands
  of slow calls for the same pooled formula (a test checks that both agree).

"Success" is the good outcome throughout (a conversion, an approved loan that is repaid): the
variant with the higher success rate wins.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

# scipy and statsmodels are imported where they are used: the router imports this module for
# assign() on every start, and should not pay for the statistics it never runs.

SRM_THRESHOLD = 0.001
"""The p-value under which a split counts as broken (ExP's sample-ratio-mismatch convention)."""
NO_SRM_VERDICT = "no verdict: sample ratio mismatch"
TREATMENT_WINS = "treatment wins"
CONTROL_WINS = "control wins"
NO_DIFFERENCE = "no significant difference"


# --------------------------------------------------------------------------------------------
# Sticky assignment
# --------------------------------------------------------------------------------------------

def _check_weights(weights: Mapping[str, float], name: str = "weights") -> None:
    """Raise a ValueError naming ``name`` unless it maps variants to non-negative percentages summing to 100."""
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{name} must map variants to percentages summing to 100, e.g. "
                         f"{{'a': 50, 'b': 50}}; got {weights!r}")
    total = 0.0
    for variant, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"{name}[{variant!r}] must be a number (a percentage); got {weight!r}")
        if weight < 0:
            raise ValueError(f"{name}[{variant!r}] must be >= 0; got {weight!r}")
        total += weight
    if abs(total - 100.0) > 1e-6:
        raise ValueError(f"{name} must sum to 100; these sum to {total:g} ({dict(weights)})")


def bucket(key: str, salt: str = "") -> float:
    """Return the number in [0, 1) that decides where ``key`` goes: the first 8 bytes of
    ``sha256(f"{salt}:{key}")`` read as a big-endian integer and divided by 2**64. The same key and
    salt always give the same number (the split is sticky); a different salt reshuffles every key,
    which is how two experiments on the same users are kept independent."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a string (e.g. the X-User-Id header); got {type(key).__name__} {key!r}")
    if not isinstance(salt, str):
        raise TypeError(f"salt must be a string; got {type(salt).__name__} {salt!r}")
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(key: str, weights: dict[str, float], salt: str = "") -> str:
    """Return the variant that serves ``key`` under ``weights`` (percentages summing to 100, in
    the order the variants are listed). The key's :func:`bucket` ``u`` is placed on the cumulative
    weights and the first variant whose cumulative share exceeds ``u * 100`` is chosen, so a
    variant with weight 0 never gets traffic, and growing the last-listed variant (a canary going
    10 -> 25 -> 50) only moves users onto it, never off it. This runs on every request of the
    router; it hashes once and walks the weights once."""
    _check_weights(weights)
    point = bucket(key, salt) * 100.0
    cumulative = 0.0
    last_served = None
    for variant, weight in weights.items():
        if weight > 0:
            cumulative += weight
            last_served = variant
            if cumulative > point:
                return variant
    return last_served  # float rounding left u*100 past the last boundary: the last served variant


def _buckets(keys: Iterable[str], salt: str = "") -> np.ndarray:
    """:func:`bucket` for many keys at once (one joined buffer read as big-endian uint64)."""
    prefix = f"{salt}:"
    raw = b"".join(hashlib.sha256(f"{prefix}{k}".encode()).digest()[:8] for k in keys)
    return np.frombuffer(raw, dtype=">u8") / 2**64


def _assign_indices(u: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """The index (in ``weights`` order) of the variant :func:`assign` picks for each bucket in ``u``."""
    values = list(weights.values())
    boundaries = np.array(list(accumulate(values)), dtype=float)
    index = np.searchsorted(boundaries, u * 100.0, side="right")  # first boundary > u*100
    last_served = max(i for i, w in enumerate(values) if w > 0)
    return np.minimum(index, last_served)


# --------------------------------------------------------------------------------------------
# Planning: sample size
# --------------------------------------------------------------------------------------------

def _check_probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number between 0 and 1; got {value!r}")
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1; got {value!r}")
    return float(value)


def sample_size(baseline: float, minimum_effect: float, alpha: float = 0.05, power: float = 0.8,
                ratio: float = 1.0) -> int:
    """Return the number of users the control arm needs (the treatment arm needs ``ratio`` times as
    many; with the default 1.0 this is users per arm) for a two-sided two-proportion test at level
    ``alpha`` to detect, with probability ``power``, an absolute change of ``minimum_effect`` from
    the ``baseline`` success rate (e.g. 0.30 -> 0.35 is ``baseline=0.3, minimum_effect=0.05``).
    It is Cohen's h (statsmodels ``proportion_effectsize``) fed to ``NormalIndPower().solve_power``
    and rounded up; halving the effect roughly quadruples the users."""
    baseline = _check_probability("baseline", baseline)
    alpha = _check_probability("alpha", alpha)
    power = _check_probability("power", power)
    if isinstance(minimum_effect, bool) or not isinstance(minimum_effect, (int, float)) \
            or not math.isfinite(minimum_effect) or minimum_effect == 0:
        raise ValueError(f"minimum_effect must be a non-zero absolute change in the rate (e.g. 0.02); "
                         f"got {minimum_effect!r}")
    if not 0 < baseline + minimum_effect < 1:
        raise ValueError(f"baseline + minimum_effect must stay between 0 and 1; "
                         f"{baseline!r} + {minimum_effect!r} = {baseline + minimum_effect:g}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"ratio (treatment users per control user) must be > 0; got {ratio!r}")
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    effect = abs(proportion_effectsize(baseline + minimum_effect, baseline))
    n = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=ratio,
                                     alternative="two-sided")
    return int(math.ceil(float(n) - 1e-9))


# --------------------------------------------------------------------------------------------
# Sample ratio mismatch
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SRMResult:
    """The sample-ratio-mismatch check: users seen and expected per variant, the chi-square p-value,
    whether the split is broken (``mismatch``) and a sentence saying so."""

    observed: dict[str, int]
    expected: dict[str, float]
    p_value: float
    mismatch: bool
    message: str

    def __str__(self) -> str:
        return self.message


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative whole number; got {value!r}")
    return int(value)


def srm_check(counts: dict[str, int], weights: dict[str, float], threshold: float = SRM_THRESHOLD) -> SRMResult:
    """Test whether the users seen per variant (``counts``) fit the configured split (``weights``,
    percentages summing to 100) with scipy's chi-square goodness of fit. A p-value under
    ``threshold`` (0.001, the convention of Microsoft's ExP) means the split itself is broken (a
    bot, a redirect that drops users, a crash on one variant) and no result of the experiment
    should be read. A variant missing from ``counts`` counts 0; traffic on a weight-0 variant is
    always a mismatch."""
    _check_weights(weights)
    threshold = _check_probability("threshold", threshold)
    unknown = [v for v in counts if v not in weights]
    if unknown:
        raise ValueError(f"counts name variants that are not in weights: {unknown} (weights: {list(weights)})")
    observed = {v: _check_count(f"counts[{v!r}]", counts.get(v, 0)) for v in weights}
    total = sum(observed.values())
    if total == 0:
        raise ValueError(f"counts must hold at least one user; got {dict(counts)}")
    expected = {v: total * w / 100.0 for v, w in weights.items()}
    stray = {v: n for v, n in observed.items() if weights[v] == 0 and n > 0}
    served = [v for v in weights if weights[v] > 0]
    if stray:
        p_value = 0.0
    elif len(served) < 2:
        p_value = 1.0  # one variant takes everything: there is no ratio to get wrong
    else:
        from scipy import stats

        p_value = float(stats.chisquare([observed[v] for v in served], [expected[v] for v in served]).pvalue)
    mismatch = p_value < threshold
    split = ", ".join(f"{v} {observed[v]} (expected {expected[v]:.0f})" for v in weights)
    if stray:
        message = f"sample ratio mismatch: weight-0 variants got traffic ({stray}); {split}"
    elif mismatch:
        message = (f"sample ratio mismatch: {split}; chi-square p = {p_value:.2g} < {threshold:g}, "
                   f"the split is broken, do not read the results")
    else:
        message = f"split as configured: {split}; chi-square p = {p_value:.3g} >= {threshold:g}"
    return SRMResult(observed=observed, expected=expected, p_value=p_value, mismatch=mismatch, message=message)


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------

def _not_enough(required: tuple[int, int]) -> str:
    control, treatment = required
    if control == treatment:
        return f"not enough data yet (need {control} per arm)"
    return f"not enough data yet (need {control} on control and {treatment} on treatment)"


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`: counts per variant, the SRM check, the test's figures (``None``
    when the SRM check refused a verdict) and the ``verdict`` with its ``winner`` (``None`` unless a
    variant won). ``difference`` is treatment rate minus control rate, ``ci_low``/``ci_high`` its
    ``1 - alpha`` interval; ``required`` is the users needed on (control, treatment) when a
    minimum effect was given."""

    control: str
    treatment: str
    successes: dict[str, int]
    trials: dict[str, int]
    srm: SRMResult
    verdict: str
    winner: str | None = None
    p_value: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    alpha: float = 0.05
    required: tuple[int, int] | None = None
    rates: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        rates = {v: (self.successes[v] / self.trials[v] if self.trials[v] else float("nan"))
                 for v in (self.control, self.treatment)}
        object.__setattr__(self, "rates", rates)

    def to_frame(self) -> pd.DataFrame:
        """One row per variant (control first): variant, trials, successes, rate."""
        variants = [self.control, self.treatment]
        return pd.DataFrame({
            "variant": variants,
            "trials": [self.trials[v] for v in variants],
            "successes": [self.successes[v] for v in variants],
            "rate": [self.rates[v] for v in variants],
        })

    def summary(self) -> dict[str, Any]:
        """The decision's figures as a flat dict, rates to 4 decimals and p-values to 3 significant digits."""
        def r4(x: float | None) -> float | None:
            return None if x is None else round(float(x), 4)

        def sig3(x: float | None) -> float | None:
            return None if x is None else float(f"{x:.3g}")

        return {
            "verdict": self.verdict,
            "winner": self.winner,
            "control": self.control,
            "treatment": self.treatment,
            "control_trials": self.trials[self.control],
            "treatment_trials": self.trials[self.treatment],
            "control_rate": r4(self.rates[self.control]),
            "treatment_rate": r4(self.rates[self.treatment]),
            "difference": r4(self.difference),
            "ci_low": r4(self.ci_low),
            "ci_high": r4(self.ci_high),
            "p_value": sig3(self.p_value),
            "alpha": self.alpha,
            "srm_p_value": sig3(self.srm.p_value),
            "required_control": None if self.required is None else self.required[0],
            "required_treatment": None if self.required is None else self.required[1],
        }

    def __str__(self) -> str:
        c, t = self.control, self.treatment
        if self.srm.mismatch:
            return f"no verdict: {self.srm.message}."
        level = round(100 * (1 - self.alpha))
        return (f"{self.verdict}: {t} {self.rates[t]:.1%} vs {c} {self.rates[c]:.1%} "
                f"({self.trials[t]} and {self.trials[c]} users); difference {100 * self.difference:+.1f} points, "
                f"{level}% CI {100 * self.ci_low:+.1f} to {100 * self.ci_high:+.1f}; p = {self.p_value:.3g}.")


def _counts_from_frame(frame: pd.DataFrame) -> dict[str, tuple[int, int]]:
    missing = [c for c in ("variant", "success") if c not in frame.columns]
    if missing:
        raise ValueError(f"outcomes must have columns 'variant' and 'success' (0/1); missing {missing}, "
                         f"got {list(frame.columns)}")
    success = frame["success"]
    if success.dtype == bool:
        success = success.astype(int)
    bad = ~success.isin([0, 1])
    if bad.any():
        raise ValueError(f"outcomes['success'] must hold only 0 and 1; got {success[bad].unique()[:5].tolist()}")
    grouped = success.groupby(frame["variant"], sort=False).agg(["sum", "count"])
    return {str(v): (int(row["sum"]), int(row["count"])) for v, row in grouped.iterrows()}


def _counts(outcomes: Any, weights: Mapping[str, float]) -> tuple[dict[str, int], dict[str, int]]:
    """(successes, trials) per variant of ``weights`` from a dict of (successes, trials) or a frame."""
    if isinstance(outcomes, pd.DataFrame):
        table = _counts_from_frame(outcomes)
    elif isinstance(outcomes, Mapping):
        table = dict(outcomes)
    else:
        raise ValueError(f"outcomes must be a dict {{variant: (successes, trials)}} or a DataFrame with "
                         f"columns variant and success; got {type(outcomes).__name__}")
    unknown = [v for v in table if v not in weights]
    if unknown:
        raise ValueError(f"outcomes name variants that are not in weights: {unknown} (weights: {list(weights)})")
    successes, trials = {}, {}
    for variant in weights:
        pair = table.get(variant, (0, 0))
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"outcomes[{variant!r}] must be a pair (successes, trials); got {pair!r}")
        s = _check_count(f"outcomes[{variant!r}] successes", pair[0])
        n = _check_count(f"outcomes[{variant!r}] trials", pair[1])
        if s > n:
            raise ValueError(f"outcomes[{variant!r}] has more successes than trials: {pair!r}")
        successes[variant], trials[variant] = s, n
    return successes, trials


def decide(outcomes: dict[str, tuple[int, int]] | pd.DataFrame, weights: dict[str, float],
           alpha: float = 0.05, minimum_effect: float | None = None, baseline: float | None = None,
           srm_threshold: float = SRM_THRESHOLD, power: float = 0.8) -> Decision:
    """Read a two-variant A/B test and return a :class:`Decision`. ``outcomes`` is either
    ``{variant: (successes, trials)}`` or a DataFrame with one row per user (columns ``variant`` and
    ``success`` 0/1); ``weights`` is the configured split, its first variant the control and its
    second the treatment. The sample-ratio-mismatch check runs first and a broken split gets
    ``"no verdict: sample ratio mismatch"``. Otherwise the two-proportion z-test (statsmodels)
    gives the p-value and ``confint_proportions_2indep`` the interval of the difference. With
    ``minimum_effect`` (absolute, from ``baseline`` or else the observed control rate) the verdict
    is ``"not enough data yet (need N per arm)"`` until both arms reach :func:`sample_size`, even
    if the p-value already looks significant (that is peeking); then ``"treatment wins"``,
    ``"control wins"`` or ``"no significant difference"`` at level ``alpha``."""
    _check_weights(weights)
    alpha = _check_probability("alpha", alpha)
    if len(weights) != 2 or any(w <= 0 for w in weights.values()):
        raise ValueError(f"decide compares exactly two variants with positive weights (control first, "
                         f"treatment second); got weights {dict(weights)}")
    if baseline is not None and minimum_effect is None:
        raise ValueError(f"baseline={baseline!r} is only used to size the test; give minimum_effect too")
    control, treatment = list(weights)
    successes, trials = _counts(outcomes, weights)
    srm = srm_check(trials, weights, threshold=srm_threshold)
    common = dict(control=control, treatment=treatment, successes=successes, trials=trials, srm=srm, alpha=alpha)
    if srm.mismatch:
        return Decision(verdict=NO_SRM_VERDICT, **common)
    empty = [v for v in weights if trials[v] == 0]
    if empty:
        raise ValueError(f"outcomes have no trials for {empty}; a test needs users on both variants")

    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    s_t, n_t, s_c, n_c = successes[treatment], trials[treatment], successes[control], trials[control]
    difference = s_t / n_t - s_c / n_c
    if s_t + s_c in (0, n_t + n_c):
        p_value = 1.0  # every user failed (or every user succeeded): nothing separates the arms
    else:
        p_value = float(proportions_ztest([s_t, s_c], [n_t, n_c])[1])
    ci_low, ci_high = (float(x) for x in confint_proportions_2indep(s_t, n_t, s_c, n_c, compare="diff", alpha=alpha))

    required = None
    if minimum_effect is not None:
        base = s_c / n_c if baseline is None else baseline
        n_control = sample_size(base, minimum_effect, alpha=alpha, power=power,
                                ratio=weights[treatment] / weights[control])
        required = (n_control, int(math.ceil(n_control * weights[treatment] / weights[control] - 1e-9)))

    if required is not None and (n_c < required[0] or n_t < required[1]):
        verdict, winner = _not_enough(required), None
    elif p_value < alpha:
        verdict, winner = (TREATMENT_WINS, treatment) if difference > 0 else (CONTROL_WINS, control)
    else:
        verdict, winner = NO_DIFFERENCE, None
    return Decision(verdict=verdict, winner=winner, p_value=p_value, difference=difference,
                    ci_low=ci_low, ci_high=ci_high, required=required, **common)


# --------------------------------------------------------------------------------------------
# A/A simulation and the peeking mistake
# --------------------------------------------------------------------------------------------

def _z_test_p(s1: np.ndarray, n1: np.ndarray, s2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the pooled two-proportion z-test (what ``proportions_ztest`` computes),
    element-wise; a look with an empty arm or no variance gets p = 1 (no test possible)."""
    s1, n1, s2, n2 = (np.asarray(x, dtype=float) for x in (s1, n1, s2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (s1 + s2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (s1 / n1 - s2 / n2) / se
    from scipy import stats

    p = 2 * stats.norm.sf(np.abs(z))
    return np.where(np.isfinite(z), p, 1.0)


@functools.lru_cache(maxsize=4)
def _aa_assignments(runs: int, users: int) -> np.ndarray:
    """(runs, users) booleans: True where user ``i`` of run ``r`` lands on "b" of a 50/50 split,
    computed once per shape (hashing is the slow part and does not depend on the seed)."""
    weights = {"a": 50.0, "b": 50.0}
    out = np.empty((runs, users), dtype=bool)
    for r in range(runs):
        u = _buckets((f"run{r}-user{i}" for i in range(users)), salt=f"aa-run{r}")
        out[r] = _assign_indices(u, weights) == 1
    out.flags.writeable = False
    return out


def _check_positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}")
    return int(value)


def aa_false_positive_rate(runs: int = 1000, users: int = 2000, rate: float = 0.3, alpha: float = 0.05,
                           peek_every: int | None = None, seed: int = 42) -> float:
    """Simulate ``runs`` A/A tests (both arms identical, so every "winner" is a false positive) and
    return the share that declared one. In run ``r`` users ``run{r}-user{i}`` are split 50/50 by
    :func:`assign` (salt ``aa-run{r}``) and succeed with probability ``rate``
    (``numpy.random.default_rng(seed + r)``). Without ``peek_every`` the z-test is read once, at the
    end, and the answer is close to ``alpha``; with ``peek_every=k`` it is read after every ``k``
    users (and at the end) and the run stops at the first p < ``alpha``, the peeking mistake, whose
    false positive rate grows with the number of looks."""
    runs = _check_positive_int("runs", runs)
    users = _check_positive_int("users", users, low=2)
    rate = _check_probability("rate", rate)
    alpha = _check_probability("alpha", alpha)
    if peek_every is not None:
        peek_every = _check_positive_int("peek_every", peek_every)
    looks = np.arange(peek_every, users + 1, peek_every) if peek_every else np.array([], dtype=int)
    looks = np.union1d(looks, [users]) - 1  # 0-based index of the last user seen at each look

    on_b = _aa_assignments(runs, users)
    winners = 0
    for r in range(runs):
        success = np.random.default_rng(seed + r).random(users) < rate
        n_b = np.cumsum(on_b[r])[looks]
        s_b = np.cumsum(success & on_b[r])[looks]
        s_all = np.cumsum(success)[looks]
        n_a, s_a = looks + 1 - n_b, s_all - s_b
        winners += bool((_z_test_p(s_b, n_b, s_a, n_a) < alpha).any())
    return winners / runs


def peeking_table(runs: int = 1000, users: int = 2000, rate: float = 0.3, alpha: float = 0.05,
                  peeks: Sequence[int | None] = (None, 1000, 500, 200, 100), seed: int = 42) -> pd.DataFrame:
    """Return the A/A false positive rate (:func:`aa_false_positive_rate`) for each peeking interval
    in ``peeks`` (``None`` is one test at the end), one row each: ``peek_every``, ``looks`` (tests
    read per run), ``false_positive_rate`` and ``noise_margin`` (two binomial standard errors of a
    rate of ``alpha`` over ``runs`` runs, the band an honest test stays within)."""
    margin = 2 * math.sqrt(alpha * (1 - alpha) / runs)
    rows = []
    for k in peeks:
        looks = 1 if k is None else len(np.union1d(np.arange(k, users + 1, k), [users]))
        fpr = aa_false_positive_rate(runs=runs, users=users, rate=rate, alpha=alpha, peek_every=k, seed=seed)
        rows.append({"peek_every": k, "looks": looks, "false_positive_rate": fpr, "noise_margin": margin})
    table = pd.DataFrame(rows)
    table["peek_every"] = table["peek_every"].astype("Int64")
    return table
