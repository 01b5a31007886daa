"""The classifiers trained on the synthetic set (TSTR) and on the real members (TRTR), which the
utility check and the attacks on the downstream model share.

Both are the DPDM CNN of `dpaudit.nets` (conv 32-64-128, FC 128, dropout 0.5, Adam 3e-4),
trained with the DPDM protocol (Dockhorn et al. 2022): the epoch is picked on a held-out part
of the training set itself, never on the real test set (picking on the test set inflates
utility and breaks DP, see DPImageBench). Each is computed once per audit; the TRTR ceiling
depends only on the members, so it is also kept in the user cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from dpaudit.audit.context import AuditContext
from dpaudit.cache import entry_path, load_entry, save_entry
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.nets import DPDMClassifier, make_classifier, resolve_precision, train_classifier

BATCH_SIZE = 128


@dataclass(frozen=True)
class ClassifierConfig:
    """How the TSTR and TRTR CNNs are trained. `max_train` / `trtr_max_train`: synthetic / member
    images used (train + validation), a seeded random sample (None = all); `val_fraction` of them
    picks the epoch. Small sets get more epochs, so that the CNN takes at least `min_steps`
    optimizer steps (0 = the epochs as given). `precision`: the arithmetic both CNNs train in,
    `auto` (bfloat16 autocast where the device computes it natively: faster on CPUs with
    AMX, as accurate; benchmarks/RESULTS.md), `float32` or `bfloat16`. Both in the same
    one, so that a synthetic set equal to the members gives the control's numbers exactly."""

    epochs: int = 3
    min_steps: int = 300
    max_train: int | None = 5000
    trtr_max_train: int | None = 5000
    val_fraction: float = 0.1
    precision: str = "auto"


@dataclass
class TrainedClassifier:
    """A DPDM classifier and how it was trained: indices into its training set (the synthetic set
    for TSTR, the members for TRTR) used to train and to pick the epoch."""

    model: DPDMClassifier
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    epochs: int
    best_epoch: int
    val_accuracy: list[float] = field(default_factory=list)
    from_cache: bool = False  # loaded from the user cache rather than trained in this run
    precision: str = "float32"  # the arithmetic it was trained in


def require_labels(images: ImageSet) -> None:
    """Refuse a synthetic set without labels (nothing to train a classifier on), naming it."""
    if not images.has_labels:
        raise DpauditError(
            f"{images.source or images.name}: the synthetic set has no labels; utility (train on synthetic, "
            "test on real) needs class labels (class folders, labels.csv or y in the .npz)."
        )


def split_train_val(n: int, cap: int | None, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train, validation) indices into a set of n: at most `cap` in all, a
    `val_fraction` of them (at least one) for validation. Both sorted, disjoint."""
    perm = np.random.default_rng(seed).permutation(n)[: n if cap is None else cap]
    n_val = min(len(perm) - 1, max(1, round(val_fraction * len(perm))))
    return torch.from_numpy(np.sort(perm[n_val:])), torch.from_numpy(np.sort(perm[:n_val]))


def fit_classifier(
    images: ImageSet, num_classes: int, config: ClassifierConfig, cap: int | None, seed: int,
    device: torch.device, progress: str | None = None, on_epoch: Callable[[nn.Module, int], None] | None = None,
) -> TrainedClassifier:
    """Train the DPDM CNN on a seeded sample of at most `cap` of `images`, keeping the epoch with
    the best accuracy on a held-out part of the same set. Returned on `device`, in eval mode.
    `on_epoch(model, epoch)` is called after each epoch (as train_classifier does)."""
    precision = resolve_precision(config.precision, device)
    train_idx, val_idx = split_train_val(len(images), cap, config.val_fraction, seed)
    steps_per_epoch = -(-len(train_idx) // BATCH_SIZE)
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_classifier(images.shape, num_classes)
    log = train_classifier(
        model, images.take(train_idx), images.y[train_idx], epochs=epochs, seed=seed, batch_size=BATCH_SIZE,
        val=(images.take(val_idx), images.y[val_idx]), device=device, progress=progress, precision=precision,
        on_epoch=on_epoch,
    )
    model.eval()
    return TrainedClassifier(model, train_idx, val_idx, epochs, log.best_epoch, log.val_accuracy, precision=precision)


def tstr_classifier(ctx: AuditContext) -> TrainedClassifier:
    """The CNN trained on the synthetic set (epoch picked on synthetic validation data), once per
    audit; DpauditError for an unlabelled synthetic set."""
    require_labels(ctx.synthetic)
    config = ctx.profile.classifiers
    return ctx.cached(
        "classifiers:tstr",
        lambda: fit_classifier(
            ctx.synthetic, ctx.reference.members.num_classes, config, config.max_train, ctx.seed, ctx.device,
            "TSTR classifier",
        ),
    )


def trtr_classifier(ctx: AuditContext) -> TrainedClassifier:
    """The same CNN trained on the real members (the ceiling), once per audit and kept in the
    user cache: later audits against the same reference (other synthetic sets, `dpaudit
    compare`) skip its training."""
    return ctx.cached(
        "classifiers:trtr", lambda: cached_trtr(ctx.reference.members, ctx.profile.classifiers, ctx.seed, ctx.device)
    )


def trtr_cache_path(members: ImageSet, config: ClassifierConfig, seed: int, device: torch.device) -> Path:
    """Where the TRTR ceiling of these members, training settings and seed is cached."""
    depends_on = {
        "members": members.fingerprint(),
        # The key names of the first release's settings table: the shipped entries are stored under them.
        "settings": {"epochs": config.epochs, "min_steps": config.min_steps, "trtr_max_train": config.trtr_max_train,
                     "val_fraction": config.val_fraction},
        "batch_size": BATCH_SIZE, "seed": seed, "device": device.type, "torch": torch.__version__,
    }
    precision = resolve_precision(config.precision, device)
    if precision != "float32":  # float32 entries keep the names they were first shipped under
        depends_on["precision"] = precision
    return entry_path("trtr", "dpdm", depends_on)


def cached_trtr(members: ImageSet, config: ClassifierConfig, seed: int, device: torch.device) -> TrainedClassifier:
    """The TRTR ceiling from the cache (the user's, else the package's), else trained and cached."""
    path = trtr_cache_path(members, config, seed, device)
    entry = load_entry(path)
    if entry is not None:
        model = make_classifier(members.shape, members.num_classes)
        try:
            model.load_state_dict(entry["state"])
            model.to(device)
            return TrainedClassifier(
                model.eval(), entry["train_idx"], entry["val_idx"], entry["epochs"], entry["best_epoch"],
                entry["val_accuracy"], from_cache=True, precision=resolve_precision(config.precision, device),
            )
        except (KeyError, RuntimeError):
            pass  # a stale entry: train again and overwrite it
    fitted = fit_classifier(members, members.num_classes, config, config.trtr_max_train, seed, device, "TRTR classifier")
    save_entry(path, {
        "state": fitted.model.state_dict(), "train_idx": fitted.train_idx, "val_idx": fitted.val_idx,
        "epochs": fitted.epochs, "best_epoch": fitted.best_epoch, "val_accuracy": fitted.val_accuracy,
    })
    return fitted
