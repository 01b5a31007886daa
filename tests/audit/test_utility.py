"""Utility: TSTR on digits beside the TRTR ceiling, logistic regression and MLP, per-class accuracy."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score

from dpaudit import cache, nets
from dpaudit.audit import utility
from dpaudit.audit.classifiers import fit_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.utility import per_class_accuracy
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet

# A few epochs on a few hundred images: enough to test the mechanics quickly.
SMALL = replace(
    QUICK,
    classifiers=replace(QUICK.classifiers, epochs=4, min_steps=0, max_train=600, trtr_max_train=300),
    utility=replace(QUICK.utility, sklearn_max_train=300, mlp_max_iter=20),
)


def test_members_as_synthetic_give_a_decent_tstr_equal_to_trtr(digits, monkeypatch, tmp_path):
    # The shipped TRTR ceiling was trained on another machine, whose kernels may round
    # differently: train both models here, so that they are the same computation.
    monkeypatch.setattr(cache, "SHIPPED_DIR", tmp_path / "no-shipped-cache")
    result = utility.run(AuditContext(digits.members, digits, "quick"))
    tstr = result.metrics["tstr_accuracy"]
    assert tstr.value > 0.85
    assert tstr.ci[0] < tstr.value < tstr.ci[1]
    # the same images, split and seed: the TSTR model is the TRTR model
    assert result.metrics["trtr_accuracy"].value == tstr.value
    assert result.metrics["tstr_logreg_accuracy"].value > 0.85
    assert result.metrics["tstr_mlp_accuracy"].value > 0.8
    assert result.details["per_class"]["tstr"] == result.details["per_class"]["trtr"]
    assert len(result.details["per_class"]["tstr"]) == 10
    # digits is small: the quick profile adds epochs to reach its minimum number of steps
    assert result.details["tstr_epochs"] * 8 >= QUICK.classifiers.min_steps
    assert result.details["tstr_precision"] == result.details["trtr_precision"]


def test_a_bfloat16_tstr_classifier_is_as_accurate_as_the_float32_one(digits):
    accuracy = {}
    for precision in ("float32", "bfloat16"):
        config = replace(QUICK.classifiers, precision=precision)
        fitted = fit_classifier(digits.members, 10, config, 600, seed=0, device=torch.device("cpu"))
        assert fitted.precision == precision
        accuracy[precision] = nets.accuracy(fitted.model, digits.test.x, digits.test.y)
    assert accuracy["float32"] > 0.8
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) < 0.03, accuracy


def test_run_reports_every_metric_with_sample_sizes(digits):
    result = utility.run(AuditContext(digits.holdout, digits, SMALL))
    assert set(result.metrics) == {"tstr_accuracy", "trtr_accuracy", "tstr_logreg_accuracy", "tstr_mlp_accuracy"}
    assert result.metrics["tstr_accuracy"].n == {"train": 324, "val": 36, "test": 360}
    assert result.metrics["trtr_accuracy"].n == {"train": 270, "val": 30, "test": 360}
    assert result.metrics["tstr_logreg_accuracy"].n == {"train": 300, "test": 360}
    assert all(0 <= m.value <= 1 for m in result.metrics.values())



def test_per_class_accuracy_equals_sklearn_recall():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    want = recall_score(labels, predictions, average=None, labels=range(4))
    assert np.allclose(per_class_accuracy(predictions, labels, 4), want)
    assert np.isnan(per_class_accuracy(predictions, labels, 5)[4])  # no test image of class 4



def test_unlabelled_synthetic_set_is_a_user_error(digits):
    unlabelled = ImageSet(digits.test.x, None, None, "u", "samples/")
    with pytest.raises(DpauditError, match="samples/: the synthetic set has no labels"):
        utility.run(AuditContext(unlabelled, digits, "quick"))
