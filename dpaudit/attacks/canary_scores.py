"""The evidence, from a release alone, that a canary was trained on: one score per canary
(higher = more likely IN), by several rules.

- `pixel`: log(d_ref / d_syn), where d_syn is the L2 distance from the canary to the nearest
  synthetic image of the canary's label (every synthetic image when the release is unlabelled)
  and d_ref the same to the nearest reference image (real images the trainer never saw, of that
  label). The reference calibrates each canary: an image that has close real neighbours gets
  close synthetic ones without being memorised.
- `feature`: the same in a feature space (the audit's LeNet), where a memorised image that the
  generator redraws a little differently is still near.
- `stamp` (stamped canaries only): how well the best-matching synthetic image reproduces the
  canary's own pattern in the canary's corner: the largest Pearson correlation over the
  synthetic images between that corner and the pattern (1 = the exact pattern).

The rules are tried together and the training audit pays for choosing among them (Bonferroni
over rules and bounds). None of them looks at the coin flips, so the bounds stay valid whatever
they score.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from dpaudit.attacks.canaries import Canaries
from dpaudit.images import ImageSet
from dpaudit.neighbors import nearest_neighbors

# A canary of a class the release never drew: no synthetic image speaks for it.
NO_EVIDENCE = -1e6


def nearest_by_label(queries: torch.Tensor, query_labels: torch.Tensor | None,
                     refs: torch.Tensor, ref_labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query row, the L2 distance to and the index of its nearest `refs` row of the same
    label (of any row where either side has no labels); distance inf and index -1 where that label
    has no rows."""
    distance = torch.full((len(queries),), float("inf"), dtype=torch.float64)
    index = torch.full((len(queries),), -1, dtype=torch.long)
    if query_labels is None or ref_labels is None:
        groups = [(torch.arange(len(queries)), torch.arange(len(refs)))]
    else:
        groups = [(torch.nonzero(query_labels == c).flatten(), torch.nonzero(ref_labels == c).flatten())
                  for c in torch.unique(query_labels).tolist()]
    for rows, candidates in groups:
        if len(rows) == 0 or len(candidates) == 0:
            continue
        sq, idx = nearest_neighbors(queries[rows], refs[candidates], k=1)
        distance[rows] = sq[:, 0].clamp_min(0).sqrt().double()
        index[rows] = candidates[idx[:, 0]]
    return distance, index


def calibrated_distance_scores(canaries: torch.Tensor, canary_labels: torch.Tensor | None,
                               synthetic: torch.Tensor, synthetic_labels: torch.Tensor | None,
                               reference: torch.Tensor, reference_labels: torch.Tensor | None) -> np.ndarray:
    """log(d_ref / d_syn) per canary (rows of images or features; see the module docstring)."""
    d_syn, _ = nearest_by_label(canaries, canary_labels, synthetic, synthetic_labels)
    d_ref, _ = nearest_by_label(canaries, canary_labels, reference, reference_labels)
    tiny = 1e-6  # an exact copy has d_syn = 0
    score = torch.log(d_ref.clamp_min(tiny)) - torch.log(d_syn.clamp_min(tiny))
    score[torch.isinf(d_syn)] = NO_EVIDENCE
    score[torch.isinf(d_ref) & torch.isfinite(d_syn)] = 0.0  # no reference to calibrate against: neutral
    return score.numpy()


def stamp_scores(canaries: Canaries, synthetic: torch.Tensor) -> np.ndarray:
    """Per stamped canary, the best Pearson correlation of a synthetic image's corner with the
    canary's pattern (1: the exact pattern; a flat corner, such as background, scores 0)."""
    s = canaries.stamps.shape[1]
    pattern = canaries.stamps.flatten(1)
    pattern = (pattern - pattern.mean(1, keepdim=True)) / pattern.std(1, keepdim=True).clamp_min(1e-8)
    scores = np.empty(len(canaries))
    gray = synthetic.mean(1)  # stamps are written into every channel
    for corner in torch.unique(canaries.stamp_at, dim=0):
        rows = torch.nonzero((canaries.stamp_at == corner).all(1)).flatten()
        top, left = int(corner[0]), int(corner[1])
        patches = gray[:, top : top + s, left : left + s].flatten(1)  # N x s^2
        centred = patches - patches.mean(1, keepdim=True)
        norms = centred.norm(dim=1)
        unit = torch.where(norms[:, None] > 1e-6, centred / norms.clamp_min(1e-6)[:, None], torch.zeros_like(centred))
        correlation = pattern[rows] @ unit.T / math.sqrt(s * s - 1)  # Pearson: unbiased std of the pattern
        scores[rows.numpy()] = correlation.max(1).values.numpy()
    return scores


def score_canaries(canaries: Canaries, synthetic: ImageSet, reference: ImageSet,
                   embed: Callable[[ImageSet], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Every rule's scores of the canaries against one release: `pixel`, `feature` (where `embed`,
    an ImageSet -> features map, is given) and `stamp` (for stamped canaries)."""
    cy = canaries.images.y
    rules = {
        "pixel": lambda: calibrated_distance_scores(canaries.images.x, cy, synthetic.x, synthetic.y,
                                                    reference.x, reference.y),
        "feature": lambda: calibrated_distance_scores(embed(canaries.images), cy, embed(synthetic), synthetic.y,
                                                      embed(reference), reference.y),
        "stamp": lambda: stamp_scores(canaries, synthetic.x),
    }
    return {rule: rules[rule]() for rule in rules_for(canaries.kind, embed is not None)}


def rules_for(kind: str, with_features: bool) -> tuple[str, ...]:
    """The rules `score_canaries` computes for canaries of `kind` (`feature` only with an embedding)."""
    return ("pixel",) + (("feature",) if with_features else ()) + (("stamp",) if kind == "stamped" else ())
