"""Black-box membership attacks: known-answer cases (a copying generator, real images from
neither split, a generator copying 2% of members) and brute-force checks of the scores."""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from dpaudit.attacks import membership
from dpaudit.attacks.base import AttackResult, draw_targets
from dpaudit.transforms import TransformConfig
from tests.reference import compare_to_reference
from tests.transformed_copies import jittered


def cdist_nearest(targets, rows):
    """Distance of each target to its nearest row: torch.cdist in float64 over every pair."""
    return torch.cdist(targets.double(), rows.double()).min(1).values.numpy()


def test_distance_scores_are_distances_to_the_nearest_row():
    g = torch.Generator().manual_seed(1)
    inputs = {"50 targets, 80 synthetic, 60 reference rows of 5": (
        torch.rand(50, 5, generator=g), torch.rand(80, 5, generator=g), torch.rand(60, 5, generator=g))}
    compare_to_reference(lambda t, s, r: membership.distance_scores(t, s), lambda t, s, r: -cdist_nearest(t, s),
                         inputs, atol=0.0, rtol=1e-5, name="distance_scores")
    # The calibrated distance is the difference of the two distances.
    compare_to_reference(membership.calibrated_distance_scores,
                         lambda t, s, r: cdist_nearest(t, r) - cdist_nearest(t, s),
                         inputs, atol=1e-6, rtol=1e-4, name="calibrated_distance_scores")


def overfit_toy(n=50, d=3, seed=0):
    """Members and non-members from N(0, I); the 'generator' samples tightly around the members."""
    g = torch.Generator().manual_seed(seed)
    members, nonmembers = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    reference = torch.randn(2000, d, generator=g)
    synthetic = members[torch.randint(0, n, (2000,), generator=g)] + 0.1 * torch.randn(2000, d, generator=g)
    labels = np.r_[np.ones(n), np.zeros(n)].astype(int)
    return torch.cat([members, nonmembers]), synthetic, reference, labels


def brute_force_domias(targets, synthetic, reference):
    """log p_synthetic - log p_reference: Gaussian KDEs with Scott's factor n^(-1/(d+4)) in the
    whitened 3-component PCA space of synthetic + reference, by brute force over every pair."""
    pca = PCA(3, whiten=True, random_state=0).fit(np.r_[synthetic.double().numpy(), reference.double().numpy()])

    def log_kde(data, x):
        data, x = pca.transform(data.double().numpy()), pca.transform(x.double().numpy())
        n, d = data.shape
        h = n ** (-1 / (d + 4))
        sq = ((x[:, None, :] - data[None]) ** 2).sum(-1)
        m = (-sq / (2 * h * h)).max(1, keepdims=True)
        return (m[:, 0] + np.log(np.exp(-sq / (2 * h * h) - m).mean(1))) - d / 2 * math.log(2 * math.pi * h * h)

    return log_kde(synthetic, targets) - log_kde(reference, targets)


def test_domias_equals_brute_force_kde_ratio():
    targets, synthetic, reference, labels = overfit_toy(n=30, d=3)
    [(scores, _)] = compare_to_reference(
        lambda t, s, r: membership.domias_scores(t, s, r, n_components=3, seed=0), brute_force_domias,
        {"overfit toy, 30 a side, d=3": (targets, synthetic, reference)}, atol=1e-6, rtol=1e-6, name="domias_scores",
    )
    assert AttackResult.from_scores("domias", scores, labels, delta=1e-5).auc >= 0.85


def test_classifier_attack_finds_an_overfit_generator():
    targets, synthetic, reference, labels = overfit_toy()
    scores = membership.classifier_scores(targets, synthetic, reference, seed=0)
    assert np.all((scores >= 0) & (scores <= 1))
    assert AttackResult.from_scores("classifier", scores, labels, delta=1e-5).auc >= 0.65
    np.testing.assert_array_equal(scores, membership.classifier_scores(targets, synthetic, reference, seed=0))


def test_copying_generator_is_caught_on_digits(digits):
    """A 'generator' that outputs its members with small noise: AUC >= 0.95 and epsilon >= 2."""
    g = torch.Generator().manual_seed(0)
    synthetic = (digits.members.x + 0.02 * torch.randn(digits.members.x.shape, generator=g)).clamp(0, 1).flatten(1)
    split = draw_targets(len(digits.members), len(digits.holdout), per_side=1000, reference=1000, seed=0)
    targets = split.targets(digits.members.x, digits.holdout.x).flatten(1)
    reference = split.reference(digits.holdout.x).flatten(1)
    for name, scores in {
        "distance": membership.distance_scores(targets, synthetic),
        "calibrated": membership.calibrated_distance_scores(targets, synthetic, reference),
    }.items():
        result = AttackResult.from_scores(name, scores, split.labels, delta=1e-5, seed=0)
        assert result.auc >= 0.95, name
        assert result.epsilon_lower_bound >= 2, name


def pixel_attacks(targets, synthetic, reference, seed=0):
    return {
        "distance": membership.distance_scores(targets, synthetic),
        "calibrated": membership.calibrated_distance_scores(targets, synthetic, reference),
        "domias": membership.domias_scores(targets, synthetic, reference, seed=seed),
        "classifier": membership.classifier_scores(targets, synthetic, reference, max_fit=1000, seed=seed),
    }


@pytest.mark.mnist
def test_unrelated_real_images_leak_nothing(mnist):
    """'Synthetic' = real MNIST test images (neither members nor holdout): AUC 0.5 +/- 0.05,
    epsilon lower bound <= 0.5, with 2,000 targets a side (AUC standard error about 0.009)."""
    split = draw_targets(len(mnist.members), len(mnist.holdout), per_side=2000, reference=2000, seed=0)
    targets = split.targets(mnist.members.x, mnist.holdout.x).flatten(1)
    reference = split.reference(mnist.holdout.x).flatten(1)
    synthetic = mnist.test.x[:4000].flatten(1)
    for name, scores in pixel_attacks(targets, synthetic, reference).items():
        result = AttackResult.from_scores(name, scores, split.labels, delta=1e-5, seed=0)
        assert abs(result.auc - 0.5) <= 0.05, (name, result.auc)
        assert result.epsilon_lower_bound <= 0.5, (name, result.epsilon_lower_bound)


@pytest.mark.mnist
def test_copying_two_percent_is_caught_at_low_fpr(mnist):
    """1,000 copied members (2%) among 9,000 unrelated real images: with 2,000 non-member targets,
    TPR at 0.1% FPR is far above 0.1% (about 2% of member targets are copies)."""
    g = torch.Generator().manual_seed(1234)
    copied = torch.randperm(len(mnist.members), generator=g)[:1000]
    synthetic = torch.cat([mnist.members.x[copied], mnist.test.x[:9000]]).flatten(1)
    split = draw_targets(len(mnist.members), len(mnist.holdout), per_side=2000, reference=2000, seed=0)
    targets = split.targets(mnist.members.x, mnist.holdout.x).flatten(1)
    n_copied_targets = int(np.isin(split.member_idx.numpy(), copied.numpy()).sum())
    result = AttackResult.from_scores("distance", membership.distance_scores(targets, synthetic), split.labels,
                                      delta=1e-5, seed=0)
    assert result.n_nonmembers >= 1000
    assert 20 <= n_copied_targets <= 60
    assert result.tpr_at["0p1pct"] >= 0.01  # ten times the FPR
    assert result.tpr_at["0p1pct"] >= 0.9 * n_copied_targets / 2000


@pytest.fixture(scope="module")
def jitter_split(mnist):
    return draw_targets(len(mnist.members), len(mnist.holdout), per_side=1000, reference=2000, seed=0)


@pytest.mark.mnist
@pytest.mark.parametrize("copies_of", ["members", "never-seen"])
def test_jittered_copies_are_caught_through_the_transformations_and_their_control_is_not(mnist, jitter_split, copies_of):
    """A quarter of the members shifted by 1-2 pixels with pixel noise (the release audit's failure
    case): the plain pixel distance misses them, the transformation-aware one catches about a
    quarter of the members at 1% FPR. The same jitter on never-seen test images stays at chance."""
    g = torch.Generator().manual_seed(5)
    source = mnist.members.x if copies_of == "members" else mnist.test.x
    picked = torch.randperm(len(source), generator=g)[: len(mnist.members) // 4 if copies_of == "members" else 10_000]
    synthetic = jittered(source[picked], seed=6)
    split = jitter_split
    targets, reference = split.targets(mnist.members.x, mnist.holdout.x), split.reference(mnist.holdout.x)
    scores = {
        "plain": membership.distance_scores(targets.flatten(1), synthetic.flatten(1)),
        "transformed": membership.distance_scores(targets, synthetic, TransformConfig()),
        "calibrated": membership.calibrated_distance_scores(targets, synthetic, reference, TransformConfig()),
    }
    results = {k: AttackResult.from_scores(k, s, split.labels, delta=1e-5, seed=0) for k, s in scores.items()}
    if copies_of == "members":
        assert results["plain"].tpr_at["1pct"] < 0.05
        for name in ("transformed", "calibrated"):
            assert results[name].tpr_at["1pct"] >= 0.15, (name, results[name].tpr_at)
            assert results[name].epsilon_lower_bound >= 1.0, name
    else:
        for name, result in results.items():
            assert abs(result.auc - 0.5) <= 0.05 and result.tpr_at["1pct"] <= 0.03, (name, result.auc, result.tpr_at)
