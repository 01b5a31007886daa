"""The shared DP-SGD stage and the calibration of several stages against one budget."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opacus import GradSampleModule

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


# ------------------------------------------------------------------ ghost clipping

def _ghost_models():
    """(model, its inputs, a clipping norm near its records' median gradient norm) for each layer
    type a DP-SGD generator trains through: nn.Linear (also over a record's K draws),
    SpectralLinear, Conv2d, ConvTranspose2d, GroupNorm, ChannelAffine, and dpsgd-gan's
    discriminator (convolutions, Embedding)."""
    from dpaudit.generators.bn_matching import ChannelAffine
    from dpaudit.generators.dpsgd_gan import CondDiscriminator
    from dpaudit.generators.lipschitz_vae import SpectralLinear

    torch.manual_seed(0)  # the layers' initial weights
    g = torch.Generator().manual_seed(0)
    return {
        "linear": (nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), (torch.randn(24, 6, generator=g),), 1.2),
        "linear over a record's draws": (nn.Sequential(nn.Linear(6, 8), nn.SiLU(), nn.Linear(8, 3)),
                                         (torch.randn(24, 4, 6, generator=g),), 0.32),
        "spectral": (nn.Sequential(SpectralLinear(6, 8, 2.0, g), nn.ReLU(), SpectralLinear(8, 3, 2.0, g)),
                     (torch.randn(24, 6, generator=g),), 9500.0),
        "conv, transposed conv, group norm, channel affine": (
            nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.GroupNorm(2, 4, affine=False), ChannelAffine(4), nn.SiLU(),
                          nn.ConvTranspose2d(4, 2, 4, 2, 1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)),
            (torch.randn(24, 1, 8, 8, generator=g),), 0.38),
        "dpsgd-gan discriminator (conv, embedding)": (
            CondDiscriminator((1, 8, 8), 3, 2), (torch.rand(24, 1, 8, 8, generator=g), torch.arange(24) % 3), 0.64),
    }


def _record_losses(model, inputs, idx):
    """One loss a record: the mean square of every output the model returns."""
    outputs = model(*[t[idx] for t in inputs])
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return sum((o**2).reshape(len(o), -1).mean(1) for o in outputs)


def _one_step(model, inputs, clipping, clip):
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=1.0), n=len(inputs[0]), sample_rate=1.0,
               noise_multiplier=0.0, max_grad_norm=clip, seed=0, clipping=clipping)
    dp.train(lambda m, idx, rng: _record_losses(m, inputs, idx), 1)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", sorted(_ghost_models()))
def test_opacus_per_sample_gradients_equal_autograd_record_by_record(kind):
    model, inputs, _ = _ghost_models()[kind]
    reference = copy.deepcopy(model)
    module = GradSampleModule(model, loss_reduction="mean")
    _record_losses(module, inputs, torch.arange(len(inputs[0]))).mean().backward()
    for i in (0, 7, 23):
        grads = torch.autograd.grad(_record_losses(reference, inputs, torch.tensor([i])).sum(), list(reference.parameters()))
        for p, g in zip(model.parameters(), grads):
            torch.testing.assert_close(p.grad_sample[i], g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(_ghost_models()))
def test_ghost_clipping_takes_the_per_sample_step(kind):
    """Ghost clipping's update equals the per-sample path's (the same clipped sum), with records
    both under and over the clipping norm."""
    model, inputs, clip = _ghost_models()[kind]
    twin, unclipped = copy.deepcopy(model), copy.deepcopy(model)
    per_sample = _one_step(model, inputs, "per-sample", clip)
    ghost = _one_step(twin, inputs, "ghost", clip)
    for a, b in zip(per_sample, ghost):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # ... and clipping did act: without it the step is another
    assert any(not torch.allclose(a, b) for a, b in zip(per_sample, _one_step(unclipped, inputs, "per-sample", clip=1e6)))


def test_spectral_ghost_norms_are_the_norms_of_its_per_sample_gradients():
    from dpaudit.generators.lipschitz_vae import SpectralLinear, spectral_linear_grad_sample, spectral_linear_norm_sample

    g = torch.Generator().manual_seed(1)
    layer = SpectralLinear(7, 5, 1.5, g)
    activations, backprops = [torch.randn(9, 3, 7, generator=g)], torch.randn(9, 3, 5, generator=g)
    grads = spectral_linear_grad_sample(layer, activations, backprops)
    norms = spectral_linear_norm_sample(layer, activations, backprops)
    for param in (layer.weight, layer.bias):
        torch.testing.assert_close(norms[param], grads[param].flatten(1).norm(dim=1), rtol=1e-4, atol=1e-6)


def test_ghost_clipping_adds_the_noise_once_per_step_and_an_empty_batch_is_pure_noise(monkeypatch):
    from opacus.optimizers import optimizer_fast_gradient_clipping

    calls = []
    real = optimizer_fast_gradient_clipping._generate_noise
    monkeypatch.setattr(optimizer_fast_gradient_clipping, "_generate_noise", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=1.0), n=5, sample_rate=1e-9, noise_multiplier=1.0,
               max_grad_norm=1.0, seed=0, clipping="ghost")
    x = torch.randn(5, 3)
    dp.train(lambda m, idx, rng: m(x[idx]).sum(1), 3)
    assert len(calls) == 3 * 2  # one draw per parameter tensor per step
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))  # the noise moved them
    assert dp.history_entry() == (1.0, 1e-9, 3)


def test_an_unknown_clipping_mode_is_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="clipping"):
        DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), n=10, sample_rate=0.5, noise_multiplier=1.0,
              max_grad_norm=1.0, seed=0, clipping="fast")
