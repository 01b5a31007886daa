"""Images matched to their nearest members: what the similarity check and the reconstruction
checks share.

Each query image gets its L2-nearest reference image (exact search, `dpaudit.neighbors`), the
PSNR and SSIM to it, and the best SSIM among its candidates: its top-k L2-nearest and the ones
the transformation-aware search proposes (`dpaudit.transforms`), each moved by the
transformation that brings it closest to the query, so that a shifted, rotated or re-lit copy
scores as the copy it is. On request, the best blend of two candidates and the best partial
match (`dpaudit.composites`). The holdout baseline is the same matching for real images no
generator saw: how close unseen images come to the members by chance (under the same
transformations), computed once per audit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpaudit.audit.context import AuditContext
from dpaudit.composites import BLEND_CANDIDATES, Blends, Partials, best_blends, best_partials
from dpaudit.image_similarity import pairwise_psnr, pairwise_ssim
from dpaudit.images import ImageSet
from dpaudit.neighbors import nearest_neighbors
from dpaudit.pixels import Pixels
from dpaudit.sampling import seeded_sample
from dpaudit.transforms import NO_TRANSFORMS, TransformConfig, align, aligned_pairs, propose

# Pixels of the candidate pairs whose SSIM is computed at once (8,192 MNIST pairs; fewer of larger images).
SSIM_VALUES_PER_CHUNK = 8192 * 784


@dataclass(frozen=True)
class MatchingConfig:
    """How images are matched to the members: `top_k` candidates searched for the best SSIM,
    the small transformations a copy may have gone through (`transforms`), the SSIM of a
    near-copy, how many holdout images form the baseline (a seeded sample; None = all), and the
    block size the search for a blend's second source averages images over
    (`dpaudit.composites.residual_candidates`; 1 = full resolution)."""

    top_k: int = 5
    near_copy_ssim: float = 0.95
    max_holdout: int | None = 2000
    transforms: TransformConfig = TransformConfig()
    blend_search_pool: int = 1


@dataclass
class Matches:
    """Each query's L2-nearest reference image and how similar the two are."""

    idx: torch.Tensor  # [N] index of the L2-nearest reference
    l2: torch.Tensor  # [N] L2 distance to it (pixel values in [0, 1])
    psnr: torch.Tensor  # [N] PSNR (dB) to it
    ssim: torch.Tensor  # [N] SSIM to it
    best_ssim: torch.Tensor  # [N] best SSIM among the top-k candidates up to the transformations
    best_ssim_idx: torch.Tensor  # [N] reference index of that best-SSIM candidate
    best_ssim_move: torch.Tensor  # [N] its transformation: an index into transforms.affine_moves (0 = none)
    moved_l2: torch.Tensor  # [N] L2 distance to the nearest candidate up to the transformations
    # the best blend of two candidates and the best partial match (`composites=True` only)
    blends: Blends | None = None
    partials: Partials | None = None

    def __len__(self) -> int:
        return len(self.idx)


def match_to_reference(
    queries: torch.Tensor, refs: torch.Tensor | Pixels, top_k: int = 5, progress: str | None = None,
    transforms: TransformConfig = NO_TRANSFORMS, composites: bool = False, blend_search_pool: int = 1,
) -> Matches:
    """Match N x C x H x W query images to M x C x H x W reference images (a tensor, or Pixels
    read block by block: dpaudit.pixels): the L2-nearest one with
    its PSNR and SSIM, and the best SSIM among the `top_k` candidates nearest up to the
    transformations (proposed by the L2 and the transformation-aware search), each measured
    under its best transformation; with `composites`, also the best blend (its second source
    searched at `blend_search_pool`) and partial match (`dpaudit.composites`)."""
    pool = max(top_k, transforms.candidates)  # the composites search more, the rest the same either way
    sq, idx = nearest_neighbors(queries, refs, k=max(pool, BLEND_CANDIDATES) if composites else pool, progress=progress)
    nearest = idx[:, 0]
    proposed = propose(queries, refs, transforms, pixel_idx=idx[:, :pool])
    distances, moves = align(queries, refs, proposed, transforms)
    # SSIM for the top_k candidates up to the transformations (SSIM is the costly measure)
    k = min(top_k, proposed.shape[1])
    distances, order = distances.topk(k, dim=1, largest=False)
    candidates, moves = proposed.gather(1, order), moves.gather(1, order)
    chunk = max(1, SSIM_VALUES_PER_CHUNK // (k * queries[0].numel()))  # bounds the memory of the N x k pairs
    candidate_ssim = torch.cat([
        pairwise_ssim(*aligned_pairs(queries[i : i + chunk].repeat_interleave(k, 0), refs,
                                     candidates[i : i + chunk].reshape(-1), moves[i : i + chunk].reshape(-1),
                                     transforms)).reshape(-1, k)
        for i in range(0, len(queries), chunk)
    ])
    best, pos = candidate_ssim.max(1)
    return Matches(
        idx=nearest,
        l2=sq[:, 0].sqrt(),
        psnr=pairwise_psnr(queries, refs[nearest]),
        ssim=pairwise_ssim(queries, refs[nearest]),
        best_ssim=best,
        best_ssim_idx=candidates.gather(1, pos[:, None])[:, 0],
        best_ssim_move=moves.gather(1, pos[:, None])[:, 0],
        moved_l2=distances[:, 0].float(),
        blends=best_blends(queries, refs, idx, blend_search_pool) if composites else None,
        partials=best_partials(queries, refs, idx) if composites else None,
    )


def match_by_class(queries: torch.Tensor, labels: torch.Tensor | None, refs: ImageSet, top_k: int,
                   transforms: TransformConfig = NO_TRANSFORMS) -> Matches:
    """`match_to_reference` restricted to the reference images of each query's class (all of
    them when `labels` is None); indices point into `refs`."""
    if labels is None or refs.y is None:
        return match_to_reference(queries, refs.pixels, top_k, transforms=transforms)
    values = ("l2", "psnr", "ssim", "best_ssim", "moved_l2")
    fields = {name: torch.empty(len(queries)) for name in values}
    fields.update({name: torch.empty(len(queries), dtype=torch.long) for name in ("idx", "best_ssim_idx", "best_ssim_move")})
    for c in labels.unique().tolist():
        rows, pool = torch.nonzero(labels == c).flatten(), torch.nonzero(refs.y == c).flatten()
        if len(pool) == 0:
            pool = torch.arange(len(refs))
        m = match_to_reference(queries[rows], refs.pixels.view(pool), top_k, transforms=transforms)
        for name in (*values, "best_ssim_move"):
            fields[name][rows] = getattr(m, name)
        fields["idx"][rows] = pool[m.idx]
        fields["best_ssim_idx"][rows] = pool[m.best_ssim_idx]
    return Matches(**fields)


def holdout_baseline(ctx: AuditContext) -> Matches:
    """Holdout images (a seeded sample) matched against the members, once per audit: how close
    unseen real images come to the members by chance (and how often they look like blends or
    partial copies)."""
    config = ctx.profile.matching

    def compute() -> Matches:
        holdout = ctx.reference.holdout
        pick = seeded_sample(len(holdout), config.max_holdout, ctx.seed + 1)
        return match_to_reference(holdout.take(pick), ctx.reference.members.pixels, config.top_k, "holdout vs members",
                                  transforms=config.transforms, composites=True,
                                  blend_search_pool=config.blend_search_pool)

    return ctx.cached("matching:holdout_baseline", compute)


def expected_max(values: torch.Tensor, n: int) -> float:
    """E[max of n draws with replacement from `values`]: the baseline for a max over n matched
    images (closed form over the order statistics: P(max = v_(i)) = (i/N)^n - ((i-1)/N)^n)."""
    v = values.double().sort().values
    i = torch.arange(1, len(v) + 1, dtype=torch.float64) / len(v)
    return float((v * (i.pow(n) - (i - 1 / len(v)).pow(n))).sum())
