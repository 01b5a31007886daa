"""Confidence intervals for the shares a leakage headline is made of.

`wilson` is scipy's Wilson score interval for one proportion. `difference` is Newcombe's hybrid
score interval (Newcombe 1998, method 10) for the difference of two independent proportions,
built from their Wilson intervals: scipy has no interval for a difference of proportions, and
statsmodels (which has it, as `confint_proportions_2indep(method="newcomb")`, the tests'
reference) is too large a dependency for one formula. Unlike the Wald interval it stays inside
[-1, 1] and keeps its coverage when the shares are near 0, as near-copy shares are.
"""

from __future__ import annotations

import math

from scipy.stats import binomtest

CONFIDENCE = 0.95


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of successes / n at `confidence` (two-sided)."""
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def difference(k1: int, n1: int, k2: int, n2: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's hybrid score interval of k1/n1 - k2/n2 at `confidence` (two-sided)."""
    p1, p2 = k1 / n1, k2 / n2
    low1, high1 = wilson(k1, n1, confidence)
    low2, high2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return (d - math.hypot(p1 - low1, high2 - p2), d + math.hypot(high1 - p1, p2 - low2))
