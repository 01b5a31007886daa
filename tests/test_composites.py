"""Blends and partial copies matched to their sources, against independent references: the
blend weight against numpy's least squares, the left-out window against a brute-force search
over every window position."""

import numpy as np
import pytest
import torch

from dpaudit.composites import best_blends, best_partials, patch_side


def images(n, seed, side=16):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def nearest_sq(queries, refs, candidates):
    return ((queries[:, None] - refs[candidates]).pow(2).flatten(2).sum(-1)).min(1).values


def test_a_blend_is_matched_to_its_two_sources_with_the_least_squares_weight():
    refs = images(10, 0)  # BLEND_CANDIDATES: every pair of them is tried
    g = torch.Generator().manual_seed(1)
    queries, sources = [], []
    for _ in range(6):
        a, b = torch.randperm(10, generator=g)[:2].tolist()
        w = float(torch.empty(1).uniform_(0.2, 0.8, generator=g))
        queries.append(w * refs[a] + (1 - w) * refs[b])
        sources.append((a, b, w))
    queries = torch.stack(queries)
    candidates = torch.arange(10).repeat(6, 1)
    blends = best_blends(queries, refs, candidates, nearest_sq(queries, refs, candidates))
    for row, (a, b, w) in enumerate(sources):
        assert set(blends.idx[row].tolist()) == {a, b}
        first, second = blends.idx[row].tolist()
        # numpy's least squares for x - b' = w (a' - b'), the pair in the order the match gives
        x, p, q = (t.flatten().double().numpy() for t in (queries[row], refs[first], refs[second]))
        weight = np.linalg.lstsq((p - q)[:, None], x - q, rcond=None)[0][0]
        assert float(blends.weight[row]) == pytest.approx(weight, abs=1e-6)
        assert float(blends.weight[row]) == pytest.approx(w if first == a else 1 - w, abs=1e-5)
    assert blends.ratio.max() < 1e-8


def test_a_partial_copy_is_matched_with_the_window_a_brute_force_search_finds():
    refs = images(8, 2)
    side = patch_side(16, 16)
    assert side == 6  # 3/8 of 16
    g = torch.Generator().manual_seed(3)
    queries, truth = [], []
    for i in range(5):
        top, left = torch.randint(0, 16 - side + 1, (2,), generator=g).tolist()
        q = refs[i].clone()
        q[:, top : top + side, left : left + side] = torch.rand(1, side, side, generator=g)
        queries.append(q)
        truth.append((i, top, left))
    queries = torch.stack(queries)
    candidates = torch.arange(8).repeat(5, 1)
    partials = best_partials(queries, refs, candidates, nearest_sq(queries, refs, candidates))
    for row, (source, top, left) in enumerate(truth):
        assert int(partials.idx[row]) == source
        diff = (queries[row] - refs[source]).pow(2)[0]
        brute = max(((r, c) for r in range(16 - side + 1) for c in range(16 - side + 1)),
                    key=lambda rc: float(diff[rc[0] : rc[0] + side, rc[1] : rc[1] + side].sum()))
        assert tuple(partials.corner[row].tolist()) == brute
        # the replaced window is inside the one left out (they are the same here: noise differs everywhere)
        assert brute == (top, left)
    assert partials.ratio.max() < 1e-6


def test_natural_images_are_neither_and_a_copy_counts_as_a_copy():
    refs, queries = images(30, 4), images(10, 5)
    candidates = torch.arange(30).repeat(10, 1)
    near = nearest_sq(queries, refs, candidates)
    assert best_blends(queries, refs, candidates, near).ratio.min() > 0.4
    assert best_partials(queries, refs, candidates, near).ratio.min() > 0.4
    # a query equal to a member: ratio 1 (a copy, counted by the near-copy search)
    copy = refs[:1]
    assert float(best_blends(copy, refs, candidates[:1], torch.zeros(1)).ratio[0]) == 1.0
