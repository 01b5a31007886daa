"""Targets, ROC summaries and AttackResult against sklearn, brute force and hand-computed curves."""

import json

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from dpaudit.attacks.base import AttackResult, delong_auc, draw_targets, tpr_at_fpr
from tests.reference import compare_to_reference


def test_draw_targets_balanced_disjoint_seeded():
    split = draw_targets(1077, 360, per_side=1000, reference=1000, seed=0)
    assert len(split.member_idx) == len(split.nonmember_idx) == 180
    assert len(split.reference_idx) == 180
    assert not set(split.nonmember_idx.tolist()) & set(split.reference_idx.tolist())
    assert split.labels.tolist() == [1] * 180 + [0] * 180
    again = draw_targets(1077, 360, per_side=1000, reference=1000, seed=0)
    assert torch.equal(split.member_idx, again.member_idx) and torch.equal(split.reference_idx, again.reference_idx)
    other = draw_targets(1077, 360, per_side=1000, reference=1000, seed=1)
    assert not torch.equal(split.member_idx, other.member_idx)

    small = draw_targets(50_000, 10_000, per_side=1000, reference=2000, seed=0)
    assert (len(small.member_idx), len(small.nonmember_idx), len(small.reference_idx)) == (1000, 1000, 2000)
    members, holdout = torch.arange(50_000), torch.arange(10_000) + 100_000
    assert torch.equal(small.targets(members, holdout)[:1000], small.member_idx)
    assert torch.equal(small.reference(holdout), small.reference_idx + 100_000)


def delong_brute_force(scores, labels):
    """DeLong's variance from the O(mn) kernel psi(x, y) = 1[x > y] + 1/2 1[x = y]."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


def delong_inputs():
    rng = np.random.default_rng(0)
    ties = np.r_[np.ones(70), np.zeros(50)].astype(int)
    shuffled = rng.permutation(np.r_[np.ones(30), np.zeros(90)].astype(int))
    halves = np.r_[np.ones(50), np.zeros(50)].astype(int)
    return {
        "ties (rounded scores), 70 vs 50": (np.round(rng.normal(size=120) + 0.8 * ties, 1), ties),
        "no ties, 30 vs 90 shuffled": (rng.normal(size=120) + 0.5 * shuffled, shuffled),
        "integer scores, 50 vs 50": (rng.integers(0, 4, 100) + halves, halves),
    }


def test_delong_matches_brute_force_with_ties():
    inputs = delong_inputs()
    auc = lambda scores, labels: delong_auc(scores, labels)[0]  # noqa: E731
    compare_to_reference(auc, lambda s, y: delong_brute_force(s, y)[0], inputs, atol=0.0, rtol=1e-12,
                         name="DeLong AUC vs the O(mn) kernel")
    compare_to_reference(auc, lambda s, y: roc_auc_score(y, s), inputs, atol=0.0, rtol=1e-12,
                         name="DeLong AUC vs sklearn")
    compare_to_reference(lambda s, y: delong_auc(s, y)[1], lambda s, y: delong_brute_force(s, y)[1], inputs,
                         atol=0.0, rtol=1e-10, name="DeLong standard error")


def test_tpr_at_fpr_interpolates_on_the_curve():
    # Points in curve order, with a vertical step at FPR 0.1 and a slanted (tied) segment after it.
    fpr = np.array([0.0, 0.0, 0.1, 0.1, 0.3, 1.0])
    tpr = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(0.2)
    assert tpr_at_fpr(fpr, tpr, 0.05) == pytest.approx(0.3)  # between (0, 0.2) and (0.1, 0.4)
    assert tpr_at_fpr(fpr, tpr, 0.1) == pytest.approx(0.6)  # top of the vertical step
    assert tpr_at_fpr(fpr, tpr, 0.2) == pytest.approx(0.7)
    assert tpr_at_fpr(fpr, tpr, 1.0) == pytest.approx(1.0)


def summary_by_hand(scores, labels):
    """AUC (sklearn), the advantage and TPR at 10% FPR recounted directly, DeLong's 95% interval
    (brute force); the scores must be distinct."""
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    # Advantage: best TPR - FPR over every threshold.
    best = max(((scores >= t) & (labels == 1)).sum() / n_pos - ((scores >= t) & (labels == 0)).sum() / n_neg
               for t in scores)
    # TPR at 10% FPR: every member above the 51st-highest non-member score is caught with 50 false alarms.
    t = np.sort(scores[labels == 0])[::-1][n_neg // 10]
    auc = roc_auc_score(labels, scores)
    _, se = delong_brute_force(scores, labels)
    z = stats.norm.ppf(0.975)
    return {"auc": auc, "advantage": best, "tpr_at_10pct": ((scores > t) & (labels == 1)).sum() / n_pos,
            "auc_ci": (auc - z * se, auc + z * se)}


def test_attack_result_against_sklearn_and_brute_force():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300), np.zeros(500)].astype(int)
    scores = rng.normal(size=800) + 1.2 * labels
    inputs = {"300 vs 500, shift 1.2": (scores, labels)}

    def summary(scores, labels):
        result = AttackResult.from_scores("toy", scores, labels, delta=1e-5, seed=0)
        return {"auc": result.auc, "advantage": result.advantage, "tpr_at_10pct": result.tpr_at["10pct"],
                "auc_ci": result.auc_ci}

    compare_to_reference(summary, summary_by_hand, inputs, atol=1e-12, rtol=1e-6, name="AttackResult summary")
    compare_to_reference(lambda s, y: AttackResult.from_scores("toy", s, y, delta=1e-5).fpr,
                         lambda s, y: roc_curve(y, s)[0], inputs, atol=0.0, rtol=1e-7, name="AttackResult ROC")
    result = AttackResult.from_scores("toy", scores, labels, delta=1e-5, seed=0)
    assert result.epsilon_lower_bound == max(b.value for b in result.epsilon.values())
    assert result.n_members == 300 and result.n_nonmembers == 500


def test_attack_result_to_dict_is_json_and_compact():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(2000), np.zeros(2000)].astype(int)
    result = AttackResult.from_scores("toy", rng.normal(size=4000) + labels, labels, delta=1e-5, details={"space": "pixel"})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["space"] == "pixel"
    assert data["n"] == {"members": 2000, "nonmembers": 2000}
    assert data["tpr_at_fpr_resolved"] == {"10pct": True, "1pct": True, "0p1pct": True}
    roc = data["roc"]
    assert len(roc["fpr"]) <= 256 and roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["fpr"]) > 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert set(data["epsilon"]) == {"clopper_pearson", "one_run"}


def test_attack_result_unresolved_low_fpr_and_nan_scores():
    labels = np.r_[np.ones(100), np.zeros(100)].astype(int)
    scores = np.r_[np.full(100, np.nan), np.zeros(100)]  # a member the attack could not score ranks last
    result = AttackResult.from_scores("toy", scores, labels, delta=1e-5)
    assert result.auc == 0.0
    assert result.to_dict()["tpr_at_fpr_resolved"] == {"10pct": True, "1pct": True, "0p1pct": False}
    with pytest.raises(ValueError):
        AttackResult.from_scores("toy", np.zeros(10), np.ones(10), delta=1e-5)
