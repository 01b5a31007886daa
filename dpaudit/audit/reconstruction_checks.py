"""Reconstruction checks: what a model trained on the synthetic set gives away about the REAL members.

Three attacks (dpaudit.attacks) rebuild images out of a classifier trained on the synthetic set;
each reconstruction is matched against the real members (L2-nearest, best SSIM among the top-k,
as in the similarity check) and the leakage is read beside the baseline of holdout images
matched against the same members (real images no generator saw, close to members by chance):

- `gradient_matching`: Inverting Gradients on batches of the TSTR classifier's own training
  samples; also scored against the attacked batch (did the attack work at all?).
- `gan_attack`: class prototypes generated against the fixed TSTR classifier, matched against
  the members of their class.
- `memorization`: a malicious trainer hides synthetic images in the classifier it returns
  (correlated-value encoding); the decoded images are matched against the members.

Each has a control: the same attack on the same architecture trained on the real members
(gradient matching, GAN) or run on the members (memorization), which shows what full leakage
looks like. Figures "grid": reconstruction | nearest real member | nearest synthetic image.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torchvision.utils import make_grid

from dpaudit.attacks.gan_attack import GANAttackConfig, gan_attack
from dpaudit.attacks.gradient_matching import InversionConfig, attack_batches
from dpaudit.attacks.memorization import MemorizationConfig, malicious_train
from dpaudit.audit import similarity
from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.similarity import Matches, holdout_baseline, match_to_reference, pairwise_ssim
from dpaudit.audit.utility import TSTRModel, check_labels, trtr_classifier, tstr_classifier
from dpaudit.images import ImageSet, to_uint8
from dpaudit.nets import accuracy

PROFILES: dict[str, dict] = {
    # gradient_matching: `batches` batches of `batch_size` training samples, each inverted with
    # `iterations` steps and `restarts` random starts. gan_attack: `steps` generator updates,
    # `prototypes` images per class. memorization: a malicious trainer on `max_train` images
    # (a seeded sample) for `epochs` epochs, hiding `secrets` images.
    "quick": {
        "gradient_matching": {"batches": 4, "batch_size": 1, "iterations": 100, "restarts": 1, "method": "geiping"},
        "gan_attack": {"steps": 100, "prototypes": 2},
        "memorization": {"method": "correlation", "secrets": 8, "epochs": 3, "max_train": 1000},
        "grid_rows": 8,
    },
    "standard": {
        "gradient_matching": {"batches": 8, "batch_size": 1, "iterations": 300, "restarts": 1, "method": "geiping"},
        "gan_attack": {"steps": 300, "prototypes": 4},
        "memorization": {"method": "correlation", "secrets": 32, "epochs": 6, "max_train": 5000},
        "grid_rows": 12,
    },
    "paper": {
        "gradient_matching": {"batches": 64, "batch_size": 1, "iterations": 2000, "restarts": 4, "method": "geiping"},
        "gan_attack": {"steps": 3000, "prototypes": 8},
        "memorization": {"method": "correlation", "secrets": 64, "epochs": 30, "max_train": None},
        "grid_rows": 16,
    },
}

GRID_TILE = 28


# ---------------------------------------------------------------- scoring


def expected_max(values: torch.Tensor, n: int) -> float:
    """E[max of n draws with replacement from `values`]: the baseline for a max over n
    reconstructions (closed form over the order statistics: P(max = v_(i)) = (i/N)^n - ((i-1)/N)^n)."""
    v = values.double().sort().values
    i = torch.arange(1, len(v) + 1, dtype=torch.float64) / len(v)
    return float((v * (i.pow(n) - (i - 1 / len(v)).pow(n))).sum())


def _threshold(ctx: AuditContext) -> float:
    return ctx.settings(similarity.PROFILES)["near_copy_ssim"]


def _top_k(ctx: AuditContext) -> int:
    return ctx.settings(similarity.PROFILES)["top_k"]


def match_by_class(queries: torch.Tensor, labels: torch.Tensor | None, refs: ImageSet, top_k: int) -> Matches:
    """`match_to_reference` restricted to the reference images of each query's class (all of
    them when `labels` is None); indices point into `refs`."""
    if labels is None or refs.y is None:
        return match_to_reference(queries, refs.x, top_k)
    fields = {name: torch.empty(len(queries)) for name in ("l2", "psnr", "ssim", "best_ssim")}
    fields.update(idx=torch.empty(len(queries), dtype=torch.long), best_ssim_idx=torch.empty(len(queries), dtype=torch.long))
    for c in labels.unique().tolist():
        rows, pool = torch.nonzero(labels == c).flatten(), torch.nonzero(refs.y == c).flatten()
        if len(pool) == 0:
            pool = torch.arange(len(refs))
        m = match_to_reference(queries[rows], refs.x[pool], top_k)
        for name in ("l2", "psnr", "ssim", "best_ssim"):
            fields[name][rows] = getattr(m, name)
        fields["idx"][rows] = pool[m.idx]
        fields["best_ssim_idx"][rows] = pool[m.best_ssim_idx]
    return Matches(**fields)


def leakage_metrics(ctx: AuditContext, matches: Matches, what: str) -> dict[str, Metric]:
    """Max and mean SSIM / PSNR of `what` to their nearest members and the share above the
    near-copy SSIM threshold, each with the holdout baseline for the same number of images."""
    baseline = holdout_baseline(ctx)
    threshold = _threshold(ctx)
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


def grid_figure(columns: list[torch.Tensor]) -> np.ndarray:
    """A uint8 image: one row per reconstruction, the given columns side by side (white gutters),
    tiny images enlarged to about GRID_TILE pixels."""
    scale = max(1, GRID_TILE // columns[0].shape[-1])
    tiles = torch.stack(columns, 1).flatten(0, 1)  # row-major: (n * columns) x C x H x W
    tiles = tiles.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(tiles.clamp(0, 1), nrow=len(columns), padding=2, pad_value=1.0)
    image = to_uint8(grid).permute(1, 2, 0).numpy()
    return image[:, :, 0] if columns[0].shape[1] == 1 else image


def _score(ctx: AuditContext, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[Matches, Matches]:
    """(matches to the members, matches to the synthetic set), within the class when labelled."""
    top_k = _top_k(ctx)
    return (
        match_by_class(images, labels, ctx.reference.members, top_k),
        match_by_class(images, labels, ctx.synthetic, top_k),
    )


def _grid(ctx: AuditContext, result: CheckResult, images, members: Matches, synthetic: Matches, caption: str, name: str = "grid") -> None:
    rows = ctx.settings(PROFILES)["grid_rows"]
    order = members.best_ssim.argsort(descending=True, stable=True)[:rows]
    result.add_figure(
        name,
        grid_figure([
            images[order],
            ctx.reference.members.x[members.best_ssim_idx[order]],
            ctx.synthetic.x[synthetic.best_ssim_idx[order]],
        ]),
        caption + " (reconstruction | nearest real member | nearest synthetic image, highest member SSIM first)",
    )


def _model_copy(trained: TSTRModel) -> torch.nn.Module:
    """The attacks change requires_grad flags; keep the shared cached model untouched."""
    return copy.deepcopy(trained.model).cpu().eval()


# ---------------------------------------------------------------- gradient matching


def _sample_batches(images: ImageSet, pool: torch.Tensor, n_batches: int, batch_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    pick = pool[torch.randperm(len(pool), generator=generator)[: n_batches * batch_size]]
    return [(images.x[b], images.y[b]) for b in pick.split(batch_size)], pick


def _invert(trained: TSTRModel, images: ImageSet, config: InversionConfig, settings: dict, seed: int, label: str):
    batches, pick = _sample_batches(images, trained.train_idx, settings["batches"], settings["batch_size"], seed)
    inversions = attack_batches(_model_copy(trained), batches, config, seed, progress=label)
    recon = torch.cat([inv.images for inv in inversions])
    labels = torch.cat([inv.labels for inv in inversions])
    batch_psnr = torch.cat([inv.psnr for inv in inversions])
    batch_ssim = pairwise_ssim(recon, images.x[pick])
    return recon, labels, pick, batch_psnr, batch_ssim, inversions


def run_gradient_matching(ctx: AuditContext) -> CheckResult:
    """Invert the gradients of the TSTR classifier on batches of its training samples and score
    the reconstructions against the attacked batch and against the nearest real members."""
    start = time.perf_counter()
    settings = ctx.settings(PROFILES)["gradient_matching"]
    config = InversionConfig(
        method=settings["method"], iterations=settings["iterations"], restarts=settings["restarts"],
        infer_labels=settings["batch_size"] == 1,
    )
    tstr = tstr_classifier(ctx)
    recon, labels, pick, batch_psnr, batch_ssim, inversions = _invert(
        tstr, ctx.synthetic, config, settings, ctx.seed, "gradient matching"
    )
    members, synthetic = _score(ctx, recon, labels)
    trtr = trtr_classifier(ctx)
    c_recon, c_labels, c_pick, c_psnr, c_ssim, _ = _invert(
        trtr, ctx.reference.members, config, settings, ctx.seed, "gradient matching (control)"
    )
    c_members, _ = _score(ctx, c_recon, c_labels)

    n = {"reconstructions": len(recon)}
    result = CheckResult("gradient_matching")
    result.metrics = {
        "batch_psnr": Metric(
            float(batch_psnr.mean()), "info",
            "mean PSNR (dB) of a reconstruction to the synthetic training image it was inverted from (attack success)",
            n=n,
        ),
        "batch_ssim": Metric(
            float(batch_ssim.mean()), "info",
            "mean SSIM of a reconstruction to the synthetic training image it was inverted from (attack success)",
            range=(-1.0, 1.0), n=n,
        ),
        **leakage_metrics(ctx, members, "gradient-matching reconstructions"),
        "control_batch_psnr": Metric(
            float(c_psnr.mean()), "info",
            "control: mean PSNR (dB) of a reconstruction to the member it was inverted from, on the classifier trained on members",
            n=n,
        ),
        **control_metrics(leakage_metrics(ctx, c_members, "reconstructions"), "classifier trained on the members"),
    }
    labels_inferred = all(inv.labels_inferred for inv in inversions)
    result.details = {
        "method": config.method,
        "config": {**settings, "lr": config.lr, "tv_weight": config.tv_weight},
        "labels": "recovered from the output layer's gradient (iDLG)" if labels_inferred else "assumed known",
        "label_accuracy": float((labels == ctx.synthetic.y[pick]).float().mean()),
        "attacked_synthetic_indices": pick.tolist(),
        "matching_loss": [inv.loss for inv in inversions],
        "batch_psnr": batch_psnr.tolist(),
        "member_ssim": members.best_ssim.tolist(),
        "member_psnr": members.psnr.tolist(),
        "nearest_member_indices": members.best_ssim_idx.tolist(),
        "mean_synthetic_ssim": float(synthetic.best_ssim.mean()),
        "control": {
            "attacked_member_indices": c_pick.tolist(),
            "batch_psnr": c_psnr.tolist(),
            "batch_ssim": c_ssim.tolist(),
            "member_ssim": c_members.best_ssim.tolist(),
        },
    }
    _grid(ctx, result, recon, members, synthetic, "gradient inversion of the classifier trained on the synthetic set")
    c_synthetic = match_by_class(c_recon, c_labels, ctx.synthetic, _top_k(ctx))
    _grid(ctx, result, c_recon, c_members, c_synthetic, "control: gradient inversion of the classifier trained on the members", "control_grid")
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- GAN-based attack


def run_gan_attack(ctx: AuditContext) -> CheckResult:
    """Generate class prototypes against the fixed TSTR classifier (Hitaj et al.) and match them
    against the real members of their class and the synthetic images of their class."""
    start = time.perf_counter()
    settings = ctx.settings(PROFILES)["gan_attack"]
    config = GANAttackConfig(steps=settings["steps"], n_prototypes=settings["prototypes"])
    shape, num_classes = ctx.reference.members.shape, ctx.reference.members.num_classes
    protos = gan_attack(_model_copy(tstr_classifier(ctx)), shape, num_classes, config=config, seed=ctx.seed, progress="GAN attack")
    members, synthetic = _score(ctx, protos.images, protos.labels)
    control = gan_attack(
        _model_copy(trtr_classifier(ctx)), shape, num_classes, config=config, seed=ctx.seed, progress="GAN attack (control)"
    )
    c_members, c_synthetic = _score(ctx, control.images, control.labels)

    n = {"prototypes": len(protos.labels)}
    result = CheckResult("gan_attack")
    result.metrics = {
        "target_confidence": Metric(
            float(protos.confidence.mean()), "info",
            "mean probability the attacked classifier gives a prototype's target class (attack success)",
            range=(0.0, 1.0), n=n,
        ),
        **leakage_metrics(ctx, members, "GAN prototypes (matched within their class)"),
        "mean_synthetic_ssim": Metric(
            float(synthetic.best_ssim.mean()), "info",
            "mean SSIM of the prototypes to the nearest synthetic image of their class",
            range=(-1.0, 1.0), n=n,
        ),
        "control_target_confidence": Metric(
            float(control.confidence.mean()), "info",
            "control: mean target-class probability of the prototypes drawn from the classifier trained on members",
            range=(0.0, 1.0), n=n,
        ),
        **control_metrics(leakage_metrics(ctx, c_members, "prototypes"), "classifier trained on the members"),
    }
    result.details = {
        "config": {**settings, "tv_weight": config.tv_weight, "diversity_weight": config.diversity_weight},
        "baseline_note": "the holdout baseline matches holdout images against all members, not only their class",
        "prototype_labels": protos.labels.tolist(),
        "member_ssim": members.best_ssim.tolist(),
        "nearest_member_indices": members.best_ssim_idx.tolist(),
        "control": {"member_ssim": c_members.best_ssim.tolist(), "confidence": control.confidence.tolist()},
    }
    _grid(ctx, result, protos.images, members, synthetic, "GAN prototypes from the classifier trained on the synthetic set")
    _grid(ctx, result, control.images, c_members, c_synthetic, "control: GAN prototypes from the classifier trained on the members", "control_grid")
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- model memorization


def _malicious(images: ImageSet, settings: dict, num_classes: int, seed: int, label: str):
    cap = settings["max_train"]
    pick = torch.arange(len(images))
    if cap is not None and cap < len(images):
        pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(images), cap, replace=False)))
    config = MemorizationConfig(method=settings["method"], n_secrets=settings["secrets"], epochs=settings["epochs"])
    return malicious_train(images.x[pick], images.y[pick], num_classes, config, seed, progress=label), pick


def run_memorization(ctx: AuditContext) -> CheckResult:
    """Run a malicious trainer (correlated-value encoding) on the synthetic set, decode the
    hidden images from the returned model and match them against the real members."""
    start = time.perf_counter()
    check_labels(ctx)
    settings = ctx.settings(PROFILES)["memorization"]
    num_classes = ctx.reference.members.num_classes
    test = ctx.reference.test
    attack, pick = _malicious(ctx.synthetic, settings, num_classes, ctx.seed, "malicious training")
    secrets = pick[attack.secret_idx]
    members, synthetic = _score(ctx, attack.decoded, None)
    control, c_pick = _malicious(ctx.reference.members, settings, num_classes, ctx.seed, "malicious training (control)")
    c_members, c_synthetic = _score(ctx, control.decoded, None)

    n = {"decoded": len(secrets)}
    result = CheckResult("memorization")
    result.metrics = {
        "decode_psnr": Metric(
            float(attack.psnr.mean()), "info",
            "mean PSNR (dB) of a decoded image to the synthetic image hidden in the model (attack success)",
            n=n,
        ),
        "decode_ssim": Metric(
            float(pairwise_ssim(attack.decoded, ctx.synthetic.x[secrets]).mean()), "info",
            "mean SSIM of a decoded image to the synthetic image hidden in the model (attack success)",
            range=(-1.0, 1.0), n=n,
        ),
        "malicious_test_accuracy": Metric(
            accuracy(attack.model, test.x, test.y), "info",
            "real test accuracy of the malicious model: it stays useful while it carries the hidden images",
            range=(0.0, 1.0), n={"test": len(test)},
        ),
        **leakage_metrics(ctx, members, "decoded images"),
        **control_metrics(leakage_metrics(ctx, c_members, "decoded images"), "malicious trainer run on the members"),
    }
    result.details = {
        "config": settings,
        "pixel_correlation": attack.pixel_correlation,
        "secret_synthetic_indices": secrets.tolist(),
        "member_ssim": members.best_ssim.tolist(),
        "nearest_member_indices": members.best_ssim_idx.tolist(),
        "control": {
            "secret_member_indices": c_pick[control.secret_idx].tolist(),
            "decode_psnr": float(control.psnr.mean()),
            "member_ssim": c_members.best_ssim.tolist(),
        },
    }
    _grid(ctx, result, attack.decoded, members, synthetic, "images decoded from a maliciously trained classifier")
    _grid(ctx, result, control.decoded, c_members, c_synthetic, "control: images decoded after malicious training on the members", "control_grid")
    result.seconds = time.perf_counter() - start
    return result
