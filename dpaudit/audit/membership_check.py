"""The membership check: membership-inference attacks and the empirical epsilon audit.

A balanced, seeded draw of member and non-member (holdout) targets is scored by every registered
membership attack (dpaudit/attacks/base.py: black-box attacks on the synthetic set in pixel and
feature space, and, when the synthetic set is labelled, attacks on the classifier trained on it).
The rest of the holdout is the attackers' reference data. Each metric reports the strongest
attack for it, cross-fitted (`dpaudit.attacks.selection`: chosen on one half of the targets, read
on the other, both ways), so that the choice among attacks does not inflate it; every attack's
figures on all targets go in details["attacks"].

The epsilon lower bound is the largest of (number of bounds) x (number of attacks) bounds (the
auditor's Clopper-Pearson and one-run bounds), each computed at alpha / that number
(Bonferroni), so the reported maximum holds at 95% confidence. It assumes the generator was
trained on exactly the audit's members, chosen at random.

Before any number is trusted, members and holdout are tested for exchangeability (their
targets' distances to the reference images, `holdout_test`): a holdout from another
distribution makes the attacks measure the difference between the two, not membership, so
where the test rejects, every metric is marked invalid (the gate fails a rule that reads one,
with the reason) and the verdict is `invalid`.

Features of the real sets are extracted for the target and reference rows only; the synthetic
set's come from the shared cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import mannwhitneyu

from dpaudit.attacks import MEMBERSHIP_ATTACKS
from dpaudit.attacks.auditor import RELEASE_BOUNDS, CanaryScoreAuditor, canaries_needed, claim_verdict
from dpaudit.attacks.base import FPR_LEVELS, AttackResult, MembershipInputs, TargetSplit, draw_targets
from dpaudit.attacks.downstream import LiraConfig
from dpaudit.attacks.membership import DomiasConfig, LoganConfig
from dpaudit.attacks.selection import cross_fit
from dpaudit.audit.classifiers import tstr_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.spec import CheckSpec
from dpaudit.errors import DpauditError
from dpaudit.neighbors import nearest_distance
from dpaudit.nets import make_classifier
from dpaudit.privacy import DEFAULT_DELTA

CONFIDENCE = 0.95
CROSS_FIT_MEANING = ("the strongest attack is chosen on one half of the targets and read on the other, both ways, "
                     "so that choosing among the attacks does not inflate it")
# Members and holdout are tested for exchangeability at this level before the membership numbers
# are trusted; below it, they are marked invalid.
EXCHANGEABILITY_LEVEL = 0.01


@dataclass(frozen=True)
class MembershipConfig:
    """`per_side` member and non-member targets each (capped by the data), `reference` holdout
    images kept for the attacker, and the settings of the attacks that have any, by registered
    name (an attack missing here runs with its Config's defaults)."""

    per_side: int = 1000
    reference: int = 2000
    attacks: dict[str, Any] = field(default_factory=lambda: {
        "domias": DomiasConfig(), "classifier": LoganConfig(), "downstream_lira": LiraConfig(),
    })

    def attack_config(self, name: str) -> Any:
        """The settings of the registered attack `name`."""
        return self.attacks.get(name, MEMBERSHIP_ATTACKS[name].default_config())


# metric -> (meaning, value of a blind guess); each is cross-fitted (dpaudit.attacks.selection)
METRIC_MEANINGS = {
    "auc": ("area under the ROC curve of the strongest membership attack (0.5 = guessing)", 0.5),
    "advantage": ("max over thresholds of TPR - FPR of the strongest attack (0 = guessing)", 0.0),
    **{
        f"tpr_at_fpr_{key}": (f"share of members caught at {level:.1%} of non-members wrongly flagged", level)
        for key, level in FPR_LEVELS.items()
    },
}


def _metric_values(result: AttackResult) -> dict[str, float]:
    return {
        "auc": result.auc,
        "advantage": result.advantage,
        **{f"tpr_at_fpr_{key}": value for key, value in result.tpr_at.items()},
        "epsilon_lower_bound": result.epsilon_lower_bound,
    }


def attack_inputs(ctx: AuditContext, split: TargetSplit) -> MembershipInputs:
    """What the attacks are handed: the targets, the attacker's reference images, the synthetic
    set, their features (extracted once, for the target and reference rows only) and the
    classifier trained on the synthetic set (None, with a warning, where there is none)."""
    members, holdout = ctx.reference.members, ctx.reference.holdout
    features: dict[str, torch.Tensor] = {}

    def feature_rows(role: str) -> torch.Tensor:
        if role not in features:
            if role == "targets":
                features[role] = torch.cat([ctx.real_features(members.subset(split.member_idx)),
                                            ctx.real_features(holdout.subset(split.nonmember_idx))])
            elif role == "reference":
                features[role] = ctx.real_features(holdout.subset(split.reference_idx))
            else:
                features[role] = ctx.features("synthetic")
        return features[role]

    def downstream_model() -> torch.nn.Module | None:
        try:
            return tstr_classifier(ctx).model
        except DpauditError as e:
            ctx.warn(f"membership: the attacks on the downstream classifier did not run ({e})")
            return None

    labelled = members.y is not None and holdout.y is not None
    return MembershipInputs(
        target_images=split.targets(members.pixels, holdout.pixels),
        target_labels=split.targets(members.y, holdout.y) if labelled else None,
        reference_images=split.reference(holdout.pixels),
        reference_labels=split.reference(holdout.y) if labelled else None,
        synthetic_images=ctx.synthetic.pixels,
        features=feature_rows,
        downstream_model=downstream_model,
        make_model=lambda: make_classifier(members.shape, members.num_classes),
        seed=ctx.seed,
        device=ctx.device,
        transforms=ctx.profile.matching.transforms,
    )


def holdout_test(inputs: MembershipInputs, split: TargetSplit) -> dict:
    """Are the holdout and the members exchangeable? A two-sided Mann-Whitney test (scipy) of the
    member targets' pixel distance to the nearest reference image against the non-member
    targets': the quantity every calibrated attack compares. The reference set is disjoint from
    both, so under exchangeability the two samples are i.i.d. from one distribution and the
    test's level is exact, whatever the generator did (the synthetic set plays no part)."""
    m = len(split.member_idx)
    distances = nearest_distance(inputs.target_images, inputs.reference_images).numpy()
    test = mannwhitneyu(distances[:m], distances[m:], alternative="two-sided")
    return {"statistic": "Mann-Whitney U of the distance to the nearest reference image, members against non-members",
            "auc": float(test.statistic) / (m * (len(distances) - m)), "p_value": float(test.pvalue),
            "level": EXCHANGEABILITY_LEVEL, "exchangeable": bool(test.pvalue >= EXCHANGEABILITY_LEVEL)}


def run(ctx: AuditContext) -> CheckResult:
    """The membership check (see the module docstring)."""
    config = ctx.profile.membership
    reference = ctx.reference
    split = draw_targets(len(reference.members), len(reference.holdout), per_side=config.per_side,
                         reference=config.reference, seed=ctx.seed)
    if len(split.reference_idx) == 0:
        raise DpauditError("membership inference needs at least 3 holdout images (targets and a reference set).")
    inputs = attack_inputs(ctx, split)
    exchangeability = holdout_test(inputs, split)
    scores = {}
    for name, attack in MEMBERSHIP_ATTACKS.items():
        out = attack.run(inputs, config.attack_config(name))
        if out is not None:
            scores[name] = (out.scores, out.details)

    claimed = None if ctx.manifest is None else ctx.manifest.epsilon
    delta = DEFAULT_DELTA if ctx.manifest is None or ctx.manifest.delta is None else ctx.manifest.delta
    alpha = (1 - CONFIDENCE) / (len(RELEASE_BOUNDS) * len(scores))
    results = {
        name: AttackResult.from_scores(name, s, split.labels, delta=delta, alpha=alpha, seed=ctx.seed, details=info)
        for name, (s, info) in scores.items()
    }

    n = split.to_dict()
    values = {name: _metric_values(r) for name, r in results.items()}
    strongest = {key: max(values, key=lambda name: values[name][key]) for key in (*METRIC_MEANINGS, "epsilon_lower_bound")}
    try:
        headlines = cross_fit({name: r.scores for name, r in results.items()}, split.labels, list(METRIC_MEANINGS),
                              seed=ctx.seed)
    except ValueError as e:
        raise DpauditError(f"membership inference: {e}; the members or the holdout are too small.") from None
    result = CheckResult("membership")
    for key, (meaning, baseline) in METRIC_MEANINGS.items():
        headline = headlines[key]
        result.metrics[key] = Metric(headline.value, "lower", f"{meaning}; {CROSS_FIT_MEANING}", range=(0.0, 1.0),
                                     ci=headline.ci, baseline=baseline, n=n)
    name = strongest["epsilon_lower_bound"]
    bound = values[name]["epsilon_lower_bound"]
    method = max(results[name].epsilon.values(), key=lambda b: b.value).method
    result.metrics["epsilon_lower_bound"] = Metric(
        bound, "lower",
        f"epsilon that every (epsilon, {delta:g})-DP claim must exceed, proven at {CONFIDENCE:.0%} confidence "
        "by the strongest attack",
        baseline=0.0, n=n,
    )
    holdout_warning = None
    if not exchangeability["exchangeable"]:
        holdout_warning = (
            "HOLDOUT NOT EXCHANGEABLE: the members and the holdout differ (their distances to the reference images, "
            f"Mann-Whitney p = {exchangeability['p_value']:.3g} < {EXCHANGEABILITY_LEVEL:g}), so the membership attacks measure that "
            "difference, not membership: their numbers and the epsilon bound are invalid. Draw the holdout at random "
            "from the same pool as the members (README: Splits)."
        )
        ctx.warn(holdout_warning)
        for metric in result.metrics.values():
            metric.invalid = "the holdout is not exchangeable with the members (membership.details.holdout_test)"
    violated = claimed is not None and bound > claimed and exchangeability["exchangeable"]
    claim_warning = None
    if violated:
        claim_warning = (
            f"PRIVACY CLAIM REFUTED: membership inference proves epsilon >= {bound:.2f} at {CONFIDENCE:.0%} "
            f"confidence ({name}, {method} bound), above the claimed epsilon {claimed:g}."
        )
        ctx.warn(claim_warning)
    perfect = CanaryScoreAuditor(split.labels.astype(float), split.labels)
    ceilings = {m: perfect.ceiling(m, delta=delta, alpha=alpha, seed=ctx.seed) for m in RELEASE_BOUNDS}
    ceiling = max(ceilings.values())
    verdict = claim_verdict(bound, ceiling, claimed) if exchangeability["exchangeable"] else "invalid"
    needed = None
    if verdict == "inconclusive":
        # the one-run theorem is what a larger audit would rely on
        needed = canaries_needed("one_run", claimed, delta=delta, alpha=alpha)
        more = f"about {needed} targets would be needed" if needed else "no number of targets would do at this delta"
        ctx.warn(f"membership: with {n['members']} targets a side no attack could have proven "
                 f"an epsilon above {ceiling:.2f}, so the claimed epsilon {claimed:g} is untested (inconclusive); "
                 f"{more}, or use `dpaudit audit-training`.")
    result.details = {
        "holdout_test": exchangeability,
        "holdout_warning": holdout_warning,  # the report shows it as an alert
        "ceiling": ceilings,
        "verdict": verdict,
        "canaries_needed": needed,
        "attacks": {name: r.to_dict() for name, r in results.items()},
        "strongest": strongest["auc"],  # on all targets, as in "attacks"
        "strongest_per_metric": strongest,
        # the attack each fold's headline reading used, chosen on the other fold (dpaudit.attacks.selection)
        "headline_attacks": {key: list(h.chosen) for key, h in headlines.items()},
        "claimed_epsilon": claimed,
        "claim_violated": violated,
        "claim_warning": claim_warning,  # the report shows it once, as its alert
        "epsilon_method": method,
        # The one-run bound is proven for one training run; the Clopper-Pearson one is the usual practice.
        "epsilon_by_method": {m: max(r.epsilon[m].value for r in results.values()) for m in RELEASE_BOUNDS},
        "delta": delta,
        "confidence": CONFIDENCE,
        "alpha_per_bound": alpha,
        "targets": n,
        "assumption": "the generator was trained on exactly these members, chosen at random from the same pool as the holdout",
    }
    return result


CHECK = CheckSpec(
    name="membership",
    title="Membership inference",
    question="Does it leak who was in the training set? Attacks try to tell members from holdout images; an AUC of "
    "0.5 is chance. The true-positive rate at a low false-positive rate is what matters for privacy, and it bounds "
    "epsilon from below.",
    needs_labels=False,
    headlines=("auc", "epsilon_lower_bound"),
    run=run,
)
