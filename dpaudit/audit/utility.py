"""Utility: is the synthetic set useful for training? Train on synthetic, test on real (TSTR).

The DPDM protocol (Dockhorn et al. 2022; `dpaudit.audit.classifiers`): the fixed CNN is trained
on the synthetic set, its epoch picked on held-out SYNTHETIC images, and its accuracy measured on
the real test set. Beside it: the same CNN trained on the real members (TRTR, the ceiling),
per-class accuracy, and logistic regression and an MLP (784-100-10) trained on the synthetic
set, as in the DP-MERF / PEARL tables.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from dpaudit.audit.classifiers import trtr_classifier, tstr_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.spec import CheckSpec
from dpaudit.intervals import wilson
from dpaudit.nets import predict_logits
from dpaudit.sampling import seeded_sample


@dataclass(frozen=True)
class UtilityConfig:
    """The scikit-learn models trained on the synthetic set: at most `sklearn_max_train` images
    (a seeded sample of the CNN's training part; None = all) and their iteration budgets."""

    sklearn_max_train: int | None = 2000
    logreg_max_iter: int = 100
    mlp_max_iter: int = 30


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
    return Metric(correct / n_test, "higher", meaning, range=(0.0, 1.0), ci=wilson(correct, n_test), n=n)


def run(ctx: AuditContext) -> CheckResult:
    """The utility check: TSTR accuracy of the DPDM CNN, the TRTR ceiling, logistic regression and MLP."""
    config = ctx.profile.utility
    tstr = tstr_classifier(ctx)
    trtr = trtr_classifier(ctx)
    synthetic, test = ctx.synthetic, ctx.reference.test
    num_classes = ctx.reference.members.num_classes
    y_test = test.y.numpy()
    n_test = len(test)

    test_x = test.x  # the test set, converted once for the CNNs and scikit-learn
    tstr_pred = predict_logits(tstr.model, test_x).argmax(1).numpy()
    trtr_pred = predict_logits(trtr.model, test_x).argmax(1).numpy()

    sk_idx = tstr.train_idx[seeded_sample(len(tstr.train_idx), config.sklearn_max_train, ctx.seed + 2)]
    x_sk = synthetic.take(sk_idx).reshape(len(sk_idx), -1).numpy()
    y_sk = synthetic.y[sk_idx].numpy()
    x_test = test_x.reshape(n_test, -1).numpy()
    sklearn_models = {
        "logreg": LogisticRegression(max_iter=config.logreg_max_iter, random_state=ctx.seed),
        "mlp": MLPClassifier(hidden_layer_sizes=(100,), max_iter=config.mlp_max_iter, random_state=ctx.seed),
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
        "tstr_precision": tstr.precision,
        "trtr_precision": trtr.precision,
        "epoch_selection": "held-out synthetic images (never the real test set)",
        "sklearn_converged": {name: r[1] for name, r in sklearn_results.items()},
        "synthetic_class_counts": np.bincount(synthetic.y.numpy(), minlength=num_classes).tolist(),
    }
    return result


CHECK = CheckSpec(
    name="utility",
    title="Utility",
    question="Is it useful? Accuracy on the real test set of a classifier trained on the synthetic images (TSTR), "
    "beside the same classifier trained on real images (TRTR, the ceiling).",
    needs_labels=True,
    headlines=("tstr_accuracy",),
    run=run,
)
