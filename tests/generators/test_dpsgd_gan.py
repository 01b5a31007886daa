"""The DP-SGD conditional GAN on the embedded digits: its history against opacus' accountant
called directly, plain DP-SGD's calibration, DiceSGD's noise split, the discriminator left
untouched by generator updates, and the CLI. Registration, the budget, resumption and the
samples are in the contract suite (test_contract.py)."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant

from dpaudit.errors import DpauditError
from dpaudit.generators.dpsgd_gan import DPSGDGAN, frozen
from dpaudit.privacy import PrivacyBudget


def fit(members, epsilon=10.0, overrides=None, seed=0):
    gan = DPSGDGAN.from_options({**DPSGDGAN.test_overrides, **(overrides or {})})
    return gan.fit(members, PrivacyBudget(epsilon, 1e-5), seed=seed)


@pytest.fixture(scope="module")
def fitted(digits):
    return fit(digits.members)


def test_reported_epsilon_is_opacus_accountant_called_directly(fitted, digits):
    report = fitted.privacy_report()
    assert report["sample_rate"] == fitted.config.batch_size / len(digits.members)
    assert report["steps"] == fitted.config.steps
    accountant = RDPAccountant()
    accountant.history = [(report["sigma"], report["sample_rate"], report["steps"])]
    assert report["epsilon"] == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)


def test_plain_dpsgd_calibration_hits_the_requested_epsilon_within_one_percent(digits):
    # DiceSGD, the default, is held to the budget by the contract suite.
    report = fit(digits.members, 1.0, {"optimizer": "dpsgd"}).privacy_report()
    assert report["optimizer"] == "dpsgd" and 0.99 <= report["epsilon"] <= 1.0


def test_dicesgd_report_states_the_noise_split(fitted):
    report = fitted.privacy_report()
    sigma, share = report["sigma"], report["feedback_share"]
    assert report["optimizer"] == "dicesgd"
    assert report["sigma_update"] == pytest.approx(sigma / (1 - share) ** 0.5)
    assert report["sigma_residual"] == pytest.approx(sigma / share**0.5)


def _generator_loss_through(disc, gan, n=8):
    z = torch.randn(n, gan.config.latent_dim)
    y = torch.arange(n) % gan.num_classes
    adv, _ = disc(gan.generator_net(z, y), y)
    F.softplus(-adv).mean().backward()


def test_generator_updates_leave_the_private_discriminator_untouched(fitted):
    disc = fitted.discriminator
    before = [p.detach().clone() for p in disc.parameters()]
    for p in disc.parameters():
        p.grad, p.grad_sample = None, None
    # The pitfall is real: without `frozen`, a backward pass of the generator's loss through
    # the GradSampleModule stores per-sample gradients on the discriminator.
    _generator_loss_through(disc, fitted)
    assert any(p.grad_sample is not None for p in disc.parameters())
    for p in disc.parameters():
        p.grad, p.grad_sample = None, None
    fitted.generator_net.zero_grad()
    with frozen(disc):
        _generator_loss_through(disc, fitted)
    assert all(p.grad_sample is None and p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())  # restored after the block
    assert any(p.grad is not None for p in fitted.generator_net.parameters())
    # A full generator step of the training loop, too.
    optimizer = torch.optim.Adam(list(fitted.generator_net.parameters()) + list(fitted.encoder.parameters()))
    fitted._generator_step(optimizer, torch.Generator().manual_seed(0))
    assert all(p.grad_sample is None and p.grad is None for p in disc.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, disc.parameters()))


@pytest.mark.parametrize("override", ["feedback_share=1.0", "steps=0", "ema=1.5", "clip=-1", "fake_batch=1"])
def test_bad_options_are_one_sentence_errors(digits, override):
    with pytest.raises(DpauditError, match=override.split("=")[0]):
        fit(digits.members, overrides=dict([override.split("=")]))


def test_generate_command_writes_images_and_the_accounted_manifest(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli
    from dpaudit.manifest import read_manifest

    out = tmp_path / "synthetic"
    args = ["generate", "dpsgd-gan", "--dataset", "digits", "--epsilon", "2", "--delta", "1e-5", "--num", "20",
            "--out", str(out), "--format", "npz"]
    for key, value in DPSGDGAN.test_overrides.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.generator == "dpsgd-gan"
    details = manifest.details
    accountant = RDPAccountant()
    accountant.history = [(details["sigma"], details["sample_rate"], details["steps"])]
    assert manifest.epsilon == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)
    assert 0.99 * 2 <= manifest.epsilon <= 2
    assert details["optimizer"] == "dicesgd" and details["steps"] == int(DPSGDGAN.test_overrides["steps"])


def test_without_the_auxiliary_classifier_the_discriminator_has_no_head(digits):
    # opacus refuses a parameter that no loss reaches: class_weight=0 once crashed in the first step.
    gan = fit(digits.members, overrides={"class_weight": "0"})
    assert gan.discriminator._module.classify is None
    assert gan.privacy_report()["epsilon"] <= 10.0
    assert gan.sample(10).x.shape == (10, *digits.members.shape)


def test_the_mode_seeking_term_pairs_codes_of_one_label_and_penalises_alike_images(fitted):
    """MSGAN's term: 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|) over pairs of one label, added
    to the generator's loss; computed here from the same draws, apart from the training code."""
    base = copy.deepcopy(fitted)  # the module's fitted generator stays as it is
    base.generator_net.eval()  # no batch statistics: the same code gives the same image in the step
    z, y, x = base._fake(16, torch.Generator().manual_seed(3), paired=True)
    assert torch.equal(y[:8], y[8:]) and not torch.equal(z[:8], z[8:])
    ratio = ((x[:8] - x[8:]).abs().mean() / (z[:8] - z[8:]).abs().mean()).item()

    def step_loss(weight):
        gan = copy.deepcopy(base)
        gan.config = dataclasses.replace(gan.config, diversity_weight=weight, fake_batch=16)
        optimizer = torch.optim.SGD(list(gan.generator_net.parameters()) + list(gan.encoder.parameters()), lr=0.0)
        return gan._generator_step(optimizer, torch.Generator().manual_seed(3))

    assert step_loss(2.0) - step_loss(1e-12) == pytest.approx(2.0 / (ratio + 1e-5), rel=1e-4)
