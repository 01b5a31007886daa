"""DP latent diffusion on the embedded digits: both DP-SGD stages in one opacus history, the
calibration of an unequal split of the budget, noise multiplicity inside one clipped gradient,
learning and determinism. Registration, the budget, resumption (interrupted in the second
stage) and the samples are in the contract suite (test_contract.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dpaudit.errors import DpauditError
from dpaudit.generators.latent_diffusion import Denoiser, LatentDiffusion, alpha_bars
from dpaudit.privacy import PrivacyBudget
from tests.generators.opacus_reference import opacus_epsilon


def fit(members, epsilon=10.0, overrides=None, seed=0):
    gen = LatentDiffusion.from_options({**LatentDiffusion.test_overrides, **(overrides or {})})
    return gen.fit(members, PrivacyBudget(epsilon, 1e-5), seed=seed)


@pytest.fixture(scope="module")
def fitted(digits):
    return fit(digits.members)


def test_both_stages_are_in_one_history_equal_to_opacus_called_directly(fitted, digits):
    report, cfg = fitted.privacy_report(), fitted.config
    n = len(digits.members)
    q_ae, q_dm = cfg.ae_batch_size / n, cfg.diffusion_batch_size / n
    assert [h[1:] for h in report["history"]] == [[q_ae, math.ceil(cfg.ae_epochs / q_ae)],
                                                  [q_dm, math.ceil(cfg.diffusion_epochs / q_dm)]]
    assert report["history"][0][0] == report["history"][1][0]  # equal noise weights: equal sigmas
    assert report["epsilon"] == pytest.approx(opacus_epsilon(report["history"], 1e-5), rel=1e-12)
    # The composition is tighter than the sum of the stages' own epsilons, and exceeds each.
    alone = [opacus_epsilon([h], 1e-5) for h in report["history"]]
    assert max(alone) < report["epsilon"] < sum(alone)


def test_calibration_of_an_unequal_split_hits_the_requested_epsilon_within_one_percent(digits):
    report = fit(digits.members, 1.0, {"diffusion_noise_weight": "2"}).privacy_report()
    assert 0.99 <= report["epsilon"] <= 1.0
    assert report["history"][1][0] == pytest.approx(2 * report["history"][0][0])


def test_noise_multiplicity_gives_one_gradient_per_record():
    """opacus' per-sample gradient of a record with K draws equals autograd's gradient of that
    record's loss averaged over its draws (so clipping bounds the record, not each draw)."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model = Denoiser(3, 4, 8, 2)
    gsm = GradSampleModule(model, loss_reduction="sum")
    z, t, y = torch.randn(2, 5, 3), torch.randint(0, 50, (2, 5)), torch.randint(0, 5, (2, 5))
    gsm(z, t, y, 50).pow(2).mean((1, 2)).sum().backward()
    per_sample = [p.grad_sample.clone() for p in model.parameters()]
    gsm.to_standard_module()
    for i in range(2):
        expected = torch.autograd.grad(model(z[i], t[i], y[i], 50).pow(2).mean(), list(model.parameters()))
        for got, want in zip(per_sample, expected):
            torch.testing.assert_close(got[i], want)


def test_schedule_matches_ddpm():
    ab = alpha_bars(1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(ab, torch.cumprod(1 - betas, 0).float())


def test_learns_the_data(digits):
    """Non-private (clipped, no noise): the autoencoder explains more than half the pixel
    variance, and samples are nearer the members than uniform-noise images."""
    gen = fit(digits.members, math.inf, {"ae_width": "8", "latent_dim": "8", "ae_epochs": "3", "ae_batch_size": "32",
                                         "ae_lr": "5e-3", "diffusion_epochs": "3"})
    test = digits.test.x
    with torch.no_grad():
        recon = torch.sigmoid(gen.autoencoder(test))
    assert F.mse_loss(recon, test) < 0.5 * test.var()  # 0.065 against 0.072 measured
    members = digits.members.x.flatten(1)
    synthetic = gen.sample(200, seed=0).x.flatten(1)
    noise = torch.rand(200, members.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.cdist(synthetic, members).min(1).values.mean() < 0.8 * torch.cdist(noise, members).min(1).values.mean()


def test_same_seed_same_run(digits, fitted):
    again = fit(digits.members)
    assert again.privacy_report()["history"] == fitted.privacy_report()["history"]
    assert torch.equal(again.sample(20, seed=3).x, fitted.sample(20, seed=3).x)
    assert not torch.equal(fit(digits.members, seed=1).sample(20, seed=3).x, fitted.sample(20, seed=3).x)


@pytest.mark.parametrize("override", ["label_dropout=1.0", "sample_steps=60", "noise_multiplicity=0"])
def test_bad_options_are_one_sentence_errors(digits, override):
    with pytest.raises(DpauditError, match=override.split("=")[0]):
        fit(digits.members, overrides=dict([override.split("=")]))
