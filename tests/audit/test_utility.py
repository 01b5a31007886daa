"""Utility: TSTR on digits, the epoch picked on synthetic data only, label checks."""

import numpy as np
import pytest
import torch
from sklearn.metrics import recall_score

from dpaudit import cache
from dpaudit.audit import utility
from dpaudit.audit.context import AuditContext
from dpaudit.audit.utility import per_class_accuracy, split_train_val, tstr_classifier
from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.nets import accuracy


@pytest.fixture
def small_profile(monkeypatch):
    """A few epochs on a few hundred images: enough to test the mechanics quickly."""
    settings = dict(utility.PROFILES["quick"], epochs=4, min_steps=0, max_train=600, trtr_max_train=300,
                    sklearn_max_train=300, mlp_max_iter=20)
    monkeypatch.setitem(utility.PROFILES, "quick", settings)
    return settings


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
    assert result.details["tstr_epochs"] * 8 >= utility.PROFILES["quick"]["min_steps"]


def test_epoch_is_picked_on_synthetic_validation_data_never_the_test_set(digits, small_profile):
    synthetic = digits.members
    ctx = AuditContext(synthetic, digits, "quick")
    model = tstr_classifier(ctx)
    assert tstr_classifier(ctx) is model  # computed once per context
    train, val = set(model.train_idx.tolist()), set(model.val_idx.tolist())
    assert not train & val and len(train | val) == 600 and len(val) == 60
    assert max(train | val) < len(synthetic)
    # the kept weights are those of the best epoch on the synthetic validation images
    assert len(model.val_accuracy) == model.epochs == 4
    assert model.val_accuracy[model.best_epoch] == max(model.val_accuracy)
    kept = accuracy(model.model, synthetic.x[model.val_idx], synthetic.y[model.val_idx])
    assert kept == pytest.approx(model.val_accuracy[model.best_epoch])
    # a different real test set (labels scrambled) changes nothing in training or selection
    scrambled = ImageSet(digits.test.x, digits.test.y.flip(0), 10, "scrambled", "scrambled")
    other = tstr_classifier(AuditContext(synthetic, Reference(digits.members, digits.holdout, scrambled, "x"), "quick"))
    assert other.best_epoch == model.best_epoch and other.val_accuracy == model.val_accuracy
    for a, b in zip(model.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)


def test_run_reports_every_metric_with_sample_sizes(digits, small_profile):
    result = utility.run(AuditContext(digits.holdout, digits, "quick"))
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


def test_split_train_val_is_seeded_disjoint_and_capped():
    train, val = split_train_val(1000, 300, 0.1, seed=5)
    assert len(train) == 270 and len(val) == 30 and not set(train.tolist()) & set(val.tolist())
    again = split_train_val(1000, 300, 0.1, seed=5)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert len(split_train_val(10, None, 0.1, seed=0)[1]) == 1


def test_unlabelled_synthetic_set_is_a_user_error(digits):
    unlabelled = ImageSet(digits.test.x, None, None, "u", "samples/")
    with pytest.raises(DpauditError, match="samples/: the synthetic set has no labels"):
        utility.run(AuditContext(unlabelled, digits, "quick"))


def test_labels_outside_the_reference_classes_are_a_user_error(digits):
    labels = digits.test.y.clone()
    labels[0] = 12
    bad = ImageSet(digits.test.x, labels, 13, "b", "generated.npz")
    with pytest.raises(DpauditError, match=r"generated.npz: synthetic labels range over \[0, 12\]"):
        tstr_classifier(AuditContext(bad, digits, "quick"))


def test_the_ceiling_is_trained_once_per_reference_then_read_from_the_user_cache(digits, small_profile, monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    first = utility.trtr_classifier(AuditContext(digits.test, digits, "quick"))
    assert not first.from_cache and len(list((tmp_path / "trtr").iterdir())) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached ceiling was trained again")

    monkeypatch.setattr(utility, "fit_classifier", no_training)
    again = utility.trtr_classifier(AuditContext(digits.holdout, digits, "quick"))  # another synthetic set
    assert again.from_cache
    assert again.best_epoch == first.best_epoch and again.val_accuracy == first.val_accuracy
    assert torch.equal(again.train_idx, first.train_idx) and torch.equal(again.val_idx, first.val_idx)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert accuracy(again.model, digits.test.x, digits.test.y) == accuracy(first.model, digits.test.x, digits.test.y)
    with pytest.raises(AssertionError, match="trained again"):  # another seed is another ceiling
        utility.trtr_classifier(AuditContext(digits.test, digits, "quick", seed=1))


def test_a_corrupt_cache_entry_is_trained_again_and_replaced(digits, small_profile, monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    first = utility.trtr_classifier(AuditContext(digits.test, digits, "quick"))
    (entry,) = (tmp_path / "trtr").iterdir()
    entry.write_bytes(b"truncated")
    again = utility.trtr_classifier(AuditContext(digits.test, digits, "quick"))
    assert not again.from_cache and again.val_accuracy == first.val_accuracy
    assert utility.trtr_classifier(AuditContext(digits.test, digits, "quick")).from_cache
