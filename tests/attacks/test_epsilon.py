"""Empirical epsilon bounds against closed forms and independent re-computations (scipy's
binomtest and binomial distribution, through the reference harness)."""

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
from tests.reference import compare_to_reference


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


def binomtest_upper(k, n, alpha):
    """scipy's exact one-sided (1 - alpha) interval [0, upper] of a binomial proportion."""
    return stats.binomtest(k, n, alternative="less").proportion_ci(1 - alpha, method="exact").high


def test_clopper_pearson_upper_equals_scipy_binomtest():
    inputs = {f"k={k}, n={n}, alpha={alpha}": (k, n, alpha)
              for k, n in [(0, 1), (1, 1), (0, 40), (3, 40), (39, 40), (40, 40), (12, 500), (250, 500), (7, 10_000)]
              for alpha in (0.05, 0.025, 1e-3)}
    compare_to_reference(clopper_pearson_upper, binomtest_upper, inputs, atol=0.0, rtol=1e-8)
    # Elementwise on arrays, as split_threshold_epsilon uses it.
    k, n = np.array([0, 3, 39, 40]), np.array([40, 40, 40, 40])
    compare_to_reference(
        clopper_pearson_upper, lambda k, n, a: [binomtest_upper(int(i), int(j), a) for i, j in zip(k, n)],
        {"k = 0, 3, 39, 40 of 40": (k, n, 0.05)}, atol=0.0, rtol=1e-8, name="clopper_pearson_upper on arrays",
    )


def test_epsilon_from_rates_closed_form():
    assert epsilon_from_rates(0.01, 0.5, 0.0) == pytest.approx(math.log(50))
    assert epsilon_from_rates(0.5, 0.01, 0.0) == pytest.approx(math.log(50))
    assert epsilon_from_rates(0.02, 0.3, 1e-3) == pytest.approx(math.log((1 - 1e-3 - 0.3) / 0.02))
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0  # a coin flip proves nothing
    assert epsilon_from_rates(0.7, 0.6, 0.0) == 0.0  # worse than chance: clipped at 0


def counts_epsilon_by_hand(fp, n_neg, fn, n_pos, delta, alpha):
    """Both rates bounded at alpha / 2 each (Clopper-Pearson as a beta quantile), then the larger
    of the two hypothesis-testing inequalities."""
    a = stats.beta.ppf(1 - alpha / 2, fp + 1, n_neg - fp)
    b = stats.beta.ppf(1 - alpha / 2, fn + 1, n_pos - fn)
    return max(math.log((1 - delta - b) / a), math.log((1 - delta - a) / b))


def test_counts_epsilon_splits_alpha():
    inputs = {"3 FP, 40 FN of 200 each": (3, 200, 40, 200, 1e-5, 0.05),
              "40 FP, 3 FN of 200 each": (40, 200, 3, 200, 1e-5, 0.05),
              "0 FP of 1000, 100 FN of 500": (0, 1000, 100, 500, 1e-5, 0.01),
              "5 FP, 0 FN of 100 each, delta 0": (5, 100, 0, 100, 0.0, 0.05)}
    compare_to_reference(counts_epsilon, counts_epsilon_by_hand, inputs, atol=0.0, rtol=1e-10)


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


def test_one_run_pure_dp_equals_clopper_pearson_on_accuracy():
    # With delta = 0: P[Bin(r, q) >= v] = beta  <=>  q = Beta(v, r - v + 1).ppf(beta), eps = logit(q).
    beta = 0.05
    compare_to_reference(
        lambda r, v: one_run_epsilon(2 * r, r, v, delta=0.0, beta=beta),
        lambda r, v: max(0.0, logit(stats.beta.ppf(beta, v, r - v + 1))),
        {f"{v} of {r} guesses right": (r, v) for r, v in [(100, 90), (50, 50), (1000, 620), (20, 12)]},
        atol=1e-5, rtol=0.0, name="one_run_epsilon at delta 0",
    )


def one_run_p_value_brute_force(m, r, v, eps, delta):
    """Steinke et al.'s p-value with the worst i of the delta term searched directly over scipy's
    binomial tail f(w) = P[Bin(r, q) >= w]."""
    q = 1 / (1 + math.exp(-eps))

    def f(w):
        return stats.binom.sf(w - 1, r, q)

    worst = max((f(v - i) - f(v)) / i for i in range(1, v + 1))
    return min(1.0, f(v) + 2 * m * delta * worst)


def test_one_run_p_value_delta_term_brute_force():
    m, r, v, eps, delta = 1000, 200, 150, 1.0, 1e-4
    inputs = {"150 of 200, eps 1, delta 1e-4": (m, r, v, eps, delta),
              "150 of 200, eps 1, delta 0": (m, r, v, eps, 0.0),
              "60 of 80, eps 0.5, delta 1e-5": (2000, 80, 60, 0.5, 1e-5),
              "10 of 10, eps 3, delta 1e-6": (100, 10, 10, 3.0, 1e-6),
              "capped at 1": (10_000, 50, 30, 0.2, 1e-2)}
    compare_to_reference(one_run_p_value, one_run_p_value_brute_force, inputs, atol=0.0, rtol=1e-9)
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


# ---------------------------------------------------------------- the f-DP one-run bound


def analytic_delta(eps, mu):
    """delta(eps) of mu-GDP (Dong, Roth, Su 2019, Cor. 2.13), directly."""
    from scipy.stats import norm

    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize("eps", [0.3, 1.0, 4.0, 10.0])
def test_gaussian_mu_gives_back_delta_and_matches_dp_accounting(eps):
    from dpaudit.attacks.epsilon import gaussian_mu

    mu = gaussian_mu(eps, 1e-5)
    assert analytic_delta(eps, mu) == pytest.approx(1e-5, rel=1e-6)
    dp_accounting = pytest.importorskip("dp_accounting")
    assert 1 / mu == pytest.approx(dp_accounting.get_sigma_gaussian(eps, 1e-5), rel=1e-6)


def gdp_canaries(mu, m, seed):
    """Scores of a mu-GDP mechanism towards each canary: mu * b + N(0, 1), b a fair coin."""
    rng = np.random.default_rng(seed)
    included = (rng.random(m) < 0.5).astype(int)
    return mu * included + rng.standard_normal(m), included


def epsilon_of_gdp(mu, delta):
    from scipy.optimize import brentq

    return brentq(lambda e: analytic_delta(e, mu) - delta, 0, 100)


def test_the_fdp_bound_is_valid_for_a_gaussian_mechanism():
    from dpaudit.attacks.epsilon import fdp_one_run_epsilon_bound

    mu, delta = 2.0, 1e-5
    truth = epsilon_of_gdp(mu, delta)
    bounds = [fdp_one_run_epsilon_bound(*gdp_canaries(mu, 1000, seed), delta=delta).value for seed in range(40)]
    # at 95% confidence at most 2 of 40 trials may exceed the truth, plus binomial slack
    assert sum(b > truth for b in bounds) <= 5
    assert np.median(bounds) > 0.3 * truth  # and it is not vacuous


def test_the_fdp_bound_is_tighter_than_the_one_run_bound_and_zero_without_signal():
    from dpaudit.attacks.epsilon import fdp_one_run_epsilon_bound

    scores, labels = gdp_canaries(3.0, 1000, seed=0)
    fdp = fdp_one_run_epsilon_bound(scores, labels, delta=1e-5).value
    assert fdp > one_run_epsilon_bound(scores, labels, delta=1e-5).value > 0
    assert fdp < epsilon_of_gdp(3.0, 1e-5)
    null, labels = gdp_canaries(0.0, 1000, seed=1)
    assert fdp_one_run_epsilon_bound(null, labels, delta=1e-5).value == 0.0


def test_the_fdp_bound_grows_with_the_correct_guesses():
    from dpaudit.attacks.epsilon import fdp_one_run_epsilon

    values = [fdp_one_run_epsilon(1000, 100, v, delta=1e-5, beta=0.01) for v in (60, 80, 95, 100)]
    assert values == sorted(values) and values[0] < values[-1]
