"""DP batch-norm-statistics matching on the embedded digits: the released statistics and their
sensitivity, the history of classifier + statistics + counts against opacus, learning,
determinism and soft labels. Registration, the budget, resumption and the samples are in the
contract suite (test_contract.py)."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from skimage.transform import resize
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.generators.bn_matching import (
    BNMatching, StatsClassifier, clip_rows, holds_public_digits, per_sample_stats, public_digits, random_warp,
    total_variation,
)
from dpaudit.privacy import PrivacyBudget
from tests.generators.opacus_reference import opacus_epsilon


def fit(members, epsilon=10.0, overrides=None, seed=0):
    gen = BNMatching.from_options({**BNMatching.test_overrides, **(overrides or {})})
    return gen.fit(members, PrivacyBudget(epsilon, 1e-5), seed=seed)


@pytest.fixture(scope="module")
def fitted(digits):
    return fit(digits.members)


def test_per_sample_statistics_are_channel_means_and_second_moments_of_standardised_activations():
    torch.manual_seed(0)
    model = StatsClassifier((1, 8, 8), 3, (4, 8), 2)
    x = torch.rand(5, 1, 8, 8)
    _, layers = model.forward_with_stats(x)
    a = model.convs[0](x).view(5, 2, 2, 4, 4)  # two groups of two channels, 4x4 after stride 2
    standardised = ((a - a.mean((2, 3, 4), keepdim=True)) / (a.var((2, 3, 4), unbiased=False, keepdim=True) + 1e-5).sqrt()).view(5, 4, 4, 4)
    torch.testing.assert_close(layers[0], standardised, atol=1e-5, rtol=1e-4)
    v = per_sample_stats(layers)
    assert v.shape == (5, 2 * (4 + 8))
    torch.testing.assert_close(v[:, :4], standardised.mean((2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(v[:, 4:8], (standardised**2).mean((2, 3)), atol=1e-5, rtol=1e-4)


def test_opacus_per_sample_gradients_of_the_classifier_are_exact():
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model = StatsClassifier((1, 8, 8), 3, (4, 8), 2)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 2, 1])
    gsm = GradSampleModule(model, loss_reduction="sum")
    torch.nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    per_sample = [p.grad_sample.clone() for p in model.parameters()]
    gsm.to_standard_module()
    for i in range(3):
        expected = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(model.parameters()))
        for got, want in zip(per_sample, expected):
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)


def test_clipping_bounds_each_record_so_the_sensitivity_holds():
    v = torch.randn(100, 7) * torch.linspace(0.1, 10, 100).unsqueeze(1)
    clipped = clip_rows(v, 2.0)
    assert (clipped.norm(dim=1) <= 2.0 + 1e-5).all()
    small = v.norm(dim=1) <= 2.0
    torch.testing.assert_close(clipped[small], v[small])


def test_noiseless_release_equals_the_class_means_of_the_clipped_statistics(digits):
    gen = fit(digits.members, math.inf, {"stats_clip": "1.5"})
    with torch.no_grad():
        _, layers = gen.classifier.forward_with_stats(digits.members.x)
        v = clip_rows(per_sample_stats(layers), 1.5)
    for c in (0, 9):
        torch.testing.assert_close(gen.class_stats[c], v[digits.members.y == c].mean(0), atol=1e-5, rtol=1e-4)
    assert gen.class_counts.tolist() == torch.bincount(digits.members.y, minlength=10).float().tolist()


def test_history_covers_classifier_statistics_and_counts_as_opacus_does(fitted, digits):
    report, cfg = fitted.privacy_report(), fitted.config
    q = cfg.clf_batch_size / len(digits.members)
    sigma = report["sigma"]
    assert report["history"] == [[sigma, q, math.ceil(cfg.clf_epochs / q)], [report["sigma_stats"], 1.0, 1],
                                 [report["sigma_count"], 1.0, 1]]
    assert report["sigma_stats"] == pytest.approx(4 * sigma) and report["sigma_count"] == pytest.approx(4 * sigma)
    assert report["epsilon"] == pytest.approx(opacus_epsilon(report["history"], 1e-5), rel=1e-12)


def test_total_variation_of_a_known_image():
    x = torch.zeros(1, 1, 4, 4)
    x[..., :, 2:] = 1.0  # one vertical edge: 4 of the 12 horizontal neighbour pairs differ
    assert float(total_variation(x)) == pytest.approx(4 / 12)


def test_public_starting_digits_are_framed_like_mnist_and_of_the_asked_class():
    """Each 28x28 start is zero outside the central 20x20 and, shrunk back to 8x8 by
    scikit-image, is nearest (L2) to a scikit-learn digit of the class asked for."""
    digits = load_digits()
    reference = torch.tensor(digits.images.reshape(len(digits.images), -1) / 16.0, dtype=torch.float32)
    for label in (0, 4, 7):
        x = public_digits(label, 30, (1, 28, 28), torch.Generator().manual_seed(label))
        assert x.shape == (30, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
        inner = torch.zeros_like(x, dtype=torch.bool)
        inner[..., 4:24, 4:24] = True
        assert float(x[~inner].abs().max()) == 0.0
        shrunk = torch.tensor(np.stack([resize(im[0, 4:24, 4:24].numpy(), (8, 8), anti_aliasing=True) for im in x]))
        nearest = torch.cdist(shrunk.flatten(1), reference).argmin(1)
        assert (torch.tensor(digits.target)[nearest] == label).all()


def test_random_warp_is_the_identity_at_strength_zero_and_keeps_the_ink_otherwise():
    x = public_digits(3, 50, (1, 28, 28), torch.Generator().manual_seed(0))
    assert torch.equal(random_warp(x, 0.0, torch.Generator()), x)
    warped = random_warp(x, 0.5, torch.Generator().manual_seed(1))
    assert not torch.allclose(warped, x)
    # Magnification 1 +- 0.5: the ink scales with its square, in [0.25, 2.25] (less if shifted out).
    ratio = warped.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert float(ratio.min()) > 0.2 and float(ratio.max()) < 2.3


def test_learns_the_data(digits):
    """Non-private (clipped, no noise), from uniform-noise starts: a classifier trained on the
    REAL members recognises the class the synthetic digits were optimised for far above
    chance (10%)."""
    gen = fit(digits.members, math.inf, {"clf_epochs": "5", "clf_batch_size": "128", "channels": "8,16", "groups": "4",
                                         "init": "noise", "synthesis_steps": "100", "synthesis_batch": "20"})
    synthetic = gen.sample(100, seed=0)
    members = digits.members.x.flatten(1)
    real = LogisticRegression(max_iter=2000).fit(members.numpy(), digits.members.y.numpy())
    assert real.score(synthetic.x.flatten(1).numpy(), synthetic.y.numpy()) > 0.3  # 0.45 measured


def test_same_seed_same_run_and_soft_labels(digits, fitted):
    again = fit(digits.members)
    assert torch.equal(again.class_stats, fitted.class_stats)
    first = fitted.sample(20, seed=3)
    assert torch.equal(again.sample(20, seed=3).x, first.x)
    soft = fitted.soft_labels(first)
    assert soft.shape == (20, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(20))


def test_oversampling_keeps_the_candidates_the_dp_classifier_is_surest_of(fitted):
    """With oversample 3, each class's images are the 3x as many candidates that oversample 1
    would give for 3x the labels (same seed, same batches), cut to the most confident third."""
    labels = torch.arange(3).repeat_interleave(10)
    candidates = fitted.generate(labels.repeat_interleave(3), seed=4)
    oversampled = copy.copy(fitted)
    oversampled.config = dataclasses.replace(fitted.config, oversample=3.0)
    kept = oversampled.generate(labels, seed=4)
    for c in range(3):
        pool = candidates[labels.repeat_interleave(3) == c]
        best = pool[fitted.soft_labels(pool)[:, c].argsort(descending=True)[:10]]
        torch.testing.assert_close(kept[labels == c], best)


@pytest.mark.parametrize("override", ["channels=4,5", "channels=4,8,8,8", "stats_clip=0", "synthesis_steps=0",
                                      "oversample=0.5"])
def test_bad_options_are_one_sentence_errors(digits, override):
    with pytest.raises(DpauditError, match=override.split("=")[0]):
        fit(digits.members, overrides=dict([override.split("=")]))



def test_the_public_prior_is_refused_when_the_members_are_the_public_digits(digits):
    with pytest.raises(DpauditError, match="init=public-digits: .* holds scikit-learn's digits"):
        fit(digits.members, overrides={"init": "public-digits"})
    assert holds_public_digits(digits.test)
    # other pixel values, or another size: not the public digits
    shifted = ImageSet((digits.members.x[:50] + 1 / 32).clamp(0, 1), digits.members.y[:50], 10, "s", "s")
    assert not holds_public_digits(shifted)
    assert not holds_public_digits(ImageSet(torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long), 10, "r", "r"))


def test_public_starts_run_on_members_that_are_not_the_public_digits():
    rng = torch.Generator().manual_seed(0)
    x = torch.cat([public_digits(c, 30, (1, 28, 28), rng) for c in range(10)])
    noisy = (0.8 * x + 0.2 * torch.rand(x.shape, generator=rng)).clamp(0, 1)
    members = ImageSet(noisy, torch.arange(10).repeat_interleave(30), 10, "m", "m")
    gen = fit(members, overrides={"init": "public-digits"})
    assert gen.config.init == "public-digits"
    sample = gen.sample(20, seed=1)
    assert sample.x.shape == (20, 1, 28, 28) and float(sample.x.min()) >= 0 and float(sample.x.max()) <= 1
