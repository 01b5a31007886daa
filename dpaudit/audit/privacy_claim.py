"""The privacy_claim check: the claimed epsilon re-accounted from the mechanism the manifest declares.

A manifest that declares its mechanism (details.history: one [noise_multiplier, sample_rate,
steps] entry per stage of Poisson-subsampled Gaussian releases, a full-batch Gaussian release
being [sigma, 1.0, 1]; details.adjacency: "add-remove" or "replace-one") lets the audit recompute
epsilon at the claimed delta with Google's dp-accounting (PLD and RDP), independently of the
accountant the generator used (opacus for dpaudit's). The claim is supported when the smaller of
the two is at most the claimed epsilon (within REACCOUNT_TOLERANCE); otherwise the declared
mechanism does not give the privacy the manifest claims, whatever the attacks found.
`audit-training` re-accounts every run's manifest the same way.
"""

from __future__ import annotations

import math

from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult
from dpaudit.audit.spec import CheckSpec
from dpaudit.errors import DpauditError
from dpaudit.metric import Metric
from dpaudit.privacy import DEFAULT_DELTA, reaccount

# A declared mechanism supports the claim when an independent accountant gives at most this much
# more (relative): the accountants' own discretisation and search tolerances.
REACCOUNT_TOLERANCE = 1e-3
WARNING_PREFIX = "PRIVACY CLAIM NOT SUPPORTED"


def reaccount_declared(details: dict, epsilon: float, delta: float) -> dict | None:
    """The declared history in a manifest's `details` re-accounted at `delta` against the claimed
    `epsilon`: {"pld", "rdp" (add-remove only), "epsilon" (the smaller), "supports_claim",
    "adjacency"}, or {"note"} when the declaration cannot be re-accounted; None when it declares
    no history."""
    history = details.get("history")
    if not history:
        return None
    adjacency = details.get("adjacency") or "add-remove"
    try:
        entries = [tuple(h) for h in history]
        epsilons = reaccount(entries, delta, adjacency=adjacency)
    except (DpauditError, TypeError, ValueError) as e:
        return {"note": f"not re-accounted: {e}"}
    smallest = min(epsilons.values())
    return {**epsilons, "epsilon": smallest, "adjacency": adjacency,
            "supports_claim": smallest <= epsilon * (1 + REACCOUNT_TOLERANCE)}


def not_supported_warning(reaccounted: dict, epsilon: float, delta: float, where: str) -> str:
    """The one-sentence warning for a declared mechanism that does not support the claim."""
    return (f"{WARNING_PREFIX}: {where} declares a mechanism whose epsilon at delta {delta:g} is "
            f"{reaccounted['epsilon']:.3g} by dp-accounting ({reaccounted['adjacency']} adjacency), above the claimed "
            f"epsilon {epsilon:g}.")


def run(ctx: AuditContext) -> CheckResult:
    """Re-account the manifest's declared mechanism at its claimed delta (NaN metrics where there
    is no claim or no declared mechanism to re-account)."""
    manifest = ctx.manifest
    claimed = math.nan if manifest is None or manifest.epsilon is None else manifest.epsilon
    delta = manifest.delta if manifest is not None and manifest.delta is not None else DEFAULT_DELTA
    details = {"claimed_epsilon": None if math.isnan(claimed) else claimed, "delta": delta,
               "claim_violated": False, "claim_warning": None}
    reaccounted = None
    if not math.isfinite(claimed):
        details.update(verdict="no claim", note="the manifest claims no finite epsilon")
    else:
        details.update(mechanism=manifest.details.get("mechanism"), history=manifest.details.get("history"))
        reaccounted = reaccount_declared(manifest.details, claimed, delta)
        if reaccounted is None:
            details.update(verdict="not declared", note="the manifest declares no mechanism (details.history), "
                           "so the claim cannot be re-accounted")
        elif "note" in reaccounted:
            details.update(verdict="not re-accounted", note=reaccounted["note"])
            ctx.warn(f"privacy_claim: the manifest's declared mechanism could not be re-accounted ({reaccounted['note']}).")
            reaccounted = None
        else:
            supported = reaccounted["supports_claim"]
            details.update(verdict="supported" if supported else "not supported", reaccounted=reaccounted,
                           adjacency=reaccounted["adjacency"])
            if not supported:
                details.update(claim_violated=True,
                               claim_warning=not_supported_warning(reaccounted, claimed, delta, "the manifest"))
                ctx.warn(details["claim_warning"])
    result = CheckResult("privacy_claim")
    result.metrics = {
        "reaccounted_epsilon": Metric(
            math.nan if reaccounted is None else reaccounted["epsilon"], "lower",
            f"epsilon of the declared mechanism at delta {delta:g}, recomputed with dp-accounting (the smaller of its "
            "PLD and RDP upper bounds); above the claim, the claim is not supported",
            target=None if math.isnan(claimed) else claimed),
        "claimed_epsilon": Metric(claimed, "info", "the epsilon the manifest claims"),
    }
    result.details = details
    return result


CHECK = CheckSpec(
    name="privacy_claim",
    title="Privacy claim",
    question="Does the mechanism the manifest declares give the epsilon it claims?",
    needs_labels=False,
    headlines=("reaccounted_epsilon",),
    run=run,
)
