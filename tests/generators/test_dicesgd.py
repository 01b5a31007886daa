"""DiceSGD with a privatized residual: the update equations against a hand computation, the
noise scales, and the noise split against the closed form of Gaussian composition."""

import math

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from dpaudit.generators.dicesgd import DiceSGDOptimizer, clip_by_norm, split_noise
from dpaudit.privacy import composed_epsilon, dpsgd_epsilon


def linear_problem(dim: int = 2):
    """A bias-free linear model with loss_i = w . x_i, so that the per-sample gradient is x_i
    whatever w is: every step's gradients are known in advance."""
    model = GradSampleModule(nn.Linear(dim, 1, bias=False), loss_reduction="sum")
    nn.init.zeros_(model._module.weight)
    return model


def make_optimizer(model, *, sigma=0.0, c1=1.0, c2=0.5, cr=10.0, share=0.5, batch=3, seed=0):
    return DiceSGDOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=sigma, max_grad_norm=c1, error_max_norm=c2, residual_max_norm=cr,
        feedback_share=share, expected_batch_size=batch, generator=torch.Generator().manual_seed(seed),
    )


def step(model, opt, x):
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()


def clip(v: np.ndarray, c: float) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v if norm <= c else v * (c / norm)


def test_update_matches_the_paper_equations_by_hand():
    # Noise off and C_r above every residual: the paper's update, step by step, in numpy.
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0]])
    c1, c2, b = 1.0, 0.5, 3
    model = linear_problem()
    opt = make_optimizer(model, c1=c1, c2=c2, cr=100.0, batch=b)
    theta, e = np.zeros(2), np.zeros(2)
    g = x.numpy().astype(np.float64)
    for _ in range(4):
        v = sum(clip(gi, c1) for gi in g) / b + clip(e, c2)
        theta = theta - 1.0 * v  # lr 1, w_t = 0
        e = e + g.sum(0) / b - v
        step(model, opt, x)
        np.testing.assert_allclose(model._module.weight.detach().numpy()[0], theta, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(opt.error[0].numpy()[0], e, rtol=1e-5, atol=1e-6)
    # The clipping bias is fed back: the error state is bounded, not growing without limit.
    assert np.linalg.norm(e) < 10


def test_residual_is_clipped_per_sample():
    # g_1 = (3, 4) has norm 5: clipped part (0.6, 0.8), residual norm 4, clipped to C_r = 1.
    x = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    model = linear_problem()
    opt = make_optimizer(model, c1=1.0, c2=0.5, cr=1.0, batch=2)
    step(model, opt, x)
    expected_error = (np.array([0.6, 0.8]) * 1.0 + 0) / 2  # residual (3,4)-(0.6,0.8) clipped to norm 1
    np.testing.assert_allclose(opt.error[0].numpy()[0], expected_error, rtol=1e-5)
    np.testing.assert_allclose(model._module.weight.detach().numpy()[0], -np.array([0.6, 1.3]) / 2, rtol=1e-5)


def test_noise_scales_match_the_split():
    # All per-sample gradients zero: the update is pure noise of std sigma_a * C1 / B and the
    # error state pure noise of std sigma_r * C_r / B.
    dim, batch, sigma, share, c1, cr = 20_000, 4, 1.5, 0.3, 2.0, 5.0
    model = linear_problem(dim)
    opt = make_optimizer(model, sigma=sigma, c1=c1, c2=1e9, cr=cr, share=share, batch=batch, seed=3)
    step(model, opt, torch.zeros(batch, dim))
    sigma_a, sigma_r = split_noise(sigma, share)
    update_std = float(model._module.weight.detach().std())
    error_std = float(opt.error[0].std())
    assert update_std == pytest.approx(sigma_a * c1 / batch, rel=0.03)
    assert error_std == pytest.approx(sigma_r * cr / batch, rel=0.03)


def test_split_composes_to_the_accounted_multiplier():
    sigma_a, sigma_r = split_noise(0.8, 0.25)
    assert 1 / sigma_a**2 + 1 / sigma_r**2 == pytest.approx(1 / 0.8**2)
    # Without subsampling, two Gaussian releases compose (RDP alpha/2s^2 adds up) to exactly one
    # Gaussian release with the accounted multiplier: the closed form behind the accounting.
    joint = dpsgd_epsilon(0.8, 1.0, 50, 1e-5)
    separate = composed_epsilon([(sigma_a, 1.0, 50), (sigma_r, 1.0, 50)], 1e-5)
    assert separate == pytest.approx(joint, rel=1e-6)
    assert split_noise(0.8, 0.0) == (0.8, math.inf)
    with pytest.raises(ValueError):
        split_noise(0.8, 1.0)


def test_clip_by_norm_is_joint_over_tensors():
    a, b = torch.tensor([3.0]), torch.tensor([4.0])
    ca, cb = clip_by_norm([a, b], 1.0)
    assert (float(ca), float(cb)) == pytest.approx((0.6, 0.8))
    assert [float(t) for t in clip_by_norm([a, b], 10.0)] == [3.0, 4.0]
