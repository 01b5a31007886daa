"""The scorecard: verdicts from the default thresholds (worked by hand on fake results), from a
policy where it has rules, and the known answers on digits (copies leak, never-seen images do not)."""

import re
from pathlib import Path

import numpy as np
import pytest

from dpaudit.audit.gate import apply_policy, parse_policy
from dpaudit.audit.pipeline import evaluate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.scorecard import DEFAULT_LEAKAGE_POLICY, DEFAULT_SOURCE, format_scorecard, scorecard
from dpaudit.audit.features import load_extractor
from dpaudit.datasets import Reference, load_official, load_split, split_indices
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest
from tests.reports.fakes import fake_result
from tests.transformed_copies import jittered


def answers(result, verdict=None) -> dict:
    return {a.key: a for a in scorecard(result, verdict).answers}


def test_default_thresholds_worked_by_hand():
    # coverage 0.6 of the holdout's 0.8 = 75%: partly (>= 50%, < 90%)
    # TSTR 0.81, TRTR 0.97, chance 0.1: (0.81 - 0.1) / (0.97 - 0.1) = 81.6%: partly
    # AUC CI low 0.52 <= 0.6, TPR@0.1% CI low 0.0005 <= 0.01, near-copy excess CI low -0.005 <= 0.005: no evidence
    got = answers(fake_result())
    assert (got["faithful"].verdict, got["useful"].verdict, got["leaks"].verdict) == ("partly", "partly", "no evidence")
    assert {a.source for a in got.values()} == {DEFAULT_SOURCE}
    assert "81.6% of the real data's gain over chance (10.0%)" in got["useful"].sentence
    assert got["faithful"].figure.text() == "coverage 60.0% (95% CI 58.0%-62.0%; fresh real images 80.0%)"
    assert answers(fake_result(coverage=0.75, tstr=0.9))["faithful"].verdict == "yes"  # 0.75 / 0.8 = 94%
    assert answers(fake_result(coverage=0.39))["faithful"].verdict == "no"  # 49%
    assert answers(fake_result(tstr=0.9))["useful"].verdict == "yes"  # (0.9 - 0.1) / 0.87 = 92%
    assert answers(fake_result(tstr=0.5))["useful"].verdict == "no"  # 46%


def test_evidence_of_leakage_and_a_false_claim_answer_yes():
    leaky = answers(fake_result(auc=0.7))["leaks"]  # CI low 0.66 > 0.6
    assert leaky.verdict == "yes" and any("membership.auc.ci_low = 0.66 is above 0.6" in b for b in leaky.broken)
    assert leaky.sentence.startswith("The best membership attack does better than guessing (AUC 0.7")
    false_claim = fake_result(eps_lb=12.0, epsilon=10.0)
    false_claim.checks["membership"].details["claim_warning"] = "PRIVACY CLAIM REFUTED (test)"
    answer = answers(false_claim)["leaks"]
    assert answer.verdict == "yes" and "PRIVACY CLAIM REFUTED (test)" in answer.sentence
    assert "The attacks prove epsilon >= 12." in answer.sentence


def test_an_invalid_membership_metric_cannot_tell():
    result = fake_result()
    for metric in result.checks["membership"].metrics.values():
        metric.invalid = "the holdout is not exchangeable with the members"
    assert answers(result)["leaks"].verdict == "cannot tell"


def test_a_policy_answers_the_questions_it_has_rules_on():
    rules = parse_policy({"rule": [{"metric": "utility.tstr_accuracy", "min": 0.9}]}, "ci.toml")
    result = fake_result()
    got = answers(result, apply_policy(result, rules))
    assert got["useful"].verdict == "no" and got["useful"].source == "policy ci.toml (1 rule)"
    assert got["useful"].broken == ("utility.tstr_accuracy = 0.81 is below 0.9",)
    assert got["faithful"].source == got["leaks"].source == DEFAULT_SOURCE  # no rule on them: the defaults
    lenient = parse_policy({"rule": [{"metric": "membership.auc", "max": 0.8}]}, "lenient.toml")
    leaky = fake_result(auc=0.7)
    assert answers(leaky, apply_policy(leaky, lenient))["leaks"].verdict == "no evidence"


def test_checks_that_did_not_run_are_not_measured():
    result = fake_result()
    for name in ("fidelity", "utility"):
        del result.checks[name]
    got = answers(result)
    assert got["faithful"].verdict == got["useful"].verdict == "not measured"
    assert got["leaks"].verdict == "no evidence"  # the default rules on the checks that ran


def test_epsilons_and_the_terminal_text():
    card = scorecard(fake_result())
    assert card.epsilons.claimed == 10.0 and card.epsilons.proven == {"membership attacks": 0.4}
    text = format_scorecard(card)
    assert text.splitlines()[0].startswith("Is it faithful?   PARTLY")
    assert "Privacy: claimed epsilon 10; proven at least 0.4 (membership attacks)." in text
    assert card.title == "faithful: partly; useful: partly; leaks: no evidence"


def test_the_default_leakage_rules_include_the_readmes():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = re.search(r"```toml\n# policy.toml\n(.*?)```", readme, re.S).group(1)
    ours = {(r.metric, r.max) for r in DEFAULT_LEAKAGE_POLICY.rules}
    theirs = {(m, float(v)) for m, v in re.findall(r'metric = "([\w.]+\.ci_low)".*?\nmax = ([\d.]+)', example)}
    assert len(theirs) == 3 and theirs <= ours
    assert "default thresholds" in readme and "(TSTR - chance) / (TRTR - chance)" in readme


@pytest.mark.slow
def test_known_answers_on_digits():
    """A fresh digits split: its never-seen images answer 'no evidence', the same set with a
    quarter of shifted, noisy member copies answers 'yes' (the policy test's draws, seed 5)."""
    train, test = load_official("digits")
    members, holdout = split_indices(len(train), 700, 360, seed=5)
    reference = Reference(train.subset(members), train.subset(holdout), test, "digits-scorecard")
    never_seen = train.subset(np.setdiff1d(np.arange(len(train)), np.r_[members, holdout]))
    lenet = load_extractor(load_split("digits")).module  # the shipped net, not one trained for this split
    quarter = len(never_seen) // 4
    copies_x = never_seen.x.clone()
    copies_x[:quarter] = jittered(reference.members.x[:quarter], seed=5, family="shift", noise=0.02)
    for synthetic, want in ((never_seen, "no evidence"), (ImageSet(copies_x, never_seen.y, 10), "yes")):
        result = evaluate(synthetic, reference, profile=QUICK, checks=["similarity", "membership"], seed=5,
                          manifest=Manifest("draw", epsilon=1.0, delta=1e-5), extractor=lenet, progress=False)
        assert answers(result)["leaks"].verdict == want
