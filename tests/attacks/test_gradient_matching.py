"""Gradient matching: recovery of a single digit, iDLG labels, Hungarian matching, seeds."""

import itertools

import numpy as np
import pytest
import torch

from dpaudit.attacks.gradient_matching import (
    InversionConfig,
    attack_batch,
    batch_gradient,
    infer_label,
    match_order,
)
from dpaudit.nets import make_classifier, train_classifier


@pytest.fixture(scope="module")
def tiny_model(digits):
    """The shared CNN trained briefly on 200 real digits (the attack's target)."""
    members = digits.members
    model = make_classifier(members.shape, 10)
    train_classifier(model, members.x[:200], members.y[:200], epochs=5, seed=0)
    return model


def _psnr_numpy(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(np.mean((a.numpy().astype(np.float64) - b.numpy().astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / mse)


def test_inverting_gradients_recovers_a_single_training_image(digits, tiny_model):
    x, y = digits.members.x[:1], digits.members.y[:1]
    result = attack_batch(tiny_model, x, y, InversionConfig(iterations=150, restarts=1), seed=0)
    # A random image in [0, 1] scores about 5 dB against a digit; 20 dB is a faithful copy.
    assert result.psnr.item() > 20.0
    assert result.psnr.item() == pytest.approx(_psnr_numpy(result.images, x), abs=1e-3)
    assert result.labels_inferred and result.labels.tolist() == y.tolist()
    assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0


def test_dlg_option_recovers_a_single_training_image(digits, tiny_model):
    x, y = digits.members.x[1:2], digits.members.y[1:2]
    result = attack_batch(tiny_model, x, y, InversionConfig(method="dlg", iterations=100, restarts=1), seed=0)
    assert result.psnr.item() > 25.0


def test_idlg_label_inference_matches_true_labels(digits, tiny_model):
    x, y = digits.members.x[:20], digits.members.y[:20]
    tiny_model.eval()
    inferred = [infer_label(tiny_model, batch_gradient(tiny_model, x[i : i + 1], y[i : i + 1])) for i in range(20)]
    assert inferred == y.tolist()


def test_batches_assume_known_labels(digits, tiny_model):
    x, y = digits.members.x[:2], digits.members.y[:2]
    result = attack_batch(tiny_model, x, y, InversionConfig(iterations=10, restarts=1), seed=0)
    assert not result.labels_inferred
    assert sorted(result.labels.tolist()) == sorted(y.tolist())
    assert result.images.shape == x.shape and result.psnr.shape == (2,)


def test_hungarian_order_matches_brute_force():
    generator = torch.Generator().manual_seed(3)
    originals = torch.rand(5, 1, 4, 4, generator=generator)
    reconstructions = originals[torch.tensor([3, 0, 4, 1, 2])] + 0.3 * torch.rand(5, 1, 4, 4, generator=generator)
    cost = ((originals[:, None] - reconstructions[None]) ** 2).flatten(2).sum(2).numpy()
    best = min(itertools.permutations(range(5)), key=lambda p: sum(cost[i, p[i]] for i in range(5)))
    assert match_order(reconstructions, originals).tolist() == list(best)


def test_same_seed_same_reconstruction(digits, tiny_model):
    x, y = digits.members.x[2:3], digits.members.y[2:3]
    config = InversionConfig(iterations=20, restarts=2)
    first = attack_batch(tiny_model, x, y, config, seed=5)
    second = attack_batch(tiny_model, x, y, config, seed=5)
    other = attack_batch(tiny_model, x, y, config, seed=6)
    assert torch.equal(first.images, second.images) and first.loss == second.loss
    assert not torch.equal(first.images, other.images)


@pytest.mark.mnist
def test_inverting_gradients_on_mnist(mnist):
    members = mnist.members
    model = make_classifier(members.shape, 10)
    train_classifier(model, members.x[:500], members.y[:500], epochs=2, seed=0)
    x, y = members.x[:1], members.y[:1]
    result = attack_batch(model, x, y, InversionConfig(iterations=200, restarts=1), seed=0)
    assert result.psnr.item() > 18.0
