"""Seeded random subsets."""

import numpy as np
import torch

from dpaudit.sampling import seeded_sample


def test_a_capped_sample_is_numpys_choice_sorted_and_seeded():
    got = seeded_sample(1000, 30, 7)
    want = np.sort(np.random.default_rng(7).choice(1000, 30, replace=False))
    assert torch.equal(got, torch.from_numpy(want))
    assert torch.equal(seeded_sample(1000, 30, [7, 2]), torch.from_numpy(np.sort(np.random.default_rng([7, 2]).choice(1000, 30, replace=False))))
    assert not torch.equal(got, seeded_sample(1000, 30, 8))
    assert len(set(got.tolist())) == 30 and got.max() < 1000


def test_no_cap_or_a_large_cap_takes_everything_and_leaves_a_shared_generator_untouched():
    rng = np.random.default_rng(0)
    assert torch.equal(seeded_sample(5, None, rng), torch.arange(5))
    assert torch.equal(seeded_sample(5, 5, rng), torch.arange(5))
    assert rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)  # nothing was drawn
    first, second = seeded_sample(100, 10, rng), seeded_sample(100, 10, rng)
    assert not torch.equal(first, second)  # a shared generator moves on between draws
