"""Fidelity: does the synthetic set look like the real members, in a feature space?

All metrics compare the synthetic set with the real members in the space of the audit's
feature extractor (ctx.extractor; the LeNet by default), so values from different extractors
must not be compared. Each metric carries a baseline: the same metric for holdout images
(real, unseen) against the members, i.e. what a perfect generator would score.

- FID (Heusel et al. 2017), torchmetrics, statistics in float64: Frechet distance between
  Gaussians fitted to the two feature sets. 0 = same mean and covariance; lower is better.
- KID (Binkowski et al. 2018), torchmetrics' polynomial-kernel MMD: unbiased squared MMD with
  the cubic kernel (x.y / d + 1)^3, averaged over random subsets; ci = mean +/- one std over
  the subsets. About 0 for the same distribution (can be slightly negative); lower is better.
  The features are first divided by the members' root-mean-square feature value, so that x.y / d
  is about 1 whatever the extractor's units: on raw LeNet features (RMS about 10) the cubic
  kernel put digits' KID in the thousands (-65 beside a baseline of 5212).
- precision, recall, density, coverage (Naeem et al. 2020, k = 5): k-NN balls around each
  real (and each synthetic) feature vector; see METRIC_INFO for their meanings. Coverage carries
  a Wilson interval over the members (it treats the synthetic set as fixed, so it is narrow).

Baselines are measured like the values they sit beside: FID, PRDC and KID's subsets depend on
the number of images, so when the holdout has fewer images than the synthetic sample, the
synthetic value is the mean over disjoint chunks of the synthetic sample, each as large as the
holdout sample (details["matched_size"], ["chunks"]). Without it, digits' demo set 1,077
synthetic images (FID 13.9) beside a holdout baseline of 360 (FID 46.6); at 360 a side the
synthetic FID is 28.0.

Per class as well when both sets are labelled: details["per_class"][metric] = [value per class].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from dpaudit.audit.context import AuditContext
from dpaudit.audit.result import CheckResult, Metric
from dpaudit.audit.spec import CheckSpec
from dpaudit.intervals import wilson
from dpaudit.neighbors import nearest_neighbors
from dpaudit.sampling import seeded_sample


@dataclass(frozen=True)
class FidelityConfig:
    """`max_samples` images per side (a seeded random sample; None = all), `kid_subsets` KID
    subsets of `kid_subset_size` images, `k` neighbours of PRDC."""

    max_samples: int | None = 5_000
    kid_subsets: int = 20
    kid_subset_size: int = 1_000
    k: int = 5


# metric -> (direction, range, meaning); `target` direction aims at 1.
METRIC_INFO = {
    "fid": ("lower", (0.0, math.inf),
            "Frechet distance between Gaussians fitted to synthetic and real-member features "
            "(0 = same mean and covariance)"),
    "kid": ("lower", (-math.inf, math.inf),
            "kernel (cubic polynomial) MMD^2 between synthetic and real-member features, both divided by the "
            "members' RMS feature value (so it reads the same in any extractor's units), unbiased, about 0 for "
            "the same distribution; ci = +/- one std over subsets"),
    "precision": ("higher", (0.0, 1.0),
                  "share of synthetic images inside the real manifold (within the k-NN radius of some "
                  "member): how realistic the samples are; large k-NN balls around outlying members inflate it "
                  "(uniform noise scores near 1 on MNIST), so read it beside density"),
    "recall": ("higher", (0.0, 1.0),
               "share of members inside the synthetic manifold (within the k-NN radius of some "
               "synthetic image): how much of the real variety is reproduced"),
    "density": ("target", (0.0, math.inf),
                "average number of member k-NN balls holding a synthetic image, divided by k "
                "(1 = as dense as real data; above 1 = samples crowd around common modes)"),
    "coverage": ("higher", (0.0, 1.0),
                 "share of members whose k-NN ball holds at least one synthetic image: the real "
                 "modes the synthetic set covers"),
}

# Rows of the distance matrix computed at once (x 8 bytes per entry): about 128 MB.
BLOCK_ENTRIES = 1 << 24


class IdentityFeatures(nn.Module):
    """The identity: lets torchmetrics' FID take features that are already computed."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N x D, M x D; N, M >= 2), through torchmetrics, in float64."""
    metric = FrechetInceptionDistance(feature=IdentityFeatures(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute().clamp_min(0))


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int, subset_size: int, seed: int,
        scale: float = 1.0) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets of `subset_size` per side; sizes >= 2) of the
    features divided by `scale`. torchmetrics' poly_mmd on subsets drawn here with a seeded
    generator: its KernelInceptionDistance class draws them from the global RNG."""
    size = min(subset_size, len(real), len(fake))
    gen = torch.Generator().manual_seed(seed)
    real, fake = real.double() / scale, fake.double() / scale
    scores = torch.stack([
        poly_mmd(real[torch.randperm(len(real), generator=gen)[:size]], fake[torch.randperm(len(fake), generator=gen)[:size]])
        for _ in range(subsets)
    ])
    return float(scores.mean()), float(scores.std(unbiased=False))


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-NN radii, strict `<` as
    in the authors' `prdc` package. Hand-written (no installed library has it): radii from the
    exact blocked k-NN search, then one blocked pass over the synthetic x real distance matrix."""
    # k + 1 neighbours: the first is the point itself.
    real_radius = nearest_neighbors(real, real, k=k + 1)[0][:, k].double()
    fake_radius = nearest_neighbors(fake, fake, k=k + 1)[0][:, k].double()
    center = real.double().mean(0)
    r, f = real.double() - center, fake.double() - center  # centring: less cancellation below
    r_sq = (r * r).sum(1)
    in_real_balls = torch.zeros(len(f), dtype=torch.float64)  # per fake: member balls holding it
    recalled = torch.zeros(len(r), dtype=torch.bool)  # per member: inside some fake ball
    nearest_fake = torch.full((len(r),), math.inf, dtype=torch.float64)  # per member
    rows = max(1, BLOCK_ENTRIES // max(len(r), 1))
    for s in range(0, len(f), rows):
        fb = f[s : s + rows]
        d = torch.addmm(r_sq, fb, r.T, alpha=-2).add_((fb * fb).sum(1, keepdim=True)).clamp_min_(0)
        in_real_balls[s : s + rows] = (d < real_radius).sum(1)
        recalled |= (d < fake_radius[s : s + rows, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.mean() / k),
        "coverage": float((nearest_fake < real_radius).double().mean()),
    }


def feature_rms(features: torch.Tensor) -> float:
    """The root-mean-square feature value (1 for an empty or all-zero set): KID's unit."""
    rms = float(features.double().pow(2).mean().sqrt()) if features.numel() else 0.0
    return rms if rms > 0 else 1.0


def compare(real: torch.Tensor, fake: torch.Tensor, config: FidelityConfig, seed: int,
            kid_scale: float | None = None) -> tuple[dict[str, float], float | None]:
    """Every fidelity metric the sizes allow: {metric: value} and the KID std; KID on features
    divided by `kid_scale` (default: the RMS of `real`). FID and KID need 2 samples per side,
    PRDC more than k."""
    values, kid_std = {}, None
    if min(len(real), len(fake)) >= 2:
        values["fid"] = fid(real, fake)
        values["kid"], kid_std = kid(real, fake, config.kid_subsets, config.kid_subset_size, seed,
                                     feature_rms(real) if kid_scale is None else kid_scale)
    if min(len(real), len(fake)) > config.k:
        values.update(prdc(real, fake, config.k))
    return values, kid_std


def run(ctx: AuditContext) -> CheckResult:
    """The fidelity check: FID, KID, precision, recall, density, coverage (overall and per class)."""
    config = ctx.profile.fidelity
    synthetic, members, holdout = ctx.synthetic, ctx.reference.members, ctx.reference.holdout
    pick_s = seeded_sample(len(synthetic), config.max_samples, [ctx.seed, 1])
    pick_m = seeded_sample(len(members), config.max_samples, [ctx.seed, 2])
    pick_h = seeded_sample(len(holdout), len(pick_s), [ctx.seed, 3])
    f_syn = ctx.features("synthetic")[pick_s]
    f_mem = ctx.features("members")[pick_m]
    f_hold = ctx.features("holdout")[pick_h]
    dim = f_syn.shape[1]

    name = getattr(ctx.extractor, "name", "the feature extractor")
    scale = feature_rms(f_mem)
    values, kid_std, chunks = _compare_at_size(f_mem, f_syn, len(f_hold), config, ctx.seed, scale)
    matched = len(f_hold) if chunks > 1 else len(f_syn)
    if min(matched, len(f_mem)) < dim:
        ctx.warn(
            f"fidelity: {min(matched, len(f_mem))} samples for {dim}-dimensional {name} features; "
            "FID is biased upward and unreliable with fewer samples than feature dimensions."
        )
    baseline, _ = compare(f_mem, f_hold, config, ctx.seed, scale)
    missing = [metric for metric in METRIC_INFO if metric not in values]
    if missing:
        ctx.warn(f"fidelity: {', '.join(missing)} omitted: {len(f_syn)} synthetic and {len(f_mem)} member samples are too few.")

    n = {"synthetic": len(f_syn), "members": len(f_mem), "holdout": len(f_hold)}
    result = CheckResult("fidelity")
    for metric, value in values.items():
        direction, value_range, meaning = METRIC_INFO[metric]
        result.metrics[metric] = Metric(
            value, direction, f"{meaning}; {name} features",
            range=value_range, baseline=baseline.get(metric), n=n,
            ci=_interval(metric, value, kid_std, len(f_mem)),
            target=1.0 if direction == "target" else None,
        )
    result.details = {
        "extractor": name,
        "real_set": "members",
        "baseline_set": "holdout",
        "n_baseline": len(f_hold),
        "matched_size": matched,
        "chunks": chunks,
        "kid_feature_scale": scale,
        "k": config.k,
        "kid_std": kid_std,
        "kid_subsets": config.kid_subsets,
        "kid_subset_size": min(config.kid_subset_size, len(f_syn), len(f_mem)),
    }
    if synthetic.has_labels and members.has_labels:
        result.details["per_class"], result.details["per_class_n"] = _per_class(
            ctx, f_mem, members.y[pick_m], f_syn, synthetic.y[pick_s], config, dim, scale
        )
    return result


def _compare_at_size(real: torch.Tensor, fake: torch.Tensor, size: int, config: FidelityConfig, seed: int,
                     kid_scale: float) -> tuple[dict[str, float], float | None, int]:
    """`compare` measured at `size` synthetic images, as the baseline is: the mean of every metric
    over ceil(len(fake) / size) chunks of `size` that together hold every image of `fake`, spread
    evenly (the last ones overlap a little; one chunk, all of `fake`, when it is not larger), after
    a seeded shuffle: sets are often written class by class, and a chunk must not be a few classes.
    Returns (values, KID std, chunks)."""
    chunks = math.ceil(len(fake) / size) if 2 <= size < len(fake) else 1
    if chunks > 1:
        fake = fake[torch.randperm(len(fake), generator=torch.Generator().manual_seed(seed))]
    starts = [round(i * (len(fake) - size) / (chunks - 1)) for i in range(chunks)] if chunks > 1 else [0]
    step = size if chunks > 1 else len(fake)
    measured = [compare(real, fake[start : start + step], config, seed, kid_scale) for start in starts]
    values = {m: sum(v[m] for v, _ in measured) / chunks for m in measured[0][0]}
    stds = [std for _, std in measured if std is not None]
    return values, math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else None, chunks


def _interval(metric: str, value: float, kid_std: float | None, n_members: int) -> tuple[float, float] | None:
    """KID: +/- one std over its subsets; coverage: Wilson over the members; others none."""
    if metric == "kid" and kid_std is not None:
        return (value - kid_std, value + kid_std)
    if metric == "coverage":
        return wilson(round(value * n_members), n_members)
    return None


def _per_class(ctx, f_mem, y_mem, f_syn, y_syn, config: FidelityConfig, dim, scale) -> tuple[dict[str, list], dict[str, list]]:
    """{metric: [value per class]} (None where a class has too few samples on a side) and
    {"synthetic": [count per class], "members": [...]}."""
    num_classes = max(ctx.synthetic.num_classes or 0, ctx.reference.members.num_classes or 0)
    per_class = {metric: [] for metric in METRIC_INFO}
    counts = {"synthetic": [], "members": []}
    small = []
    for c in range(num_classes):
        real, fake = f_mem[y_mem == c], f_syn[y_syn == c]
        if 2 <= min(len(real), len(fake)) < dim:
            small.append(c)
        values, _ = compare(real, fake, config, ctx.seed, scale)
        for metric in METRIC_INFO:
            per_class[metric].append(values.get(metric))
        counts["synthetic"].append(len(fake))
        counts["members"].append(len(real))
    if small:
        ctx.warn(
            f"fidelity: classes {small} have fewer samples than the {dim} feature dimensions; "
            "their per-class FID is biased upward."
        )
    return per_class, counts


CHECK = CheckSpec(
    name="fidelity",
    title="Fidelity",
    question="Is it faithful? How close the synthetic images are to the real ones as a distribution, in a feature space.",
    needs_labels=False,
    headlines=("fid",),
    run=run,
)
