"""Cross-fitted headlines: unbiased where no attack works, faithful where one does, and equal to
the readings recomputed by hand with scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dpaudit.attacks.base import FPR_LEVELS
from dpaudit.attacks.selection import cross_fit, fold_ids

KEYS = ["auc", "advantage", *(f"tpr_at_fpr_{key}" for key in FPR_LEVELS)]


def null_scores(rng, attacks=7, per_side=180):
    labels = np.r_[np.ones(per_side, int), np.zeros(per_side, int)]
    return {f"a{i}": rng.normal(size=2 * per_side) for i in range(attacks)}, labels


def test_folds_are_stratified_and_seeded():
    labels = np.r_[np.ones(7, int), np.zeros(10, int)]
    folds = fold_ids(labels, seed=3)
    for side, size in ((1, 7), (0, 10)):
        counts = np.bincount(folds[labels == side], minlength=2)
        assert counts.sum() == size and abs(counts[0] - counts[1]) <= 1
    assert np.array_equal(folds, fold_ids(labels, seed=3)) and not np.array_equal(folds, fold_ids(labels, seed=4))


def test_where_no_attack_works_the_headline_is_not_inflated_and_its_interval_covers():
    """Seven attacks that guess, 180 targets a side (digits' size): the best of seven AUCs on all
    targets reads about 0.54; the cross-fitted AUC averages 0.5 and its interval holds 0.5 in
    about 95% of draws, so a gate reading its lower end almost never fails."""
    rng = np.random.default_rng(0)
    best, fitted, covered = [], [], []
    for seed in range(150):
        scores, labels = null_scores(rng)
        best.append(max(roc_auc_score(labels, s) for s in scores.values()))
        headline = cross_fit(scores, labels, ["auc"], seed=seed)["auc"]
        fitted.append(headline.value)
        covered.append(headline.ci[0] <= 0.5 <= headline.ci[1])
    assert np.mean(best) > 0.53
    assert abs(np.mean(fitted) - 0.5) < 0.007
    assert 0.90 <= np.mean(covered) <= 0.99


def test_a_working_attack_is_chosen_on_both_folds_and_read_by_hand():
    rng = np.random.default_rng(1)
    scores, labels = null_scores(rng, attacks=5, per_side=400)
    scores["works"] = labels + rng.normal(size=len(labels))  # AUC about 0.76
    headlines = cross_fit(scores, labels, KEYS, seed=2)
    assert headlines["auc"].chosen == ("works", "works")
    folds = fold_ids(labels, seed=2)
    by_hand = np.mean([roc_auc_score(labels[folds == f], scores["works"][folds == f]) for f in (0, 1)])
    assert headlines["auc"].value == pytest.approx(by_hand)
    low, high = headlines["auc"].ci
    assert low < by_hand < high and high - low < 0.08
    assert headlines["tpr_at_fpr_10pct"].ci[0] > 0.1  # caught well above the 10% a guess would catch
    assert headlines["advantage"].ci is None


def test_too_few_targets_to_cross_fit_is_an_error():
    with pytest.raises(ValueError, match="at least 2 member"):
        cross_fit({"a": np.array([0.1, 0.2, 0.3])}, np.array([1, 0, 0]), ["auc"], seed=0)
