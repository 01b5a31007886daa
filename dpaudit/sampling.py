"""Seeded random subsets: every check and attack that works on a sample of a set draws it here."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def seeded_sample(n: int, cap: int | None, seed: int | Sequence[int] | np.random.Generator) -> torch.Tensor:
    """Sorted indices of a seeded random sample of min(n, cap) out of n, without replacement
    (all n, in order, when `cap` is None or at least n; the random generator is then not used).
    `seed` is an int, a sequence of ints (one stream per use) or a numpy Generator to draw from."""
    if cap is None or cap >= n:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.sort(rng.choice(n, cap, replace=False)))
