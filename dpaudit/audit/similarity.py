"""Similarity: how close is each synthetic image to a real training image (pixel space)?

For every synthetic image, its nearest member by L2 (an exact, blocked matrix product), the
PSNR and SSIM (piq) to that neighbour, and the best SSIM among its top-k L2 candidates. Three
readings come out of it:

- DCR (distance to the closest record): the share of synthetic images whose closest real image
  is a member rather than a holdout image, corrected to equal set sizes, so that 0.5 means no
  memorization and 1 means every synthetic image sits on a member.
- near-copies: the share with best SSIM >= a threshold, beside the same share for holdout
  images against the members (natural near-duplicates; about 5% on MNIST), and the excess.
- the worst pairs (highest SSIM) as a figure for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import piq
import torch
from scipy.stats import binomtest
from tqdm.auto import tqdm

from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.errors import DpauditError
from dpaudit.images import to_uint8

PROFILES: dict[str, dict] = {
    # max_synthetic / max_holdout: how many synthetic / holdout images are matched against the
    # members (a seeded random sample; None = all). top_k: L2 candidates searched for the best SSIM.
    "quick": {"max_synthetic": 2000, "max_holdout": 2000, "top_k": 5, "near_copy_ssim": 0.95, "n_worst": 16},
    "standard": {"max_synthetic": 10000, "max_holdout": 10000, "top_k": 10, "near_copy_ssim": 0.95, "n_worst": 24},
    "paper": {"max_synthetic": None, "max_holdout": None, "top_k": 20, "near_copy_ssim": 0.95, "n_worst": 32},
}

SSIM_SIGMA = 1.5
SSIM_MAX_KERNEL = 11
# Extra L2 candidates whose distances are recomputed exactly: the expanded formula loses
# precision to cancellation, so near-ties may come out of the matrix product misordered.
CANDIDATE_MARGIN = 4
SSIM_PAIRS_PER_CHUNK = 8192
HIST_EDGES = np.linspace(0.0, 1.0, 21)


@dataclass
class Matches:
    """Each query's L2-nearest reference image and how similar the two are."""

    idx: torch.Tensor  # [N] index of the L2-nearest reference
    l2: torch.Tensor  # [N] L2 distance to it (pixel values in [0, 1])
    psnr: torch.Tensor  # [N] PSNR (dB) to it
    ssim: torch.Tensor  # [N] SSIM to it
    best_ssim: torch.Tensor  # [N] best SSIM among the top-k L2 candidates
    best_ssim_idx: torch.Tensor  # [N] reference index of that best-SSIM candidate

    def __len__(self) -> int:
        return len(self.idx)


# ---------------------------------------------------------------- nearest neighbours


def nearest_neighbors(
    queries: torch.Tensor,
    refs: torch.Tensor,
    k: int = 1,
    block_size: int = 2048,
    ref_block_size: int = 16384,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest `refs` of every query by squared L2: (sq_dists [N, k], idx [N, k]), closest first.

    Exact: candidates come from a blocked matrix product (||b||^2 - 2ab), and the best
    k + CANDIDATE_MARGIN of them are re-measured directly (float64 sums); ties go to the lower index.
    Rows are flattened, so images (N x C x H x W) and features (N x D) both work.
    """
    q0 = queries.reshape(len(queries), -1).float()
    r0 = refs.reshape(len(refs), -1).float()
    if q0.shape[1] != r0.shape[1] or len(r0) == 0:
        raise ValueError(f"cannot match {tuple(q0.shape)} queries against {tuple(r0.shape)} references")
    k = min(k, len(r0))
    n_cand = min(len(r0), k + CANDIDATE_MARGIN)
    # Shifting both sets by the same vector keeps distances and shrinks the norms (less cancellation).
    center = r0.mean(0)
    q = q0 - center
    r = (r0 - center).contiguous()
    r_sq = (r * r).sum(1)
    out_d = torch.empty(len(q), k, dtype=torch.float32)
    out_i = torch.empty(len(q), k, dtype=torch.long)
    starts = range(0, len(q), block_size)
    for qs in tqdm(starts, desc=progress, disable=progress is None, leave=False, delay=2):
        qb = q[qs : qs + block_size]
        best_d = best_i = None
        for rs in range(0, len(r), ref_block_size):
            # ||a||^2 is the same along a row, so ranking by ||b||^2 - 2ab is enough here.
            d = torch.addmm(r_sq[rs : rs + ref_block_size], qb, r[rs : rs + ref_block_size].T, alpha=-2)
            vals, ids = d.topk(min(n_cand, d.shape[1]), dim=1, largest=False, sorted=False)
            ids += rs
            if best_d is not None:
                vals, ids = torch.cat([best_d, vals], 1), torch.cat([best_i, ids], 1)
                vals, pos = vals.topk(n_cand, dim=1, largest=False, sorted=False)
                ids = ids.gather(1, pos)
            best_d, best_i = vals, ids
        # Re-measure the candidates directly on the unshifted data: no cancellation, float64 sums.
        best_i, _ = best_i.sort(1)
        q0b = q0[qs : qs + block_size]
        exact = torch.stack([(q0b - r0[best_i[:, j]]).double().pow(2).sum(1) for j in range(best_i.shape[1])], 1)
        order = exact.argsort(dim=1, stable=True)[:, :k]
        out_d[qs : qs + block_size] = exact.gather(1, order).float()
        out_i[qs : qs + block_size] = best_i.gather(1, order)
    return out_d, out_i


# ---------------------------------------------------------------- SSIM and PSNR


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(kernel size, sigma) of the SSIM window: the standard 11 pixels with sigma 1.5 (Wang et al.
    2004), shrunk for small images to the largest odd size that fits, sigma scaled with it (8x8
    digits: 7 pixels, sigma 0.95). skimage's gaussian window with that sigma has the same size."""
    side = min(SSIM_MAX_KERNEL, height, width)
    side = side if side % 2 == 1 else side - 1
    return side, SSIM_SIGMA * side / SSIM_MAX_KERNEL


def pairwise_ssim(a: torch.Tensor, b: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SSIM of each pair (a[i], b[i]) of N x C x H x W images in [0, 1] (piq; gaussian window of
    `ssim_window`, no down-sampling, so it equals skimage's structural_similarity)."""
    kernel, sigma = ssim_window(a.shape[-2], a.shape[-1])
    return torch.cat(
        [
            piq.ssim(
                a[i : i + batch_size].clamp(0, 1),
                b[i : i + batch_size].clamp(0, 1),
                kernel_size=kernel,
                kernel_sigma=sigma,
                data_range=1.0,
                reduction="none",
                downsample=False,
            )
            for i in range(0, len(a), batch_size)
        ]
    )


def pairwise_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each pair (a[i], b[i]) of images in [0, 1] (piq; identical pairs give 80 dB)."""
    return piq.psnr(a.clamp(0, 1), b.clamp(0, 1), data_range=1.0, reduction="none")


def match_to_reference(
    queries: torch.Tensor, refs: torch.Tensor, top_k: int = 5, progress: str | None = None
) -> Matches:
    """Match N x C x H x W query images to M x C x H x W reference images: the L2-nearest one with
    its PSNR and SSIM, and the best SSIM among the `top_k` L2-nearest candidates."""
    sq, idx = nearest_neighbors(queries, refs, k=top_k, progress=progress)
    nearest = idx[:, 0]
    k = idx.shape[1]
    chunk = max(1, SSIM_PAIRS_PER_CHUNK // k)  # bounds the memory of the N x k candidate pairs
    candidate_ssim = torch.cat([
        pairwise_ssim(queries[i : i + chunk].repeat_interleave(k, 0), refs[idx[i : i + chunk].reshape(-1)]).reshape(-1, k)
        for i in range(0, len(queries), chunk)
    ])
    best, pos = candidate_ssim.max(1)
    return Matches(
        idx=nearest,
        l2=sq[:, 0].sqrt(),
        psnr=pairwise_psnr(queries, refs[nearest]),
        ssim=candidate_ssim[:, 0],
        best_ssim=best,
        best_ssim_idx=idx.gather(1, pos[:, None])[:, 0],
    )


# ---------------------------------------------------------------- the check


def _sample(n: int, cap: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random sample of at most `cap` out of n (all when cap is None)."""
    if cap is None or cap >= n:
        return torch.arange(n)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, cap, replace=False)))


def _check_shapes(ctx: AuditContext) -> None:
    if ctx.synthetic.shape != ctx.reference.members.shape:
        raise DpauditError(
            f"{ctx.synthetic.source or ctx.synthetic.name}: synthetic images have shape {ctx.synthetic.shape}, "
            f"the reference has {ctx.reference.members.shape}."
        )


def holdout_baseline(ctx: AuditContext) -> Matches:
    """Holdout images (a seeded sample, per profile) matched against the members, once per context:
    how close unseen real images come to the members by chance."""
    settings = ctx.settings(PROFILES)

    def compute() -> Matches:
        holdout = ctx.reference.holdout.x
        pick = _sample(len(holdout), settings["max_holdout"], ctx.seed + 1)
        return match_to_reference(holdout[pick], ctx.reference.members.x, settings["top_k"], "holdout vs members")

    return ctx.cached("similarity:holdout_baseline", compute)


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

    ci = binomtest(int(round(wins)), n).proportion_ci(0.95, method="wilson")
    return {
        "value": corrected(wins / n),
        "ci": (corrected(ci.low), corrected(ci.high)),
        "raw_share": wins / n,
        "null_raw_share": n_members / (n_members + n_holdout),
    }


def _histogram(values: torch.Tensor) -> list[int]:
    """Counts over HIST_EDGES; values below 0 fall into the first bin."""
    counts, _ = np.histogram(values.clamp(0, 1).numpy(), bins=HIST_EDGES)
    return counts.tolist()


def _worst_pairs_figure(queries: torch.Tensor, partners: torch.Tensor, per_row: int = 4) -> np.ndarray:
    """A uint8 grid of pairs (query | partner), read row by row, with a 2-pixel white gutter."""
    scale = max(1, 28 // queries.shape[-1])  # enlarge tiny images (digits) so the pairs stay visible
    tiles = to_uint8(torch.stack([queries, partners], 1))  # n x 2 x C x H x W
    tiles = tiles.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    n, _, c, h, w = tiles.shape
    rows = -(-n // per_row)
    cols = min(n, per_row)
    pair_w, gap = 2 * w + 2, 6
    grid = np.full((rows * (h + gap) + gap, cols * (pair_w + gap) + gap, c), 255, np.uint8)
    for i in range(n):
        y = gap + (i // per_row) * (h + gap)
        x = gap + (i % per_row) * (pair_w + gap)
        grid[y : y + h, x : x + w] = tiles[i, 0].permute(1, 2, 0).numpy()
        grid[y : y + h, x + w + 2 : x + 2 * w + 2] = tiles[i, 1].permute(1, 2, 0).numpy()
    return grid[:, :, 0] if c == 1 else grid


def run(ctx: AuditContext) -> CheckResult:
    """The similarity check: DCR share, near-copies against the holdout baseline, mean NN SSIM/PSNR."""
    start = time.perf_counter()
    _check_shapes(ctx)
    settings = ctx.settings(PROFILES)
    threshold = settings["near_copy_ssim"]
    members, holdout = ctx.reference.members.x, ctx.reference.holdout.x
    pick = _sample(len(ctx.synthetic), settings["max_synthetic"], ctx.seed)
    synthetic = ctx.synthetic.x[pick]
    if len(pick) < len(ctx.synthetic):
        ctx.warn(f"similarity: {len(pick)} of {len(ctx.synthetic)} synthetic images matched (profile {ctx.profile}).")

    matches = match_to_reference(synthetic, members, settings["top_k"], "synthetic vs members")
    baseline = holdout_baseline(ctx)
    d_holdout, _ = nearest_neighbors(synthetic, holdout, k=1, progress="synthetic vs holdout")
    dcr = dcr_member_share(matches.l2, d_holdout[:, 0].sqrt(), len(members), len(holdout))

    copies = matches.best_ssim >= threshold
    share = float(copies.float().mean())
    base_share = float((baseline.best_ssim >= threshold).float().mean())
    n = {"synthetic": len(pick), "members": len(members), "holdout": len(holdout)}
    n_base = {"holdout": len(baseline), "members": len(members)}

    result = CheckResult("similarity")
    result.metrics = {
        "dcr_member_share": Metric(
            dcr["value"], "target",
            "share of synthetic images closer to a member than to any holdout image, at equal set sizes "
            "(0.5 = no memorization, 1 = all sit on members)",
            range=(0.0, 1.0), ci=dcr["ci"], target=0.5, n=n,
        ),
        "near_copy_share": Metric(
            share, "lower",
            f"share of synthetic images with SSIM >= {threshold:g} to some member (baseline: holdout images)",
            range=(0.0, 1.0), baseline=base_share, n=n,
        ),
        "near_copy_excess": Metric(
            share - base_share, "lower",
            "near-copy share minus the share of holdout images that are as close to a member by chance",
            range=(-1.0, 1.0), baseline=0.0, n=n,
        ),
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
    worst = matches.best_ssim.argsort(descending=True, stable=True)[: settings["n_worst"]]
    result.details = {
        "near_copy_threshold": threshold,
        "near_copy_count": int(copies.sum()),
        "holdout_near_copy_count": int((baseline.best_ssim >= threshold).sum()),
        "baseline_n": n_base,
        "top_k": settings["top_k"],
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
        "worst_pairs": [
            {"synthetic_index": int(pick[i]), "member_index": int(matches.best_ssim_idx[i]), "ssim": float(matches.best_ssim[i])}
            for i in worst
        ],
    }
    result.add_figure(
        "worst_pairs",
        _worst_pairs_figure(synthetic[worst], members[matches.best_ssim_idx[worst]]),
        "the synthetic images most similar to a member (synthetic | member, highest SSIM first)",
    )
    result.seconds = time.perf_counter() - start
    return result
