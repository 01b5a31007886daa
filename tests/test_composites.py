"""Blends and partial copies matched to their sources, against independent references: the
blend weight against numpy's least squares, the left-out window against a brute-force search
over every window position, the minor source of an unequal blend against a brute-force search
over every member, and the ratios against their definition."""

import numpy as np
import pytest
import torch

from dpaudit.composites import best_blends, best_partials, patch_side, residual_candidates


def images(n, seed, side=16):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def by_distance(queries, refs):
    """Every reference for every query, L2-nearest first."""
    return (queries[:, None] - refs[None]).pow(2).flatten(2).sum(-1).argsort(1)


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
    blends = best_blends(queries, refs, by_distance(queries, refs))
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
    partials = best_partials(queries, refs, by_distance(queries, refs))
    for row, (source, top, left) in enumerate(truth):
        assert int(partials.idx[row]) == source
        diff = (queries[row] - refs[source]).pow(2)[0]
        brute = max(((r, c) for r in range(16 - side + 1) for c in range(16 - side + 1)),
                    key=lambda rc: float(diff[rc[0] : rc[0] + side, rc[1] : rc[1] + side].sum()))
        assert tuple(partials.corner[row].tolist()) == brute
        # the replaced window is inside the one left out (they are the same here: noise differs everywhere)
        assert brute == (top, left)
    assert partials.ratio.max() < 1e-6


def test_the_minor_source_of_an_unequal_blend_is_the_member_a_brute_force_search_finds():
    # 0.8 a + 0.2 b: a is the nearest; b is the member whose direction best matches the residual
    refs = images(300, 6)
    queries = 0.8 * refs[:20] + 0.2 * refs[20:40]
    found = residual_candidates(queries, refs, torch.arange(20))
    residual = (queries - 0.8 * refs[:20]).flatten(1)  # what a leaves at its least-squares scale, about
    for row in range(20):
        q, a = queries[row].flatten().double(), refs[row].flatten().double()
        r = q - float(torch.clamp((q @ a) / (a @ a), 0, 1)) * a
        cosines = torch.nn.functional.cosine_similarity(r[None], refs.flatten(1).double(), dim=1)
        assert int(found[row, 0]) == int(cosines.argmax())
        assert torch.nn.functional.cosine_similarity(residual[row], refs[20 + row].flatten(), dim=0) > 0.9
    blends = best_blends(queries, refs, by_distance(queries, refs)[:, :10])
    assert all(set(blends.idx[r].tolist()) == {r, 20 + r} for r in range(20))
    assert blends.ratio.max() < 1e-6
    # the cheaper search on 2 x 2-averaged images (the quick profile's) still finds it among its 5
    pooled = residual_candidates(queries, refs, torch.arange(20), pool=2)
    assert all(20 + row in pooled[row].tolist() for row in range(20))


def window_max(query, ref):
    """The most squared difference any patch_side x patch_side window holds (brute force)."""
    diff, side = (query - ref).pow(2)[0], patch_side(*query.shape[-2:])
    return max(float(diff[r : r + side, c : c + side].sum())
               for r in range(diff.shape[0] - side + 1) for c in range(diff.shape[1] - side + 1))


def runner_up_blend(query, refs, exclude):
    """The smallest least-squares residual of any pair of `refs` sharing no member with `exclude`."""
    x = query.flatten().double().numpy()
    best = np.inf
    for i in range(len(refs)):
        for j in range(i + 1, len(refs)):
            if {i, j} & set(exclude):
                continue
            a, b = refs[i].flatten().double().numpy(), refs[j].flatten().double().numpy()
            w = np.clip(np.dot(x - b, a - b) / np.dot(a - b, a - b), 0, 1)
            best = min(best, float(np.sum((x - b - w * (a - b)) ** 2)))
    return best


def test_natural_images_are_neither_and_the_ratios_follow_their_definition():
    refs, queries = images(10, 4), images(4, 5)  # BLEND_CANDIDATES: every member is a candidate
    candidates = by_distance(queries, refs)
    blends, partials = best_blends(queries, refs, candidates), best_partials(queries, refs, candidates)
    assert blends.ratio.min() > 0.4 and partials.ratio.min() > 0.4
    for row in range(4):
        # the blend: its residual over the best pair of members sharing no member with it
        first, second = blends.idx[row].tolist()
        w = float(blends.weight[row])
        left = float((queries[row] - w * refs[first] - (1 - w) * refs[second]).pow(2).sum())
        assert float(blends.ratio[row]) == pytest.approx(left / runner_up_blend(queries[row], refs, [first, second]), rel=1e-4)
        # the partial copy: the least difference outside a window over the next candidate's
        outside = sorted(float((queries[row] - refs[c]).pow(2)[0].sum()) - window_max(queries[row], refs[c])
                         for c in range(10))
        assert float(partials.ratio[row]) == pytest.approx(outside[0] / outside[1], rel=1e-4)
    # an exact copy fits both at ratio 0 (the similarity check counts it as a near-copy instead)
    copy = refs[:1]
    assert float(best_blends(copy, refs, by_distance(copy, refs)[:, :10]).ratio[0]) < 1e-9
    assert float(best_partials(copy, refs, by_distance(copy, refs)[:, :10]).ratio[0]) < 1e-9
