"""The TSTR / TRTR classifiers: the epoch picked on the training set's own held-out part, once
per audit, the ceiling read from the user cache."""

from dataclasses import replace

import pytest
import torch

from dpaudit.audit import classifiers
from dpaudit.audit.classifiers import split_train_val, tstr_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.profiles import QUICK
from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.nets import accuracy

SMALL = replace(QUICK, classifiers=replace(QUICK.classifiers, epochs=4, min_steps=0, max_train=600, trtr_max_train=300))


def test_epoch_is_picked_on_synthetic_validation_data_never_the_test_set(digits):
    synthetic = digits.members
    ctx = AuditContext(synthetic, digits, SMALL)
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
    other = tstr_classifier(AuditContext(synthetic, Reference(digits.members, digits.holdout, scrambled, "x"), SMALL))
    assert other.best_epoch == model.best_epoch and other.val_accuracy == model.val_accuracy
    for a, b in zip(model.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)



def test_split_train_val_is_seeded_disjoint_and_capped():
    train, val = split_train_val(1000, 300, 0.1, seed=5)
    assert len(train) == 270 and len(val) == 30 and not set(train.tolist()) & set(val.tolist())
    again = split_train_val(1000, 300, 0.1, seed=5)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert len(split_train_val(10, None, 0.1, seed=0)[1]) == 1



def test_the_ceiling_is_trained_once_per_reference_then_read_from_the_user_cache(digits, monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    first = classifiers.trtr_classifier(AuditContext(digits.test, digits, SMALL))
    assert not first.from_cache and len(list((tmp_path / "trtr").iterdir())) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached ceiling was trained again")

    monkeypatch.setattr(classifiers, "fit_classifier", no_training)
    again = classifiers.trtr_classifier(AuditContext(digits.holdout, digits, SMALL))  # another synthetic set
    assert again.from_cache
    assert again.best_epoch == first.best_epoch and again.val_accuracy == first.val_accuracy
    assert torch.equal(again.train_idx, first.train_idx) and torch.equal(again.val_idx, first.val_idx)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert accuracy(again.model, digits.test.x, digits.test.y) == accuracy(first.model, digits.test.x, digits.test.y)
    with pytest.raises(AssertionError, match="trained again"):  # another seed is another ceiling
        classifiers.trtr_classifier(AuditContext(digits.test, digits, SMALL, seed=1))



def test_a_corrupt_cache_entry_is_trained_again_and_replaced(digits, monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    first = classifiers.trtr_classifier(AuditContext(digits.test, digits, SMALL))
    (entry,) = (tmp_path / "trtr").iterdir()
    entry.write_bytes(b"truncated")
    again = classifiers.trtr_classifier(AuditContext(digits.test, digits, SMALL))
    assert not again.from_cache and again.val_accuracy == first.val_accuracy
    assert classifiers.trtr_classifier(AuditContext(digits.test, digits, SMALL)).from_cache


def test_an_unlabelled_synthetic_set_has_no_tstr_classifier(digits):
    unlabelled = ImageSet(digits.test.x, None, None, "u", "samples/")
    with pytest.raises(DpauditError, match="samples/: the synthetic set has no labels"):
        tstr_classifier(AuditContext(unlabelled, digits, SMALL))
