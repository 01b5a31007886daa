"""A CIFAR-shaped (3 x 32 x 32) labelled reference made in the tests: the colour path without
downloading CIFAR-10. Class c is a square of side 10-14 in hue c/10 at a random place, on a
background of random colour with a gradient, plus pixel noise (sd 0.04): no two images alike."""

from __future__ import annotations

import colorsys

import torch

from dpaudit.datasets import Reference
from dpaudit.images import ImageSet

SHAPE = (3, 32, 32)
CLASSES = 10


def colour_images(n: int, seed: int, name: str) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    rows = torch.linspace(0, 1, 32)
    x = torch.empty(n, *SHAPE)
    for i in range(n):
        background = torch.rand(3, 1, 1, generator=g) * 0.6
        slope = (torch.rand(3, 1, 1, generator=g) - 0.5) * 0.4
        image = background + slope * rows[None, :, None]
        hue = colorsys.hsv_to_rgb(float(y[i]) / CLASSES, 0.9, 0.95)
        side = int(torch.randint(10, 15, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(0, 32 - side, (2,), generator=g))
        image[:, top : top + side, left : left + side] = torch.tensor(hue)[:, None, None]
        x[i] = (image + 0.04 * torch.randn(SHAPE, generator=g)).clamp(0, 1)
    return ImageSet(x, y, num_classes=CLASSES, name=name, source="tests/colour_reference.py")


def colour_reference(members: int = 600, holdout: int = 200, test: int = 200) -> Reference:
    """Members, holdout and test of the colour reference (seeds 0, 1, 2)."""
    return Reference(colour_images(members, 0, "colour-members"), colour_images(holdout, 1, "colour-holdout"),
                     colour_images(test, 2, "colour-test"), split_id="colour-test-reference")
