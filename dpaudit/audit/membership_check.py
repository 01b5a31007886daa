"""The membership check: membership-inference attacks and the empirical epsilon audit.

A balanced, seeded draw of member and non-member (holdout) targets is scored by every attack:
black-box attacks on the synthetic set (nearest-synthetic distance and its calibrated form in
pixel and feature space, DOMIAS, a LOGAN-style classifier) and, when the synthetic set is
labelled, attacks on the classifier trained on it (loss threshold, offline LiRA). The rest of
the holdout is the attackers' reference data. Each metric reports the strongest attack for it;
all attacks go in details["attacks"].

The epsilon lower bound is the largest of 2 x (number of attacks) bounds, each computed at
alpha / (2 x number of attacks) (Bonferroni), so the reported maximum holds at 95% confidence.
It assumes the generator was trained on exactly the audit's members, chosen at random.

Nearest-neighbour search is the similarity check's exact blocked search (passed to the attacks,
which may not import the audit). Features of the real sets are extracted for the target and
reference rows only; the synthetic set's come from the shared cache.
"""

from __future__ import annotations

import numpy as np
import torch

from dpaudit.attacks import downstream, membership
from dpaudit.attacks.base import FPR_LEVELS, AttackResult, TargetSplit, draw_targets
from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.similarity import nearest_neighbors
from dpaudit.audit.utility import tstr_classifier
from dpaudit.errors import DpauditError
from dpaudit.nets import make_classifier

PROFILES: dict[str, dict] = {
    # per_side: member and non-member targets each (capped by the data); reference: holdout
    # images kept for the attacker; pca_dim / kde_max_fit: DOMIAS; classifier_max_fit: rows
    # per class for the LOGAN classifier; lira_*: offline LiRA's OUT shadow models (none in quick,
    # fewer epochs than the TSTR classifier in standard: both to stay within the time budgets).
    "quick": {"per_side": 1000, "reference": 2000, "pca_dim": 8, "kde_max_fit": 5000, "classifier_max_fit": 2000,
              "lira_shadows": 0, "lira_train_size": 1000, "lira_epochs": 2},
    "standard": {"per_side": 2500, "reference": 5000, "pca_dim": 8, "kde_max_fit": 10000, "classifier_max_fit": 5000,
                 "lira_shadows": 4, "lira_train_size": 5000, "lira_epochs": 4},
    "paper": {"per_side": 5000, "reference": 5000, "pca_dim": 10, "kde_max_fit": 20000, "classifier_max_fit": 10000,
              "lira_shadows": 16, "lira_train_size": 5000, "lira_epochs": 50},
}
CONFIDENCE = 0.95
# delta of the bounds when the manifest claims none (the usual MNIST convention).
DEFAULT_DELTA = 1e-5

# metric -> (meaning, value of a blind guess)
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


def _black_box_scores(ctx: AuditContext, split: TargetSplit, settings: dict) -> dict[str, tuple[np.ndarray, dict]]:
    """Scores of the attacks on the synthetic set, in pixel and in feature space."""
    members, holdout = ctx.reference.members, ctx.reference.holdout
    pixels = (split.targets(members.x, holdout.x).flatten(1), split.reference(holdout.x).flatten(1),
              ctx.synthetic.x.flatten(1))
    # Only the target and reference rows of the real sets are needed: extract just those.
    features = (ctx.extractor(members.subset(split.member_idx)), ctx.extractor(holdout.subset(split.nonmember_idx)),
                ctx.extractor(holdout.subset(split.reference_idx)), ctx.features("synthetic"))
    features = (torch.cat(features[:2]), *features[2:])
    scores = {}
    for space, (targets, reference, synthetic) in (("pixel", pixels), ("feature", features)):
        scores[f"distance_{space}"] = (
            membership.distance_scores(targets, synthetic, nn_fn=nearest_neighbors),
            {"family": "synthetic", "space": space},
        )
        scores[f"calibrated_distance_{space}"] = (
            membership.calibrated_distance_scores(targets, synthetic, reference, nn_fn=nearest_neighbors),
            {"family": "synthetic", "space": space},
        )
    targets, reference, synthetic = features
    scores["domias"] = (
        membership.domias_scores(targets, synthetic, reference, n_components=settings["pca_dim"],
                                 max_fit=settings["kde_max_fit"], seed=ctx.seed),
        {"family": "synthetic", "space": "feature", "pca_dim": settings["pca_dim"]},
    )
    scores["classifier"] = (
        membership.classifier_scores(targets, synthetic, reference, max_fit=settings["classifier_max_fit"], seed=ctx.seed),
        {"family": "synthetic", "space": "feature"},
    )
    return scores


def _downstream_scores(ctx: AuditContext, split: TargetSplit, settings: dict) -> dict[str, tuple[np.ndarray, dict]]:
    """Scores of the attacks on the classifier trained on the synthetic set (none if unlabelled)."""
    try:
        model = tstr_classifier(ctx).model
    except DpauditError as e:
        ctx.warn(f"membership: the attacks on the downstream classifier did not run ({e})")
        return {}
    members, holdout = ctx.reference.members, ctx.reference.holdout
    x, y = split.targets(members.x, holdout.x), split.targets(members.y, holdout.y)
    scores = {"downstream_loss": (downstream.loss_scores(model, x, y), {"family": "downstream"})}
    n_shadows = settings["lira_shadows"]
    if n_shadows >= 2 and len(split.reference_idx) > 0:
        shadows = downstream.train_shadow_models(
            lambda: make_classifier(members.shape, members.num_classes),
            split.reference(holdout.x), split.reference(holdout.y),
            n_shadows=n_shadows, train_size=settings["lira_train_size"], epochs=settings["lira_epochs"],
            seed=ctx.seed, device=ctx.device,
        )
        scores["downstream_lira"] = (
            downstream.lira_offline_scores(model, shadows, x, y),
            {"family": "downstream", "shadows": n_shadows, "shadow_epochs": settings["lira_epochs"],
             "shadow_train_size": min(settings["lira_train_size"], len(split.reference_idx))},
        )
    return scores


def run(ctx: AuditContext) -> CheckResult:
    """The membership check (see the module docstring)."""
    settings = ctx.settings(PROFILES)
    reference = ctx.reference
    split = draw_targets(len(reference.members), len(reference.holdout), per_side=settings["per_side"],
                         reference=settings["reference"], seed=ctx.seed)
    if len(split.reference_idx) == 0:
        raise DpauditError("membership inference needs at least 3 holdout images (targets and a reference set).")
    scores = {**_black_box_scores(ctx, split, settings), **_downstream_scores(ctx, split, settings)}

    claimed = None if ctx.manifest is None else ctx.manifest.epsilon
    delta = DEFAULT_DELTA if ctx.manifest is None or ctx.manifest.delta is None else ctx.manifest.delta
    alpha = (1 - CONFIDENCE) / (2 * len(scores))
    results = {
        name: AttackResult.from_scores(name, s, split.labels, delta=delta, alpha=alpha, seed=ctx.seed, details=info)
        for name, (s, info) in scores.items()
    }

    n = split.to_dict()
    values = {name: _metric_values(r) for name, r in results.items()}
    strongest = {key: max(values, key=lambda name: values[name][key]) for key in (*METRIC_MEANINGS, "epsilon_lower_bound")}
    result = CheckResult("membership")
    for key, (meaning, baseline) in METRIC_MEANINGS.items():
        name = strongest[key]
        ci = results[name].auc_ci if key == "auc" else None
        result.metrics[key] = Metric(values[name][key], "lower", meaning, range=(0.0, 1.0), ci=ci, baseline=baseline, n=n)
    name = strongest["epsilon_lower_bound"]
    bound = values[name]["epsilon_lower_bound"]
    method = max(results[name].epsilon.values(), key=lambda b: b.value).method
    result.metrics["epsilon_lower_bound"] = Metric(
        bound, "lower",
        f"epsilon that every (epsilon, {delta:g})-DP claim must exceed, proven at {CONFIDENCE:.0%} confidence "
        "by the strongest attack",
        baseline=0.0, n=n,
    )
    violated = claimed is not None and bound > claimed
    claim_warning = None
    if violated:
        claim_warning = (
            f"PRIVACY CLAIM REFUTED: membership inference proves epsilon >= {bound:.2f} at {CONFIDENCE:.0%} "
            f"confidence ({name}, {method} bound), above the claimed epsilon {claimed:g}."
        )
        ctx.warn(claim_warning)
    result.details = {
        "attacks": {name: r.to_dict() for name, r in results.items()},
        "strongest": strongest["auc"],
        "strongest_per_metric": strongest,
        "claimed_epsilon": claimed,
        "claim_violated": violated,
        "claim_warning": claim_warning,  # the report shows it once, as its alert
        "epsilon_method": method,
        # The one-run bound is proven for one training run; the Clopper-Pearson one is the usual practice.
        "epsilon_by_method": {m: max(r.epsilon[m].value for r in results.values()) for m in ("clopper_pearson", "one_run")},
        "delta": delta,
        "confidence": CONFIDENCE,
        "alpha_per_bound": alpha,
        "targets": n,
        "assumption": "the generator was trained on exactly these members, chosen at random from the same pool as the holdout",
    }
    return result
