"""Gradient matching: recovery of a single digit, iDLG labels, Hungarian matching, seeds."""

import itertools

import numpy as np
import pytest
import torch

from dpaudit.attacks.gradient_matching import (
    InversionConfig,
    attack_batch,
    attack_batches,
    batch_gradient,
    infer_label,
    invert_gradients,
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


@pytest.mark.parametrize("batch_size, restarts", [(1, 2), (2, 1)])
def test_batches_inverted_together_equal_each_inverted_alone(digits, tiny_model, batch_size, restarts):
    config = InversionConfig(iterations=30, restarts=restarts, batch_size=batch_size)
    x, y = digits.members.x[: 3 * batch_size], digits.members.y[: 3 * batch_size]
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    together = attack_batches(tiny_model, batches, config, seed=4)
    for i, (xb, yb) in enumerate(batches):
        alone = attack_batch(tiny_model, xb, yb, config, seed=4 + i)
        torch.testing.assert_close(together[i].images, alone.images, atol=1e-5, rtol=0)
        assert together[i].loss == pytest.approx(alone.loss, rel=1e-4, abs=1e-6)
        assert torch.equal(together[i].labels, alone.labels) and together[i].labels_inferred == alone.labels_inferred
    assert together[0].psnr.mean() != together[1].psnr.mean()  # the batches are not one another's


def test_dlg_batches_run_one_after_another(digits, tiny_model):
    config = InversionConfig(method="dlg", iterations=20, restarts=1)
    batches = [(digits.members.x[i : i + 1], digits.members.y[i : i + 1]) for i in range(2)]
    together = attack_batches(tiny_model, batches, config, seed=1)
    torch.testing.assert_close(together[1].images, attack_batch(tiny_model, *batches[1], config, seed=2).images)
    with pytest.raises(ValueError, match="only the geiping method"):
        invert_gradients(tiny_model, [], [], (1, 1, 8, 8), config, [])
