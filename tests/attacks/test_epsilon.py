"""Empirical epsilon bounds against closed forms and brute-force re-computations."""

import math

import numpy as np
import pytest
from scipy import stats

from dpaudit.attacks.epsilon import (
    ONE_RUN_FRACTIONS,
    clopper_pearson_upper,
    counts_epsilon,
    epsilon_from_rates,
    one_run_epsilon,
    one_run_epsilon_bound,
    one_run_p_value,
    split_threshold_epsilon,
)


def logit(q):
    return math.log(q / (1 - q))


def test_clopper_pearson_upper_closed_forms():
    alpha, n = 0.05, 40
    # k = 0: P[Bin(n, p) = 0] = (1 - p)^n = alpha; k = n - 1: 1 - p^n = alpha; k = n: 1.
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_upper(n - 1, n, alpha) == pytest.approx((1 - alpha) ** (1 / n), rel=1e-10)
    assert clopper_pearson_upper(n, n, alpha) == 1.0
    # In general the upper bound u solves P[Bin(n, u) <= k] = alpha.
    for k in (3, 17, 31):
        assert stats.binom.cdf(k, n, clopper_pearson_upper(k, n, alpha)) == pytest.approx(alpha, rel=1e-8)


def test_epsilon_from_rates_closed_form():
    assert epsilon_from_rates(0.01, 0.5, 0.0) == pytest.approx(math.log(50))
    assert epsilon_from_rates(0.5, 0.01, 0.0) == pytest.approx(math.log(50))
    assert epsilon_from_rates(0.02, 0.3, 1e-3) == pytest.approx(math.log((1 - 1e-3 - 0.3) / 0.02))
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0  # a coin flip proves nothing
    assert epsilon_from_rates(0.7, 0.6, 0.0) == 0.0  # worse than chance: clipped at 0


def test_counts_epsilon_splits_alpha():
    fp, n_neg, fn, n_pos, delta, alpha = 3, 200, 40, 200, 1e-5, 0.05
    a = stats.beta.ppf(1 - alpha / 2, fp + 1, n_neg - fp)
    b = stats.beta.ppf(1 - alpha / 2, fn + 1, n_pos - fn)
    expected = max(math.log((1 - delta - b) / a), math.log((1 - delta - a) / b))
    assert counts_epsilon(fp, n_neg, fn, n_pos, delta, alpha) == pytest.approx(expected, rel=1e-10)


def test_split_threshold_epsilon_perfect_separation():
    n, delta, alpha = 400, 1e-5, 0.05
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    scores = labels + np.random.default_rng(0).uniform(0, 0.5, 2 * n)
    bound = split_threshold_epsilon(scores, labels, delta=delta, alpha=alpha, seed=3)
    # Evaluated on the other half (n/2 per side) with no errors: both rates bounded by 1 - (alpha/2)^(2/n).
    upper = 1 - (alpha / 2) ** (1 / (n // 2))
    assert bound.details["false_positives"] == bound.details["false_negatives"] == 0
    assert bound.details["n_members"] == bound.details["n_nonmembers"] == n // 2
    assert bound.value == pytest.approx(math.log((1 - delta - upper) / upper), rel=1e-10)


def test_split_threshold_epsilon_counts_on_the_other_half():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300), np.zeros(300)].astype(int)
    scores = rng.normal(size=600) + 1.5 * labels
    bound = split_threshold_epsilon(scores, labels, delta=0.0, alpha=0.05, seed=7)
    d = bound.details
    # Recount the errors at the reported threshold on all targets: the evaluation half's counts are a part of them.
    assert d["false_positives"] <= int(((scores >= d["threshold"]) & (labels == 0)).sum())
    assert bound.value == pytest.approx(counts_epsilon(d["false_positives"], d["n_nonmembers"], d["false_negatives"],
                                                       d["n_members"], 0.0, 0.05), rel=1e-12)
    assert 0 < bound.value < 3


def test_split_threshold_epsilon_null_is_zero():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(1000), np.zeros(1000)].astype(int)
    assert split_threshold_epsilon(rng.normal(size=2000), labels, delta=1e-5, seed=0).value <= 0.1


@pytest.mark.parametrize("r,v", [(100, 90), (50, 50), (1000, 620), (20, 12)])
def test_one_run_pure_dp_equals_clopper_pearson_on_accuracy(r, v):
    # With delta = 0: P[Bin(r, q) >= v] = beta  <=>  q = Beta(v, r - v + 1).ppf(beta), eps = logit(q).
    beta = 0.05
    expected = max(0.0, logit(stats.beta.ppf(beta, v, r - v + 1)))
    assert one_run_epsilon(2 * r, r, v, delta=0.0, beta=beta) == pytest.approx(expected, abs=1e-5)


def test_one_run_p_value_delta_term_brute_force():
    m, r, v, eps, delta = 1000, 200, 150, 1.0, 1e-4
    q = 1 / (1 + math.exp(-eps))

    def f(w):
        return stats.binom.sf(w - 1, r, q)

    worst = max((f(v - i) - f(v)) / i for i in range(1, v + 1))
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(f(v) + 2 * m * delta * worst, rel=1e-9)
    # A delta term can only weaken the bound.
    assert one_run_epsilon(m, r, v, delta=delta, beta=0.05) <= one_run_epsilon(m, r, v, delta=0.0, beta=0.05)


def test_one_run_bound_perfect_guesses_closed_form():
    n, alpha = 500, 0.05
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    scores = labels.astype(float)
    bound = one_run_epsilon_bound(scores, labels, delta=0.0, alpha=alpha, seed=0)
    configs = 2 * len(ONE_RUN_FRACTIONS)
    # All 2n guesses right: P[Bin(2n, q) >= 2n] = q^(2n) = alpha / configs.
    assert bound.details["configurations"] == configs
    assert bound.details["guesses"] == bound.details["correct"] == 2 * n
    assert bound.value == pytest.approx(logit((alpha / configs) ** (1 / (2 * n))), abs=1e-5)


def test_one_run_bound_ties_are_not_guesses():
    # Every score equal: the targets arrive members first, a stable sort would fake a perfect attack.
    labels = np.r_[np.ones(500), np.zeros(500)].astype(int)
    assert one_run_epsilon_bound(np.zeros(1000), labels, delta=1e-5, seed=0).value == 0.0
    assert split_threshold_epsilon(np.zeros(1000), labels, delta=1e-5, seed=0).value == 0.0
