"""Attacks on the downstream classifier: signals against closed forms, LiRA against a manual
computation, and a known answer (an overfit model on digits leaks its training images)."""

import numpy as np
import pytest
import torch
from torch import nn

from dpaudit.attacks import downstream
from dpaudit.attacks.base import AttackResult
from dpaudit.nets import make_classifier, train_classifier


def linear_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4))


def softmax_true_class(model, x, y):
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
    return p[torch.arange(len(y)), y].numpy()


def test_logit_confidence_and_loss_closed_forms():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 2, 3, generator=g), torch.randint(0, 4, (40,), generator=g)
    model = linear_model(0)
    p = softmax_true_class(model, x, y)
    np.testing.assert_allclose(downstream.logit_confidence(model, x, y), np.log(p / (1 - p)), rtol=1e-9)
    np.testing.assert_allclose(downstream.loss_scores(model, x, y), np.log(p), rtol=1e-9)


def test_lira_offline_matches_manual_computation():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 1, 2, 3, generator=g), torch.randint(0, 4, (30,), generator=g)
    target, shadows = linear_model(10), [linear_model(s) for s in (11, 12, 13)]

    def phi(model):
        p = softmax_true_class(model, x, y)
        return np.log(p) - np.log1p(-p)

    out = np.stack([phi(s) for s in shadows])
    mu = out.mean(0)
    sigma = np.sqrt(((out - mu) ** 2).sum() / (out.size - out.shape[1]))  # pooled, ddof 1 per target
    np.testing.assert_allclose(downstream.lira_offline_scores(target, shadows, x, y), (phi(target) - mu) / sigma, rtol=1e-6)
    with pytest.raises(ValueError):
        downstream.lira_offline_scores(target, shadows[:1], x, y)


def test_overfit_classifier_leaks_its_training_images(digits):
    """A CNN trained for many epochs on 100 members: the loss attack and offline LiRA (shadows
    trained on disjoint real images) both separate its training images from unseen ones."""
    members_x, members_y = digits.members.x[:100], digits.members.y[:100]
    model = make_classifier(digits.members.shape, 10)
    train_classifier(model, members_x, members_y, epochs=40, seed=0)
    x = torch.cat([members_x, digits.holdout.x[:100]])
    y = torch.cat([members_y, digits.holdout.y[:100]])
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)

    loss = AttackResult.from_scores("loss", downstream.loss_scores(model, x, y), labels, delta=1e-5)
    assert loss.auc >= 0.6

    pool_x, pool_y = digits.holdout.x[100:], digits.holdout.y[100:]  # disjoint from every target
    make = lambda: make_classifier(digits.members.shape, 10)  # noqa: E731
    shadows = downstream.train_shadow_models(make, pool_x, pool_y, n_shadows=3, train_size=100, epochs=40, seed=0)
    lira = AttackResult.from_scores("lira", downstream.lira_offline_scores(model, shadows, x, y), labels, delta=1e-5)
    assert lira.auc >= 0.6
    # Same seed, same shadows.
    again = downstream.train_shadow_models(make, pool_x, pool_y, n_shadows=1, train_size=100, epochs=1, seed=0)
    once = downstream.train_shadow_models(make, pool_x, pool_y, n_shadows=1, train_size=100, epochs=1, seed=0)
    for a, b in zip(again[0].parameters(), once[0].parameters()):
        assert torch.equal(a, b)
