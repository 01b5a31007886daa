"""Canary scores: the label-conditional search against brute force, and known answers of each rule."""

import numpy as np
import torch

from dpaudit.attacks.canaries import make_canaries
from dpaudit.attacks.canary_scores import NO_EVIDENCE, nearest_by_label, rules_for, score_canaries
from dpaudit.datasets import load_split
from dpaudit.images import ImageSet


def test_nearest_by_label_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q, r = torch.rand(30, 1, 4, 4, generator=g), torch.rand(50, 1, 4, 4, generator=g)
    qy, ry = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 4, (50,), generator=g)
    ry[ry == 2] = 3  # no reference of label 2
    distance, index = nearest_by_label(q, qy, r, ry)
    d = torch.cdist(q.flatten(1).double(), r.flatten(1).double())
    for i in range(30):
        same = torch.nonzero(ry == qy[i]).flatten()
        if len(same) == 0:
            assert torch.isinf(distance[i]) and index[i] == -1
        else:
            j = same[d[i, same].argmin()]
            assert index[i] == j and abs(distance[i] - d[i, j]) < 1e-5
    unlabelled, _ = nearest_by_label(q, None, r, None)
    assert torch.allclose(unlabelled, d.min(1).values, atol=1e-5)


def test_a_release_that_holds_half_the_canaries_scores_them_highest():
    ref = load_split("digits")
    canaries = make_canaries(ref.holdout, 100, "mislabeled", seed=0)
    included = np.arange(100) < 50
    release = ImageSet(torch.cat([ref.members.x, canaries.images.x[:50]]),
                       torch.cat([ref.members.y, canaries.images.y[:50]]), 10)
    calibration = ref.holdout.subset(np.setdiff1d(np.arange(360), canaries.pool_idx.numpy()))
    scores = score_canaries(canaries, release, calibration)["pixel"]
    assert scores[included].min() > scores[~included].max()  # exact copies: d_syn = 0


def test_stamp_score_is_one_for_a_copied_stamp_and_near_chance_otherwise():
    ref = load_split("digits")
    canaries = make_canaries(ref.holdout, 100, "stamped", seed=1)
    release = ImageSet(torch.cat([ref.members.x[:500], canaries.images.x[:10]]),
                       torch.cat([ref.members.y[:500], canaries.images.y[:10]]), 10)
    scores = score_canaries(canaries, release, ref.holdout)
    assert set(scores) == set(rules_for("stamped", False)) == {"pixel", "stamp"}
    assert np.allclose(scores["stamp"][:10], 1.0)
    assert scores["stamp"][10:].max() < 1.0


def test_a_label_the_release_never_drew_gives_no_evidence():
    ref = load_split("digits")
    canaries = make_canaries(ref.holdout, 50, "clean", seed=2)
    keep = ref.members.y != 3
    release = ref.members.subset(torch.nonzero(keep).flatten())
    scores = score_canaries(canaries, release, ref.holdout)["pixel"]
    assert (scores[(canaries.images.y == 3).numpy()] == NO_EVIDENCE).all()
    assert (scores[(canaries.images.y != 3).numpy()] > NO_EVIDENCE).all()
