"""Nearest-neighbour search: the k nearest reference rows of every query row, exact by default.

One search for everyone (similarity, matching, fidelity's k-NN radii, the distance attacks):
candidates come from the expanded formula ||b||^2 - 2ab, through faiss' exact `IndexFlatL2`
where faiss-cpu is installed (`pip install 'dpaudit[scale]'`: the search 1.1-1.5x faster in
MNIST's pixels, 1.6-2x in 84-dimensional features, benchmarks/RESULTS.md "Peers raced"), else through a blocked
torch matrix product; either way they are re-measured directly so that near-ties are ordered
exactly, and both give the same neighbours. $DPAUDIT_NN_BACKEND = torch | faiss forces one.
Searches too large for exact search take candidates from an approximate faiss index instead
(dpaudit/approximate_search.py: chosen by size or `--nn-index`, its recall measured each time).
Rows are flattened, so images and features both work. References may be Pixels
(dpaudit.pixels: 8-bit or memory-mapped images, maybe through a per-image function): those
whose float32 rows fit in STREAM_ABOVE_BYTES are converted and searched as above; larger ones
are searched exactly block by block as they are read (torch's blocked product; never held
converted, so that the search's memory does not grow with the reference set).
"""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from dpaudit import faiss_engine
from dpaudit.approximate_search import approximate_candidates, chosen_index
from dpaudit.pixels import Pixels

# Extra L2 candidates whose distances are recomputed exactly: the expanded formula loses
# precision to cancellation, so near-ties may come out of the matrix product misordered.
CANDIDATE_MARGIN = 4
BACKENDS = ("torch", "faiss")
# References (Pixels) whose float32 rows would take more are streamed, never held converted.
STREAM_ABOVE_BYTES = 1 << 28  # 256 MiB: MNIST's 60,000 images (188 MB) stay in memory


def backend() -> str:
    """The candidate search in use: $DPAUDIT_NN_BACKEND, else faiss where installed, else torch."""
    chosen = os.environ.get("DPAUDIT_NN_BACKEND", "").strip().lower()
    if chosen and chosen not in BACKENDS:
        raise ValueError(f"DPAUDIT_NN_BACKEND must be one of {', '.join(BACKENDS)}, not {chosen!r}")
    if chosen == "faiss" and faiss_engine.load() is None:
        raise ValueError("DPAUDIT_NN_BACKEND=faiss, but faiss is not installed (pip install 'dpaudit[scale]')")
    return chosen or ("faiss" if faiss_engine.load() is not None else "torch")


def _block_candidates(q: torch.Tensor, r: torch.Tensor, start: int, n_cand: int, best=None):
    """The n_cand smallest ||b||^2 - 2ab of each query row over the reference rows `r` (which
    begin at index `start`), merged with the best so far (values, ids) when given."""
    # ||a||^2 is the same along a row, so ranking by ||b||^2 - 2ab is enough here.
    d = torch.addmm((r * r).sum(1), q, r.T, alpha=-2)
    vals, ids = d.topk(min(n_cand, d.shape[1]), dim=1, largest=False, sorted=False)
    ids += start
    if best is not None:
        vals, ids = torch.cat([best[0], vals], 1), torch.cat([best[1], ids], 1)
        vals, pos = vals.topk(min(n_cand, vals.shape[1]), dim=1, largest=False, sorted=False)
        ids = ids.gather(1, pos)
    return vals, ids


def _torch_candidates(r: torch.Tensor, n_cand: int, ref_block_size: int):
    """A function of a query block: its n_cand smallest ||b||^2 - 2ab over blocks of references."""

    def search(qb: torch.Tensor) -> torch.Tensor:
        best = None
        for rs in range(0, len(r), ref_block_size):
            best = _block_candidates(qb, r[rs : rs + ref_block_size], rs, n_cand, best)
        return best[1]

    return search


def _faiss_candidates(r: torch.Tensor, n_cand: int):
    """The same through faiss' exact flat index over the references."""
    index = faiss_engine.load().IndexFlatL2(r.shape[1])
    index.add(r.numpy())

    def search(qb: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(faiss_engine.search(index, qb.numpy(), n_cand))

    return search


def nearest_neighbors(
    queries: torch.Tensor,
    refs: torch.Tensor | Pixels,
    k: int = 1,
    block_size: int = 2048,
    ref_block_size: int = 16384,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest `refs` of every query by squared L2: (sq_dists [N, k], idx [N, k]), closest first.

    The best k + CANDIDATE_MARGIN candidates by the expanded formula (`backend()`: faiss' flat
    index or a blocked matrix product of `ref_block_size` references; or, for very large
    searches, an approximate index: dpaudit/approximate_search.py) are re-measured directly
    (float64 sums); ties go to the lower index. Exact unless an approximate index was chosen.
    Rows are flattened, so images (N x C x H x W) and features (N x D) both work. Pixels
    references over STREAM_ABOVE_BYTES as float32 are searched block by block (`_streamed_search`).
    """
    if len(refs) == 0:
        raise ValueError(f"cannot match {tuple(queries.shape)} queries against no references")
    if isinstance(refs, Pixels):
        if not refs.is_float_tensor and refs.float_bytes() > STREAM_ABOVE_BYTES:
            return _streamed_search(queries, refs, k, block_size, progress)
        refs = refs.float()
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
    on_cpu = r.device.type == "cpu"  # faiss-cpu reads host memory

    def exact_candidates():
        on_faiss = backend() == "faiss" and on_cpu
        return _faiss_candidates(r, n_cand) if on_faiss else _torch_candidates(r, n_cand, ref_block_size)

    def finish(rows: torch.Tensor, candidates) -> torch.Tensor:
        return _remeasure(q0[rows], r0, candidates(q[rows]), k)[1]

    kind = chosen_index(len(q), len(r)) if on_cpu else "exact"
    if kind == "exact":
        candidates = exact_candidates()
    else:
        candidates = approximate_candidates(kind, refs, q, r, k, n_cand, finish, exact_candidates)
    return _remeasure_blocks(q0, r0, lambda block: candidates(q[block]), k, block_size, progress)


def _remeasure_blocks(q0: torch.Tensor, refs: torch.Tensor | Pixels, candidates_of, k: int, block_size: int,
                      progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`_remeasure` over blocks of `block_size` queries, `candidates_of(block)` giving each
    block's candidate ids: (sq_dists [N, k], idx [N, k])."""
    out_d = torch.empty(len(q0), k, dtype=torch.float32)
    out_i = torch.empty(len(q0), k, dtype=torch.long)
    starts = range(0, len(q0), block_size)
    for qs in tqdm(starts, desc=progress, disable=progress is None, leave=False, delay=2):
        block = slice(qs, qs + block_size)
        out_d[block], out_i[block] = _remeasure(q0[block], refs, candidates_of(block), k)
    return out_d, out_i


def _streamed_search(queries: torch.Tensor, refs: Pixels, k: int, block_size: int, progress: str | None):
    """nearest_neighbors over references read (and converted) one block at a time: the same
    candidates by the expanded formula, each reference block against every query block (the
    references are read once), then re-measured directly on the candidates read back by index."""
    q0 = queries.reshape(len(queries), -1).float()
    k = min(k, len(refs))
    n_cand = min(len(refs), k + CANDIDATE_MARGIN)
    center = None  # a centre near the data (the first block's mean) is all the cancellation needs
    query_blocks = [slice(qs, qs + block_size) for qs in range(0, len(q0), block_size)]
    best = [None] * len(query_blocks)  # per query block: the candidates so far (values, ids)
    total = -(-len(refs) // refs.rows_per_block())
    for start, block in tqdm(refs.blocks(), desc=progress, total=total, disable=progress is None, leave=False,
                             delay=2):
        r = block.reshape(len(block), -1)
        if center is None:
            if r.shape[1] != q0.shape[1]:
                raise ValueError(f"cannot match {tuple(q0.shape)} queries against references of {r.shape[1]} values")
            center = r.mean(0)
            q = q0 - center
        r = r - center
        for b, rows in enumerate(query_blocks):
            best[b] = _block_candidates(q[rows], r, start, n_cand, best[b])
    candidates = torch.cat([ids for _, ids in best])
    return _remeasure_blocks(q0, refs, lambda rows: candidates[rows], k, block_size)


def _remeasure(queries: torch.Tensor, refs: torch.Tensor | Pixels, candidate_ids: torch.Tensor, k: int):
    """The k nearest of each query's candidates, measured directly on the unshifted data (no
    cancellation, float64 sums), ties to the lower index: (sq_dists, ids)."""
    ids, _ = candidate_ids.sort(1)
    n = len(queries)
    exact = torch.stack([(queries - refs[ids[:, j]].reshape(n, -1)).double().pow(2).sum(1) for j in range(ids.shape[1])], 1)
    order = exact.argsort(dim=1, stable=True)[:, :k]
    return exact.gather(1, order).float(), ids.gather(1, order)


def nearest_distance(queries: torch.Tensor, refs: torch.Tensor | Pixels) -> torch.Tensor:
    """Euclidean distance (float64) from each query row to its nearest row of `refs`."""
    sq_dists, _ = nearest_neighbors(queries, refs, k=1)
    return sq_dists[:, 0].clamp_min(0).sqrt().double()
