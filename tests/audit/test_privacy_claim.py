"""The privacy_claim check: a manifest's declared mechanism re-accounted with dp-accounting,
against the claimed epsilon; a claim the mechanism does not give is flagged and gated."""

import math

import pytest

from dpaudit.audit import privacy_claim
from dpaudit.audit.context import AuditContext
from dpaudit.audit.gate import load_policy, apply_policy
from dpaudit.audit.pipeline import evaluate
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest
from dpaudit.privacy import PrivacyBudget, dpsgd_noise
from dpaudit.reports.html import render_report

pytest.importorskip("dp_accounting")


def claim(epsilon, history, **details):
    return Manifest("third-party", epsilon=epsilon, delta=1e-5, details={"history": history, **details})


def run(digits, manifest):
    ctx = AuditContext(digits.holdout, digits, "quick", 0, manifest=manifest)
    return privacy_claim.CHECK(ctx), ctx


def test_an_opacus_calibrated_history_supports_its_claim(digits):
    sigma = dpsgd_noise(PrivacyBudget(2.0, 1e-5), 0.05, 500)
    result, ctx = run(digits, claim(2.0, [[sigma, 0.05, 500]]))
    assert result.details["verdict"] == "supported"
    # PLD is tighter than opacus' RDP, so the re-accounted epsilon sits below the claim, not far below.
    assert 1.2 < result.metrics["reaccounted_epsilon"].value <= 2.0
    assert not result.details["claim_violated"] and not ctx.warnings


@pytest.mark.parametrize("history, adjacency", [
    ([[0.5, 0.1, 1000]], "add-remove"),          # far too little noise for epsilon 1
    ([[1.0, 0.01, 1000], [0.0, 1.0, 1]], None),  # one stage without noise: no privacy at all
    ([[0.8, 0.01, 1000]], "replace-one"),        # epsilon 1.55 under replace-one (PLD)
])
def test_a_mechanism_that_does_not_give_the_claim_is_flagged(digits, history, adjacency):
    details = {} if adjacency is None else {"adjacency": adjacency}
    result, ctx = run(digits, claim(1.0, history, **details))
    assert result.details["verdict"] == "not supported" and result.details["claim_violated"]
    assert result.metrics["reaccounted_epsilon"].value > result.metrics["claimed_epsilon"].value
    assert ctx.warnings == [result.details["claim_warning"]]
    assert result.details["claim_warning"].startswith("PRIVACY CLAIM NOT SUPPORTED")
    if any(h[0] == 0 for h in history):
        assert result.metrics["reaccounted_epsilon"].value == math.inf


def test_undeclared_and_malformed_mechanisms_are_said_so(digits):
    result, ctx = run(digits, Manifest("x", epsilon=1.0, delta=1e-5))
    assert result.details["verdict"] == "not declared" and not ctx.warnings
    assert math.isnan(result.metrics["reaccounted_epsilon"].value)
    result, _ = run(digits, None)
    assert result.details["verdict"] == "no claim"
    result, ctx = run(digits, claim(1.0, [[1.0, 2.0, 10]]))
    assert result.details["verdict"] == "not re-accounted" and "is not [noise_multiplier" in result.details["note"]
    assert len(ctx.warnings) == 1


def test_evaluate_alerts_and_the_gate_fails_an_unsupported_claim(digits, tmp_path):
    manifest = claim(1.0, [[0.5, 0.1, 1000]])
    synthetic = ImageSet(digits.holdout.x, digits.holdout.y, 10, name="synthetic")
    result = evaluate(synthetic, digits, checks=["privacy_claim"], manifest=manifest, progress=False)
    html = render_report(result)
    assert '<div class="alert">PRIVACY CLAIM NOT SUPPORTED' in html
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmetric = "privacy_claim.reaccounted_epsilon"\nmax_from = "manifest.epsilon"\n')
    assert not apply_policy(result, load_policy(policy)).passed
    supported = evaluate(synthetic, digits, checks=["privacy_claim"], progress=False,
                         manifest=claim(10.0, [[2.0, 0.01, 100]]))
    assert apply_policy(supported, load_policy(policy)).passed
