"""Fidelity metrics against independent references (through the reference harness): scipy's
sqrtm for FID, a brute-force unbiased MMD^2 for KID, a brute-force (scipy cdist) precision /
recall / density / coverage; and the check on digits."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from dpaudit.audit import fidelity
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import load_extractor
from dpaudit.audit.fidelity import FidelityConfig
from dpaudit.audit.profiles import QUICK
from dpaudit.images import ImageSet
from dpaudit.sampling import seeded_sample
from tests.reference import compare_to_reference


def scipy_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Frechet distance in float64 with scipy's matrix square root."""
    a, b = real.double().numpy(), fake.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def brute_mmd2(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, summed pair by pair (float64)."""
    x, y = real.double().numpy(), fake.double().numpy()
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def brute_prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict:
    """Naeem et al. 2020, written as in the authors' `prdc` package (full distance matrices, float64)."""
    real, fake = real.double().numpy(), fake.double().numpy()
    real_radius = np.sort(cdist(real, real), axis=1)[:, k]
    fake_radius = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)  # real x fake
    return {
        "precision": (d < real_radius[:, None]).any(axis=0).mean(),
        "recall": (d < fake_radius[None, :]).any(axis=1).mean(),
        "density": (d < real_radius[:, None]).sum(axis=0).mean() / k,
        "coverage": (d.min(axis=1) < real_radius).mean(),
    }


def random_features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=g) @ mix + shift


@pytest.fixture(scope="module")
def digit_features(digits):
    extractor = load_extractor(digits)
    return extractor(digits.members), extractor(digits.holdout)


def test_fid_equals_scipy_sqrtm_on_random_features():
    inputs = {"400 vs 300 x 16, shifted 0.3": (random_features(400, 16, 0), random_features(300, 16, 1, shift=0.3)),
              "50 vs 80 x 4, shifted 1": (random_features(50, 4, 6), random_features(80, 4, 7, shift=1.0))}
    results = compare_to_reference(fidelity.fid, scipy_fid, inputs, atol=0.0, rtol=1e-4)
    assert all(expected > 1 for _, expected in results)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU units: singular covariances
def test_fid_equals_scipy_sqrtm_on_lenet_digit_features(digit_features):
    compare_to_reference(fidelity.fid, scipy_fid, {"LeNet features, members vs holdout": digit_features},
                         atol=0.0, rtol=1e-4)


def test_fid_of_a_set_with_itself_is_zero(digit_features):
    members, holdout = digit_features
    assert fidelity.fid(members, members) < 1e-6 * fidelity.fid(members, holdout)


def test_kid_equals_brute_force_unbiased_mmd():
    inputs = {"40 vs 40 x 6, shifted 0.5": (random_features(40, 6, 2), random_features(40, 6, 3, shift=0.5)),
              "25 vs 25 x 10, unshifted": (random_features(25, 10, 8), random_features(25, 10, 9))}
    # Subsets as large as the sets hold every sample (in another order): each equals the full MMD^2.
    kid = lambda real, fake: fidelity.kid(real, fake, subsets=3, subset_size=100, seed=0)  # noqa: E731
    results = compare_to_reference(lambda real, fake: kid(real, fake)[0], brute_mmd2, inputs, atol=0.0, rtol=1e-9,
                                   name="KID mean")
    for (real, fake), (_, expected) in zip(inputs.values(), results):
        assert kid(real, fake)[1] < 1e-9 * abs(expected)


def test_kid_is_seeded():
    real, fake = random_features(200, 6, 4), random_features(150, 6, 5)
    assert fidelity.kid(real, fake, 10, 50, seed=1) == fidelity.kid(real, fake, 10, 50, seed=1)
    assert fidelity.kid(real, fake, 10, 50, seed=1) != fidelity.kid(real, fake, 10, 50, seed=2)


def test_prdc_equals_brute_force():
    inputs = {
        f"120 vs 90 x 5, shifted {0.4 * seed:g}, k=5":
            (random_features(120, 5, 10 + seed), random_features(90, 5, 20 + seed, shift=0.4 * seed), 5)
        for seed in (0, 1, 2)
    }
    for k in (1, 3):
        inputs[f"60 vs 70 x 3, k={k}"] = (random_features(60, 3, 50), random_features(70, 3, 51, shift=0.2), k)
    compare_to_reference(lambda real, fake, k: fidelity.prdc(real, fake, k=k), brute_prdc, inputs, atol=1e-12, rtol=0.0,
                         name="prdc")


def test_prdc_equals_the_authors_package():
    prdc_package = pytest.importorskip("prdc")  # the `peers` extra
    real, fake = random_features(300, 8, 30), random_features(250, 8, 31, shift=0.3)
    expected = prdc_package.compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=5)
    ours = fidelity.prdc(real, fake, k=5)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(float(value), abs=1e-12), key


def test_compare_computes_what_the_sizes_allow():
    config = FidelityConfig(kid_subsets=4, kid_subset_size=30, k=5)
    real, fake = random_features(60, 4, 60), random_features(40, 4, 61, shift=0.3)
    values, kid_std = fidelity.compare(real, fake, config, seed=3)
    rms = float(real.double().pow(2).mean().sqrt())  # KID's unit: the real features' RMS
    kid_mean, want_std = fidelity.kid(real.double() / rms, fake.double() / rms, 4, 30, seed=3)
    assert values["kid"] == pytest.approx(kid_mean, rel=1e-12) and kid_std == pytest.approx(want_std, rel=1e-12)
    assert values == {"fid": fidelity.fid(real, fake), "kid": values["kid"], **fidelity.prdc(real, fake, 5)}
    assert set(fidelity.compare(real, fake[:5], config, 0)[0]) == {"fid", "kid"}  # PRDC needs more than k
    assert fidelity.compare(real, fake[:1], config, 0) == ({}, None)


def test_prdc_blocked_pass_equals_one_block(monkeypatch):
    real, fake = random_features(70, 4, 30), random_features(50, 4, 31)
    whole = fidelity.prdc(real, fake)
    monkeypatch.setattr(fidelity, "BLOCK_ENTRIES", 3 * 70)  # three synthetic rows per block
    assert fidelity.prdc(real, fake) == whole


def test_prdc_of_a_set_with_itself():
    real = random_features(100, 5, 40)
    got = fidelity.prdc(real, real, k=5)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0


def context(reference, synthetic, profile="quick"):
    ctx = AuditContext(synthetic, reference, profile=profile, seed=0)
    ctx.extractor = load_extractor(reference)
    return ctx


def test_run_on_digits_holdout(digits):
    ctx = context(digits, digits.holdout)
    result = fidelity.run(ctx)
    assert set(result.metrics) == {"fid", "kid", "precision", "recall", "density", "coverage"}
    fid = result.metrics["fid"]
    assert fid.direction == "lower" and fid.n == {"synthetic": 360, "members": 1077, "holdout": 360}
    # The holdout is the baseline set: the synthetic side is the same 360 images.
    assert fid.value == pytest.approx(fid.baseline, rel=1e-12)
    kid = result.metrics["kid"]
    assert kid.ci[0] < kid.value < kid.ci[1]
    assert 0.9 < result.metrics["precision"].value <= 1
    per_class = result.details["per_class"]
    assert set(per_class) == set(fidelity.METRIC_INFO)
    assert all(len(v) == 10 and None not in v for v in per_class.values())
    assert sum(result.details["per_class_n"]["synthetic"]) == 360
    assert any("per-class FID" in w for w in ctx.warnings)  # ~36 images a class < 84 dims


def test_run_separates_noise_from_real_digits(digits):
    h = digits.holdout
    noise = ImageSet(torch.rand((len(h), *h.shape), generator=torch.Generator().manual_seed(0)), h.y, h.num_classes)
    real = fidelity.run(context(digits, digits.holdout)).metrics
    fake = fidelity.run(context(digits, noise)).metrics
    assert fake["fid"].value > 10 * real["fid"].value
    # Precision is fooled by outliers among the members (large k-NN balls); density and
    # coverage are not, which is Naeem et al.'s point (noise: 0.63 precision, 0.07 coverage).
    assert fake["precision"].value < real["precision"].value
    assert fake["density"].value < 0.5 < real["density"].value
    assert fake["coverage"].value < 0.2 < 0.5 < real["coverage"].value


def test_few_samples_warn_and_stay_finite(digits):
    ctx = context(digits, digits.holdout.subset(range(20)))
    result = fidelity.run(ctx)
    assert math.isfinite(result.metrics["fid"].value) and math.isfinite(result.metrics["kid"].value)
    assert any("fewer samples than feature dimensions" in w for w in ctx.warnings)
    per_class = result.details["per_class"]
    # classes with < 2 synthetic images get None, never NaN
    assert all(v is None or math.isfinite(v) for values in per_class.values() for v in values)


def test_too_few_samples_omit_metrics_with_a_warning(digits):
    ctx = context(digits, digits.holdout.subset(range(3)))
    result = fidelity.run(ctx)
    assert "fid" in result.metrics and "precision" not in result.metrics
    assert any("precision, recall, density, coverage omitted" in w for w in ctx.warnings)


def test_unlabelled_synthetic_has_no_per_class(digits):
    unlabelled = digits.holdout.subset(range(100))
    unlabelled.y = None
    result = fidelity.run(context(digits, unlabelled))
    assert "per_class" not in result.details and "fid" in result.metrics


def test_profile_limits_the_sample_sizes(digits):
    profile = dataclasses.replace(QUICK, fidelity=dataclasses.replace(QUICK.fidelity, max_samples=100))
    result = fidelity.run(context(digits, digits.holdout, profile))
    assert result.metrics["fid"].n == {"synthetic": 100, "members": 100, "holdout": 100}
    assert result.details["n_baseline"] == 100


def test_kid_does_not_depend_on_the_features_units():
    real, fake = random_features(200, 6, 70), random_features(150, 6, 71, shift=0.4)
    config = FidelityConfig(kid_subsets=5, kid_subset_size=100)
    base = fidelity.compare(real, fake, config, seed=0)[0]["kid"]
    assert fidelity.compare(1000 * real, 1000 * fake, config, seed=0)[0]["kid"] == pytest.approx(base, rel=1e-6)


def test_the_baseline_is_measured_at_the_synthetic_sets_size(digits):
    """1,077 synthetic images against a 360-image holdout: the synthetic value is the mean over
    three chunks of 360 (starting at 0, 358, 717 of a seeded shuffle) that hold every image, so
    that value and baseline share a sample size. Each chunk's FID is computed independently here."""
    ctx = context(digits, digits.members)
    result = fidelity.run(ctx)
    assert result.details["chunks"] == 3 and result.details["matched_size"] == 360
    features = ctx.features("synthetic")[seeded_sample(len(digits.members), QUICK.fidelity.max_samples, [0, 1])]
    features = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(0))]
    members = ctx.features("members")[seeded_sample(len(digits.members), QUICK.fidelity.max_samples, [0, 2])]
    want = np.mean([fidelity.fid(members, features[start : start + 360]) for start in (0, 358, 717)])
    assert result.metrics["fid"].value == pytest.approx(want, rel=1e-9)
    # a set written class by class (as generators write theirs) is chunked across classes, not by class
    by_class = digits.members.subset(torch.argsort(digits.members.y, stable=True).tolist())
    sorted_fid = fidelity.run(context(digits, by_class)).metrics["fid"].value
    assert sorted_fid < 2 * result.metrics["fid"].value
    # members are not their own baseline: at the holdout's size their FID is far below the full set's
    assert result.metrics["fid"].value > 10 * fidelity.fid(members, features)
    coverage = result.metrics["coverage"]
    assert coverage.ci[0] <= coverage.value <= coverage.ci[1]
