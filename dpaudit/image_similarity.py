"""SSIM and PSNR of image pairs (piq): how the audit and the attacks say how alike two images are."""

from __future__ import annotations

import piq
import torch

SSIM_SIGMA = 1.5
SSIM_MAX_KERNEL = 11


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(kernel size, sigma) of the SSIM window: the standard 11 pixels with sigma 1.5 (Wang et al.
    2004), shrunk for small images to the largest odd size that fits, sigma scaled with it (8x8
    digits: 7 pixels, sigma 0.95). skimage's gaussian window with that sigma has the same size."""
    side = min(SSIM_MAX_KERNEL, height, width)
    side = side if side % 2 == 1 else side - 1
    return side, SSIM_SIGMA * side / SSIM_MAX_KERNEL


def pairwise_ssim(a: torch.Tensor, b: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SSIM of each pair (a[i], b[i]) of N x C x H x W images in [0, 1] (piq; gaussian window of
    `ssim_window`, no down-sampling, so it equals skimage's structural_similarity)."""
    kernel, sigma = ssim_window(a.shape[-2], a.shape[-1])
    return torch.cat(
        [
            piq.ssim(
                a[i : i + batch_size].clamp(0, 1),
                b[i : i + batch_size].clamp(0, 1),
                kernel_size=kernel,
                kernel_sigma=sigma,
                data_range=1.0,
                reduction="none",
                downsample=False,
            )
            for i in range(0, len(a), batch_size)
        ]
    )


def pairwise_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each pair (a[i], b[i]) of images in [0, 1] (piq; identical pairs give 80 dB)."""
    return piq.psnr(a.clamp(0, 1), b.clamp(0, 1), data_range=1.0, reduction="none")
