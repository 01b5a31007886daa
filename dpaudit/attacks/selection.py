"""Headline figures chosen fairly among several membership attacks, by cross-fitting.

The membership check scores the same targets with every attack. Reporting the best attack's
figure on those targets is optimistic: on images the generator never saw, the largest of seven
AUCs that are each 0.5 plus noise reads about 0.54, weak leakage where there is none. Instead
the targets are split into two folds (seeded, members and non-members halved separately); for
each metric the attack that does best on one fold is read on the other, and the headline is the
mean of the two readings. Each reading is on targets its choice never saw, so the mean is an
unbiased estimate of the chosen attack's figure and its interval needs no widening for the
choice. The per-attack figures on all targets stay in the details.

Intervals: the AUC's from the two folds' DeLong standard errors (independent folds); a TPR's
the Wilson interval of the members caught over both folds (the thresholds, set on each fold's
non-members, taken as given). The advantage, a maximum over thresholds, gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dpaudit.attacks.base import figures
from dpaudit.intervals import CONFIDENCE, wilson

N_FOLDS = 2


@dataclass(frozen=True)
class Headline:
    """A cross-fitted figure: its value, its interval (None for the advantage) and the attack
    chosen for each fold (chosen on the other fold)."""

    value: float
    ci: tuple[float, float] | None
    chosen: tuple[str, ...]


def fold_ids(labels: np.ndarray, seed: int) -> np.ndarray:
    """The fold (0 or 1) of each target: members and non-members each shuffled (seeded) and
    dealt out in turn, so that the folds differ by at most one target of each kind."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    for side in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == side))
        folds[rows] = np.arange(len(rows)) % N_FOLDS
    return folds


def cross_fit(scores: dict[str, np.ndarray], labels: np.ndarray, keys: list[str], seed: int) -> dict[str, Headline]:
    """Each metric in `keys`, cross-fitted over the attacks' `scores` (see the module docstring).
    ValueError when a fold would lack members or non-members (fewer than 2 of either)."""
    if min(labels.sum(), len(labels) - labels.sum()) < N_FOLDS:
        raise ValueError(f"cross-fitting the headline needs at least {N_FOLDS} member and {N_FOLDS} non-member targets")
    folds = fold_ids(labels, seed)
    per_fold = [{name: figures(s[folds == f], labels[folds == f]) for name, s in scores.items()}
                for f in range(N_FOLDS)]
    z = stats.norm.ppf((1 + CONFIDENCE) / 2)
    headlines = {}
    for key in keys:
        # fold f is read with the attack that does best on the other fold
        chosen = tuple(max(scores, key=lambda name: per_fold[1 - f][name].value(key)) for f in range(N_FOLDS))
        readings = [per_fold[f][name] for f, name in enumerate(chosen)]
        value = float(np.mean([r.value(key) for r in readings]))
        if key == "auc":
            half_width = z * math.sqrt(sum(r.auc_se**2 for r in readings)) / N_FOLDS
            ci = (max(0.0, value - half_width), min(1.0, value + half_width))
        elif key.startswith("tpr_at_fpr_"):
            caught = sum(r.value(key) * r.n_members for r in readings)
            ci = wilson(round(caught), sum(r.n_members for r in readings))
        else:
            ci = None
        headlines[key] = Headline(value, ci, chosen)
    return headlines
