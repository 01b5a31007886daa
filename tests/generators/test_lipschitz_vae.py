"""The Lipschitz VAE on the embedded digits: spectral normalisation under opacus, the certified
Lipschitz bound, the DP-SGD history, the labelled per-record Lipschitz extra, learning and
determinism. Registration, the budget, resumption and the samples are in the contract suite
(test_contract.py)."""

import math

import pytest
import torch
from opacus import GradSampleModule
from sklearn.linear_model import LogisticRegression

from dpaudit.errors import DpauditError
from dpaudit.generators.lipschitz_vae import LipschitzVAE, LipschitzVAEConfig, LipschitzVAEGenerator, SpectralLinear
from dpaudit.privacy import PrivacyBudget
from tests.generators.opacus_reference import opacus_epsilon


def fit(members, epsilon=10.0, overrides=None, seed=0):
    gen = LipschitzVAEGenerator.from_options({**LipschitzVAEGenerator.test_overrides, **(overrides or {})})
    return gen.fit(members, PrivacyBudget(epsilon, 1e-5), seed=seed)


@pytest.fixture(scope="module")
def fitted(digits):
    return fit(digits.members)


@pytest.mark.parametrize("record_shape", [(5,), (2, 5)], ids=["vector", "sequence"])
def test_opacus_per_sample_gradients_through_spectral_normalisation_are_exact(record_shape):
    g = torch.Generator().manual_seed(0)
    layer = SpectralLinear(5, 4, 1.5, g)
    layer.power_iteration(5)
    gsm = GradSampleModule(torch.nn.Sequential(layer, torch.nn.ReLU()), loss_reduction="sum")
    x = torch.randn(3, *record_shape, generator=g)
    gsm(x).sum().backward()
    per_sample = layer.weight.grad_sample.clone()
    gsm.to_standard_module()
    for i in range(3):
        (expected,) = torch.autograd.grad(torch.relu(layer(x[i : i + 1])).sum(), layer.weight)
        torch.testing.assert_close(per_sample[i], expected)


def test_encoder_mean_respects_its_certified_lipschitz_constant():
    cfg = LipschitzVAEConfig(hidden=32, latent_dim=4, lipschitz=2.0)
    model = LipschitzVAE((1, 8, 8), 10, cfg, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for layer in model.spectral_layers():
            layer.weight.mul_(torch.randn(layer.weight.shape))
            layer.power_iteration(200)
    bound = model.certified_lipschitz()
    assert bound == pytest.approx(2.0, rel=1e-3)  # converged power iteration: exact normalisation
    g = torch.Generator().manual_seed(2)
    x, x2 = torch.rand(500, 1, 8, 8, generator=g), torch.rand(500, 1, 8, 8, generator=g)
    y, y2 = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (500,), generator=g)
    with torch.no_grad():
        out = (model.encode_mean(x, y) - model.encode_mean(x2, y2)).norm(dim=1)
    inputs = torch.cat([(x - x2).flatten(1), (torch.nn.functional.one_hot(y, 10) - torch.nn.functional.one_hot(y2, 10)).float()], 1)
    assert (out <= bound * inputs.norm(dim=1) + 1e-5).all()


def test_reported_epsilon_is_opacus_accountant_called_directly(fitted, digits):
    report = fitted.privacy_report()
    q = fitted.config.batch_size / len(digits.members)
    assert report["sample_rate"] == q and report["steps"] == math.ceil(fitted.config.epochs / q)
    assert report["history"] == [[report["sigma"], q, report["steps"]]]
    assert report["epsilon"] == pytest.approx(opacus_epsilon(report["history"], 1e-5), rel=1e-12)


def test_lipschitz_extra_is_a_gaussian_mechanism_of_sensitivity_l_times_d(fitted):
    extra = fitted.privacy_report()["lipschitz_analysis"]
    assert extra["input_diameter"] == pytest.approx(math.sqrt(64 + 2))
    assert extra["certified_lipschitz"] == pytest.approx(fitted.model.certified_lipschitz())
    sigma = extra["latent_std"] / (extra["certified_lipschitz"] * extra["input_diameter"])
    assert extra["noise_multiplier"] == pytest.approx(sigma)
    assert extra["per_record_epsilon"] == pytest.approx(opacus_epsilon([(sigma, 1.0, 1)], 1e-5))
    assert "not end-to-end" in extra["what"]


def test_learns_class_structure(digits):
    """Non-private (clipped, no noise): a classifier trained on the REAL members recognises the
    class of the generated digits far above chance (10%)."""
    # The default decoder draws at half the side: 4x4 cannot hold an 8x8 digit.
    gen = fit(digits.members, math.inf, {"epochs": "8", "batch_size": "128", "hidden": "128", "latent_dim": "8", "decoder": "mlp"})
    synthetic = gen.sample(300, seed=0)
    real = LogisticRegression(max_iter=2000).fit(digits.members.x.flatten(1).numpy(), digits.members.y.numpy())
    assert real.score(synthetic.x.flatten(1).numpy(), synthetic.y.numpy()) > 0.35  # 0.55 measured


def test_kl_against_a_class_prior_is_torch_distributions_kl():
    """The closed-form KL of the posterior N(mu, s^2 I) from a learned per-class Gaussian prior
    equals torch.distributions' (the independent reference), record by record."""
    cfg = LipschitzVAEConfig(hidden=16, latent_dim=3, prior="class")
    model = LipschitzVAE((1, 8, 8), 4, cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.prior_mean.weight.copy_(torch.randn(3, 4, generator=g))
        model.prior_log_std.weight.copy_(0.5 * torch.randn(3, 4, generator=g))
    mu, y = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    mean, log_std = model.prior(y)
    assert torch.equal(mean, model.prior_mean.weight.T[y]) and torch.equal(log_std, model.prior_log_std.weight.T[y])
    posterior = torch.distributions.Normal(mu, 0.3)
    prior = torch.distributions.Normal(mean, log_std.exp())
    expected = torch.distributions.kl_divergence(posterior, prior).sum(1)
    torch.testing.assert_close(model.kl(mu, 0.3, y), expected.detach())
    standard = LipschitzVAE((1, 8, 8), 4, LipschitzVAEConfig(hidden=16, latent_dim=3, prior="standard"), torch.Generator())
    unit = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(standard.kl(mu, 0.3, y), unit)


@pytest.mark.parametrize("overrides", [{"prior": "standard", "decoder": "mlp"}, {"decoder": "mlp"},
                                       {"prior": "standard", "clipping": "per-sample"}])
def test_priors_and_decoders_train_with_the_same_accounting(digits, fitted, overrides):
    """Other model parts than the defaults (class prior, upsampled MLP decoder) change neither the
    steps nor the noise; samples follow the learned prior."""
    gen = fit(digits.members, overrides=overrides)
    report, reference = gen.privacy_report(), fitted.privacy_report()
    assert report["history"] == reference["history"] and report["epsilon"] == reference["epsilon"]
    synthetic = gen.sample(30, seed=0)
    assert synthetic.x.shape == (30, 1, 8, 8) and ((synthetic.x >= 0) & (synthetic.x <= 1)).all()
    if gen.config.prior == "class":
        assert gen.model.prior_mean.weight.abs().sum() > 0  # trained: it starts at zero
        with torch.no_grad():
            gen.model.prior_log_std.weight.fill_(-30.0)  # a point prior: every sample of a class decodes its mean
        same_class = gen.sample(4, labels=torch.zeros(4, dtype=torch.long), seed=5).x
        assert torch.allclose(same_class, same_class[:1].expand_as(same_class), atol=1e-5)


def test_same_seed_same_run(digits, fitted):
    again = fit(digits.members)
    assert again.privacy_report()["epsilon"] == fitted.privacy_report()["epsilon"]
    assert torch.equal(again.sample(20, seed=3).x, fitted.sample(20, seed=3).x)
    assert not torch.equal(fit(digits.members, seed=1).sample(20, seed=3).x, fitted.sample(20, seed=3).x)


@pytest.mark.parametrize("override", ["lipschitz=0", "latent_std=-1", "epochs=0"])
def test_bad_options_are_one_sentence_errors(digits, override):
    with pytest.raises(DpauditError, match=override.split("=")[0]):
        fit(digits.members, overrides=dict([override.split("=")]))
