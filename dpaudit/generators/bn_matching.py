"""DP class-wise feature-statistics matching (after Soufleri, Saha, Roy 2022 and DP-ImgSyn, made DP).

A classifier with batch norm cannot be trained by DP-SGD (batch norm mixes the samples of a
batch, so a record's gradient is not its own). The classifier here uses GroupNorm instead,
and the batch-norm-style statistics DeepInversion matches are released separately:

1. DP-SGD (opacus) trains the classifier `StatsClassifier` on the members (image, label):
   Poisson rate q, T steps, clip C, noise multiplier sigma_clf. It is the tanh CNN of
   Papernot et al. (2021, "Tempered sigmoid activations") with GroupNorm after each conv;
   bounded activations and a large expected batch (2,048) suit DP-SGD: on MNIST it reaches
   98.0% test accuracy at epsilon 10 and 96.8% at epsilon 1.
2. For every member, the per-sample statistics vector v(x) concatenates, for each conv layer
   l, the per-channel spatial mean and mean of squares of the layer's group-standardised
   activations (GroupNorm without its affine part, which the classifier then scales and
   shifts). v(x) is clipped to L2 norm `stats_clip`. The per-class sums
   S_c = sum_{i: y_i = c} v(x_i) are released with N(0, (sigma_stats * stats_clip)^2) on each
   entry; adding or removing one record changes one row by at most `stats_clip` (L2).
3. The class counts n_c are released with N(0, sigma_count^2) (sensitivity 1).

From the noisy sums and counts come the class-wise means mu_{c,l} and variances
var_{c,l} = E[a^2] - mu^2 of every layer's activations (batch-norm statistics, per class).

Accounting: one opacus history [(sigma_clf, q, T), (sigma_stats, 1, 1), (sigma_count, 1, 1)]
for the steps really taken; the noises are c * (1, stats_noise_weight, count_noise_weight)
with c calibrated so that the composition meets the budget (add/remove adjacency of one
record: image and label). The guarantee covers the classifier, every released statistic and
the counts; nothing else reads the members.

Synthesis (post-processing, done in `generate`, free of privacy cost): images are optimised
with Adam (betas (0.5, 0.99)) under random jitter (and optional flips) to minimise the
DeepInversion loss, per class c and batch B of images:

    CE(f(x), c) + bn_weight * sum_l (||mu_l(B) - mu_{c,l}|| + ||var_l(B) - var_{c,l}||)
                + tv_weight * TV(x) + l2_weight * mean(x^2),

with pixels clamped to [0, 1] after every step. The starting images (`init`) are either
uniform noise (the default, for any data) or, for datasets of handwritten digits such as
MNIST, `init=public-digits`: a PUBLIC-DATA PRIOR, scikit-learn's 8x8 handwritten digits (the
UCI set, 1,797 images; public, not MNIST, read by no private step), drawn from the class c,
upsampled into MNIST's framing, randomly warped (`init_warp`) and noised (`init_noise`), as
in DP-ImgSyn's public-image initialisation. The prior costs no privacy but is data the
method relies on: on MNIST at epsilon 10 (2,000 images, 50 steps, a 10-epoch TSTR CNN),
noise starts gave 47% TSTR and warped public starts 84%; the public starts alone, never
optimised, give 46% (58% relabelled by the DP classifier). It only fits datasets of digits
(classes 0-9), hence not the default. The prior must be independent of the private
data: training refuses it when the members are scikit-learn's digits themselves. With
`oversample` r > 1, r times as many candidates are optimised per class and the DP classifier
keeps those it gives the highest probability of their class (also post-processing; on MNIST at
epsilon 10, r = 1.5 raised TSTR from 93.0% to 93.8% with 10,000 images). `sample` returns hard
labels (the class each image was optimised for); `soft_labels(images)` gives the DP
classifier's probabilities for distillation-style use, also post-processing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler
from sklearn.datasets import load_digits
from torch import nn
from tqdm.auto import tqdm

from dpaudit.errors import DpauditError
from dpaudit.generators.base import Generator, Positive, PrivacyReport, register
from dpaudit.generators.dp_training import DPSGD, calibrate_noise, sample_rate_for, steps_for
from dpaudit.images import ImageSet
from dpaudit.privacy import PrivacyBudget


@dataclass
class BNMatchingConfig:
    """Hyper-parameters: the DP classifier (clf_*), the statistics release, the synthesis."""

    clf_batch_size: Positive[int] = 2048  # expected Poisson batch
    clf_epochs: Positive[float] = 20.0
    clf_lr: Positive[float] = 3e-3
    clf_max_grad_norm: Positive[float] = 1.0
    channels: tuple[int, ...] = (16, 32)  # of the classifier's conv layers
    groups: Positive[int] = 4  # GroupNorm groups per layer
    hidden: Positive[int] = 32  # width of the classifier's hidden FC layer
    activation: Literal["tanh", "relu"] = "tanh"  # tanh: bounded activations suit DP-SGD (Papernot et al.)
    stats_clip: Positive[float] = 16.0  # L2 clip of a record's statistics vector
    stats_noise_weight: Positive[float] = 4.0  # sigma_stats / sigma_clf
    count_noise_weight: Positive[float] = 4.0  # sigma_count / sigma_clf
    init: Literal["noise", "public-digits"] = "noise"  # starting images; public-digits for digit datasets
    init_noise: float = 0.1  # std of the Gaussian noise added to public starting images
    init_warp: float = 0.5  # random affine warp of public starting images (rotation in rad, scale, shift)
    synthesis_steps: Positive[int] = 50
    synthesis_batch: Positive[int] = 100  # images optimised together (one class)
    synthesis_lr: Positive[float] = 0.05
    oversample: float = 1.0  # candidates optimised per image kept (the DP classifier keeps the most confident)
    bn_weight: float = 1.0
    tv_weight: float = 1.0
    l2_weight: float = 1e-4
    jitter: int = 2  # pixels of random shift per step
    flip: bool = False  # random horizontal flips (off: digits are not mirror-symmetric)
    accountant: Literal["rdp", "prv"] = "rdp"
    # how DP-SGD clips (dpaudit/generators/dp_training.py): the same result, the faster for this model
    clipping: Literal["per-sample", "ghost"] = "ghost"


class ChannelAffine(nn.Module):
    """GroupNorm's affine part as its own module, so the standardised activations before it
    can be read (its per-sample gradients are registered with opacus below)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@register_grad_sampler(ChannelAffine)
def channel_affine_grad_sample(layer: ChannelAffine, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    """Per-sample gradients of a per-channel scale and shift, summed over the spatial positions
    (closed form: opacus' functorch fallback is exact but slow)."""
    a = activations[0].to(backprops.dtype)
    return {layer.weight: (backprops * a).sum((2, 3)), layer.bias: backprops.sum((2, 3))}


class StatsClassifier(nn.Module):
    """The DP-SGD CNN of Papernot et al. (2021) with GroupNorm after each conv: an 8x8 conv of
    stride 2, then 4x4 convs of stride 2 (`channels`), each followed by GroupNorm, the
    activation and a 2x2 max-pool of stride 1; then FC `hidden`, the activation, FC.
    `forward_with_stats` also returns every layer's group-standardised activations (the
    inputs to the affine part of each GroupNorm)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, channels: tuple[int, ...], groups: int,
                 hidden: int = 32, activation: str = "tanh"):
        super().__init__()
        pairs = list(zip((shape[0], *channels[:-1]), channels))
        self.convs = nn.ModuleList(
            [nn.Conv2d(a, b, 8, stride=2, padding=3) if i == 0 else nn.Conv2d(a, b, 4, stride=2, padding=1)
             for i, (a, b) in enumerate(pairs)]
        )
        self.norms = nn.ModuleList([nn.GroupNorm(groups, c, affine=False) for c in channels])
        self.affines = nn.ModuleList([ChannelAffine(c) for c in channels])
        self.act = torch.tanh if activation == "tanh" else F.relu
        with torch.no_grad():
            flat = self._features(torch.zeros(1, *shape))[0].shape[1]
        self.hidden = nn.Linear(flat, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        standardised = []
        h = x
        for conv, norm, affine in zip(self.convs, self.norms, self.affines):
            a = norm(conv(h))
            standardised.append(a)
            h = self.act(affine(a))
            if h.shape[-1] >= 2:
                h = F.max_pool2d(h, 2, stride=1)
        return h.flatten(1), standardised

    def forward_with_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, standardised = self._features(x)
        return self.fc(self.act(self.hidden(h))), standardised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_stats(x)[0]


def per_sample_stats(layers: list[torch.Tensor]) -> torch.Tensor:
    """v(x) per sample: for each layer, per-channel spatial means then means of squares."""
    return torch.cat([torch.cat([a.mean((2, 3)), (a**2).mean((2, 3))], 1) for a in layers], 1)


def clip_rows(v: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each row scaled down to L2 norm at most max_norm."""
    return v * (max_norm / v.norm(dim=1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)


@functools.lru_cache(maxsize=1)
def _public_digits() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()  # embedded in scikit-learn: no download
    return torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1), torch.tensor(digits.target)


def public_digits(label: int, count: int, shape: tuple[int, int, int], rng: torch.Generator) -> torch.Tensor:
    """`count` public scikit-learn digits (UCI, 8x8, not MNIST) of class `label`, drawn with
    replacement and resized into `shape` with MNIST's framing: the digit fills the central
    20/28 of the image."""
    images, targets = _public_digits()
    pool = images[targets == label]
    if len(pool) == 0:
        raise DpauditError(f"--set init=public-digits: the public digits have no class {label}; use init=noise.")
    picked = pool[torch.randint(len(pool), (count,), generator=rng)]
    c, h, w = shape
    inner_h, inner_w = max(1, round(h * 20 / 28)), max(1, round(w * 20 / 28))
    resized = F.interpolate(picked, size=(inner_h, inner_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (h - inner_h) // 2, (w - inner_w) // 2
    framed = F.pad(resized, (left, w - inner_w - left, top, h - inner_h - top))
    return framed.expand(count, c, h, w).clamp(0, 1)


def holds_public_digits(members: ImageSet) -> bool:
    """Whether any member is one of the public digits themselves (8x8, pixel values k/16): then
    the prior is not independent of the private data and must not be used."""
    if members.shape != (1, 8, 8):
        return False
    images, _ = _public_digits()
    public = {row.tobytes() for row in (images * 16).round().to(torch.uint8).flatten(1).numpy()}
    return any(row.tobytes() in public for row in (members.x * 16).round().to(torch.uint8).flatten(1).numpy())


def random_warp(x: torch.Tensor, strength: float, rng: torch.Generator) -> torch.Tensor:
    """Each image rotated by up to `strength` radians, scaled by 1 +- strength and shifted by
    up to strength/2 of its size, uniformly at random (diversity of public starting images)."""
    if strength <= 0:
        return x
    angle, scale, dx, dy = ((2 * torch.rand(4, len(x), generator=rng) - 1) * strength).unbind()
    scale, dx, dy = 1 + scale, dx / 2, dy / 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic TV), per batch."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@register
class BNMatching(Generator):
    """DP classifier (GroupNorm, DP-SGD) + Gaussian release of class-wise BN-style statistics,
    then DeepInversion-style synthesis of images matching them."""

    name = "bn-matching"
    data_parallel = True
    Config = BNMatchingConfig
    test_overrides = {"clf_batch_size": "64", "clf_epochs": "0.3", "channels": "4,8", "groups": "2",
                      "synthesis_steps": "5", "synthesis_batch": "10"}

    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        cfg, n = self.config, len(members)
        if not cfg.oversample >= 1:
            raise DpauditError(f"--set oversample: at least 1 (candidates per image kept), got {cfg.oversample}.")
        if not cfg.channels or any(c <= 0 or c % cfg.groups for c in cfg.channels):
            raise DpauditError(f"--set channels: positive multiples of groups ({cfg.groups}) expected, got {cfg.channels}.")
        if cfg.init == "public-digits" and holds_public_digits(members):
            raise DpauditError(
                f"--set init=public-digits: {members.source or members.name} holds scikit-learn's digits, the public "
                "prior itself, so starting from it would leak the private images; use --set init=noise."
            )
        q = sample_rate_for(cfg.clf_batch_size, n)
        steps = steps_for(cfg.clf_epochs, q)
        sigma_clf, sigma_stats, sigma_count = calibrate_noise(
            budget, [(q, steps, 1.0), (1.0, 1, cfg.stats_noise_weight), (1.0, 1, cfg.count_noise_weight)], cfg.accountant
        )
        torch.manual_seed(seed)
        self.classifier = self._new_classifier()
        dp = DPSGD(self.classifier, torch.optim.Adam(self.classifier.parameters(), lr=cfg.clf_lr), n=n,
                   sample_rate=q, noise_multiplier=sigma_clf, max_grad_norm=cfg.clf_max_grad_norm, seed=seed + 10,
                   clipping=cfg.clipping)
        saved = self.checkpoint.load()
        if saved is not None:
            dp.load_state_dict(saved["classifier"])
        x, y = members.x.to(self.device), members.y.to(self.device)

        def loss(module, idx, rng):
            return F.cross_entropy(module(x[idx]), y[idx], reduction="none")

        dp.train(loss, steps, desc=f"{self.name}: classifier", progress=self.progress,
                 after_step=lambda: self.checkpoint.maybe_save(dp.step, lambda: {"classifier": dp.state_dict()}))
        self.classifier.eval()
        self._release_stats(members, sigma_stats, sigma_count, seed)
        history = [dp.history_entry(), (sigma_stats, 1.0, 1), (sigma_count, 1.0, 1)]
        return PrivacyReport.of_history(
            history, budget, cfg.accountant,
            mechanism=(
                f"{self.name}: DP-SGD (opacus, clip {cfg.clf_max_grad_norm:g}) on a GroupNorm classifier; one Gaussian "
                f"release of per-class sums of per-record feature statistics (L2 sensitivity {cfg.stats_clip:g} after "
                "clipping) and one of class counts (sensitivity 1); composed in one accountant history; image "
                "synthesis is post-processing"
            ),
            extra={"sigma_stats": sigma_stats, "sigma_count": sigma_count, "stats_clip": cfg.stats_clip, "members": n},
        )

    def _new_classifier(self) -> StatsClassifier:
        cfg = self.config
        try:
            return StatsClassifier(self.shape, self.num_classes, cfg.channels, cfg.groups, cfg.hidden,
                                   cfg.activation).to(self.device)
        except RuntimeError:  # a stride-2 conv met a feature map already shrunk to nothing
            raise DpauditError(f"--set channels: {len(cfg.channels)} conv layers are too many for {self.shape[1]}x{self.shape[2]} images.") from None

    def released_state(self) -> dict:
        return {"classifier": self.classifier.state_dict(), "class_stats": self.class_stats}

    def load_released_state(self, state: dict) -> None:
        self.classifier = self._new_classifier().eval()
        self.classifier.load_state_dict(state["classifier"])
        self.class_stats = state["class_stats"]

    @torch.no_grad()
    def _release_stats(self, members: ImageSet, sigma_stats: float, sigma_count: float, seed: int) -> None:
        """The one Gaussian release of class-wise statistics sums and class counts."""
        cfg = self.config
        sums = None
        for i in range(0, len(members), 1000):
            _, layers = self.classifier.forward_with_stats(members.take(slice(i, i + 1000)).to(self.device))
            v = clip_rows(per_sample_stats(layers), cfg.stats_clip).double().cpu()  # the release is summed on the CPU
            sums = torch.zeros(self.num_classes, v.shape[1], dtype=torch.float64) if sums is None else sums
            sums.index_add_(0, members.y[i : i + 1000], v)
        counts = torch.bincount(members.y, minlength=self.num_classes).double()
        noise = torch.Generator().manual_seed(seed + 1)
        sums += sigma_stats * cfg.stats_clip * torch.randn(sums.shape, generator=noise, dtype=torch.float64)
        counts += sigma_count * torch.randn(counts.shape, generator=noise, dtype=torch.float64)
        self.class_counts = counts.clamp(min=0).float()
        self.class_stats = (sums / counts.clamp(min=1).unsqueeze(1)).float()

    def _targets(self, label: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(mean, variance) per layer for one class, from the released statistics."""
        out, start = [], 0
        for conv in self.classifier.convs:
            c = conv.out_channels
            mean = self.class_stats[label, start : start + c]
            square = self.class_stats[label, start + c : start + 2 * c]
            out.append((mean.to(self.device), (square - mean**2).clamp(min=1e-4).to(self.device)))
            start += 2 * c
        return out

    def _synthesise(self, label: int, count: int, rng: torch.Generator) -> torch.Tensor:
        cfg = self.config
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        targets = self._targets(label)
        if cfg.init == "public-digits":
            start = random_warp(public_digits(label, count, self.shape, rng), cfg.init_warp, rng)
            x = (start + cfg.init_noise * torch.randn(start.shape, generator=rng)).clamp(0, 1)
        else:
            x = torch.rand(count, *self.shape, generator=rng)
        x = x.to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.synthesis_lr, betas=(0.5, 0.99))
        y = torch.full((count,), label, device=self.device)
        for _ in range(cfg.synthesis_steps):
            dx, dy = torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=rng).tolist()
            view = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            if cfg.flip and torch.rand(1, generator=rng).item() < 0.5:
                view = view.flip(3)
            logits, layers = self.classifier.forward_with_stats(view)
            bn = sum(
                (a.mean((0, 2, 3)) - mean).norm() + (a.var((0, 2, 3), unbiased=False) - var).norm()
                for a, (mean, var) in zip(layers, targets)
            )
            loss = F.cross_entropy(logits, y) + cfg.bn_weight * bn + cfg.tv_weight * total_variation(x) + cfg.l2_weight * (x**2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        return x.detach().cpu()

    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """Images optimised class by class in batches of `synthesis_batch` (slow: every image
        takes `synthesis_steps` forward/backward passes of the classifier); with `oversample`
        r, r times as many per class, of which the most confident are kept."""
        cfg = self.config
        rng = torch.Generator().manual_seed(seed)
        classes = labels.unique().tolist()
        wanted = {c: int((labels == c).sum()) for c in classes}
        jobs = []  # (class, images in this batch)
        for c in classes:
            total = math.ceil(wanted[c] * cfg.oversample)
            jobs += [(c, min(cfg.synthesis_batch, total - i)) for i in range(0, total, cfg.synthesis_batch)]
        candidates: dict[int, list[torch.Tensor]] = {c: [] for c in classes}
        for c, size in tqdm(jobs, desc=f"{self.name}: synthesis", disable=not self.progress, leave=False):
            candidates[c].append(self._synthesise(c, size, rng))
        out = torch.empty(len(labels), *self.shape)
        for c in classes:
            x = torch.cat(candidates[c])
            if len(x) > wanted[c]:
                x = x[self.soft_labels(x)[:, c].argsort(descending=True)[: wanted[c]]]
            out[labels == c] = x
        return out

    @torch.no_grad()
    def soft_labels(self, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The DP classifier's class probabilities for images (N x classes): soft labels."""
        x = images.pixels if isinstance(images, ImageSet) else images
        return torch.cat([
            torch.softmax(self.classifier(x[i : i + 1000].to(self.device)), 1).cpu() for i in range(0, len(x), 1000)
        ])
