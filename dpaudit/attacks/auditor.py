"""The auditor: scores of members and non-members (or of canaries inside and outside a training
run) -> named epsilon lower bounds, and the ceiling of what those many targets could prove.

The shape of jax_privacy's canary-score auditor: any attack's scores, from a release attack or
a training audit, are handed to one `CanaryScoreAuditor`, which applies the bounds of
`dpaudit.attacks.epsilon` by name. Adding a bound is one function and one line in `BOUNDS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dpaudit.attacks.epsilon import (
    EpsilonBound,
    fdp_one_run_epsilon_bound,
    one_run_epsilon_bound,
    split_threshold_epsilon,
)

# name -> bound(scores, labels, *, delta, alpha, seed) -> EpsilonBound
BOUNDS: dict[str, Callable[..., EpsilonBound]] = {
    "clopper_pearson": split_threshold_epsilon,
    "one_run": one_run_epsilon_bound,
    "fdp_one_run": fdp_one_run_epsilon_bound,
}
# The bounds of the release audit (membership inference against fixed members: the usual
# Clopper-Pearson practice and the one-run theorem) and of the training audit (canaries by coin
# flips: both one-run theorems; the f-DP one holds a claim to its Gaussian trade-off curve).
RELEASE_BOUNDS = ("clopper_pearson", "one_run")
TRAINING_BOUNDS = ("one_run", "fdp_one_run")
# The largest canary count `canaries_needed` tries: beyond it one audit run costs minutes.
MAX_CANARIES = 2**16


class CanaryScoreAuditor:
    """Membership scores (higher = more likely IN) of targets that were IN (label 1) or OUT (0)."""

    def __init__(self, scores, labels):
        self.scores = np.asarray(scores, dtype=float)
        self.labels = np.asarray(labels, dtype=int)
        if self.scores.shape != self.labels.shape or self.scores.ndim != 1:
            raise ValueError("scores and labels must be two 1-D arrays of the same length")

    @classmethod
    def from_in_out(cls, in_scores, out_scores) -> "CanaryScoreAuditor":
        """An auditor of the scores of the IN targets and of the OUT targets, given apart."""
        in_scores, out_scores = np.asarray(in_scores, dtype=float), np.asarray(out_scores, dtype=float)
        return cls(np.r_[in_scores, out_scores], np.r_[np.ones(len(in_scores), int), np.zeros(len(out_scores), int)])

    def epsilon_lower_bound(self, method: str, *, delta: float, alpha: float = 0.05, seed: int = 0) -> EpsilonBound:
        """The bound `method` (a key of BOUNDS), holding with probability 1 - alpha."""
        if method not in BOUNDS:
            raise ValueError(f"unknown epsilon bound {method!r}; available: {', '.join(BOUNDS)}")
        return BOUNDS[method](self.scores, self.labels, delta=delta, alpha=alpha, seed=seed)

    def epsilon_lower_bounds(self, *, delta: float, alpha: float = 0.05, seed: int = 0,
                             methods: tuple[str, ...] = tuple(BOUNDS)) -> dict[str, EpsilonBound]:
        """Every bound of `methods`, each at level alpha (split alpha yourself to report their maximum)."""
        return {m: self.epsilon_lower_bound(m, delta=delta, alpha=alpha, seed=seed) for m in methods}

    def ceiling(self, method: str, *, delta: float, alpha: float = 0.05, seed: int = 0) -> float:
        """The largest bound `method` could prove with these many IN and OUT targets: that of a
        perfect attack, which scores every IN target above every OUT target."""
        perfect = CanaryScoreAuditor(self.labels.astype(float), self.labels)
        return perfect.epsilon_lower_bound(method, delta=delta, alpha=alpha, seed=seed).value


def claim_verdict(bound: float, ceiling: float, claimed: float | None) -> str:
    """`refuted` (the bound exceeds the claim), `inconclusive` (the ceiling does not: no attack
    on these many targets could have refuted it), `consistent`, or `no claim`."""
    if claimed is None:
        return "no claim"
    if bound > claimed:
        return "refuted"
    return "inconclusive" if ceiling <= claimed else "consistent"


def perfect_ceiling(method: str, m: int, *, delta: float, alpha: float) -> float:
    """The ceiling of `method` for m targets, half of them IN (a perfect attack's bound)."""
    labels = (np.arange(m) < m // 2).astype(int)
    return CanaryScoreAuditor(labels.astype(float), labels).epsilon_lower_bound(method, delta=delta, alpha=alpha).value


def canaries_needed(method: str, claimed: float, *, delta: float, alpha: float,
                    max_canaries: int = MAX_CANARIES) -> int | None:
    """The fewest targets (half IN) whose ceiling under `method` exceeds `claimed`: doubling from
    2, then bisection between the last two counts tried; None if even `max_canaries` do not (the
    one-run bound's 2 m delta term caps it: 4.58 at 65,536 canaries and delta 1e-5, benchmarks/RESULTS.md). Costs up to about 17
    ceilings: the whole canaries-needed table of benchmarks/RESULTS.md takes 10 s."""
    m = 2
    while perfect_ceiling(method, m, delta=delta, alpha=alpha) <= claimed:
        if m >= max_canaries:
            return None
        m = min(2 * m, max_canaries)
    low, high = m // 2, m  # low does not suffice (or is below 2), high does
    while high - low > max(1, high // 64):  # within 1.6%: a count to plan with, not a theorem
        mid = (low + high) // 2
        low, high = (low, mid) if perfect_ceiling(method, mid, delta=delta, alpha=alpha) > claimed else (mid, high)
    return high
