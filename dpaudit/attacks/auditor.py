"""The auditor: scores of members and non-members (or of canaries inside and outside a training
run) -> named epsilon lower bounds, and the ceiling of what those many targets could prove.

The shape of jax_privacy's canary-score auditor: any attack's scores, from a release attack or
a training audit, are handed to one `CanaryScoreAuditor`, which applies the bounds of
`dpaudit.attacks.epsilon` by name. Adding a bound is one function and one line in `BOUNDS`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dpaudit.attacks.epsilon import EpsilonBound, one_run_epsilon_bound, split_threshold_epsilon

# name -> bound(scores, labels, *, delta, alpha, seed) -> EpsilonBound
BOUNDS: dict[str, Callable[..., EpsilonBound]] = {
    "clopper_pearson": split_threshold_epsilon,
    "one_run": one_run_epsilon_bound,
}


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
