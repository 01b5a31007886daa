"""The membership check end to end on digits: a copying generator refutes a false claim, real
images from neither split do not, unlabelled sets skip the downstream attacks, the JSON holds,
and a new attack is one registered function."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dpaudit.attacks import MEMBERSHIP_ATTACKS
from dpaudit.attacks.base import AttackScores, draw_targets, register_membership_attack
from dpaudit.attacks.downstream import LiraConfig
from dpaudit.audit import membership_check
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import load_extractor
from dpaudit.audit.gate import apply_policy, load_policy
from dpaudit.audit.result import AuditResult, load_result
from dpaudit.datasets import Reference
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest

METRICS = {"auc", "advantage", "tpr_at_fpr_10pct", "tpr_at_fpr_1pct", "tpr_at_fpr_0p1pct", "epsilon_lower_bound"}
BLACK_BOX = {"distance_pixel", "calibrated_distance_pixel", "distance_feature", "calibrated_distance_feature",
             "domias", "classifier"}


def context(synthetic, reference, epsilon=1.0, profile=QUICK):
    ctx = AuditContext(synthetic, reference, profile, 0, manifest=Manifest("test", epsilon=epsilon, delta=1e-5))
    ctx.extractor = load_extractor(reference)
    return ctx


def as_json(result):
    wrapper = AuditResult(synthetic={}, reference={}, feature_extractor={}, seed=0, profile="quick",
                          checks={"membership": result})
    return json.loads(wrapper.to_json())["checks"]["membership"]


def test_copying_generator_refutes_a_false_claim(digits):
    attacks = {**QUICK.membership.attacks, "downstream_lira": LiraConfig(shadows=2, train_size=1000, epochs=2)}
    with_lira = replace(QUICK, membership=replace(QUICK.membership, attacks=attacks))
    g = torch.Generator().manual_seed(0)
    noisy = (digits.members.x + 0.02 * torch.randn(digits.members.x.shape, generator=g)).clamp(0, 1)
    ctx = context(ImageSet(noisy, digits.members.y, 10), digits, epsilon=1.0, profile=with_lira)
    result = membership_check.run(ctx)

    assert set(result.metrics) == METRICS
    assert result.metrics["auc"].value >= 0.95
    assert result.metrics["epsilon_lower_bound"].value >= 2
    assert result.details["claim_violated"] is True and result.details["claimed_epsilon"] == 1.0
    assert any(w.startswith("PRIVACY CLAIM REFUTED") for w in ctx.warnings)
    attacks = result.details["attacks"]
    assert set(attacks) == BLACK_BOX | {"downstream_loss", "downstream_lira"}
    # Every attack catches a copier, so the best one on each fold is as good as the best on all targets.
    for key in METRICS - {"epsilon_lower_bound"}:
        assert result.metrics[key].value == pytest.approx(max(a[key] for a in attacks.values()), abs=0.02)
        assert result.details["strongest_per_metric"][key] in attacks
        assert set(result.details["headline_attacks"][key]) <= set(attacks)
    # Bonferroni over 2 bounds per attack keeps the maximum at 95%.
    assert result.details["alpha_per_bound"] == pytest.approx(0.05 / (2 * len(attacks)))

    # The pixel distance attack, recomputed by brute force on the same targets.
    split = draw_targets(len(digits.members), len(digits.holdout), per_side=1000, reference=2000, seed=0)
    targets = split.targets(digits.members.x, digits.holdout.x).flatten(1).double()
    d = torch.cdist(targets, noisy.flatten(1).double()).min(1).values.numpy()
    assert attacks["distance_pixel"]["auc"] == pytest.approx(roc_auc_score(split.labels, -d))
    assert attacks["distance_pixel"]["n"] == {"members": 180, "nonmembers": 180}

    data = as_json(result)
    assert data["details"]["claim_violated"] is True
    assert data["metrics"]["epsilon_lower_bound"]["value"] >= 2


def test_real_images_from_neither_split_keep_the_claim(digits):
    ctx = context(digits.test, digits, epsilon=1.0)
    result = membership_check.run(ctx)
    assert result.details["claim_violated"] is False
    assert result.metrics["epsilon_lower_bound"].value <= 0.5
    assert result.metrics["auc"].ci[0] <= 0.5  # no evidence of leakage
    assert result.metrics["tpr_at_fpr_0p1pct"].ci[0] <= 0.01  # the README policy's bound, read at its lower end
    assert not any("PRIVACY CLAIM" in w for w in ctx.warnings)
    assert "downstream_lira" not in result.details["attacks"]  # the quick profile trains no shadows


def test_unlabelled_synthetic_set_skips_downstream_attacks_deterministically(digits):
    unlabelled = ImageSet(digits.test.x.clone(), name="unlabelled")
    first_ctx = context(unlabelled, digits, epsilon=None)
    first = membership_check.run(first_ctx)
    assert set(first.details["attacks"]) == BLACK_BOX
    assert any("downstream classifier did not run" in w for w in first_ctx.warnings)
    assert first.details["claimed_epsilon"] is None and first.details["claim_violated"] is False
    second = membership_check.run(context(unlabelled, digits, epsilon=None))
    assert as_json(first) == as_json(second)
    assert np.isfinite(first.metrics["auc"].value)


def test_the_registry_holds_every_attack_in_order():
    assert list(MEMBERSHIP_ATTACKS) == [
        "distance_pixel", "calibrated_distance_pixel", "distance_feature", "calibrated_distance_feature",
        "domias", "classifier", "downstream_loss", "downstream_lira",
    ]
    assert {MEMBERSHIP_ATTACKS[name].family for name in BLACK_BOX} == {"synthetic"}


def test_a_registered_toy_attack_is_run_audited_and_can_be_the_strongest(digits, monkeypatch):
    monkeypatch.setitem(MEMBERSHIP_ATTACKS, "toy_oracle", None)  # removed again after the test

    @register_membership_attack("toy_oracle", family="synthetic", space="pixel")
    def oracle(inputs, config):
        # Knows the answer: 1 for a target that is one of the members (exact pixel match), else 0.
        members = {tuple(row.tolist()) for row in digits.members.x.flatten(1)}
        return AttackScores(np.array([float(tuple(t.tolist()) in members) for t in inputs.target_images.flatten(1)]),
                            {"note": "knows the members"})

    result = membership_check.run(context(digits.test, digits, epsilon=1.0))
    toy = result.details["attacks"]["toy_oracle"]
    assert toy["auc"] == 1.0 and toy["family"] == "synthetic" and toy["space"] == "pixel" and toy["note"]
    assert result.details["strongest"] == "toy_oracle" and result.details["claim_violated"] is True
    assert result.details["headline_attacks"]["auc"] == ["toy_oracle", "toy_oracle"]
    assert result.metrics["auc"].value == 1.0
    assert result.details["alpha_per_bound"] == pytest.approx(0.05 / (2 * len(result.details["attacks"])))


def test_the_ceiling_and_verdict_say_when_a_claim_was_never_tested(tmp_path):
    from dpaudit.audit.pipeline import evaluate
    from dpaudit.datasets import load_split
    from dpaudit.manifest import Manifest

    reference = load_split("digits")
    copies = reference.members
    for claimed, verdict in [(1.0, "refuted"), (10.0, "inconclusive")]:
        result = evaluate(copies, reference, checks=["membership"], manifest=Manifest("copier", epsilon=claimed, delta=1e-5),
                          progress=False)
        details = result.checks["membership"].details
        assert details["verdict"] == verdict
        assert max(details["ceiling"].values()) < 10
        if verdict == "inconclusive":
            assert any("inconclusive" in w for w in result.warnings)
            assert details["canaries_needed"] is None  # the one-run delta term caps it below 10 at delta 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_random_split_passes_the_holdout_test(digits, seed):
    split = draw_targets(len(digits.members), len(digits.holdout), per_side=1000, reference=1000, seed=seed)
    test = membership_check.holdout_test(membership_check.attack_inputs(context(digits.holdout, digits), split), split)
    assert test["exchangeable"] and abs(test["auc"] - 0.5) < 0.1


def test_a_holdout_from_other_writers_is_flagged_and_its_numbers_invalid(digits, tmp_path):
    """digits' last 360 images (its test split) come from other writers than the rest: used as
    the holdout, they are nearer each other than the members are to them. The holdout test
    rejects, every membership number is marked invalid, no claim is refuted on it, and the gate
    fails a rule that reads one, saying why."""
    shifted = Reference(digits.members, digits.test, digits.holdout, "digits:other-writers", "digits")
    ctx = context(digits.holdout, shifted, epsilon=0.01)
    result = membership_check.run(ctx)
    assert not result.details["holdout_test"]["exchangeable"], result.details["holdout_test"]
    assert result.details["verdict"] == "invalid" and not result.details["claim_violated"]
    assert all(m.invalid for m in result.metrics.values())
    assert any(w.startswith("HOLDOUT NOT EXCHANGEABLE") for w in ctx.warnings)
    wrapper = AuditResult(synthetic={}, reference={}, feature_extractor={}, seed=0, profile="quick",
                          checks={"membership": result})
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmetric = "membership.auc"\nmax = 1.0\n')
    verdict = apply_policy(load_result(wrapper.save(tmp_path / "result.json")), load_policy(policy))
    assert not verdict.passed and "cannot be trusted: the holdout is not exchangeable" in verdict.outcomes[0].message
