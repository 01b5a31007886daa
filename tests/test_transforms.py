"""Transformation-aware nearest neighbours: the moves against torch's own shifts and
torchvision's rotation, the spectrum's shift invariance, and copies found through each
transformation family where plain L2 misses them."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from scipy.spatial.distance import cdist

from dpaudit.transforms import (
    NO_TRANSFORMS,
    TransformConfig,
    _thetas,
    affine_moves,
    align,
    move,
    aligned_pairs,
    nearest_transformed,
    spectrum,
)
from tests.transformed_copies import jittered, shifted


def test_moves_are_exact_shifts_and_torchvision_rotations():
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    for dx, dy in [(2, 0), (0, -1), (-2, 1)]:
        theta = _thetas([(dx, dy, 0.0, False)], 10, 10).expand(3, 2, 3)
        torch.testing.assert_close(move(x, theta), shifted(x, dx, dy))
    # A quarter turn maps pixel centres onto pixel centres: bilinear is exact, and the direction
    # is torchvision's (counter-clockwise for a positive angle).
    theta = _thetas([(0.0, 0.0, 90.0, False)], 10, 10).expand(3, 2, 3)
    torch.testing.assert_close(move(x, theta), TF.rotate(x, 90.0), atol=1e-5, rtol=0)
    theta = _thetas([(0.0, 0.0, 0.0, True)], 10, 10).expand(3, 2, 3)
    torch.testing.assert_close(move(x, theta), x.flip(-1))


def test_the_set_of_moves():
    moves = affine_moves(TransformConfig(max_shift=1, rotations=(-5.0, 5.0), flips=True))
    assert moves[0] == (0.0, 0.0, 0.0, False) and len(moves) == 2 * (9 + 2)
    assert affine_moves(NO_TRANSFORMS) == [(0.0, 0.0, 0.0, False)]


def test_the_spectrum_ignores_circular_shifts_and_intensity():
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(spectrum(torch.roll(x, (3, -2), (-2, -1))), spectrum(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(spectrum(1.5 * x + 0.2), spectrum(x), atol=1e-5, rtol=1e-4)


def test_without_transformations_the_distance_is_plain_l2(digits):
    q, r = digits.test.x[:20], digits.members.x[:50]
    candidates = torch.arange(50).expand(20, 50)
    d, moves = align(q, r, candidates, NO_TRANSFORMS)
    expected = cdist(q.flatten(1).double().numpy(), r.flatten(1).double().numpy())
    assert torch.allclose(d, torch.from_numpy(expected), atol=1e-6) and not moves.any()


@pytest.fixture(scope="module")
def mnist_like(mnist):
    """2,000 MNIST members and 100 of them to be copied."""
    members = mnist.members.x[:2000]
    return members, torch.arange(0, 2000, 20)


@pytest.mark.mnist
@pytest.mark.parametrize("family", ["shift", "rotation", "intensity", "flip"])
def test_copies_are_found_through_each_family_and_plain_l2_misses_shifts_and_flips(mnist_like, family):
    members, sources = mnist_like
    copies = jittered(members[sources], seed=2, family=family)
    _, idx, _ = nearest_transformed(copies, members, TransformConfig(flips=family == "flip"))
    assert (idx == sources).float().mean() >= 0.95, family
    if family in ("shift", "flip"):
        l2_idx = torch.cdist(copies.flatten(1), members.flatten(1)).argmin(1)
        assert (l2_idx == sources).float().mean() < 0.5, family


@pytest.mark.mnist
def test_the_aligned_pair_is_the_member_and_its_copy_moved_back(mnist_like):
    members, sources = mnist_like
    # members whose ink stays inside the frame when moved left and down by 2 pixels
    inside = (members[sources][..., :, :2].sum((1, 2, 3)) == 0) & (members[sources][..., -2:, :].sum((1, 2, 3)) == 0)
    sources = sources[inside]
    copies = shifted(members[sources], -2, 2)
    d, idx, moves = nearest_transformed(copies, members, TransformConfig())
    assert all(affine_moves(TransformConfig())[m][:2] == (-2.0, 2.0) for m in moves.tolist())
    back, member = aligned_pairs(copies, members, idx, moves, TransformConfig())
    assert len(sources) >= 50
    inner = (..., slice(2, -2), slice(2, -2))  # the border rows the shift filled by extending the edge
    assert (back - members[sources])[inner].abs().max() < 1e-5
    assert (member - members[sources]).abs().max() < 0.05  # its intensity fitted to the copy with its edge
    assert (d < 1e-3).float().mean() >= 0.8  # the rest: ink on the edge the shift extended


def test_align_equals_moving_the_candidates_by_hand(digits):
    """The distance from five sums equals the distance of the query to each candidate moved by
    each shift and intensity-fitted by least squares (interior pixels: a shift's border row is
    where moving the query back and moving the candidate differ)."""
    config = TransformConfig(max_shift=1, rotations=(), intensity=True)
    q = torch.zeros(6, 1, 10, 10)
    q[:, :, 2:8, 2:8] = digits.members.x[:6, :, 1:7, 1:7]
    refs = torch.zeros(6, 1, 10, 10)
    refs[:, :, 2:8, 2:8] = digits.members.x[6:12, :, 1:7, 1:7]
    candidates = torch.arange(6).expand(6, 6)
    d, _ = align(q, refs, candidates, config)
    for i in range(6):
        for j in range(6):
            best = math.inf
            for dx, dy, _, _ in affine_moves(config):
                c = shifted(refs[j], int(dx), int(dy)).flatten().double()
                x = q[i].flatten().double()
                cov = float(((x - x.mean()) * (c - c.mean())).mean())
                a = min(max(cov / max(float(c.var(unbiased=False)), 1e-12), 0.8), 1.25)
                b = min(max(float(x.mean() - a * c.mean()), -0.1), 0.1)
                best = min(best, float((x - a * c - b).norm()))
            assert d[i, j].item() == pytest.approx(best, abs=1e-6)
