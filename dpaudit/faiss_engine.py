"""faiss, where it is installed (`pip install 'dpaudit[scale]'`), and its searches as dpaudit runs them.

faiss-cpu is optional: `load()` imports it on first use (it is large) or says it is absent.
`search` runs an index's k-NN search with faiss' matrix-product path for every batch of 20 or
more queries. faiss 1.15 picks a per-query SIMD scan below `distance_compute_blas_threshold`
(128,000 here), which on the reference machine took 11 s for 1,000 LeNet-feature queries
against 500,000 references where the matrix product took 1.2 s (and 2.4 s for 2,048 either
way); the setting is global in faiss, so it is changed only for the call and then restored.
"""

from __future__ import annotations

import functools
import importlib
from contextlib import contextmanager

import numpy as np
import torch

BLAS_FROM_QUERIES = 20  # faiss' own former default


@functools.cache
def load():
    """The faiss module, or None where it is not installed."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


@contextmanager
def _blas_threshold(faiss, threshold: int):
    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = threshold
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


def search(index, queries: np.ndarray, n: int) -> np.ndarray:
    """The ids of the `n` nearest of each query row in `index` (faiss' threads: torch's)."""
    faiss = load()
    faiss.omp_set_num_threads(torch.get_num_threads())
    with _blas_threshold(faiss, BLAS_FROM_QUERIES):
        return index.search(np.ascontiguousarray(queries), n)[1]
