"""The reconstruction checks: what a model trained on the synthetic set gives away about the REAL
members. One runner for every registered reconstruction attack (dpaudit/attacks/reconstruction.py):

1. the attack on the synthetic side (the classifier trained on the synthetic set, or the
   synthetic set itself for a malicious trainer);
2. its output matched against the real members (L2-nearest, best SSIM among the top-k, within
   the class where the attack gives labels) and against the synthetic set;
3. the same attack on the control side (the members), which shows what full leakage looks like;
4. the leakage metrics, each beside the baseline of holdout images matched against the same
   members (real images no generator saw, close to members by chance), the attack's own success
   metrics, details and the figures "grid" and "control_grid": reconstruction | nearest real
   member | nearest synthetic image.

Each registered attack becomes a check of its name (`CHECKS`); its settings are the profile's
field of that name, else the attack's Config defaults.
"""

from __future__ import annotations

import copy

import torch

from dpaudit.attacks import RECONSTRUCTION_ATTACKS
from dpaudit.attacks.reconstruction import Reconstruction, ReconstructionAttack, Victim
from dpaudit.audit.classifiers import TrainedClassifier, require_labels, trtr_classifier, tstr_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.figures import columns_grid
from dpaudit.audit.matching import Matches, expected_max, holdout_baseline, match_by_class
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.spec import CheckSpec

def leakage_metrics(ctx: AuditContext, matches: Matches, what: str) -> dict[str, Metric]:
    """Max and mean SSIM / PSNR of `what` to their nearest members and the share above the
    near-copy SSIM threshold, each with the holdout baseline for the same number of images."""
    baseline = holdout_baseline(ctx)
    threshold = ctx.profile.matching.near_copy_ssim
    n = len(matches)
    sizes = {"reconstructions": n, "members": len(ctx.reference.members), "holdout": len(baseline)}
    ssim, psnr = matches.best_ssim, matches.psnr
    return {
        "max_member_ssim": Metric(
            float(ssim.max()), "lower",
            f"highest SSIM of any of the {what} to a real member (baseline: expected max over as many holdout images)",
            range=(-1.0, 1.0), baseline=expected_max(baseline.best_ssim, n), n=sizes,
        ),
        "mean_member_ssim": Metric(
            float(ssim.mean()), "lower",
            f"mean SSIM of the {what} to their nearest real member (baseline: holdout images)",
            range=(-1.0, 1.0), baseline=float(baseline.best_ssim.mean()), n=sizes,
        ),
        "max_member_psnr": Metric(
            float(psnr.max()), "lower",
            f"highest PSNR (dB) of any of the {what} to its L2-nearest member (baseline: expected max over holdout images)",
            baseline=expected_max(baseline.psnr, n), n=sizes,
        ),
        "mean_member_psnr": Metric(
            float(psnr.mean()), "lower",
            f"mean PSNR (dB) of the {what} to their L2-nearest member (baseline: holdout images)",
            baseline=float(baseline.psnr.mean()), n=sizes,
        ),
        "share_above_threshold": Metric(
            float((ssim >= threshold).float().mean()), "lower",
            f"share of the {what} with SSIM >= {threshold:g} to some real member (baseline: holdout images)",
            range=(0.0, 1.0), baseline=float((baseline.best_ssim >= threshold).float().mean()), n=sizes,
        ),
    }


def control_metrics(metrics: dict[str, Metric], what: str) -> dict[str, Metric]:
    """The control run's leakage metrics, renamed `control_*` and marked informational."""
    return {
        f"control_{key}": Metric(
            m.value, "info", f"control ({what}): {m.meaning}", range=m.range, baseline=m.baseline, n=m.n
        )
        for key, m in metrics.items()
    }


def _victim(ctx: AuditContext, side: str) -> Victim:
    """The synthetic side (its TSTR classifier) or the control side (the members' TRTR classifier)."""
    images, classifier = (ctx.synthetic, tstr_classifier) if side == "synthetic" else (ctx.reference.members, trtr_classifier)

    def trained() -> tuple[torch.nn.Module, torch.Tensor]:
        fitted: TrainedClassifier = classifier(ctx)
        # The attacks change requires_grad flags; keep the shared classifier untouched.
        return copy.deepcopy(fitted.model).to(ctx.device).eval(), fitted.train_idx

    return Victim(side, images, trained, ctx.reference.test, ctx.reference.members.num_classes, ctx.seed, ctx.device)


def _matched(ctx: AuditContext, out: Reconstruction) -> tuple[Matches, Matches]:
    """(matches to the members, matches to the synthetic set), within the class when labelled."""
    top_k, transforms = ctx.profile.matching.top_k, ctx.profile.matching.transforms
    return (
        match_by_class(out.images, out.labels, ctx.reference.members, top_k, transforms),
        match_by_class(out.images, out.labels, ctx.synthetic, top_k, transforms),
    )


def _add_grid(ctx: AuditContext, result: CheckResult, name: str, out: Reconstruction, members: Matches,
              synthetic: Matches, caption: str) -> None:
    order = members.best_ssim.argsort(descending=True, stable=True)[: ctx.profile.grid_rows]
    result.add_figure(
        name,
        columns_grid([
            out.images[order],
            ctx.reference.members.take(members.best_ssim_idx[order]),
            ctx.synthetic.take(synthetic.best_ssim_idx[order]),
        ]),
        caption + " (reconstruction | nearest real member | nearest synthetic image, highest member SSIM first)",
    )


def run_attack(attack: ReconstructionAttack, ctx: AuditContext) -> CheckResult:
    """The check of one reconstruction attack (see the module docstring)."""
    require_labels(ctx.synthetic)
    config = ctx.profile.settings(attack.name)
    label = attack.name.replace("_", " ")
    target = attack.reconstruct(_victim(ctx, "synthetic"), config, label)
    members, synthetic = _matched(ctx, target)
    control = attack.reconstruct(_victim(ctx, "members"), config, f"{label} (control)")
    c_members, c_synthetic = _matched(ctx, control)

    result = CheckResult(attack.name)
    result.metrics = {
        **target.metrics,
        **leakage_metrics(ctx, members, attack.describes),
        "mean_synthetic_ssim": Metric(
            float(synthetic.best_ssim.mean()), "info",
            f"mean SSIM of the {attack.control_describes} to the nearest synthetic image"
            + (" of their class" if target.labels is not None else ""),
            range=(-1.0, 1.0), n={attack.counts: len(members)},
        ),
        **control.metrics,
        **control_metrics(leakage_metrics(ctx, c_members, attack.control_describes), attack.control_is),
    }
    result.details = {
        **target.details,
        "member_ssim": members.best_ssim.tolist(),
        "member_psnr": members.psnr.tolist(),
        "nearest_member_indices": members.best_ssim_idx.tolist(),
        "control": {**control.details, "member_ssim": c_members.best_ssim.tolist()},
    }
    _add_grid(ctx, result, "grid", target, members, synthetic, attack.caption)
    _add_grid(ctx, result, "control_grid", control, c_members, c_synthetic, attack.control_caption)
    return result


def check_of(attack: ReconstructionAttack) -> CheckSpec:
    """The check that runs `attack`."""
    return CheckSpec(
        name=attack.name, title=attack.title, question=attack.question, needs_labels=True,
        headlines=("max_member_ssim",), run=lambda ctx: run_attack(attack, ctx),
    )


CHECKS = [check_of(attack) for attack in RECONSTRUCTION_ATTACKS.values()]
