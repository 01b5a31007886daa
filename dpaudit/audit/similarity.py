"""Similarity: how close is each synthetic image to a real training image (pixel space)?

For every synthetic image, its nearest member by L2, the PSNR and SSIM to that neighbour, and
the best SSIM among its candidates, each moved by the small transformation (shift, rotation,
flip, intensity) that brings it closest (`dpaudit.audit.matching`, `dpaudit.transforms`). These
readings come out of it:

- DCR (distance to the closest record, exact pixel L2): the share of synthetic images whose
  closest real image is a member rather than a holdout image, corrected to equal set sizes, so that 0.5 means no
  memorization and 1 means every synthetic image sits on a member.
- near-copies: the share with best SSIM >= a threshold, beside the same share for holdout
  images against the members (natural near-duplicates; about 5% on MNIST), and the excess.
- blends and partial copies (`dpaudit.composites`): the share of synthetic images that are
  the mean of two members, or a member with a patch replaced, and are not near-copies, beside
  the same share for holdout images, and the excess.
- the worst pairs (highest SSIM) as a figure for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dpaudit.audit.context import AuditContext
from dpaudit.audit.figures import tile_grid
from dpaudit.audit.matching import Matches, holdout_baseline, match_to_reference
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.spec import CheckSpec
from dpaudit.composites import BLEND_MAX_RATIO, PARTIAL_MAX_RATIO, patch_side
from dpaudit.image_similarity import ssim_window
from dpaudit.intervals import difference, wilson
from dpaudit.neighbors import nearest_neighbors
from dpaudit.sampling import seeded_sample
from dpaudit.transforms import affine_moves

HIST_EDGES = np.linspace(0.0, 1.0, 21)
PAIRS_PER_ROW = 4  # of the worst-pairs, blends and partial copies figures


@dataclass(frozen=True)
class SimilarityConfig:
    """How many synthetic images are matched against the members (a seeded random sample;
    None = all) and how many of the closest pairs the figure shows. How they are matched (top-k,
    the near-copy SSIM, the holdout baseline) is the profile's `matching`."""

    max_synthetic: int | None = 2000
    n_worst: int = 16


def dcr_member_share(d_members: torch.Tensor, d_holdout: torch.Tensor, n_members: int, n_holdout: int) -> dict:
    """Share of queries whose closest real image is a member, corrected to equal set sizes.

    With n_members members and n_holdout holdout images, a query that ignores both (no memorization)
    is closest to a member with probability p0 = n_members / (n_members + n_holdout). Dividing the
    odds share / (1 - share) by p0 / (1 - p0) makes the null value 0.5 whatever the sizes, and
    equals the plain share when the sizes are equal. (Sub-sampling the members to the holdout size
    instead would hide every copy of a member left out of the sample.) Ties count one half.
    """
    wins = float((d_members < d_holdout).sum()) + 0.5 * float((d_members == d_holdout).sum())
    n = len(d_members)
    prior_odds = n_members / n_holdout

    def corrected(share: float) -> float:
        if share >= 1.0:
            return 1.0
        odds = share / (1.0 - share) / prior_odds
        return odds / (1.0 + odds)

    low, high = wilson(round(wins), n)
    return {
        "value": corrected(wins / n),
        "ci": (corrected(low), corrected(high)),
        "raw_share": wins / n,
        "null_raw_share": n_members / (n_members + n_holdout),
    }


def _histogram(values: torch.Tensor) -> list[int]:
    """Counts over HIST_EDGES; values below 0 fall into the first bin."""
    counts, _ = np.histogram(values.clamp(0, 1).numpy(), bins=HIST_EDGES)
    return counts.tolist()


def distance_histogram(synthetic: torch.Tensor, holdout: torch.Tensor, bins: int = 30) -> dict:
    """Counts of the nearest-member L2 distances of synthetic and of holdout images over shared
    bins from 0 to the larger 99.5th percentile (farther ones fall into the last bin)."""
    top = float(max(synthetic.quantile(0.995), holdout.quantile(0.995))) if len(synthetic) and len(holdout) else 1.0
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    count = lambda values: np.histogram(values.clamp(0, edges[-1]).numpy(), bins=edges)[0].tolist()  # noqa: E731
    return {"edges": edges.tolist(), "synthetic": count(synthetic), "holdout": count(holdout)}


COMPOSITE_MEANINGS = {
    "blend": "a blend of two members (w a + (1 - w) b leaves at most "
             f"{BLEND_MAX_RATIO:g} of what the best pair of other members leaves)",
    "partial_copy": "a member with one square patch replaced (outside the patch it leaves at most "
                    f"{PARTIAL_MAX_RATIO:g} of what the next member leaves)",
}


def composite(kind: str, matches: Matches, copies: torch.Tensor) -> torch.Tensor:
    """Which matched images are composites of `kind` ("blend" or "partial_copy"), leaving out
    the near-copies (`copies`), which are counted as such."""
    if kind == "blend":
        return (matches.blends.ratio <= BLEND_MAX_RATIO) & ~copies
    return (matches.partials.ratio <= PARTIAL_MAX_RATIO) & ~copies


def _best_fitting(kind: str, matches: Matches, found: torch.Tensor, limit: int) -> torch.Tensor:
    """The rows of the composites of `kind` that fit best (lowest ratio first), at most `limit`."""
    fit = matches.blends if kind == "blend" else matches.partials
    rows = torch.nonzero(found).flatten()
    return rows[fit.ratio[rows].argsort(stable=True)][:limit]


def _composite_examples(kind: str, matches: Matches, rows: torch.Tensor, pick: torch.Tensor) -> list[dict]:
    """The composites of `kind` at `rows`: synthetic index, sources, ratio."""
    fit = matches.blends if kind == "blend" else matches.partials
    if kind == "blend":
        return [{"synthetic_index": int(pick[r]), "member_indices": fit.idx[r].tolist(),
                 "weight": float(fit.weight[r]), "ratio": float(fit.ratio[r])} for r in rows]
    return [{"synthetic_index": int(pick[r]), "member_index": int(fit.idx[r]),
             "patch_corner": fit.corner[r].tolist(), "ratio": float(fit.ratio[r])} for r in rows]


def _composite_tiles(kind: str, matches: Matches, rows: torch.Tensor, synthetic: torch.Tensor,
                     members: torch.Tensor) -> torch.Tensor:
    """Each composite at `rows` beside its sources (a blend: both members; a partial copy: the member)."""
    if kind == "blend":
        sources = matches.blends.idx[rows]
        return torch.stack([synthetic[rows], members[sources[:, 0]], members[sources[:, 1]]], 1).flatten(0, 1)
    return torch.stack([synthetic[rows], members[matches.partials.idx[rows]]], 1).flatten(0, 1)


def _describe_move(move: tuple[float, float, float, bool]) -> str:
    """A transformation in words, e.g. "shift (2, -1)", "rotation 10", "none"."""
    dx, dy, angle, flipped = move
    parts = ([f"shift ({dx:g}, {dy:g})"] if dx or dy else []) + ([f"rotation {angle:g}"] if angle else [])
    parts += ["flip"] if flipped else []
    return ", ".join(parts) or "none"


def run(ctx: AuditContext) -> CheckResult:
    """The similarity check: DCR share, near-copies against the holdout baseline, mean NN SSIM/PSNR."""
    config, matching = ctx.profile.similarity, ctx.profile.matching
    threshold = matching.near_copy_ssim
    members, holdout = ctx.reference.members.pixels, ctx.reference.holdout.pixels
    pick = seeded_sample(len(ctx.synthetic), config.max_synthetic, ctx.seed)
    synthetic = ctx.synthetic.take(pick)
    if len(pick) < len(ctx.synthetic):
        ctx.warn(f"similarity: {len(pick)} of {len(ctx.synthetic)} synthetic images matched (profile {ctx.profile.name}).")

    matches = match_to_reference(synthetic, members, matching.top_k, "synthetic vs members", matching.transforms,
                                 composites=True, blend_search_pool=matching.blend_search_pool)
    baseline = holdout_baseline(ctx)
    # DCR compares a pool of members with a 5x smaller holdout: it needs exact distances. The
    # transformation-aware search proposes a fixed number of candidates, so it misses the true
    # nearest more often in the larger pool, which would tilt the share towards the holdout.
    d_holdout, _ = nearest_neighbors(synthetic, holdout, k=1, progress="synthetic vs holdout")
    dcr = dcr_member_share(matches.l2, d_holdout[:, 0].sqrt(), len(members), len(holdout))

    copies = matches.best_ssim >= threshold
    base_copies = baseline.best_ssim >= threshold
    n_copies, n_base_copies = int(copies.sum()), int(base_copies.sum())
    share, base_share = n_copies / len(pick), n_base_copies / len(baseline)
    composites = {kind: (composite(kind, matches, copies), composite(kind, baseline, base_copies))
                  for kind in COMPOSITE_MEANINGS}
    counts = {kind: (int(found.sum()), len(pick), int(base.sum()), len(baseline)) for kind, (found, base) in composites.items()}
    n = {"synthetic": len(pick), "members": len(members), "holdout": len(holdout)}
    n_base = {"holdout": len(baseline), "members": len(members)}

    result = CheckResult("similarity")
    result.metrics = {
        "dcr_member_share": Metric(
            dcr["value"], "target",
            "share of synthetic images closer (pixel L2) to a member than to any holdout image, at equal set sizes "
            "(0.5 = no memorization, 1 = all sit on members)",
            range=(0.0, 1.0), ci=dcr["ci"], target=0.5, n=n,
        ),
        "near_copy_share": Metric(
            share, "lower",
            f"share of synthetic images with SSIM >= {threshold:g} to some member, up to small transformations "
            "(baseline: holdout images)",
            range=(0.0, 1.0), ci=wilson(n_copies, len(pick)), baseline=base_share, n=n,
        ),
        "near_copy_excess": Metric(
            share - base_share, "lower",
            "near-copy share minus the share of holdout images that are as close to a member by chance "
            "(interval: Newcombe's, for a difference of two shares)",
            range=(-1.0, 1.0), ci=difference(n_copies, len(pick), n_base_copies, len(baseline)), baseline=0.0, n=n,
        ),
        **{
            f"{kind}_excess": Metric(
                counts[kind][0] / len(pick) - counts[kind][2] / len(baseline), "lower",
                f"share of synthetic images that are {meaning} (and not near-copies), minus the same share of "
                "holdout images (Newcombe interval)",
                range=(-1.0, 1.0), ci=difference(*counts[kind]), baseline=0.0, n=n,
            ) for kind, meaning in COMPOSITE_MEANINGS.items()
        },
        "mean_nn_ssim": Metric(
            float(matches.ssim.mean()), "info",
            "mean SSIM between a synthetic image and its L2-nearest member (baseline: holdout images)",
            range=(-1.0, 1.0), baseline=float(baseline.ssim.mean()), n=n,
        ),
        "mean_nn_psnr": Metric(
            float(matches.psnr.mean()), "info",
            "mean PSNR (dB) between a synthetic image and its L2-nearest member (baseline: holdout images)",
            baseline=float(baseline.psnr.mean()), n=n,
        ),
    }
    shown = {kind: _best_fitting(kind, matches, found, config.n_worst) for kind, (found, _) in composites.items()}
    composite_details = {
        kind: {"count": counts[kind][0], "holdout_count": counts[kind][2],
               "examples": _composite_examples(kind, matches, shown[kind], pick)}
        for kind in composites
    }
    worst = matches.best_ssim.argsort(descending=True, stable=True)[: config.n_worst]
    moves = affine_moves(matching.transforms)
    result.details = {
        "near_copy_threshold": threshold,
        "near_copy_count": n_copies,
        "holdout_near_copy_count": n_base_copies,
        "baseline_n": n_base,
        "top_k": matching.top_k,
        "transforms": matching.transforms.describe(),
        # near-copies whose best match needed a geometric transformation (a shift, rotation or flip)
        "near_copy_moved_count": int((copies & (matches.best_ssim_move != 0)).sum()),
        # blends and partial copies (dpaudit.composites), not counted as near-copies
        "composites": {"blend_max_ratio": BLEND_MAX_RATIO, "partial_max_ratio": PARTIAL_MAX_RATIO,
                       "patch_side": patch_side(*synthetic.shape[-2:]), **composite_details},
        "ssim_window": list(ssim_window(*synthetic.shape[-2:])),
        "dcr_raw_share": dcr["raw_share"],
        "dcr_null_raw_share": dcr["null_raw_share"],
        "mean_nn_l2": float(matches.l2.mean()),
        "holdout_mean_nn_l2": float(baseline.l2.mean()),
        "ssim_hist": {
            "edges": HIST_EDGES.tolist(),
            "synthetic": _histogram(matches.best_ssim),
            "holdout": _histogram(baseline.best_ssim),
        },
        "l2_hist": distance_histogram(matches.l2, baseline.l2),
        "worst_pairs": [
            {"synthetic_index": int(pick[i]), "member_index": int(matches.best_ssim_idx[i]),
             "ssim": float(matches.best_ssim[i]), "move": _describe_move(moves[int(matches.best_ssim_move[i])])}
            for i in worst
        ],
    }
    result.add_figure(
        "worst_pairs",
        tile_grid(torch.stack([synthetic[worst], members[matches.best_ssim_idx[worst]]], 1).flatten(0, 1), 2 * PAIRS_PER_ROW),
        "the synthetic images most similar to a member (synthetic | member, highest SSIM first)",
    )
    for kind, figure, sources in (("blend", "blends", "member a | member b"), ("partial_copy", "partial_copies", "member")):
        if len(shown[kind]):
            columns = 3 if kind == "blend" else 2
            result.add_figure(
                figure, tile_grid(_composite_tiles(kind, matches, shown[kind], synthetic, members),
                                      columns * PAIRS_PER_ROW),
                f"the synthetic images that fit a {kind.replace('_', ' ')} of members best (synthetic | {sources}, "
                "best fit first)",
            )
    return result


CHECK = CheckSpec(
    name="similarity",
    title="Similarity to training images",
    question="Does it copy? Each synthetic image against its nearest real training image (member), beside how close "
    "real images the generator never saw (holdout) come: the natural baseline.",
    needs_labels=False,
    headlines=("near_copy_excess",),
    run=run,
)
