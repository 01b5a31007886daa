"""The shared DP-SGD stage and the calibration of several stages against one budget."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dpaudit.generators.dp_training import DPSGD, calibrate_noise, sample_rate_for, steps_for
from dpaudit.privacy import PrivacyBudget
from tests.generators.opacus_reference import opacus_epsilon


@pytest.mark.parametrize("epsilon", [1.0, 10.0])
def test_calibration_of_two_stages_meets_the_budget_within_half_a_percent(epsilon):
    stages = [(0.05, 200, 1.0), (0.1, 300, 2.0), (1.0, 1, 5.0)]
    sigmas = calibrate_noise(PrivacyBudget(epsilon, 1e-5), stages)
    assert sigmas[1] == pytest.approx(2 * sigmas[0]) and sigmas[2] == pytest.approx(5 * sigmas[0])
    spent = opacus_epsilon([(s, q, t) for s, (q, t, _) in zip(sigmas, stages)], 1e-5)
    assert 0.995 * epsilon <= spent <= epsilon


def test_non_private_budget_means_no_noise():
    assert calibrate_noise(PrivacyBudget(math.inf, 1e-5), [(0.1, 10, 1.0)]) == [0.0]


def test_a_noiseless_unclipped_step_is_plain_sgd_on_the_batch():
    torch.manual_seed(0)
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    model = nn.Linear(5, 3)
    reference = nn.Linear(5, 3)
    reference.load_state_dict(model.state_dict())
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.5), n=50, sample_rate=1.0,
               noise_multiplier=0.0, max_grad_norm=1e6, seed=0)
    dp.train(lambda m, idx, rng: F.cross_entropy(m(x[idx]), y[idx], reduction="none"), 1)
    F.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad
    torch.testing.assert_close(model.weight, reference.weight)
    assert dp.history_entry() == (0.0, 1.0, 1)


def test_clipping_bounds_each_record_including_its_repeated_draws():
    """A record's K draws sit in one [B, K, d] row: opacus sums them into ONE per-sample
    gradient, so the noiseless update over a batch of one record has norm <= lr * C."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 4))
    before = [p.detach().clone() for p in model.parameters()]
    x = 100 * torch.randn(1, 16, 4)
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=1.0), n=1, sample_rate=1.0,
               noise_multiplier=0.0, max_grad_norm=0.1, seed=0)
    dp.train(lambda m, idx, rng: (m(x[idx]) ** 2).mean((1, 2)), 1)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(0.1, rel=1e-4)


def poisson_stage(seed: int) -> DPSGD:
    model = nn.Linear(2, 2)
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), n=1000, sample_rate=0.05,
                 noise_multiplier=1.0, max_grad_norm=1.0, seed=seed)


def test_poisson_batches_have_the_binomial_size_and_are_seeded():
    stage = poisson_stage(4)
    sizes = torch.tensor([len(stage.batch()) for _ in range(400)], dtype=torch.float)
    assert sizes.mean() == pytest.approx(50, abs=1.5)
    assert sizes.std() == pytest.approx(math.sqrt(1000 * 0.05 * 0.95), rel=0.15)
    assert torch.equal(poisson_stage(4).batch(), poisson_stage(4).batch())
    assert not torch.equal(poisson_stage(4).batch(), poisson_stage(5).batch())


def test_rates_and_steps():
    assert sample_rate_for(256, 1000) == 0.256 and sample_rate_for(5000, 1000) == 1.0
    assert steps_for(2.0, 0.256) == 8
