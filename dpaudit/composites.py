"""Synthetic images made of members: blends and partial copies.

A generator that memorises can release more than copies: a blend w a + (1 - w) b of two
members, or a member with one region replaced (a partial copy). Neither is close to any single
member as a whole, so the near-copy search misses both; each is matched here to its sources:

- `best_blends`: every pair of a query's candidates, with the weight w in [0, 1] that brings
  w a + (1 - w) b closest to it (least squares, closed form). The candidates are its
  `BLEND_CANDIDATES` L2-nearest members and the `RESIDUAL_CANDIDATES` members whose direction is
  nearest to what its nearest member leaves unexplained, then to what each member of the best
  pair so far leaves (the minor source of an unequal blend
  is rarely among the L2-nearest: on MNIST the first design, without them, found 1% of
  0.3/0.7 blends; benchmarks/RESULTS.md, "Detection by kind").
- `best_partials`: for every L2-nearest candidate, the square window (side `patch_side`: 3/8 of
  the image's side, about 14% of its area) where the query differs most from it, left out.

Each is scored by its *ratio*, a distinctiveness test in the manner of Lowe's ratio test
(Lowe 2004): the squared L2 distance the best fit leaves, over what the runner-up leaves (for
a blend, the best pair sharing no member with the winner; for a partial copy, the next
candidate with its own window left out). A blend or partial copy of members is explained by
its sources down to its noise and by nothing else (ratios near 0); a natural image, or a blend
or patched version of images the generator never saw, is explained about as well by the
runner-up (ratios near 1). A query is a blend at a ratio <= BLEND_MAX_RATIO, a partial copy at
<= PARTIAL_MAX_RATIO; the similarity check reports the share of each beside the same share for
holdout images (benchmarks/RESULTS.md, "Detection by kind"). An exact copy fits both with ratio
0: the similarity check counts it as a near-copy instead. A member with a near-duplicate among
the members is not distinctive, so composites of it are missed.

Hand-written: a few tensor operations over the candidates; no library matches an image to
combinations of references.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpaudit.neighbors import nearest_neighbors
from dpaudit.pixels import Pixels, as_pixels

# The L2-nearest candidates whose pairs are tried as blends (and whose windows as partial copies),
# and the members nearest in direction to a member's residual, for the nearest and the two of the
# first round's best pair: 25 candidates give 300 pairs a query.
BLEND_CANDIDATES = 10
RESIDUAL_CANDIDATES = 5
BLEND_MAX_RATIO = 0.2
PARTIAL_MAX_RATIO = 0.2
# The window a partial copy may have replaced, as a share of the image's shorter side.
PATCH_FRACTION = 3 / 8
# Queries matched at once: bounds the memory of their candidates' pixels and differences.
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


def _ratio(best: torch.Tensor, runner_up: torch.Tensor) -> torch.Tensor:
    """What the best fit leaves over what the runner-up leaves; 1 (not distinctive) where the
    runner-up leaves nothing either (duplicate members) or there is no runner-up."""
    return torch.where(runner_up > 0, best / runner_up.clamp_min(1e-12), torch.ones_like(best))


def _chunked(fn, queries: torch.Tensor, *rows: torch.Tensor) -> list:
    """`fn` over chunks of the queries (and their matching rows), its fields concatenated."""
    parts = [fn(queries[i : i + QUERIES_PER_CHUNK], *(r[i : i + QUERIES_PER_CHUNK] for r in rows))
             for i in range(0, len(queries), QUERIES_PER_CHUNK)]
    return [torch.cat(field) for field in zip(*parts)]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero): L2 between them orders by cosine."""
    flat = x.flatten(1).float()
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def residual_candidates(queries: torch.Tensor, refs: torch.Tensor | Pixels, nearest: torch.Tensor,
                        k: int = RESIDUAL_CANDIDATES, pool: int = 1) -> torch.Tensor:
    """The k members nearest in direction (cosine) to what each query's `nearest` member leaves
    unexplained once scaled by least squares: the other source of a blend w a + (1 - w) b with
    a the nearest is the member most parallel to (1 - w) b. With `pool` > 1 the search runs on
    images averaged over pool x pool blocks (pool^2 times cheaper, a little less sharp)."""
    refs = as_pixels(refs)
    q, a = queries.float(), refs[nearest]
    scale = ((q * a).flatten(1).sum(1) / (a * a).flatten(1).sum(1).clamp_min(1e-12)).clamp(0, 1)
    residual = q - scale[:, None, None, None] * a

    def searched(images: torch.Tensor) -> torch.Tensor:  # the rows the search compares
        return _unit(F.avg_pool2d(images, pool) if pool > 1 else images)

    _, idx = nearest_neighbors(searched(residual), refs.map(searched), k=k)
    return idx


def best_blends(queries: torch.Tensor, refs: torch.Tensor | Pixels, candidates: torch.Tensor, search_pool: int = 1) -> Blends:
    """The best blend of two members for each query, given its L2-nearest candidates (N x K
    reference indices, nearest first), scored against the best pair disjoint from it. Two
    rounds: the pairs of the first BLEND_CANDIDATES of them and the RESIDUAL_CANDIDATES of the
    nearest (`residual_candidates`, at `search_pool`); then the same pairs with the residual
    candidates of each member of the winning pair added (when one of the two is a source, its
    residual points to the other; the second round finds most of the 0.5/0.5 blends of
    Fashion-MNIST, whose nearest members are mostly neither source: benchmarks/RESULTS.md)."""
    nearest = candidates[:, :BLEND_CANDIDATES]
    found = torch.cat([nearest, residual_candidates(queries, refs, nearest[:, 0], pool=search_pool)], 1)
    first = _best_pair(queries, refs, found)
    more = [residual_candidates(queries, refs, first.idx[:, side], pool=search_pool) for side in (0, 1)]
    return _best_pair(queries, refs, torch.cat([found, *more], 1))


def _best_pair(queries: torch.Tensor, refs: torch.Tensor | Pixels, candidates: torch.Tensor) -> Blends:
    """Over all pairs of each query's candidates, the pair and weight with the smallest squared
    residual, its ratio to the best pair sharing no member with it."""
    k = candidates.shape[1]
    i, j = torch.triu_indices(k, k, offset=1)

    def chunk(x, cand):
        # Every pair's residual from inner products alone (the Gram matrix of the query and its
        # candidates), not from the n x pairs x pixels differences: x ~ w a + (1 - w) b <=>
        # x - b ~ w (a - b), so w = <x - b, a - b> / |a - b|^2, kept in [0, 1].
        c = refs[cand].flatten(2).double()  # n x K x D
        x = x.flatten(1).double()
        gram = c @ c.transpose(1, 2)  # n x K x K
        xc = (c @ x[:, :, None])[..., 0]  # n x K
        aa, bb, ab = gram[:, i, i], gram[:, j, j], gram[:, i, j]
        xa, xb = xc[:, i], xc[:, j]
        along = xa - xb - ab + bb  # <x - b, a - b>
        span = (aa - 2 * ab + bb).clamp_min(1e-12)  # |a - b|^2
        w = (along / span).clamp(0, 1)
        residual = ((x * x).sum(1, keepdim=True) - 2 * xb + bb - 2 * w * along + w * w * span).clamp_min(0)
        best = residual.argmin(1)
        rows = torch.arange(len(x))
        pairs = torch.stack([cand[:, i], cand[:, j]], -1)  # n x P x 2
        winner = pairs[rows, best]  # n x 2
        shares = (pairs[..., :, None] == winner[:, None, None, :]).any(-1).any(-1)  # n x P
        runner_up = residual.masked_fill(shares, float("inf")).min(1).values
        runner_up = torch.where(runner_up.isinf(), torch.zeros_like(runner_up), runner_up)
        return _ratio(residual[rows, best], runner_up).float(), winner, w[rows, best].float()

    return Blends(*_chunked(chunk, queries, candidates))


def patch_side(height: int, width: int) -> int:
    """The side of the window a partial copy may have replaced (PATCH_FRACTION of the shorter side)."""
    return max(1, round(PATCH_FRACTION * min(height, width)))


def best_partials(queries: torch.Tensor, refs: torch.Tensor | Pixels, candidates: torch.Tensor) -> Partials:
    """Each query's best partial match among its first BLEND_CANDIDATES candidates (N x K
    distinct reference indices): for each candidate the window of side `patch_side` holding the
    most squared difference is left out; the candidate with the least difference outside it
    wins, scored against the next one."""
    c, h, w = queries.shape[1:]
    side = patch_side(h, w)
    positions_per_row = w - side + 1

    def chunk(x, cand):
        n, k = cand.shape
        diff = (x[:, None] - refs[cand.reshape(-1)].reshape(n, k, c, h, w)).pow(2).sum(2)  # n x K x H x W
        # the squared difference inside every window position, by a box filter
        inside = F.avg_pool2d(diff.reshape(n * k, 1, h, w), side, stride=1).reshape(n, k, -1) * side * side
        inside, where = inside.max(-1)
        outside = (diff.flatten(2).sum(-1) - inside).clamp_min(0)
        two = outside.topk(min(2, k), dim=1, largest=False)
        best = two.indices[:, 0]
        runner_up = two.values[:, 1] if k > 1 else torch.zeros(n)
        rows = torch.arange(n)
        at = where[rows, best]
        corner = torch.stack([at // positions_per_row, at % positions_per_row], 1)
        return _ratio(two.values[:, 0], runner_up), cand[rows, best], corner

    return Partials(*_chunked(chunk, queries, candidates[:, :BLEND_CANDIDATES]))
