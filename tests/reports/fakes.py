"""Hand-built AuditResults with plausible values, so the report and the gate are tested without
running any check. `fake_result()` has every family with the details keys the checks agree on."""

from __future__ import annotations

import numpy as np

from dpaudit.audit.pipeline import CHECKS
from dpaudit.audit.result import AuditResult, CheckResult, Metric

SPLIT_ID = "digits:s0:m1077:h360:0123456789ab"
EXTRACTOR = {"name": "lenet-digits", "dim": 64, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}


def grid(seed: int, tiles: int = 4, size: int = 8) -> np.ndarray:
    """A uint8 grey grid of random tiles (stand-in for samples or reconstruction grids)."""
    rng = np.random.default_rng(seed)
    return (rng.random((tiles * size, tiles * size)) * 255).astype(np.uint8)


def roc(power: float, n: int = 50) -> dict:
    """A concave ROC curve tpr = fpr ** power (power < 1 is better than chance), fpr from 0 to 1."""
    fpr = np.concatenate([[0.0], np.logspace(-3, 0, n)])
    return {"fpr": fpr.tolist(), "tpr": (fpr**power).tolist()}


def fake_result(*, generator: str = "dp-merf", name: str = "synthetic", epsilon: float | None = 10.0,
                auc: float = 0.56, eps_lb: float = 0.4, tstr: float = 0.81, fid: float = 35.0, coverage: float = 0.6,
                split_id: str = SPLIT_ID, extractor: dict | None = None, seed: int = 0) -> AuditResult:
    fidelity = CheckResult("fidelity", seconds=2.1)
    fidelity.metrics = {
        "fid": Metric(fid, "lower", "Frechet distance between synthetic and real features.", (0, float("inf")),
                      baseline=3.2, n={"synthetic": 1000, "real": 1077}),
        "kid": Metric(0.021, "lower", "Kernel inception distance.", ci=(0.015, 0.027)),
        "precision": Metric(0.71, "higher", "Share of synthetic images inside the real manifold.", (0, 1)),
        "recall": Metric(0.44, "higher", "Share of real images inside the synthetic manifold.", (0, 1)),
        "coverage": Metric(coverage, "higher", "Share of members whose k-NN ball holds a synthetic image.", (0, 1),
                           ci=(coverage - 0.02, coverage + 0.02), baseline=0.8),
    }
    # None: a class with too few images to measure, as fidelity reports it
    fidelity.details = {"per_class": {"fid": [30.0 + i for i in range(10)], "precision": [None] + [0.6 + 0.02 * i for i in range(1, 10)]}}

    utility = CheckResult("utility", seconds=5.0)
    utility.metrics = {
        "tstr_accuracy": Metric(tstr, "higher", "Accuracy on real test images of a classifier trained on synthetic images.",
                                (0, 1), ci=(tstr - 0.03, tstr + 0.03), baseline=0.97),
        "trtr_accuracy": Metric(0.97, "info", "The same classifier trained on real members (the ceiling).", (0, 1)),
    }
    utility.details = {"per_class": {"tstr": [tstr - 0.05 + 0.01 * i for i in range(10)], "trtr": [0.95 + 0.004 * i for i in range(10)]}}

    similarity = CheckResult("similarity", seconds=1.0)
    similarity.metrics = {
        "near_copy_share": Metric(0.012, "lower", "Share of synthetic images that nearly copy a member.", (0, 1),
                                  ci=(0.008, 0.018), baseline=0.010),
        "near_copy_excess": Metric(0.002, "lower", "Near-copy share above the holdout baseline.", (-1, 1), ci=(-0.005, 0.009)),
        "mean_nn_ssim": Metric(0.41, "info", "Mean SSIM to the nearest member.", (-1, 1), baseline=0.43),
    }
    edges = np.linspace(0, 1, 21)
    centres = (edges[:-1] + edges[1:]) / 2
    similarity.details = {
        "ssim_hist": {"edges": edges.tolist(),
                      "synthetic": np.round(1000 * np.exp(-((centres - 0.40) ** 2) / 0.02)).tolist(),
                      "holdout": np.round(360 * np.exp(-((centres - 0.43) ** 2) / 0.02)).tolist()},
        "l2_hist": {"edges": np.linspace(0, 3, 16).tolist(), "synthetic": [0, 2, 8, 30, 80, 150, 200, 190, 140, 100, 60, 25, 10, 4, 1],
                    "holdout": [0, 0, 3, 10, 30, 50, 70, 70, 55, 35, 20, 10, 5, 2, 0]},
        "threshold": 0.9,
    }
    similarity.add_figure("worst_pairs", grid(1, tiles=2), "Synthetic | nearest member, worst first.")

    membership = CheckResult("membership", seconds=12.0)
    membership.metrics = {
        "auc": Metric(auc, "lower", "Attack AUC, members vs holdout; 0.5 is chance.", (0, 1), ci=(auc - 0.04, auc + 0.04), baseline=0.5),
        "advantage": Metric(0.08, "lower", "Best TPR - FPR of the attack.", (0, 1)),
        "tpr_at_fpr_10pct": Metric(0.14, "lower", "TPR at 10% FPR.", (0, 1), ci=(0.12, 0.16), baseline=0.10),
        "tpr_at_fpr_1pct": Metric(0.015, "lower", "TPR at 1% FPR.", (0, 1), ci=(0.009, 0.024), baseline=0.01),
        "tpr_at_fpr_0p1pct": Metric(0.002, "lower", "TPR at 0.1% FPR.", (0, 1), ci=(0.0005, 0.007), baseline=0.001),
        "epsilon_lower_bound": Metric(eps_lb, "lower", "Epsilon the attack proves at least (95% confidence).", (0, float("inf"))),
    }
    membership.details = {
        "attacks": {"nn_distance": {"auc": auc, "tpr_at_fpr_1pct": 0.015, "roc": roc(0.8)},
                    "density": {"auc": auc - 0.02, "tpr_at_fpr_1pct": 0.011, "roc": roc(0.9)}},
        "strongest": "nn_distance",
        "claimed_epsilon": epsilon,
        "claim_violated": epsilon is not None and eps_lb > epsilon,
    }

    gradient = CheckResult("gradient_matching", seconds=30.0)
    gradient.metrics = {"max_member_ssim": Metric(0.38, "lower", "Best SSIM of a reconstruction to a member.", (-1, 1), baseline=0.36)}
    gradient.add_figure("grid", grid(2), "Reconstruction | nearest real | nearest synthetic.")

    checks = {c.check: c for c in (fidelity, utility, similarity, membership, gradient)}
    for name, check in checks.items():  # stamped with the checks' declarations, as the pipeline does
        spec = CHECKS[name]
        check.title, check.question, check.headlines = spec.title, spec.question, list(spec.headlines)
    checks["fidelity"].add_figure("samples", grid(seed + 10), "Synthetic samples.")
    manifest = {"schema": "dpaudit.manifest/1", "generator": generator, "epsilon": epsilon, "delta": 1e-5,
                "dataset": "digits", "split_id": split_id, "seed": seed, "versions": {"torch": "2.14.1"},
                "created": "2026-11-23T14:00:00+00:00", "details": {"noise_multiplier": 1.1}}
    part = {"count": 1077, "shape": [1, 8, 8], "num_classes": 10, "labelled": True, "fingerprint": "ab" * 32}
    return AuditResult(
        synthetic={"name": name, "source": f"/data/{name}", "count": 1000, "shape": [1, 8, 8], "num_classes": 10,
                   "labelled": True, "fingerprint": f"{seed:02d}" * 32},
        reference={"dataset": "digits", "split_id": split_id, "members": part,
                   "holdout": dict(part, count=360, fingerprint="cd" * 32), "test": dict(part, count=360, fingerprint="ef" * 32)},
        feature_extractor=dict(extractor or EXTRACTOR),
        seed=seed,
        profile="quick",
        checks=checks,
        manifest=manifest,
        manifest_missing=[],
        warnings=["The synthetic set has 1000 images; the quick profile uses 500 of them."],
        versions={"dpaudit": "0.1.0", "torch": "2.14.1"},
        created="2026-11-23T15:00:00+00:00",
        dpaudit_version="0.1.0",
    )
