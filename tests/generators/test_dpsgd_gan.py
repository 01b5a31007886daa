"""The DP-SGD conditional GAN on the embedded digits: its accounting against opacus' accountant
called directly, the calibration to the requested epsilon, the discriminator left untouched
by generator updates, and checkpoint / resume."""

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant

from dpaudit.errors import DpauditError
from dpaudit.generators import GENERATORS, Checkpointer
from dpaudit.generators.dpsgd_gan import DPSGDGAN, frozen
from dpaudit.privacy import PrivacyBudget

TINY = ["steps=4", "batch_size=32", "fake_batch=16", "recon_batch=8", "d_width=4", "g_width=4", "latent_dim=8"]


def fit(members, epsilon=10.0, overrides=(), seed=0, **kwargs):
    gan = DPSGDGAN.from_options([*TINY, *overrides], **kwargs)
    return gan.fit(members, PrivacyBudget(epsilon, 1e-5), seed=seed)


@pytest.fixture(scope="module")
def fitted(digits):
    return fit(digits.members)


def test_registered_under_its_cli_name():
    assert GENERATORS["dpsgd-gan"] is DPSGDGAN


def test_reported_epsilon_is_opacus_accountant_called_directly(fitted, digits):
    report = fitted.privacy_report()
    assert report["sample_rate"] == 32 / len(digits.members)
    assert report["steps"] == 4
    accountant = RDPAccountant()
    accountant.history = [(report["sigma"], report["sample_rate"], report["steps"])]
    assert report["epsilon"] == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)


@pytest.mark.parametrize("optimizer,epsilon", [("dicesgd", 1.0), ("dicesgd", 10.0), ("dpsgd", 1.0)])
def test_calibration_hits_the_requested_epsilon_within_one_percent(digits, optimizer, epsilon):
    report = fit(digits.members, epsilon, [f"optimizer={optimizer}"]).privacy_report()
    assert 0.99 * epsilon <= report["epsilon"] <= epsilon


@pytest.mark.parametrize("steps,batch", [(3, 16), (9, 200)])
def test_a_run_asked_for_epsilon_one_never_reports_more(digits, steps, batch):
    report = fit(digits.members, 1.0, [f"steps={steps}", f"batch_size={batch}"]).privacy_report()
    assert report["epsilon"] <= 1.0
    assert report["sigma"] > 0


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


def test_samples_are_images_with_balanced_labels(fitted):
    synthetic = fitted.sample(30, seed=1)
    assert synthetic.x.shape == (30, 1, 8, 8)
    assert 0 <= float(synthetic.x.min()) and float(synthetic.x.max()) <= 1
    assert torch.bincount(synthetic.y, minlength=10).tolist() == [3] * 10
    assert torch.equal(fitted.sample(30, seed=1).x, synthetic.x)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(digits, tmp_path, monkeypatch):
    overrides = ["steps=6"]
    reference = fit(digits.members, overrides=overrides, seed=3).sample(20, seed=5).x

    original = DPSGDGAN._discriminator_step
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DPSGDGAN, "_discriminator_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(digits.members, overrides=overrides, seed=3, checkpoint=Checkpointer(tmp_path, every_steps=1))
    assert (tmp_path / Checkpointer.FILE).is_file()
    monkeypatch.setattr(DPSGDGAN, "_discriminator_step", original)

    resumed = fit(digits.members, overrides=overrides, seed=3, checkpoint=Checkpointer(tmp_path, every_steps=1))
    assert torch.equal(resumed.sample(20, seed=5).x, reference)
    assert resumed.privacy_report()["steps"] == 6
    assert not (tmp_path / Checkpointer.FILE).exists()  # cleared once the run finished


@pytest.mark.parametrize("override", ["feedback_share=1.0", "steps=0", "ema=1.5", "clip=-1"])
def test_bad_options_are_one_sentence_errors(digits, override):
    with pytest.raises(DpauditError, match=override.split("=")[0]):
        fit(digits.members, overrides=[override])


def test_generate_command_writes_images_and_the_accounted_manifest(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli
    from dpaudit.manifest import read_manifest

    out = tmp_path / "synthetic"
    args = ["generate", "dpsgd-gan", "--dataset", "digits", "--epsilon", "2", "--delta", "1e-5", "--num", "20",
            "--out", str(out), "--format", "npz"]
    for option in TINY:
        args += ["--set", option]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest.generator == "dpsgd-gan"
    details = manifest.details
    accountant = RDPAccountant()
    accountant.history = [(details["sigma"], details["sample_rate"], details["steps"])]
    assert manifest.epsilon == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)
    assert 0.99 * 2 <= manifest.epsilon <= 2
    assert details["optimizer"] == "dicesgd" and details["steps"] == 4
