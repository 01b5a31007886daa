"""faiss' search as dpaudit runs it: the exact neighbours, and faiss' global setting left as found."""

import numpy as np
import pytest
import torch

from dpaudit import faiss_engine

faiss = faiss_engine.load()
pytestmark = pytest.mark.skipif(faiss is None, reason="faiss-cpu not installed (the `scale` extra)")


def test_search_finds_the_brute_force_neighbours_and_restores_the_blas_threshold():
    g = torch.Generator().manual_seed(0)
    refs, queries = torch.rand(3000, 40, generator=g), torch.rand(700, 40, generator=g)
    index = faiss.IndexFlatL2(40)
    index.add(refs.numpy())
    before = faiss.cvar.distance_compute_blas_threshold
    ids = faiss_engine.search(index, queries.numpy(), 3)
    assert faiss.cvar.distance_compute_blas_threshold == before
    brute = torch.cdist(queries.double(), refs.double()).topk(3, largest=False).indices.numpy()
    assert np.array_equal(np.sort(ids, 1), np.sort(brute, 1))
