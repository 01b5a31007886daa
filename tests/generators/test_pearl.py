"""DP-MERF / PEARL: the feature map, the one release and its accounting, learning. Registration,
the budget and resumption are in the contract suite (test_contract.py)."""

import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from sklearn.linear_model import LogisticRegression

from dpaudit.generators import DPMERF, PEARL
from dpaudit.generators.pearl import SENSITIVITY, FourierFeatures, calibrate, class_sums
from dpaudit.privacy import PrivacyBudget

# PEARL's are the same: both classes inherit them from EmbeddingGenerator.
TINY = DPMERF.test_overrides


def test_feature_norm_is_one_and_inner_products_approximate_the_kernel():
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(0))
    features = FourierFeatures(64, 60_000, (0.2, 0.5), seed=1)
    phi = features(x)
    torch.testing.assert_close(phi.norm(dim=1), torch.ones(6))
    # An equal mixture of Gaussian kernels exp(-|x - x'|^2 / (2 l^2)), l = s * sqrt(64).
    sq = torch.cdist(x.double(), x.double()) ** 2
    kernel = sum(torch.exp(-sq / (2 * (s * 8) ** 2)) for s in (0.2, 0.5)) / 2
    assert (phi.double() @ phi.double().T - kernel).abs().max() < 0.02


def test_class_sums_match_a_loop(digits):
    features = FourierFeatures(64, 50, (0.3,), seed=0)
    sums, counts = class_sums(features, digits.members, 10, batch_size=100)
    for c in (0, 7):
        rows = features(digits.members.x[digits.members.y == c]).double()
        torch.testing.assert_close(sums[c], rows.sum(0))
        assert counts[c] == len(rows)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 10.0])
def test_calibration_meets_the_budget_within_one_percent(epsilon, accountant):
    sigma_emb, sigma_count = calibrate(PrivacyBudget(epsilon, 1e-5), 5.0, accountant)
    assert sigma_count == pytest.approx(5 * sigma_emb)
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [(sigma_emb, 1.0, 1), (sigma_count, 1.0, 1)]
    spent = acc.get_epsilon(delta=1e-5)
    assert 0.99 * epsilon <= spent <= epsilon


@pytest.mark.parametrize("adjacency", ["add-remove", "replace-one"])
def test_reported_epsilon_is_opacus_on_the_reported_history_and_noise_has_the_stated_scale(digits, adjacency):
    gen = DPMERF.from_options({**TINY, "steps": "0", "adjacency": adjacency})
    gen.fit(digits.members, PrivacyBudget(1.0, 1e-5), seed=3)
    report = gen.privacy_report()
    acc = RDPAccountant()
    acc.history = [(report["sigma"], 1.0, 1), (report["sigma_count"], 1.0, 1)]
    assert report["epsilon"] == acc.get_epsilon(delta=1e-5)
    assert report["history"] == [[report["sigma"], 1.0, 1], [report["sigma_count"], 1.0, 1]]
    assert (report["sample_rate"], report["steps"]) == (1.0, 1)
    assert report["epsilon"] <= 1.0 and report["adjacency"] == adjacency
    # The released noisy sums are targets * noisy counts; their difference from the exact sums
    # is Gaussian with standard deviation sigma * sensitivity.
    sums, counts = class_sums(gen.features, digits.members, 10)
    noise = gen.targets.double() * gen.class_counts.double().unsqueeze(1) - sums
    expected = report["sigma"] * SENSITIVITY[adjacency][0]
    assert noise.mean().abs() < 0.05 * expected
    assert noise.std().item() == pytest.approx(expected, rel=0.05)
    assert (gen.class_counts.double() - counts).abs().max() < 6 * report["sigma_count"] * SENSITIVITY[adjacency][1]


def test_without_privacy_the_targets_are_the_exact_class_means(digits):
    gen = DPMERF.from_options({**TINY, "steps": "0"}).fit(digits.members, PrivacyBudget(math.inf, 1e-5))
    sums, counts = class_sums(gen.features, digits.members, 10)
    torch.testing.assert_close(gen.targets, (sums / counts.unsqueeze(1)).float())
    assert gen.privacy_report()["epsilon"] == math.inf


def test_dp_merf_learns_digits(digits):
    """Known answer: a logistic regression trained on its samples classifies real digits far
    above chance (0.1); a generator that learned nothing would not."""
    gen = DPMERF.from_options({"decoder": "mlp", "steps": "80", "features": "1000", "batch_size": "200", "width": "16"})
    gen.fit(digits.members, PrivacyBudget(10.0, 1e-5), seed=0)
    synthetic = gen.sample(1000, seed=1)
    clf = LogisticRegression(max_iter=500).fit(synthetic.x.flatten(1).numpy(), synthetic.y.numpy())
    assert clf.score(digits.test.x.flatten(1).numpy(), digits.test.y.numpy()) > 0.6
    # its samples are closer to the real class means than uniform noise images are
    real_means = torch.stack([digits.test.x[digits.test.y == c].mean(0) for c in range(10)])
    noise = torch.rand_like(synthetic.x)
    assert (synthetic.x - real_means[synthetic.y]).square().mean() < 0.5 * (noise - real_means[synthetic.y]).square().mean()


@pytest.mark.parametrize("cls", [DPMERF, PEARL])
def test_same_seed_same_samples(digits, cls):
    runs = [cls.from_options(TINY).fit(digits.members, PrivacyBudget(2.0, 1e-5), seed=5).sample(20, seed=2) for _ in range(2)]
    assert torch.equal(runs[0].x, runs[1].x)
    other = cls.from_options(TINY).fit(digits.members, PrivacyBudget(2.0, 1e-5), seed=6).sample(20, seed=2)
    assert not torch.equal(runs[0].x, other.x)


def test_pearl_critic_reweights_the_frequencies(digits):
    gen = PEARL.from_options({**TINY, "steps": "5"}).fit(digits.members, PrivacyBudget(10.0, 1e-5), seed=0)
    assert gen.log_precision.abs().max() > 0
    weights = gen._frequency_weights()
    assert weights.mean().item() == pytest.approx(1.0, rel=1e-5) and weights.min() >= 1 - gen.config.critic_mix


def test_unbiased_terms_are_the_u_statistic_of_the_squared_distance(digits):
    gen = DPMERF.from_options({**TINY, "steps": "0", "unbiased": "true"}).fit(digits.members, PrivacyBudget(10.0, 1e-5))
    images, labels = digits.holdout.x[:60], digits.holdout.y[:60]
    terms = gen._loss_terms(images, labels)
    phi, k = gen.features(images).double(), gen.features.frequencies.shape[1]
    for c in (0, 4):
        rows = phi[labels == c]
        m = len(rows)
        target = gen.targets[c].double()
        for j in (0, 17):
            pair = rows[:, [j, k + j]]  # the cos and sin features of frequency j
            gram = pair @ pair.T
            cross = (gram.sum() - gram.diag().sum()) / (m * (m - 1))
            t = target[[j, k + j]]
            expected = cross - 2 * pair.mean(0) @ t + t @ t
            assert terms[c, j].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-9)
