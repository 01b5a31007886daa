"""GAN-based attack: prototypes the fixed classifier assigns to their target class."""

import pytest
import torch

from dpaudit.attacks.gan_attack import GANAttackConfig, gan_attack
from dpaudit.nets import make_classifier, predict_logits, train_classifier


@pytest.fixture(scope="module")
def classifier(digits):
    members = digits.members
    model = make_classifier(members.shape, 10)
    train_classifier(model, members.x[:500], members.y[:500], epochs=20, lr=2e-3, seed=0)
    return model


def test_prototypes_are_assigned_to_their_target_class(classifier):
    config = GANAttackConfig(steps=150, n_prototypes=3)
    result = gan_attack(classifier, (1, 8, 8), 10, target_classes=[2, 7], config=config, seed=0)
    assert result.images.shape == (6, 1, 8, 8)
    assert result.labels.tolist() == [2, 2, 2, 7, 7, 7]
    assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
    # Independent check of the reported confidence: the classifier's own softmax.
    probs = predict_logits(classifier, result.images).softmax(1)
    torch.testing.assert_close(result.confidence, probs[torch.arange(6), result.labels])
    assert (probs.argmax(1) == result.labels).all()
    assert float(result.confidence.mean()) > 0.8


def test_the_classifier_is_left_unchanged(classifier):
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    flags = [p.requires_grad for p in classifier.parameters()]
    gan_attack(classifier, (1, 8, 8), 10, config=GANAttackConfig(steps=5, n_prototypes=1), seed=0)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert [p.requires_grad for p in classifier.parameters()] == flags


def test_diversity_term_spreads_the_prototypes(classifier):
    def spread(weight: float) -> float:
        config = GANAttackConfig(steps=100, n_prototypes=8, diversity_weight=weight)
        images = gan_attack(classifier, (1, 8, 8), 10, target_classes=[4], config=config, seed=0).images
        return float(torch.pdist(images.flatten(1)).mean())

    assert spread(1.0) > spread(0.0)


def test_same_seed_same_prototypes(classifier):
    config = GANAttackConfig(steps=10, n_prototypes=2)
    first = gan_attack(classifier, (1, 8, 8), 10, config=config, seed=3)
    second = gan_attack(classifier, (1, 8, 8), 10, config=config, seed=3)
    other = gan_attack(classifier, (1, 8, 8), 10, config=config, seed=4)
    assert torch.equal(first.images, second.images)
    assert not torch.equal(first.images, other.images)
