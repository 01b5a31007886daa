"""Approximate nearest-neighbour candidates (faiss IVF and HNSW): recall against exact search
measured independently here, the recall the search records, the choice of index and the cache."""

import pytest
import torch

from dpaudit import approximate_search, faiss_engine
from dpaudit.approximate_search import recall_at_k, search_settings
from dpaudit.errors import DpauditError
from dpaudit.neighbors import nearest_neighbors

needs_faiss = pytest.mark.skipif(faiss_engine.load() is None, reason="faiss-cpu not installed (the `peers` extra)")


def exact(queries, refs, k):
    with search_settings("exact") as records:
        result = nearest_neighbors(queries, refs, k=k)
    assert records == []
    return result


def test_recall_at_k_counts_the_exact_neighbours_found():
    exact_ids = torch.tensor([[0, 1], [2, 3]])
    found = torch.tensor([[1, 0], [2, 9]])  # order does not matter; 9 is a miss
    assert recall_at_k(found, exact_ids) == pytest.approx(0.75)


@needs_faiss
@pytest.mark.mnist
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_finds_the_exact_neighbours_on_mnist(mnist, kind):
    queries, refs, k = mnist.holdout.x[:2000], mnist.members.x[:20000], 5
    true_d, true_i = exact(queries, refs, k)
    with search_settings(kind) as records:
        d, i = nearest_neighbors(queries, refs, k=k)
    (record,) = records
    assert (record.index, record.queries, record.references, record.dims, record.k) == (kind, 2000, 20000, 784, k)
    assert record.recall >= approximate_search.RECALL_TARGET and record.recall_queries == 1000
    assert recall_at_k(i, true_i) >= 0.99  # over every query, measured here
    same = i == true_i
    assert torch.equal(d[same], true_d[same])  # what it finds is measured exactly
    assert (d >= true_d - 1e-4).all()  # never closer than the truth


@needs_faiss
def test_ivf_widens_its_probe_until_the_target(digits, monkeypatch):
    monkeypatch.setattr(approximate_search, "IVF_START_NPROBE", 1)
    approximate_search._CACHE.clear()
    queries, refs = digits.holdout.x, digits.members.x
    _, true_i = exact(queries, refs, 3)
    with search_settings("ivf") as records:
        _, i = nearest_neighbors(queries, refs, k=3)
    (record,) = records
    assert record.params["nprobe"] > 1 and record.params["nlist"] == len(refs) // approximate_search.IVF_TRAIN_PER_LIST
    assert record.recall >= 0.99 and record.recall_queries == len(queries) - len(queries) // 2
    assert recall_at_k(i, true_i) >= 0.99


@needs_faiss
def test_unreachable_target_is_recorded_not_hidden(digits, monkeypatch):
    monkeypatch.setattr(approximate_search, "RECALL_TARGET", 1.01)
    monkeypatch.setattr(approximate_search, "HNSW_MAX_EF", 128)
    with search_settings("hnsw") as records:
        nearest_neighbors(digits.holdout.x, digits.members.x, k=3)
    (record,) = records
    assert record.params["efSearch"] == 128 and record.target == 1.01 and record.recall < record.target


@needs_faiss
def test_the_index_is_built_once_per_unchanged_reference_set(digits, monkeypatch):
    built = []
    real = approximate_search._Index
    monkeypatch.setattr(approximate_search, "_Index", lambda *a, **kw: built.append(1) or real(*a, **kw))
    approximate_search._CACHE.clear()
    refs = digits.members.x.clone()
    with search_settings("ivf"):
        nearest_neighbors(digits.holdout.x, refs, k=1)
        nearest_neighbors(digits.test.x, refs, k=1)
        assert len(built) == 1
        refs[0] += 0.5  # changed in place: the old index would be wrong
        _, i = nearest_neighbors(refs[:50], refs, k=1)
        assert len(built) == 2
    assert torch.equal(i[:, 0], torch.arange(50))


def test_auto_is_exact_below_the_threshold_and_approximate_above(digits, monkeypatch):
    queries, refs = digits.holdout.x, digits.members.x
    with search_settings("auto") as records:
        nearest_neighbors(queries, refs, k=1)
    assert records == []
    monkeypatch.setattr(approximate_search, "APPROXIMATE_FROM_PAIRS", len(queries) * len(refs))
    with search_settings("auto") as records:
        nearest_neighbors(queries, refs, k=1)
        nearest_neighbors(queries[:10], refs, k=1)  # too few queries for an index: exact
    assert [r.index for r in records] == ([] if faiss_engine.load() is None else ["ivf"])


def test_without_faiss_auto_stays_exact_and_asking_for_an_index_is_refused(digits, monkeypatch):
    monkeypatch.setattr(faiss_engine, "load", lambda: None)
    monkeypatch.setattr(approximate_search, "APPROXIMATE_FROM_PAIRS", 1)
    with search_settings("auto") as records:
        nearest_neighbors(digits.holdout.x, digits.members.x, k=1)
    assert records == []
    for kind in ("ivf", "hnsw"):
        with pytest.raises(DpauditError, match=rf"--nn-index {kind} needs faiss: pip install 'dpaudit\[scale\]'"):
            with search_settings(kind):
                pass
    with pytest.raises(DpauditError, match="unknown nearest-neighbour index 'annoy'"):
        with search_settings("annoy"):
            pass
