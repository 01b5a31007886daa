"""Known-answer inputs for the transformation-aware matching: images moved the way a generator
that memorises and jitters (or a vendor who cheats) would move them, by hand (torch indexing,
torchvision's rotation), independently of dpaudit/transforms.py."""

import torch
import torchvision.transforms.functional as TF


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x moved right by dx and down by dy pixels, the border pixels extended."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return x[..., rows, :][..., cols]


def jittered(x: torch.Tensor, seed: int, family: str = "shift", noise: float = 0.03) -> torch.Tensor:
    """Each image moved by one random transformation of `family` plus Gaussian pixel noise:
    "shift" (1 or 2 pixels in x and/or y, never none), "rotation" (6 to 10 degrees either way),
    "intensity" (a x + b, a in [0.85, 1.15], |b| <= 0.05) or "flip" (horizontal)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(x)
    for i in range(len(x)):
        if family == "shift":
            dx, dy = 0, 0
            while dx == 0 and dy == 0:
                dx, dy = (torch.randint(-2, 3, (2,), generator=g)).tolist()
            out[i] = shifted(x[i], dx, dy)
        elif family == "rotation":
            angle = float(torch.empty(1).uniform_(6, 10, generator=g)) * (1 if torch.rand(1, generator=g) < 0.5 else -1)
            out[i] = TF.rotate(x[i], angle, interpolation=TF.InterpolationMode.BILINEAR)
        elif family == "intensity":
            a, b = float(torch.empty(1).uniform_(0.85, 1.15, generator=g)), float(torch.empty(1).uniform_(-0.05, 0.05, generator=g))
            out[i] = a * x[i] + b
        elif family == "flip":
            out[i] = x[i].flip(-1)
        else:
            raise ValueError(family)
    return (out + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def blended(x: torch.Tensor, seed: int, noise: float = 0.02) -> torch.Tensor:
    """Each image averaged with a random other one of `x` (weights 0.5), plus Gaussian pixel noise."""
    g = torch.Generator().manual_seed(seed)
    partner = (torch.arange(len(x)) + torch.randint(1, len(x), (len(x),), generator=g)) % len(x)
    return ((x + x[partner]) / 2 + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def patched(x: torch.Tensor, seed: int, side: int, noise: float = 0.02) -> torch.Tensor:
    """Each image with one side x side square, at a random place, replaced by uniform noise,
    plus Gaussian pixel noise."""
    g = torch.Generator().manual_seed(seed)
    out = x.clone()
    h, w = x.shape[-2:]
    for i in range(len(x)):
        top, left = int(torch.randint(0, h - side + 1, (1,), generator=g)), int(torch.randint(0, w - side + 1, (1,), generator=g))
        out[i, :, top : top + side, left : left + side] = torch.rand(x.shape[1], side, side, generator=g)
    return (out + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
