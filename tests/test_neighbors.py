"""Nearest-neighbour search against brute force (`brute_force_neighbors`: float64 distances to
every reference, ties to the lower index), through the reference harness; and the harness itself."""

import numpy as np
import pytest
import torch

from dpaudit import faiss_engine, neighbors, pixels
from dpaudit.neighbors import nearest_distance, nearest_neighbors
from dpaudit.pixels import Pixels
from tests.reference import (
    ReferenceCase,
    assert_matches_reference,
    brute_force_neighbors,
    compare_to_reference,
    reference_cases,
)


@pytest.fixture(autouse=True, params=neighbors.BACKENDS)
def candidate_backend(request, monkeypatch):
    """Every test of this module runs on both candidate searches (faiss where installed)."""
    if request.param == "faiss" and faiss_engine.load() is None:
        pytest.skip("faiss-cpu not installed (the `peers` extra)")
    monkeypatch.setenv("DPAUDIT_NN_BACKEND", request.param)
    assert neighbors.backend() == request.param
    return request.param


def ties_and_copies():
    g = torch.Generator().manual_seed(0)
    queries, refs = torch.rand(301, 37, generator=g), torch.rand(1003, 37, generator=g)
    refs[100] = refs[7]  # duplicate references: a tie for every query
    refs[500] = refs[501] = queries[5]  # two exact copies of one query
    queries[9] = queries[10]  # duplicate queries
    return queries, refs


def uniform(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.rand(m, d, generator=g)


def far_from_the_origin():
    # Near-copies far from the origin: ||a||^2 + ||b||^2 - 2ab loses everything in float32.
    g = torch.Generator().manual_seed(1)
    refs = 50 + torch.rand(400, 784, generator=g)
    return refs[:40] + 1e-3 * torch.randn(40, 784, generator=g), refs


def near_ties_far_from_the_mean():
    # 40 clusters far apart (corners of a cube of side 100), 3 references each at distance
    # 1 + U(0, 1e-3) from its centre, queried at the centres: centring cannot help, the float32
    # product errs by about 0.1 and orders the 3 near-ties at random; only the re-measured
    # candidates order them right.
    g = torch.Generator().manual_seed(1)
    centers = 50 * torch.randn(40, 784, generator=g).sign()
    directions = torch.nn.functional.normalize(torch.randn(120, 784, generator=g), dim=1)
    return centers, centers.repeat_interleave(3, 0) + directions * (1 + 1e-3 * torch.rand(120, 1, generator=g))


def images():
    g = torch.Generator().manual_seed(2)
    return torch.rand(7, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)


# Blocks of 64 queries and 250 references: neither divides the set sizes (ragged last blocks).
RAGGED = {
    "ties and copies": ties_and_copies(),
    "300 x 20 vs 700 x 20": uniform(300, 700, 20, 0),
    "fewer refs than a block": uniform(70, 9, 5, 3),
}


def ragged(k):
    return ReferenceCase(
        f"ragged blocks k={k}",
        ours=lambda q, r: nearest_neighbors(q, r, k=k, block_size=64, ref_block_size=250),
        reference=lambda q, r: brute_force_neighbors(q, r, k),
        inputs=RAGGED, rtol=1e-6, atol=1e-9, compare=("values", "indices"),
    )


@reference_cases(ragged(1), ragged(3))
def test_nearest_neighbors_equal_brute_force_with_ties_and_ragged_blocks(case):
    (dist, idx), _ = assert_matches_reference(case)[0]  # the ties-and-copies input
    k = idx.shape[1]
    assert dist.shape == idx.shape == (301, k)
    assert idx[5, 0] == 500 and dist[5, 0] == 0
    assert torch.equal(idx[9], idx[10])


def streamed(k):
    """References as Pixels searched block by block (the path of sets too large to convert)."""
    return ReferenceCase(
        f"streamed k={k}",
        ours=lambda q, r: nearest_neighbors(q, Pixels(r.contiguous()).view(torch.arange(len(r))), k=k, block_size=64),
        reference=lambda q, r: brute_force_neighbors(q, r, k),
        inputs={**RAGGED, "near-copies at 50 + U(0, 1)": far_from_the_origin(),
                "near-ties at +-50": near_ties_far_from_the_mean(), "images": images()},
        rtol=1e-6, atol=1e-8, compare=("values", "indices"),
    )


@reference_cases(streamed(1), streamed(4))
def test_streamed_references_equal_brute_force(case, monkeypatch):
    monkeypatch.setattr(neighbors, "STREAM_ABOVE_BYTES", 0)
    monkeypatch.setattr(pixels, "BLOCK_VALUES", 4000)  # 108 rows of 37 values a block, 200 of 20: ragged
    streamed_calls = []
    search = neighbors._streamed_search
    monkeypatch.setattr(neighbors, "_streamed_search", lambda *a: streamed_calls.append(1) or search(*a))
    assert_matches_reference(case)
    assert len(streamed_calls) == len(case.inputs)


def test_small_pixels_references_are_converted_and_searched_in_memory(monkeypatch):
    queries, refs = uniform(50, 300, 12, 4)
    monkeypatch.setattr(neighbors, "_streamed_search", lambda *a: pytest.fail("a small set was streamed"))
    got = nearest_neighbors(queries, Pixels(refs).view(torch.arange(300)).map(lambda x: 2 * x), k=3)
    want = brute_force_neighbors(queries, 2 * refs, 3)
    assert torch.equal(got[1], want[1]) and torch.allclose(got[0], want[0].float(), rtol=1e-6)


def test_nearest_neighbors_exact_where_the_expanded_formula_cancels():
    compare_to_reference(
        lambda q, r: nearest_neighbors(q, r, k=2),
        lambda q, r: brute_force_neighbors(q, r, 2),
        {"near-copies at 50 + U(0, 1)": far_from_the_origin(), "near-ties at +-50": near_ties_far_from_the_mean()},
        rtol=1e-6, atol=1e-8, compare=("values", "indices"), name="nearest_neighbors k=2",
    )


def test_nearest_neighbors_takes_images_and_caps_k():
    [((dist, idx), _)] = compare_to_reference(
        lambda q, r: nearest_neighbors(q, r, k=5),
        lambda q, r: brute_force_neighbors(q, r, 5),
        {"7 vs 3 images of 1 x 4 x 4": images()},
        rtol=1e-6, atol=1e-8, compare=("values", "indices"), name="nearest_neighbors k=5",
    )
    assert idx.shape == dist.shape == (7, 3)


def test_nearest_distance_is_the_euclidean_distance_to_the_nearest_row():
    [(got, _)] = compare_to_reference(
        nearest_distance, lambda q, r: brute_force_neighbors(q, r, 1)[0][:, 0].sqrt(),
        {"300 x 20 vs 700 x 20": uniform(300, 700, 20, 0)}, rtol=1e-5, atol=0.0,
    )
    assert got.dtype == torch.float64 and got.shape == (300,)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="cannot match"):
        nearest_neighbors(torch.zeros(3, 4), torch.zeros(5, 6))


# The harness itself: it must fail, and say where, when our function is wrong.


def test_harness_reports_the_input_and_the_largest_deviation():
    inputs = {"small": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
              "large": torch.tensor([1.0, 2.0, 300.0], dtype=torch.float64)}

    def shifted(x):  # wrong on the large input only
        return x + 0.2 * (x > 100)

    with pytest.raises(AssertionError, match=r"shifted vs the reference, input large: 1 of 3 values beyond .* "
                                             r"deviation 0\.2 at 2 \(ours 300\.2, reference 300, allowed 0\.03\)"):
        compare_to_reference(shifted, lambda x: x, inputs, atol=0.0, rtol=1e-4)
    compare_to_reference(shifted, lambda x: x, inputs, atol=0.0, rtol=1e-3)  # within 0.1%: passes
    with pytest.raises(AssertionError, match=r"input #0, output \['b'\]: 1 of 1 .* "
                                             r"deviation 0\.5 \(ours 1\.5, reference 1, allowed 0\.1\)"):
        compare_to_reference(lambda x: {"a": x, "b": x + 0.5}, lambda x: {"a": x, "b": x}, [1.0], atol=0.1, rtol=0.0)
    with pytest.raises(AssertionError, match=r"only the reference: \['b'\]"):
        compare_to_reference(lambda x: {"a": x}, lambda x: {"a": x, "b": x}, [1.0], atol=0.1, rtol=0.0)


def test_harness_compares_indices_exactly_and_checks_shapes_and_nans():
    with pytest.raises(AssertionError, match=r"case, input #0, output \[1\]: 1 of 4 indices differ; "
                                             r"first at \(1, 0\): ours 3, reference 2"):
        assert_matches_reference(ReferenceCase(
            "case",
            ours=lambda: (np.zeros(4), np.array([[0, 1], [3, 1]])),
            reference=lambda: (np.zeros(4), np.array([[0, 1], [2, 1]])),
            inputs=[()], compare=("values", "indices"),
        ))
    with pytest.raises(AssertionError, match="indices expected"):
        compare_to_reference(lambda: np.array([0.5]), lambda: np.array([0]), [()], atol=1, rtol=0, compare="indices")
    with pytest.raises(AssertionError, match=r"shape \(3,\), the reference \(1, 3\)"):
        compare_to_reference(lambda: torch.zeros(3), lambda: np.zeros((1, 3)), [()], atol=1.0, rtol=0.0)
    with pytest.raises(AssertionError, match="non-finite"):
        compare_to_reference(lambda: [1.0, float("nan")], lambda: [1.0, 2.0], [()], atol=10.0, rtol=0.0)
    compare_to_reference(lambda: [1.0, float("nan"), float("inf")], lambda: [1.0, float("nan"), float("inf")],
                         [()], atol=0.0, rtol=0.0)
    with pytest.raises(ValueError, match="compare must be one of"):
        compare_to_reference(lambda: 1, lambda: 1, [()], atol=0, rtol=0, compare="close")


def test_no_references_is_a_clear_error():
    with pytest.raises(ValueError, match="against no references"):
        nearest_neighbors(torch.rand(3, 4), torch.zeros(0, 4))


def test_the_backend_follows_the_environment_and_refuses_unknown_names(monkeypatch):
    monkeypatch.setenv("DPAUDIT_NN_BACKEND", "annoy")
    with pytest.raises(ValueError, match="DPAUDIT_NN_BACKEND must be one of torch, faiss"):
        neighbors.backend()
    monkeypatch.delenv("DPAUDIT_NN_BACKEND")
    assert neighbors.backend() == ("torch" if faiss_engine.load() is None else "faiss")
    monkeypatch.setenv("DPAUDIT_NN_BACKEND", "faiss")
    monkeypatch.setattr(faiss_engine, "load", lambda: None)
    with pytest.raises(ValueError, match="faiss is not installed"):
        neighbors.backend()


@pytest.mark.mnist
def test_both_backends_give_the_same_neighbours_on_mnist(mnist, candidate_backend, monkeypatch):
    queries, refs = mnist.holdout.x[:2000], mnist.members.x[:20000]
    got = nearest_neighbors(queries, refs, k=5)
    monkeypatch.setenv("DPAUDIT_NN_BACKEND", "torch")
    expected = nearest_neighbors(queries, refs, k=5)
    assert torch.equal(got[1], expected[1]) and torch.equal(got[0], expected[0])
    # and the nearest is the nearest by float64 distances to every reference (200 of the queries)
    d = torch.cdist(queries[:200].flatten(1).double(), refs.flatten(1).double())
    assert torch.equal(expected[1][:200, 0], d.argmin(1))
