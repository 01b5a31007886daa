"""Utility: is the synthetic set useful for training? Train on synthetic, test on real (TSTR).

The DPDM protocol (Dockhorn et al. 2022): the fixed CNN of `dpaudit.nets` (conv 32-64-128,
FC 128, dropout 0.5, Adam 3e-4) is trained on the synthetic set; the epoch is picked on a
held-out part of the SYNTHETIC set, never on the real test set (picking on the test set inflates
utility and breaks DP, see DPImageBench); accuracy is measured on the real test set. Beside it:
the same CNN trained on the real members (TRTR, the ceiling), per-class accuracy, and logistic
regression and an MLP (784-100-10) trained on the synthetic set, as in the DP-MERF / PEARL tables.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.cache import entry_path, load_entry, save_entry
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.nets import DPDMClassifier, make_classifier, predict_logits, train_classifier

PROFILES: dict[str, dict] = {
    # max_train / trtr_max_train: synthetic / member images used (train + validation), a seeded
    # random sample (None = all). val_fraction of them picks the epoch. Small sets get more
    # epochs, so that the CNN takes at least min_steps optimizer steps (0 = the epochs as given).
    # sklearn_max_train caps the sklearn models' training set (taken from the CNN's training part).
    "quick": {
        "epochs": 3, "min_steps": 300, "max_train": 5000, "trtr_max_train": 5000, "val_fraction": 0.1,
        "sklearn_max_train": 2000, "logreg_max_iter": 100, "mlp_max_iter": 30,
    },
    "standard": {
        "epochs": 10, "min_steps": 500, "max_train": 10000, "trtr_max_train": 10000, "val_fraction": 0.1,
        "sklearn_max_train": 10000, "logreg_max_iter": 200, "mlp_max_iter": 100,
    },
    "paper": {
        "epochs": 50, "min_steps": 0, "max_train": None, "trtr_max_train": None, "val_fraction": 0.1,
        "sklearn_max_train": None, "logreg_max_iter": 1000, "mlp_max_iter": 200,
    },
}

BATCH_SIZE = 128


@dataclass
class TSTRModel:
    """A DPDM classifier and how it was trained: indices into its training set (the synthetic set
    for TSTR, the members for TRTR) used to train and to pick the epoch."""

    model: DPDMClassifier
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    epochs: int
    best_epoch: int
    val_accuracy: list[float] = field(default_factory=list)
    from_cache: bool = False  # loaded from the user cache rather than trained in this run


def _source(images: ImageSet) -> str:
    return images.source or images.name


def check_labels(ctx: AuditContext) -> None:
    """Refuse a synthetic set that cannot be used for TSTR, with one sentence naming it."""
    synthetic, members = ctx.synthetic, ctx.reference.members
    if not synthetic.has_labels:
        raise DpauditError(
            f"{_source(synthetic)}: the synthetic set has no labels; utility (train on synthetic, test on real) "
            "needs class labels (class folders, labels.csv or y in the .npz)."
        )
    if synthetic.shape != members.shape:
        raise DpauditError(
            f"{_source(synthetic)}: synthetic images have shape {synthetic.shape}, the reference has {members.shape}."
        )
    low, high = int(synthetic.y.min()), int(synthetic.y.max())
    if low < 0 or high >= members.num_classes:
        raise DpauditError(
            f"{_source(synthetic)}: synthetic labels range over [{low}, {high}], "
            f"outside the reference's classes 0..{members.num_classes - 1}."
        )


def split_train_val(n: int, cap: int | None, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train, validation) indices into a set of n: at most `cap` in all, a
    `val_fraction` of them (at least one) for validation. Both sorted, disjoint."""
    perm = np.random.default_rng(seed).permutation(n)[: n if cap is None else cap]
    n_val = min(len(perm) - 1, max(1, round(val_fraction * len(perm))))
    return torch.from_numpy(np.sort(perm[n_val:])), torch.from_numpy(np.sort(perm[:n_val]))


def fit_classifier(
    images: ImageSet, num_classes: int, settings: dict, cap: int | None, seed: int,
    device: torch.device, progress: str | None = None,
) -> TSTRModel:
    """Train the DPDM CNN on a seeded sample of `images`, keeping the epoch with the best
    accuracy on a held-out part of the same set. Returned on the CPU, in eval mode."""
    train_idx, val_idx = split_train_val(len(images), cap, settings["val_fraction"], seed)
    steps_per_epoch = -(-len(train_idx) // BATCH_SIZE)
    epochs = max(settings["epochs"], -(-settings["min_steps"] // steps_per_epoch))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_classifier(images.shape, num_classes)
    log = train_classifier(
        model, images.x[train_idx], images.y[train_idx], epochs=epochs, seed=seed, batch_size=BATCH_SIZE,
        val=(images.x[val_idx], images.y[val_idx]), device=device, progress=progress,
    )
    model.cpu().eval()
    return TSTRModel(model, train_idx, val_idx, epochs, log.best_epoch, log.val_accuracy)


def tstr_classifier(ctx: AuditContext) -> TSTRModel:
    """The DPDM CNN trained on the synthetic set (epoch picked on synthetic validation data),
    computed once per context; the attacks on the downstream model reuse it."""
    check_labels(ctx)
    settings = ctx.settings(PROFILES)
    return ctx.cached(
        "utility:tstr",
        lambda: fit_classifier(
            ctx.synthetic, ctx.reference.members.num_classes, settings, settings["max_train"],
            ctx.seed, ctx.device, "TSTR classifier",
        ),
    )


def trtr_classifier(ctx: AuditContext) -> TSTRModel:
    """The same CNN trained on the real members (the ceiling), computed once per context and
    kept in the user cache: it depends only on the members, the profile and the seed, so later
    audits against the same reference (other synthetic sets, `dpaudit compare`) skip its training."""
    settings = ctx.settings(PROFILES)
    return ctx.cached("utility:trtr", lambda: cached_trtr(ctx.reference.members, settings, ctx.seed, ctx.device))


def trtr_cache_path(members: ImageSet, settings: dict, seed: int, device: torch.device) -> Path:
    """Where the TRTR ceiling of these members, profile settings and seed is cached."""
    depends_on = {
        "members": members.fingerprint(),
        "settings": {key: settings[key] for key in ("epochs", "min_steps", "trtr_max_train", "val_fraction")},
        "batch_size": BATCH_SIZE, "seed": seed, "device": device.type, "torch": torch.__version__,
    }
    return entry_path("trtr", "dpdm", depends_on)


def cached_trtr(members: ImageSet, settings: dict, seed: int, device: torch.device) -> TSTRModel:
    """The TRTR ceiling from the cache (the user's, else the package's), else trained and cached."""
    path = trtr_cache_path(members, settings, seed, device)
    entry = load_entry(path)
    if entry is not None:
        model = make_classifier(members.shape, members.num_classes)
        try:
            model.load_state_dict(entry["state"])
            return TSTRModel(
                model.eval(), entry["train_idx"], entry["val_idx"], entry["epochs"], entry["best_epoch"],
                entry["val_accuracy"], from_cache=True,
            )
        except (KeyError, RuntimeError):
            pass  # a stale entry: train again and overwrite it
    fitted = fit_classifier(
        members, members.num_classes, settings, settings["trtr_max_train"], seed, device, "TRTR classifier"
    )
    save_entry(path, {
        "state": fitted.model.state_dict(), "train_idx": fitted.train_idx, "val_idx": fitted.val_idx,
        "epochs": fitted.epochs, "best_epoch": fitted.best_epoch, "val_accuracy": fitted.val_accuracy,
    })
    return fitted


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Accuracy on the test images of each class (NaN for a class absent from the test set)."""
    return [
        float((predictions[labels == c] == c).mean()) if (labels == c).any() else float("nan")
        for c in range(num_classes)
    ]


def _sklearn_correct(model, x_train, y_train, x_test, y_test) -> tuple[int, bool]:
    """Fit an sklearn classifier; (test images it classifies correctly, whether it converged)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return int((model.predict(x_test) == y_test).sum()), converged


def _accuracy_metric(correct: int, n_test: int, meaning: str, n: dict) -> Metric:
    ci = binomtest(correct, n_test).proportion_ci(0.95, method="wilson")
    return Metric(correct / n_test, "higher", meaning, range=(0.0, 1.0), ci=(ci.low, ci.high), n=n)


def run(ctx: AuditContext) -> CheckResult:
    """The utility check: TSTR accuracy of the DPDM CNN, the TRTR ceiling, logistic regression and MLP."""
    start = time.perf_counter()
    settings = ctx.settings(PROFILES)
    tstr = tstr_classifier(ctx)
    trtr = trtr_classifier(ctx)
    synthetic, test = ctx.synthetic, ctx.reference.test
    num_classes = ctx.reference.members.num_classes
    y_test = test.y.numpy()
    n_test = len(test)

    tstr_pred = predict_logits(tstr.model, test.x).argmax(1).numpy()
    trtr_pred = predict_logits(trtr.model, test.x).argmax(1).numpy()

    cap = settings["sklearn_max_train"]
    sk_idx = tstr.train_idx
    if cap is not None and cap < len(sk_idx):
        sk_idx = torch.from_numpy(np.sort(np.random.default_rng(ctx.seed + 2).choice(sk_idx.numpy(), cap, replace=False)))
    x_sk = synthetic.x[sk_idx].reshape(len(sk_idx), -1).numpy()
    y_sk = synthetic.y[sk_idx].numpy()
    x_test = test.x.reshape(n_test, -1).numpy()
    sklearn_models = {
        "logreg": LogisticRegression(max_iter=settings["logreg_max_iter"], random_state=ctx.seed),
        "mlp": MLPClassifier(hidden_layer_sizes=(100,), max_iter=settings["mlp_max_iter"], random_state=ctx.seed),
    }
    sklearn_results = {}
    if len(np.unique(y_sk)) < 2:
        ctx.warn("utility: the synthetic training images hold a single class; logistic regression and MLP did not run.")
    else:
        for name, model in sklearn_models.items():
            sklearn_results[name] = _sklearn_correct(model, x_sk, y_sk, x_test, y_test)

    n_tstr = {"train": len(tstr.train_idx), "val": len(tstr.val_idx), "test": n_test}
    result = CheckResult("utility")
    result.metrics = {
        "tstr_accuracy": _accuracy_metric(
            int((tstr_pred == y_test).sum()), n_test,
            "accuracy on the real test set of the DPDM CNN trained on the synthetic images (TSTR)", n_tstr,
        ),
        "trtr_accuracy": _accuracy_metric(
            int((trtr_pred == y_test).sum()), n_test,
            "accuracy of the same CNN trained on the real members (TRTR): the ceiling",
            {"train": len(trtr.train_idx), "val": len(trtr.val_idx), "test": n_test},
        ),
    }
    n_sk = {"train": len(sk_idx), "test": n_test}
    for name, label in (("logreg", "logistic regression"), ("mlp", "an MLP (784-100-10)")):
        if name in sklearn_results:
            result.metrics[f"tstr_{name}_accuracy"] = _accuracy_metric(
                sklearn_results[name][0], n_test,
                f"accuracy on the real test set of {label} trained on the synthetic images", n_sk,
            )
    result.details = {
        "per_class": {
            "tstr": per_class_accuracy(tstr_pred, y_test, num_classes),
            "trtr": per_class_accuracy(trtr_pred, y_test, num_classes),
        },
        "tstr_epochs": tstr.epochs,
        "trtr_epochs": trtr.epochs,
        "tstr_best_epoch": tstr.best_epoch,
        "tstr_val_accuracy": tstr.val_accuracy,
        "trtr_best_epoch": trtr.best_epoch,
        "trtr_val_accuracy": trtr.val_accuracy,
        "trtr_from_cache": trtr.from_cache,
        "epoch_selection": "held-out synthetic images (never the real test set)",
        "sklearn_converged": {name: r[1] for name, r in sklearn_results.items()},
        "synthetic_class_counts": np.bincount(synthetic.y.numpy(), minlength=num_classes).tolist(),
    }
    result.seconds = time.perf_counter() - start
    return result
