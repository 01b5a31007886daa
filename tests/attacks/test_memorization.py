"""Model memorization: correlated-value encoding and capacity abuse hide and give back images."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from dpaudit.attacks.memorization import (
    MemorizationConfig,
    capacity,
    carrier,
    decode_correlation,
    malicious_train,
    pearson,
)
from dpaudit.nets import accuracy, make_classifier


def _psnr_numpy(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1).numpy()
    return 10 * np.log10(1.0 / mse)


def test_pearson_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(500, generator=generator), torch.rand(500, generator=generator)
    b = a + 0.5 * b
    assert float(pearson(a, b)) == pytest.approx(pearsonr(a.numpy(), b.numpy()).statistic, abs=1e-5)


def test_capacity_is_carrier_size_over_pixels():
    model = make_classifier((1, 8, 8), 10)
    # digits: the largest weight is the third convolution, 128 x 64 x 3 x 3.
    assert carrier(model).numel() == 128 * 64 * 9
    assert capacity(model, "correlation", (1, 8, 8), 1000) == 128 * 64 * 9 // 64
    assert capacity(model, "capacity", (1, 8, 8), 1000) == 1000 // 64


def test_decoding_undoes_any_negative_affine_encoding(digits):
    """The decoder is invariant to the scale and sign of the carrier: a carrier set to
    -3 * secrets + 2 decodes to images perfectly correlated with the secrets."""
    secrets = digits.members.x[:6]
    model = make_classifier(secrets.shape[1:], 10)
    theta = carrier(model)
    with torch.no_grad():
        theta.flatten()[: secrets.numel()] = -3 * secrets.flatten() + 2
    x = digits.members.x
    stats = (float(x.mean()), float(x.std()), float(((x - x.mean()) ** 3).mean() / x.std() ** 3))
    decoded = decode_correlation(model, 6, tuple(secrets.shape[1:]), stats)
    for d, s in zip(decoded, secrets):
        assert pearsonr(d.flatten().numpy(), s.flatten().numpy()).statistic > 0.97


def test_correlated_value_encoding_hides_training_images(digits):
    members = digits.members
    config = MemorizationConfig(method="correlation", n_secrets=8, epochs=10)
    result = malicious_train(members.x[:400], members.y[:400], 10, config, seed=0)
    secrets = members.x[:400][result.secret_idx]
    assert len(result.secret_idx) == 8
    assert result.pixel_correlation > 0.95
    np.testing.assert_allclose(result.psnr.numpy(), _psnr_numpy(result.decoded, secrets), atol=1e-3)
    # 8x8 digits decoded at > 22 dB are visually exact copies; noise decodes at about 5 dB.
    assert float(result.psnr.mean()) > 22.0
    # The malicious model still does its job (chance is 10%).
    assert accuracy(result.model, digits.test.x, digits.test.y) > 0.6


def test_capacity_abuse_hides_training_images(digits):
    members = digits.members
    config = MemorizationConfig(method="capacity", n_secrets=2, epochs=60)
    result = malicious_train(members.x[:200], members.y[:200], 10, config, seed=0)
    assert len(result.secret_idx) == 2
    # Pixels come back quantised to 10 levels: at most about 31 dB even when every label is learned.
    assert result.pixel_correlation > 0.8
    assert float(result.psnr.mean()) > 15.0


def test_same_seed_same_decoding(digits):
    members = digits.members
    config = MemorizationConfig(n_secrets=4, epochs=2)
    first = malicious_train(members.x[:200], members.y[:200], 10, config, seed=1)
    second = malicious_train(members.x[:200], members.y[:200], 10, config, seed=1)
    other = malicious_train(members.x[:200], members.y[:200], 10, config, seed=2)
    assert torch.equal(first.decoded, second.decoded) and torch.equal(first.secret_idx, second.secret_idx)
    assert not torch.equal(first.decoded, other.decoded)
