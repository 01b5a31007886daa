"""The few small networks everything shares, and the one loop that trains a classifier.

- `DPDMClassifier`: the fixed CNN of the DPDM protocol (conv 32-64-128, FC 128, dropout 0.5),
  used for train-on-synthetic / test-on-real accuracy and as the attacks' downstream model.
- `LeNet`: a LeNet-5-style network whose penultimate layer is the offline feature space
  for FID / KID / precision-recall (as in PEARL's own evaluation on MNIST).

Neither uses batch norm, so both train under opacus' DP-SGD unchanged.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpaudit.errors import DpauditError
from dpaudit.pixels import Pixels


class DPDMClassifier(nn.Module):
    """conv 32-64-128 (3x3, ReLU, 2x2 max-pool), FC 128, dropout 0.5 (Dockhorn et al. 2022)."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        layers, size = [], image_size
        for c_in, c_out in ((in_channels, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * size * size, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class LeNet(nn.Module):
    """LeNet-5 style: conv 6 and 16 (5x5), FC 120-84, on images resized to 32x32.
    `features(x)` gives the 84-dimensional penultimate activations."""

    feature_dim = 84

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, self.feature_dim), nn.ReLU(),
        )
        self.out = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def make_classifier(shape: tuple[int, int, int], num_classes: int) -> DPDMClassifier:
    """The DPDM-protocol CNN for images of `shape` (C, H, W)."""
    return DPDMClassifier(shape[0], shape[1], num_classes)


def resolve_device(device: str = "cpu") -> torch.device:
    """`cpu`, `cuda` (or `cuda:N`), or `auto` (CUDA when present). Asking for CUDA where there is
    none is an error, never a silent run on the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DpauditError(f"--device {device}: torch finds no CUDA device here; use --device cpu (or auto).")
    return resolved


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator seeded with `seed` that draws on `device` where the device has generators of
    its own (CUDA: noise is drawn where it is added), else on the CPU."""
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def to_device(x: torch.Tensor, device: torch.device, memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """x copied to `device`; to a GPU through a page-locked copy of the batch, without blocking the
    host (the copy overlaps the work already queued). Only the batch is pinned, never a whole set:
    page-locked memory is taken from the machine for as long as it is held."""
    if device.type != "cuda":
        return x.to(device, memory_format=memory_format)
    if not x.is_pinned():
        x = x.pin_memory()
    return x.to(device, non_blocking=True, memory_format=memory_format)


@dataclass
class TrainLog:
    """What `train_classifier` did: validation accuracy per epoch and the epoch kept."""

    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode."""
    return float((predict_logits(model, x, batch_size).argmax(1) == y).float().mean())


@contextlib.contextmanager
def image_layout(model: nn.Module, images: bool) -> Iterator[torch.memory_format]:
    """Run `model` in channels_last inside the block when its inputs are `images` (N, C, H, W;
    False for flat inputs: nothing changes). oneDNN's convolutions and max-pooling are 1.5-4x
    faster in that layout on CPU (a scratch timing on the DPDM CNN). Yields the layout to give the inputs; the weights return to the default layout after
    the block, which the rest of the code (state dicts, flattened gradients) expects. A nested
    block (validation inside training) keeps the outer block's layout."""
    outer = getattr(model, "_dpaudit_layout", None)
    if outer is not None:
        yield outer
        return
    layout = torch.channels_last if images else torch.contiguous_format
    model.to(memory_format=layout)
    model._dpaudit_layout = layout
    try:
        yield layout
    finally:
        del model._dpaudit_layout
        model.to(memory_format=torch.contiguous_format)


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA device with bf16, or a CPU whose
    oneDNN has bf16 instructions (AVX512-BF16, AMX); elsewhere bf16 is emulated and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """`float32`, `bfloat16`, or `auto`: bfloat16 where the device computes it natively."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return precision


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor | Pixels, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on x (a tensor, or Pixels read batch by batch), in eval mode, batched,
    on the model's device; returned on the CPU."""
    model.eval()
    device = device_of(model)
    with image_layout(model, x.dim() == 4) as layout:
        return torch.cat([
            model(to_device(x[i : i + batch_size], device, layout)).cpu() for i in range(0, len(x), batch_size)
        ])


def train_classifier(
    model: nn.Module,
    x: torch.Tensor | Pixels,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 3e-4,
    batch_size: int = 128,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    progress: str | None = None,
    precision: str = "float32",
    on_epoch: Callable[[nn.Module, int], None] | None = None,
) -> TrainLog:
    """Train with Adam and cross-entropy on x (a tensor, or Pixels read batch by batch). With `val`, keep the weights of the epoch with the best
    validation accuracy (the model is modified in place). Deterministic for a seed on one machine.
    `on_epoch(model, epoch)` is called after each epoch (a benchmark's per-epoch measurement).
    `precision` (`resolve_precision`) "bfloat16": forward and backward under bf16 autocast (the weights, Adam's state
    and the validation stay float32); the quick utility check on MNIST took 30 s instead of 43
    on the reference CPU (AMX; benchmarks/RESULTS.md, "bfloat16 classifiers")."""
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    # No autocast object unless it is used: torch has autocast for a few device types only.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device)
    log, best_state, best_acc = TrainLog(), None, -1.0
    with image_layout(model, x.dim() == 4) as layout:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for epoch in tqdm(range(epochs), desc=progress, disable=progress is None, leave=False):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = F.cross_entropy(model(to_device(x[idx], device, layout)), to_device(y[idx], device))
                loss.backward()
                optimizer.step()
            if val is not None:
                acc = accuracy(model, *val)
                log.val_accuracy.append(acc)
                if acc > best_acc:
                    best_acc, best_state, log.best_epoch = acc, copy.deepcopy(model.state_dict()), epoch
            if on_epoch is not None:
                on_epoch(model, epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        log.best_epoch = epochs - 1
    model.eval()
    return log
