"""Canaries of the training audit: images the auditor slips into a training run, each by its own
coin flip, made so that a generator which keeps them leaves a trace in its release.

They are made from images the trainer never otherwise sees (a pool the caller gives: the
holdout, never the members), in one of four kinds:

- `clean`: the real image with its own label. What an ordinary record risks; the weakest kind
  against any generator that learns the distribution rather than its records.
- `mislabeled`: the real image under another class's label (drawn uniformly among the others).
  A class-conditional generator that memorises it draws it for the wrong class, where nothing
  else looks like it.
- `stamped`: the real image with a unique binary pattern (side `stamp_side(H)` pixels) written
  into one of its four corners, where the datasets' images are background. The score looks
  for that exact pattern in the release.
- `ood`: out of distribution for any image dataset: blocks of uniform noise (a random image at a
  quarter of the resolution, enlarged), with a random label.

`make_canaries` draws m of them from the pool with a seed; which of them go into the training
data is the training audit's coin flip (dpaudit/audit/training_audit.py), not decided here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet

KINDS = ("clean", "mislabeled", "stamped", "ood")


def stamp_side(height: int) -> int:
    """Side of a stamp: a quarter of the image, at least 3 pixels (512 patterns per corner)."""
    return max(3, height // 4)


@dataclass
class Canaries:
    """m canaries as the trainer would see them, with what their scores need to know: the pool
    rows they came from, and for `stamped` each pattern (m x s x s, 0/1) and its corner (m x 2,
    the top-left pixel)."""

    images: ImageSet
    kind: str
    pool_idx: torch.Tensor
    stamps: torch.Tensor | None = None
    stamp_at: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)


def make_canaries(pool: ImageSet, m: int, kind: str, seed: int) -> Canaries:
    """m canaries of `kind` made from m distinct images of `pool`, drawn with `seed`."""
    if kind not in KINDS:
        raise DpauditError(f"unknown canary kind {kind!r}; available: {', '.join(KINDS)}.")
    if not pool.has_labels:
        raise DpauditError(f"{pool.source or pool.name}: the canaries need labelled images.")
    if m > len(pool):
        raise DpauditError(
            f"{m} canaries need {m} images never shown to the trainer, but the holdout has {len(pool)}; "
            "ask for fewer canaries or give a larger holdout."
        )
    rng = np.random.default_rng(seed)
    idx = torch.as_tensor(np.sort(rng.choice(len(pool), size=m, replace=False)), dtype=torch.long)
    x, y = pool.take(idx), pool.y[idx].clone()
    k = int(pool.num_classes)
    stamps = stamp_at = None
    if kind == "mislabeled":
        if k < 2:
            raise DpauditError("mislabeled canaries need at least two classes.")
        y = (y + torch.as_tensor(rng.integers(1, k, size=m), dtype=torch.long)) % k
    elif kind == "stamped":
        x, stamps, stamp_at = _stamp(x, rng)
    elif kind == "ood":
        x = _noise_blocks(m, pool.shape, rng)
        y = torch.as_tensor(rng.integers(0, k, size=m), dtype=torch.long)
    images = ImageSet(x, y, k, name=f"{kind}-canaries", source=f"{m} {kind} canaries from {pool.name}")
    return Canaries(images, kind, idx, stamps, stamp_at)


def _stamp(x: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image with its own pattern in a random corner (every channel). A pattern has half its
    bits set (never a blank that the background would match), and no two canaries share both
    pattern and corner while there are enough distinct codes (C(9, 4) x 4 = 504 for 3 x 3 stamps).
    Drawn by rejection: with m at most the number of codes, each draw is new with probability
    at least 1 - m / codes, so this ends quickly except when m is close to the number of codes."""
    m, _, h, w = x.shape
    s = stamp_side(h)
    corners = np.array([(0, 0), (0, w - s), (h - s, 0), (h - s, w - s)])
    bits = np.r_[np.ones(s * s // 2), np.zeros(s * s - s * s // 2)]
    unique = m <= math.comb(s * s, s * s // 2) * len(corners)  # else some canaries must share a code
    chosen, seen = [], set()
    while len(chosen) < m:
        pattern, corner = rng.permutation(bits), int(rng.integers(0, len(corners)))
        key = (pattern.tobytes(), corner)
        if not unique or key not in seen:
            seen.add(key)
            chosen.append((pattern, corner))
    stamps = torch.as_tensor(np.stack([p for p, _ in chosen]).reshape(m, s, s), dtype=torch.float32)
    at = torch.as_tensor(corners[[c for _, c in chosen]], dtype=torch.long)
    for i in range(m):
        top, left = int(at[i, 0]), int(at[i, 1])
        x[i, :, top : top + s, left : left + s] = stamps[i]
    return x, stamps, at


def _noise_blocks(m: int, shape: tuple[int, int, int], rng: np.random.Generator) -> torch.Tensor:
    """m images of uniform noise at a quarter of the resolution, enlarged (nearest)."""
    c, h, w = shape
    small = torch.as_tensor(rng.random((m, c, max(2, h // 4), max(2, w // 4))), dtype=torch.float32)
    return F.interpolate(small, size=(h, w), mode="nearest").contiguous()
