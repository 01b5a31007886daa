"""Canary kinds: what each does to the pool images, uniqueness, determinism, clear refusals."""

import numpy as np
import pytest
import torch

from dpaudit.attacks.canaries import KINDS, make_canaries, stamp_side
from dpaudit.datasets import load_split
from dpaudit.errors import DpauditError


@pytest.fixture(scope="module")
def pool():
    return load_split("digits").holdout


@pytest.mark.parametrize("kind", KINDS)
def test_canaries_come_from_distinct_pool_images_and_repeat_for_a_seed(pool, kind):
    first, again = make_canaries(pool, 50, kind, seed=3), make_canaries(pool, 50, kind, seed=3)
    assert len(first) == 50 and len(set(first.pool_idx.tolist())) == 50
    assert torch.equal(first.images.x, again.images.x) and torch.equal(first.images.y, again.images.y)
    assert not torch.equal(first.images.x, make_canaries(pool, 50, kind, seed=4).images.x)
    assert first.images.x.min() >= 0 and first.images.x.max() <= 1
    assert first.images.num_classes == pool.num_classes


def test_clean_canaries_are_the_pool_images(pool):
    c = make_canaries(pool, 40, "clean", seed=0)
    assert torch.equal(c.images.x, pool.x[c.pool_idx]) and torch.equal(c.images.y, pool.y[c.pool_idx])


def test_mislabeled_canaries_keep_the_image_and_change_every_label(pool):
    c = make_canaries(pool, 300, "mislabeled", seed=0)
    assert torch.equal(c.images.x, pool.x[c.pool_idx])
    assert (c.images.y != pool.y[c.pool_idx]).all()
    # the new label is uniform over the other classes: every shift 1..9 occurs
    shifts = ((c.images.y - pool.y[c.pool_idx]) % 10).numpy()
    assert set(shifts) == set(range(1, 10))


def test_stamped_canaries_carry_their_own_pattern_in_a_corner(pool):
    c = make_canaries(pool, 200, "stamped", seed=0)
    s = stamp_side(8)
    assert c.stamps.shape == (200, s, s)
    patterns = {(tuple(p.flatten().tolist()), tuple(a.tolist())) for p, a in zip(c.stamps, c.stamp_at)}
    assert len(patterns) > 190  # 512 patterns x 4 corners: nearly all unique
    for i in range(200):
        top, left = c.stamp_at[i].tolist()
        assert torch.equal(c.images.x[i, 0, top : top + s, left : left + s], c.stamps[i])
        outside = c.images.x[i].clone()
        outside[:, top : top + s, left : left + s] = 0
        original = pool.x[c.pool_idx[i]].clone()
        original[:, top : top + s, left : left + s] = 0
        assert torch.equal(outside, original)
    assert set(map(tuple, c.stamp_at.tolist())) == {(0, 0), (0, 8 - s), (8 - s, 0), (8 - s, 8 - s)}


def test_ood_canaries_are_blocks_of_uniform_noise(pool):
    c = make_canaries(pool, 100, "ood", seed=0)
    x = c.images.x
    assert torch.equal(x[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3), x)  # 2x2 blocks of 4x4
    assert abs(float(x.mean()) - 0.5) < 0.05 and abs(float(x.var()) - 1 / 12) < 0.01
    assert len(np.unique(c.images.y.numpy())) == 10


def test_refusals_name_the_cause(pool):
    with pytest.raises(DpauditError, match="holdout has 360"):
        make_canaries(pool, 361, "clean", seed=0)
    with pytest.raises(DpauditError, match="unknown canary kind 'loud'"):
        make_canaries(pool, 10, "loud", seed=0)
