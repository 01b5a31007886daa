"""The intervals against statsmodels, their independent reference, and their coverage."""

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from dpaudit.intervals import difference, wilson


@pytest.mark.parametrize("k, n", [(0, 50), (3, 2000), (100, 2000), (2000, 2000), (7, 9)])
def test_wilson_matches_statsmodels(k, n):
    assert wilson(k, n) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)


@pytest.mark.parametrize("k1, n1, k2, n2", [(30, 2000, 20, 2000), (0, 500, 12, 2000), (95, 2000, 90, 360),
                                            (50, 50, 0, 40)])
def test_difference_matches_statsmodels(k1, n1, k2, n2):
    reference = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff", alpha=0.05)
    assert difference(k1, n1, k2, n2) == pytest.approx(reference, abs=1e-12)


def test_difference_covers_the_true_difference_at_near_copy_shares():
    """Two samples at the same 5% share (MNIST's natural near-duplicate rate), 2,000 each: the
    95% interval holds the true difference 0 in about 95% of draws, and its lower end is above
    zero in at most about 2.5% (what keeps a gate reading `ci_low` from crying wolf)."""
    rng = np.random.default_rng(0)
    draws = [difference(rng.binomial(2000, 0.05), 2000, rng.binomial(2000, 0.05), 2000) for _ in range(2000)]
    low, high = np.array(draws).T
    assert 0.93 <= np.mean((low <= 0) & (high >= 0)) <= 0.97
    assert np.mean(low > 0) <= 0.04
