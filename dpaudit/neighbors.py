"""Nearest-neighbour search: the k nearest reference rows of every query row, exact.

One search for everyone (similarity, matching, fidelity's k-NN radii, the distance attacks):
a blocked matrix product (||b||^2 - 2ab) picks candidates, which are re-measured directly so
that near-ties are ordered exactly. Rows are flattened, so images and features both work.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

# Extra L2 candidates whose distances are recomputed exactly: the expanded formula loses
# precision to cancellation, so near-ties may come out of the matrix product misordered.
CANDIDATE_MARGIN = 4


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
    if len(refs) == 0:
        raise ValueError(f"cannot match {tuple(queries.shape)} queries against no references")
    q0 = queries.reshape(len(queries), -1).float()
    r0 = refs.reshape(len(refs), -1).float()
    if q0.shape[1] != r0.shape[1]:
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


def nearest_distance(queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (float64) from each query row to its nearest row of `refs`."""
    sq_dists, _ = nearest_neighbors(queries, refs, k=1)
    return sq_dists[:, 0].clamp_min(0).sqrt().double()
