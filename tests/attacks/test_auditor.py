"""The canary-score auditor: the same bounds as the functions of dpaudit.attacks.epsilon called
directly, the IN / OUT form, and the ceiling of a perfect attack against its closed form."""

import math

import numpy as np
import pytest

from dpaudit.attacks.auditor import BOUNDS, CanaryScoreAuditor, canaries_needed, claim_verdict, perfect_ceiling
from dpaudit.attacks.epsilon import (
    ONE_RUN_FRACTIONS,
    fdp_one_run_epsilon_bound,
    one_run_epsilon_bound,
    split_threshold_epsilon,
)
from tests.reference import compare_to_reference

DIRECT = {"clopper_pearson": split_threshold_epsilon, "one_run": one_run_epsilon_bound,
          "fdp_one_run": fdp_one_run_epsilon_bound}


def score_sets():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(400), np.zeros(300)].astype(int)
    separated, null = rng.normal(size=700) + 1.5 * labels, rng.normal(size=700)
    shuffled = rng.permutation(labels)
    return {
        "separated, 400 in vs 300 out": (separated, labels),
        "null, 400 in vs 300 out": (null, labels),
        "perfect, shuffled": (shuffled + rng.uniform(0, 0.5, 700), shuffled),
    }


def test_bounds_are_the_epsilon_functions():
    assert BOUNDS == DIRECT


@pytest.mark.parametrize("method", sorted(DIRECT))
def test_auditor_gives_the_bounds_of_the_epsilon_functions(method):
    settings = {"delta": 1e-5, "alpha": 0.1, "seed": 3}
    results = compare_to_reference(
        lambda s, y: CanaryScoreAuditor(s, y).epsilon_lower_bound(method, **settings).to_dict(),
        lambda s, y: DIRECT[method](s, y, **settings).to_dict(),
        score_sets(), atol=0.0, rtol=0.0,
    )
    assert results[0][0]["value"] > 1  # the separated scores prove something
    assert results[1][0]["value"] < 0.5


def test_epsilon_lower_bounds_gives_every_method():
    scores, labels = score_sets()["separated, 400 in vs 300 out"]
    bounds = CanaryScoreAuditor(scores, labels).epsilon_lower_bounds(delta=1e-5, seed=1)
    assert set(bounds) == set(BOUNDS)
    for method, bound in bounds.items():
        assert bound == DIRECT[method](scores, labels, delta=1e-5, alpha=0.05, seed=1)
    only = CanaryScoreAuditor(scores, labels).epsilon_lower_bounds(delta=1e-5, seed=1, methods=("one_run",))
    assert set(only) == {"one_run"} and only["one_run"] == bounds["one_run"]


def test_from_in_out_equals_the_concatenated_form():
    rng = np.random.default_rng(1)
    in_scores, out_scores = rng.normal(size=250) + 1.0, rng.normal(size=180)
    split = CanaryScoreAuditor.from_in_out(in_scores, out_scores)
    joined = CanaryScoreAuditor(np.r_[in_scores, out_scores], np.r_[np.ones(250), np.zeros(180)].astype(int))
    np.testing.assert_array_equal(split.scores, joined.scores)
    np.testing.assert_array_equal(split.labels, joined.labels)
    for method in BOUNDS:
        assert split.epsilon_lower_bound(method, delta=1e-5) == joined.epsilon_lower_bound(method, delta=1e-5)


def test_unknown_method_and_bad_shapes_are_errors():
    auditor = CanaryScoreAuditor([0.1, 0.9], [0, 1])
    with pytest.raises(ValueError, match="unknown epsilon bound 'bogus'; available: clopper_pearson, one_run, fdp_one_run"):
        auditor.epsilon_lower_bound("bogus", delta=1e-5)
    with pytest.raises(ValueError, match="unknown epsilon bound"):
        auditor.ceiling("bogus", delta=1e-5)
    with pytest.raises(ValueError, match="same length"):
        CanaryScoreAuditor([0.1, 0.9, 0.5], [0, 1])


def perfect_split_half_bound(per_side, delta, alpha):
    """A perfect attack makes no error on the evaluation half (per_side - per_side // 2 targets a
    side): both rates are bounded by the one-sided Clopper-Pearson upper bound for 0 of n at
    alpha / 2, a = b = 1 - (alpha / 2)^(1 / n), and the bound is log((1 - delta - b) / a), or 0
    when that is negative (too few targets to prove anything)."""
    n = per_side - per_side // 2
    a = b = 1 - (alpha / 2) ** (1 / n)
    return max(0.0, math.log((1 - delta - b) / a))


def ceiling(per_side, method="clopper_pearson", delta=1e-5, alpha=0.05):
    """The auditor's ceiling for `per_side` targets a side with arbitrary (noise) scores."""
    scores = np.random.default_rng(per_side).normal(size=2 * per_side)
    auditor = CanaryScoreAuditor.from_in_out(scores[:per_side], scores[per_side:])
    return auditor.ceiling(method, delta=delta, alpha=alpha)


def test_ceiling_is_the_bound_of_a_perfect_attack_and_grows_with_the_targets():
    sizes = {f"{n:,} a side": n for n in (10, 20, 101, 1000, 10_000)}  # 101: the evaluation half gets 51
    results = compare_to_reference(ceiling, lambda n: perfect_split_half_bound(n, 1e-5, 0.05), sizes,
                                   atol=0.0, rtol=1e-10)
    value = {n: got for n, (got, _) in zip(sizes.values(), results)}
    assert 4.90 < value[1000] < 4.91  # log((1 - 1e-5 - a) / a) with a = 1 - 0.025^(1/500) = 0.00735
    assert value[10] == 0.0  # 5 evaluation targets a side: even a perfect attack proves nothing
    assert value[20] < value[101] < value[1000] < value[10_000]


def test_ceiling_bounds_every_attack_on_those_targets():
    for name, (scores, labels) in score_sets().items():
        auditor = CanaryScoreAuditor(scores, labels)
        for method in BOUNDS:
            bound, top = auditor.epsilon_lower_bound(method, delta=1e-5).value, auditor.ceiling(method, delta=1e-5)
            assert (bound == top) if name.startswith("perfect") else (bound < top), (name, method, bound, top)


def test_one_run_ceiling_without_delta_is_all_guesses_right():
    # delta = 0: all 2n guesses of the largest configuration right, P[Bin(2n, q) >= 2n] = q^(2n) = alpha / configs.
    configs = 2 * len(ONE_RUN_FRACTIONS)
    compare_to_reference(
        lambda n: ceiling(n, "one_run", delta=0.0),
        lambda n: math.log((q := (0.05 / configs) ** (1 / (2 * n))) / (1 - q)),
        {"500 a side": 500, "200 a side": 200}, atol=1e-5, rtol=0.0,
    )


def test_claim_verdicts():
    assert claim_verdict(3.0, 3.4, 1.0) == "refuted"
    assert claim_verdict(0.2, 3.4, 1.0) == "consistent"
    assert claim_verdict(3.0, 3.4, 10.0) == "inconclusive"  # no attack on these targets could refute 10
    assert claim_verdict(3.4, 3.4, 3.4) == "inconclusive"
    assert claim_verdict(0.0, 3.4, None) == "no claim"


@pytest.mark.parametrize("method, claimed", [("one_run", 1.0), ("one_run", 4.0), ("fdp_one_run", 4.0)])
def test_canaries_needed_is_where_the_ceiling_first_passes_the_claim(method, claimed):
    needed = canaries_needed(method, claimed, delta=1e-5, alpha=0.025)
    assert perfect_ceiling(method, needed, delta=1e-5, alpha=0.025) > claimed
    assert perfect_ceiling(method, int(needed / 1.1), delta=1e-5, alpha=0.025) <= claimed


def test_canaries_needed_says_none_when_the_delta_term_caps_the_bound():
    # 2 m delta grows with m: at delta 1e-5 Steinke's bound never reaches 10
    assert canaries_needed("one_run", 10.0, delta=1e-5, alpha=0.025) is None
    assert canaries_needed("fdp_one_run", 10.0, delta=1e-5, alpha=0.025) is not None  # the f-DP test has no such term
