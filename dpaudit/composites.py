"""Synthetic images made of members: blends and partial copies.

A generator that memorises can release more than copies: the mean of two members (a blend), or
a member with one region replaced (a partial copy). Neither is close to any single member as a
whole, so the near-copy search misses both; each is matched here to its sources among the
query's candidates (its L2-nearest members, which hold both sources of a blend in about 9 of 10
cases on MNIST: benchmarks/RESULTS.md, "Blends and partial copies"):

- `best_blends`: for every pair (a, b) of the first `BLEND_CANDIDATES` candidates, the weight
  w in [0, 1] that brings w a + (1 - w) b closest to the query (least squares, closed form).
- `best_partials`: for every candidate, the square window (side `patch_side`: 3/8 of the
  image's side, about 14% of its area) where the query differs most from it, left out.

Each is scored by its *ratio*: the squared L2 distance that remains (to the best blend; outside
the window) over the squared distance to the nearest single member. A blend or a partial copy
leaves little more than its noise (ratios near 0); a natural image is explained by no pair and
no window of its neighbours (on MNIST, 95% of holdout images have a blend ratio above 0.5 and a
partial ratio above 0.05). A query is a blend at a ratio <= BLEND_MAX_RATIO, a partial copy at
<= PARTIAL_MAX_RATIO; the similarity check reports the share of each beside the same share for
holdout images.

Hand-written: a few tensor operations over the candidates; no library matches an image to
combinations of references.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Candidates whose pairs are tried as blends: 10 give 45 pairs a query.
BLEND_CANDIDATES = 10
BLEND_MAX_RATIO = 0.25
PARTIAL_MAX_RATIO = 0.05
# The window a partial copy may have replaced, as a share of the image's shorter side.
PATCH_FRACTION = 3 / 8
# Queries matched at once: bounds the memory of the N x pairs x pixels blends.
QUERIES_PER_CHUNK = 128


@dataclass
class Blends:
    """Each query's best two-member blend: its ratio, the two members and the first one's weight."""

    ratio: torch.Tensor  # [N]
    idx: torch.Tensor  # [N, 2] reference indices
    weight: torch.Tensor  # [N] w of w * refs[idx[:, 0]] + (1 - w) * refs[idx[:, 1]]


@dataclass
class Partials:
    """Each query's best partial match: its ratio, the member and the left-out window's
    top-left corner (row, column)."""

    ratio: torch.Tensor  # [N]
    idx: torch.Tensor  # [N]
    corner: torch.Tensor  # [N, 2]


def _ratio(remaining: torch.Tensor, nearest_sq: torch.Tensor) -> torch.Tensor:
    """What remains over the squared distance to the nearest member; 1 for a query that equals
    a member (a copy, not a composite)."""
    return torch.where(nearest_sq > 0, remaining / nearest_sq.clamp_min(1e-12), torch.ones_like(remaining))


def _chunked(fn, queries: torch.Tensor, *rows: torch.Tensor) -> list:
    """`fn` over chunks of the queries (and their matching rows), its fields concatenated."""
    parts = [fn(queries[i : i + QUERIES_PER_CHUNK], *(r[i : i + QUERIES_PER_CHUNK] for r in rows))
             for i in range(0, len(queries), QUERIES_PER_CHUNK)]
    return [torch.cat(field) for field in zip(*parts)]


def best_blends(queries: torch.Tensor, refs: torch.Tensor, candidates: torch.Tensor, nearest_sq: torch.Tensor) -> Blends:
    """The best blend of two of each query's candidates (N x K reference indices, nearest
    first): the pair and weight with the smallest squared residual; `nearest_sq` is each
    query's squared distance to its nearest member."""
    k = min(BLEND_CANDIDATES, candidates.shape[1])
    i, j = torch.triu_indices(k, k, offset=1)
    flat = refs.flatten(1)

    def chunk(x, cand, near):
        pairs = torch.stack([cand[:, i], cand[:, j]], -1)  # n x P x 2
        a, b = flat[pairs[..., 0]].double(), flat[pairs[..., 1]].double()  # n x P x D
        x = x.flatten(1)[:, None].double()
        # x ~ w a + (1 - w) b  <=>  x - b ~ w (a - b): w = <x - b, a - b> / |a - b|^2, kept in [0, 1]
        span = a - b
        w = (((x - b) * span).sum(-1) / (span * span).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        residual = (x - b - w[..., None] * span).pow(2).sum(-1)
        best = residual.argmin(1)
        rows = torch.arange(len(x))
        return _ratio(residual[rows, best].float(), near), pairs[rows, best], w[rows, best].float()

    return Blends(*_chunked(chunk, queries, candidates, nearest_sq))


def patch_side(height: int, width: int) -> int:
    """The side of the window a partial copy may have replaced (PATCH_FRACTION of the shorter side)."""
    return max(1, round(PATCH_FRACTION * min(height, width)))


def best_partials(queries: torch.Tensor, refs: torch.Tensor, candidates: torch.Tensor,
                  nearest_sq: torch.Tensor) -> Partials:
    """Each query's best partial match among its candidates (N x K reference indices): for each
    candidate the window of side `patch_side` holding the most squared difference is left out;
    the candidate with the least difference outside it wins."""
    c, h, w = queries.shape[1:]
    side = patch_side(h, w)
    positions_per_row = w - side + 1

    def chunk(x, cand, near):
        n, k = cand.shape
        diff = (x[:, None] - refs[cand.reshape(-1)].reshape(n, k, c, h, w)).pow(2).sum(2)  # n x K x H x W
        # the squared difference inside every window position, by a box filter
        inside = F.avg_pool2d(diff.reshape(n * k, 1, h, w), side, stride=1).reshape(n, k, -1) * side * side
        inside, where = inside.max(-1)
        outside = diff.flatten(2).sum(-1) - inside
        best = outside.argmin(1)
        rows = torch.arange(n)
        at = where[rows, best]
        corner = torch.stack([at // positions_per_row, at % positions_per_row], 1)
        return _ratio(outside[rows, best].clamp_min(0), near), cand[rows, best], corner

    return Partials(*_chunked(chunk, queries, candidates, nearest_sq))
