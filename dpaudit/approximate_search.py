"""Approximate nearest-neighbour candidates through faiss (IVF or HNSW), with their recall measured.

Exact search costs queries x references x dimensions: for MNIST (10,000 x 50,000) a few seconds,
for 200,000 synthetic 32x32 RGB images against 500,000 references 6 x 10^14 floating-point
operations, about an hour at the reference machine's 176 GFLOP/s (benchmarks/RESULTS.md). Above
APPROXIMATE_FROM_PAIRS query-reference pairs, `auto` (the default) proposes candidates from an
inverted-file index (faiss `IndexIVFFlat`: the references clustered into about 4 sqrt(N) lists,
a query scanning the `nprobe` nearest lists) instead; `hnsw` (faiss `IndexHNSWFlat`, a graph
walked with a beam of `efSearch`) and `exact` are chosen by `--nn-index`. faiss-cpu is the
optional extra `dpaudit[scale]` (also in `peers`); without it `auto` stays exact.

The approximation can only lose neighbours, never invent distances: neighbors.nearest_neighbors
re-measures every candidate exactly. What is lost is measured every time an approximate index is
used. Before the full search the probe width (nprobe or efSearch) is doubled, from a start that
suits MNIST, until the recall@k on TUNE_QUERIES queries reaches RECALL_TARGET against exact search
(an IVF probing all its lists is exact, so IVF always reaches it); the recall@k on VERIFY_QUERIES
other queries, not used to choose the width, is then recorded (`SearchRecord`) and goes into
result.json. recall@k is the share of the exact k nearest (by index) that the search returned.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from dpaudit import faiss_engine
from dpaudit.errors import DpauditError

INDEXES = ("auto", "exact", "ivf", "hnsw")
APPROXIMATE_FROM_PAIRS = 10**10  # e.g. 50,000 queries x 200,000 references; MNIST audits stay exact
RECALL_TARGET = 0.99
TUNE_QUERIES = 500
VERIFY_QUERIES = 1000
MIN_QUERIES = 20  # fewer queries than this: an index would cost more than exact search
IVF_START_NPROBE = 16
IVF_TRAIN_PER_LIST = 40
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_START_EF = 64
HNSW_MAX_EF = 4096
CACHED_INDEXES = 2  # the similarity check searches the same references five times


@dataclass
class SearchRecord:
    """One search that took its candidates from an approximate index, and how well it did."""

    index: str  # "ivf" or "hnsw"
    params: dict  # nlist and nprobe, or M and efSearch, as used
    queries: int
    references: int
    dims: int
    k: int
    recall: float  # recall@k on `recall_queries` queries not used to choose params
    recall_queries: int
    target: float
    build_seconds: float = 0.0  # building the index (or 0: reused from the cache)
    tune_seconds: float = 0.0  # choosing the width and measuring the recall; the search is in the check's time
    check: str | None = None  # set by the pipeline: the check that ran the search

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Settings:
    index: str = "auto"
    records: list[SearchRecord] = field(default_factory=list)


_SETTINGS: ContextVar[_Settings] = ContextVar("dpaudit_search_settings", default=_Settings())


def check_index(index: str) -> str:
    """`index` if it names an index (INDEXES), else DpauditError; faiss is needed for ivf and hnsw."""
    if index not in INDEXES:
        raise DpauditError(f"unknown nearest-neighbour index {index!r}; choose one of {', '.join(INDEXES)}.")
    if index in ("ivf", "hnsw") and faiss_engine.load() is None:
        raise DpauditError(f"--nn-index {index} needs faiss: pip install 'dpaudit[scale]'.")
    return index


@contextmanager
def search_settings(index: str = "auto") -> Iterator[list[SearchRecord]]:
    """Every search inside the block uses `index`; yields the list that collects its SearchRecords."""
    token = _SETTINGS.set(_Settings(check_index(index)))
    try:
        yield _SETTINGS.get().records
    finally:
        _SETTINGS.reset(token)


def chosen_index(n_queries: int, n_refs: int) -> str:
    """"exact", "ivf" or "hnsw" for a search of `n_queries` against `n_refs` under the settings."""
    index = _SETTINGS.get().index
    if index == "auto":
        large = n_queries * n_refs >= APPROXIMATE_FROM_PAIRS and faiss_engine.load() is not None
        index = "ivf" if large else "exact"
    if n_queries < MIN_QUERIES or n_refs < 2 * MIN_QUERIES:
        return "exact"
    return index


class _Index:
    """A faiss IVF or HNSW index over centred references, with one width to widen."""

    def __init__(self, kind: str, refs: np.ndarray, seed: int = 0):
        faiss = faiss_engine.load()
        n, dims = refs.shape
        self.kind = kind
        if kind == "ivf":
            # 4 sqrt(N) lists, k-means on 40 points a list (faiss wants at least 39; a larger sample
            # only costs training time, benchmarks/RESULTS.md "Approximate nearest-neighbour search").
            self.nlist = max(1, min(round(4 * math.sqrt(n)), n // IVF_TRAIN_PER_LIST))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dims), dims, self.nlist)
            rows = np.random.default_rng(seed).choice(n, min(n, IVF_TRAIN_PER_LIST * self.nlist), replace=False)
            self.index.cp.seed = seed
            self.index.train(refs[np.sort(rows)])
            self.width = min(IVF_START_NPROBE, self.nlist)
        else:
            self.index = faiss.IndexHNSWFlat(dims, HNSW_M)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.width = HNSW_START_EF
        self.index.add(refs)

    def params(self) -> dict:
        if self.kind == "ivf":
            return {"nlist": self.nlist, "nprobe": self.width}
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": self.width}

    def widen(self) -> bool:
        """Double the probe width; False when it cannot grow (IVF probing every list is exact)."""
        limit = self.nlist if self.kind == "ivf" else HNSW_MAX_EF
        if self.width >= limit:
            return False
        self.width = min(2 * self.width, limit)
        return True

    def search(self, queries: np.ndarray, n_cand: int) -> np.ndarray:
        if self.kind == "ivf":
            self.index.nprobe = self.width
        else:
            self.index.hnsw.efSearch = max(self.width, n_cand)
        ids = faiss_engine.search(self.index, queries, n_cand)
        # Fewer than n_cand found (a sparse list): pad with the first, re-measured like the rest.
        return np.where(ids < 0, ids[:, :1], ids)


_CACHE: OrderedDict[tuple, tuple[torch.Tensor, _Index]] = OrderedDict()


def _cached_index(kind: str, refs: torch.Tensor, centred: torch.Tensor) -> _Index:
    """The index of `refs`, built once while `refs` is unchanged (the cache holds a reference to
    the tensor, so its id and storage cannot be reused by another while the entry lives)."""
    key = (kind, id(refs), refs.data_ptr(), tuple(refs.shape), refs._version)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key][1]
    index = _Index(kind, centred.numpy())
    _CACHE[key] = (refs, index)
    while len(_CACHE) > CACHED_INDEXES:
        _CACHE.popitem(last=False)
    return index


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the rows of `exact` (N x k neighbour ids) that appear in the same row of `found`."""
    hits = (found.unsqueeze(2) == exact.unsqueeze(1)).any(1)
    return float(hits.float().mean())


def approximate_candidates(
    kind: str,
    refs: torch.Tensor,
    centred_queries: torch.Tensor,
    centred_refs: torch.Tensor,
    k: int,
    n_cand: int,
    finish: Callable[[torch.Tensor, Callable], torch.Tensor],
    exact_candidates: Callable[[], Callable[[torch.Tensor], torch.Tensor]],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function of a block of centred queries: its `n_cand` candidates from a tuned `kind` index.

    `finish(rows, candidates)` turns candidates of the queries at `rows` into their k nearest
    ids (the caller's exact re-measure); `exact_candidates()` builds the exact search's candidate
    function (used on the tuning and verification queries, then dropped: a flat index is a copy
    of the references). The width is tuned and the recall recorded here, before the full search."""
    start = time.perf_counter()
    index = _cached_index(kind, refs, centred_refs)
    built = time.perf_counter()

    def candidates(block: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(index.search(block.contiguous().numpy(), n_cand))

    order = torch.randperm(len(centred_queries), generator=torch.Generator().manual_seed(0))
    n_tune = min(TUNE_QUERIES, len(order) // 2)
    tune_rows, verify_rows = order[:n_tune], order[n_tune : n_tune + VERIFY_QUERIES]
    exact = exact_candidates()
    tune_exact, verify_exact = finish(tune_rows, exact), finish(verify_rows, exact)
    del exact
    while recall_at_k(finish(tune_rows, candidates), tune_exact) < RECALL_TARGET and index.widen():
        pass
    recall = recall_at_k(finish(verify_rows, candidates), verify_exact)
    _SETTINGS.get().records.append(SearchRecord(
        index=kind, params=index.params(), queries=len(centred_queries), references=len(centred_refs),
        dims=centred_refs.shape[1], k=k, recall=round(recall, 6), recall_queries=len(verify_rows),
        target=RECALL_TARGET, build_seconds=round(built - start, 3), tune_seconds=round(time.perf_counter() - built, 3),
    ))
    return candidates
