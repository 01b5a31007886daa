"""SSIM and PSNR of image pairs (piq) against scikit-image and the closed form, through the
reference harness; the SSIM window rule against scikit-image's window size."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dpaudit.image_similarity import pairwise_psnr, pairwise_ssim, ssim_window
from tests.reference import compare_to_reference


def skimage_ssim(a, b):
    """scikit-image's SSIM of each pair, with the gaussian window of `ssim_window` (sigma; skimage
    derives the window size from it) and population covariances, as in Wang et al. 2004."""
    _, sigma = ssim_window(a.shape[-2], a.shape[-1])
    return np.array([
        structural_similarity(x, y, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0,
                              channel_axis=0)
        for x, y in zip(a.double().numpy(), b.double().numpy())
    ])


def skimage_psnr(a, b):
    return np.array([
        peak_signal_noise_ratio(x.double().numpy(), y.double().numpy(), data_range=1.0) for x, y in zip(a, b)
    ])


def closed_form_psnr(a, b):
    """10 log10(1 / MSE) for images in [0, 1]."""
    return -10 * np.log10(((a.double() - b.double()) ** 2).flatten(1).mean(1).numpy())


def skimage_window_size(sigma):
    """The size of skimage's gaussian SSIM window for `sigma` (skimage/metrics/_structural_similarity.py:
    truncate = 3.5, r = int(truncate * sigma + 0.5), win_size = 2 r + 1)."""
    return 2 * int(3.5 * sigma + 0.5) + 1


def pairs(shape, n, seed):
    """Image pairs from unrelated to close (PSNR up to about 40 dB): smoothed noise, and partners
    mixed with it to varying degrees."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.avg_pool2d(torch.rand(n, *shape, generator=g), 3, 1, 1)
    b = torch.nn.functional.avg_pool2d(torch.rand(n, *shape, generator=g), 3, 1, 1)
    w = torch.linspace(0, 0.9, n)[:, None, None, None]
    return a, (w * a + (1 - w) * b).clamp(0, 1)


PAIRS = {f"{c}x{h}x{w}": pairs((c, h, w), 24, seed=3) for c, h, w in [(1, 28, 28), (3, 16, 20), (3, 32, 32), (1, 11, 13)]}


def test_ssim_equals_skimage():
    compare_to_reference(pairwise_ssim, skimage_ssim, PAIRS, atol=1e-3, rtol=0.0)


def test_ssim_in_batches_equals_one_batch():
    a, b = PAIRS["1x28x28"]
    compare_to_reference(lambda x, y: pairwise_ssim(x, y, batch_size=5), pairwise_ssim, {"1x28x28": (a, b)},
                         atol=1e-6, rtol=0.0, name="pairwise_ssim in batches of 5")


def test_psnr_equals_skimage_and_the_closed_form():
    compare_to_reference(pairwise_psnr, skimage_psnr, PAIRS, atol=1e-3, rtol=0.0)
    compare_to_reference(pairwise_psnr, closed_form_psnr, PAIRS, atol=1e-3, rtol=0.0)
    a, _ = PAIRS["1x28x28"]
    # piq adds 1e-8 to the squared error: identical images get 80 dB where skimage says infinity.
    assert torch.allclose(pairwise_psnr(a[:2], a[:2]), torch.full((2,), 80.0))


def test_ssim_window_fits_and_has_skimage_size():
    assert ssim_window(8, 8) == (7, pytest.approx(1.5 * 7 / 11))
    assert ssim_window(28, 28) == (11, 1.5)
    assert ssim_window(10, 30) == (9, pytest.approx(1.5 * 9 / 11))
    sizes = [(h, w) for h in range(1, 40) for w in (h, 2 * h + 1)]
    # The largest odd size up to 11 that fits, and the size skimage's window has for its sigma.
    kernel = lambda h, w: ssim_window(h, w)[0]  # noqa: E731
    compare_to_reference(kernel, lambda h, w: min(11, h if h % 2 else h - 1), sizes, atol=0, rtol=0, compare="indices",
                         name="ssim_window size vs the largest odd size that fits")
    compare_to_reference(kernel, lambda h, w: skimage_window_size(ssim_window(h, w)[1]), sizes, atol=0, rtol=0,
                         compare="indices", name="ssim_window size vs skimage's for its sigma")


def test_ssim_on_digits_uses_a_window_that_fits_and_equals_skimage(digits):
    a, b = digits.members.x[:60], digits.holdout.x[:60]
    compare_to_reference(pairwise_ssim, skimage_ssim, {"digits members vs holdout": (a, b)}, atol=1e-3, rtol=0.0)
