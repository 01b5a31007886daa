"""The training audit: test a privacy claim by putting canaries into a generator's training run.

For each of R runs: m canaries are made from the holdout (dpaudit/attacks/canaries.py), each is
put into the training data by its own fair coin, the trainer (dpaudit/audit/trainers.py) trains
once on the members plus the canaries that came up IN, and its release is scored per canary by
every rule of dpaudit/attacks/canary_scores.py. The canaries of all runs are pooled (a canary
of run r is a record whose inclusion changes run r's data only, so the R runs together are as
private towards it as one run is) and handed to the auditor, which gives the one-run bound of
Steinke, Nasr & Jagielski (2023) and the f-DP one-run bound of Mahloujifar, Melis & Chaudhuri
(2024) against the Gaussian trade-off curve the claim implies. Every (rule, bound) pair is
computed at alpha / (rules x bounds) (Bonferroni), so the largest of them holds at the stated
confidence. The ceiling is what a perfect attack on these many canaries could prove; the
verdict is `refuted` (a bound above the claim), `inconclusive` (the ceiling is not above the
claim: no attack could have refuted it) or `consistent`.

The runs are independent jobs (dpaudit/audit/run_backends.py: one after another, or as Ray
tasks). The coins, canaries and generator seeds all come from the audit's seed, so the same
seed gives the same audit on either backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dpaudit import __version__
from dpaudit.attacks.auditor import TRAINING_BOUNDS, CanaryScoreAuditor, canaries_needed, claim_verdict
from dpaudit.attacks.canaries import KINDS, Canaries, make_canaries
from dpaudit.attacks.canary_scores import nearest_by_label, rules_for, score_canaries
from dpaudit.audit.figures import columns_grid, sample_grid
from dpaudit.audit.privacy_claim import not_supported_warning, reaccount_declared
from dpaudit.audit.result import AuditResult, CheckResult, Metric, encode_png
from dpaudit.audit.run_backends import Job, run_jobs
from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest, library_versions
from dpaudit.privacy import PrivacyBudget

CHECK_NAME = "training_audit"
TITLE = "Training audit (canaries)"
QUESTION = (
    "Is the claimed epsilon true? Canaries went into the training run by coin flips; the release is scored per "
    "canary, and the one-run bounds prove an epsilon the mechanism must exceed. A bound above the claim refutes it."
)
HEADLINES = ("epsilon_lower_bound", "ceiling")
EXPOSED_ROWS = 8  # canaries shown next to their nearest synthetic image
HISTOGRAM_BINS = 30


@dataclass(frozen=True)
class TrainingAuditConfig:
    """`canaries` per run (half go in, by coin flips), of `kind`; `members`: how many members
    train beside them (None: all); `samples`: images released per run (None: as many as the
    training set); `features`: score in the LeNet feature space too; `confidence` of the bounds."""

    canaries: int = 200
    kind: str = "mislabeled"
    members: int | None = None
    samples: int | None = None
    features: bool = True
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DpauditError(f"unknown canary kind {self.kind!r}; available: {', '.join(KINDS)}.")
        if self.canaries < 2:
            raise DpauditError(f"the training audit needs at least 2 canaries, got {self.canaries}.")
        if not 0.5 <= self.confidence < 1:
            raise DpauditError(f"confidence must be in [0.5, 1), got {self.confidence}.")


@dataclass
class RunPlan:
    """One run's secret choices: its canaries, which of them go in, and the seeds it uses."""

    index: int
    canaries: Canaries
    included: np.ndarray  # bool, one per canary
    members: ImageSet
    shuffle_seed: int
    generator_seed: int


def plan_runs(reference: Reference, config: TrainingAuditConfig, runs: int, seed: int) -> list[RunPlan]:
    """The secret plan of `runs` runs: fresh canaries and fresh coins for each, all from `seed`."""
    members = reference.members
    if config.members is not None and config.members < len(members):
        keep = np.sort(np.random.default_rng([seed, 1]).choice(len(members), size=config.members, replace=False))
        members = members.subset(keep, name=f"{len(keep)} of {members.name}")
    plans = []
    for r, child in enumerate(np.random.SeedSequence([seed, 2]).spawn(runs)):
        rng = np.random.default_rng(child)
        canaries = make_canaries(reference.holdout, config.canaries, config.kind, seed=int(rng.integers(2**31)))
        included = rng.random(config.canaries) < 0.5
        plans.append(RunPlan(r, canaries, included, members, int(rng.integers(2**31)), int(rng.integers(2**40))))
    return plans


def job_of(plan: RunPlan, trainer: Any, budget: PrivacyBudget, config: TrainingAuditConfig) -> Job:
    """The training job of a plan: members plus the IN canaries, in a shuffled order."""
    included = plan.canaries.images.subset(np.flatnonzero(plan.included))
    n_train = len(plan.members) + len(included)
    return Job(trainer, plan.members, included, plan.shuffle_seed, budget, plan.generator_seed,
               config.samples or n_train, plan.index)


def calibration_set(reference: Reference, canaries: Canaries) -> ImageSet:
    """The holdout images not made into canaries: real images the trainer never saw."""
    keep = np.setdiff1d(np.arange(len(reference.holdout)), canaries.pool_idx.numpy())
    return reference.holdout.subset(keep, name="calibration")


def audit_training(
    trainer: Any,
    reference: Reference,
    budget: PrivacyBudget,
    *,
    config: TrainingAuditConfig = TrainingAuditConfig(),
    runs: int = 1,
    seed: int = 0,
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_run: float = 1,
    embed: Callable[[ImageSet], torch.Tensor] | None = None,
    profile: str = "custom",
    settings: dict | None = None,
    dataset: str | None = None,
    log_dir=None,
    progress: bool = True,
) -> AuditResult:
    """Audit `budget` (the claim) of `trainer` (a GeneratorTrainer or CommandTrainer) on
    `reference` with `runs` runs of `config.canaries` canaries each; see the module docstring.
    `embed` (ImageSet -> features) adds the feature-space rule; `log_dir` keeps each run's log."""
    if runs < 1:
        raise DpauditError(f"--runs must be at least 1, got {runs}.")
    if not budget.is_private:
        raise DpauditError("--epsilon inf claims no privacy: there is nothing to audit.")
    trainer.check()
    plans = plan_runs(reference, config, runs, seed)
    start = time.perf_counter()
    releases = run_jobs([job_of(p, trainer, budget, config) for p in plans], backend=backend,
                        ray_address=ray_address, cpus_per_run=cpus_per_run, log_dir=log_dir, progress=progress)
    train_seconds = time.perf_counter() - start

    rules = rules_for(config.kind, embed is not None)
    scores = {rule: [] for rule in rules}
    for plan, release in zip(plans, releases):
        run_scores = score_canaries(plan.canaries, release.synthetic, calibration_set(reference, plan.canaries), embed)
        for rule in rules:
            scores[rule].append(run_scores[rule])
    labels = np.concatenate([p.included for p in plans]).astype(int)
    pooled = {rule: np.concatenate(parts) for rule, parts in scores.items()}
    check = _check_result(plans, releases, pooled, labels, budget, config, seed, train_seconds)
    check.seconds = round(time.perf_counter() - start, 3)

    first = releases[0].synthetic
    synthetic = first.to_dict() | {
        "name": f"releases of {trainer.describe()}",
        "source": trainer.describe(),
        "count": sum(len(r.synthetic) for r in releases),
        "samples_png": encode_png(sample_grid(first, seed=seed)),
    }
    manifest = Manifest.new(
        trainer.describe(), epsilon=budget.epsilon, delta=budget.delta, dataset=dataset,
        split_id=reference.split_id, seed=seed,
        details={"claim": "the claim under test (--epsilon/--delta)",
                 "runs": [None if r.manifest is None else r.manifest.to_dict() for r in releases]},
    )
    warnings = [check.details["reaccount_warning"]] if check.details["reaccount_warning"] else []
    if check.details["verdict"] == "refuted":
        warnings.append(check.details["claim_warning"])
    elif check.details["verdict"] == "inconclusive":
        warnings.append(check.details["inconclusive_note"])
    return AuditResult(
        synthetic=synthetic, reference=reference.to_dict(),
        feature_extractor=getattr(embed, "describe", lambda: {"name": None, "note": "pixel scores only"})(),
        seed=seed, profile=profile, settings=settings or {}, checks={CHECK_NAME: check},
        manifest=manifest.to_dict(), warnings=warnings, versions=library_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), dpaudit_version=__version__,
    )


def _check_result(plans, releases, scores: dict[str, np.ndarray], labels: np.ndarray, budget: PrivacyBudget,
                  config: TrainingAuditConfig, seed: int, train_seconds: float) -> CheckResult:
    """The bounds, ceiling and verdict of pooled canary scores, with the report's evidence."""
    alpha = (1 - config.confidence) / (len(scores) * len(TRAINING_BOUNDS))
    bounds = {
        rule: {m: CanaryScoreAuditor(s, labels).epsilon_lower_bound(m, delta=budget.delta, alpha=alpha, seed=seed)
               for m in TRAINING_BOUNDS}
        for rule, s in scores.items()
    }
    auditor = CanaryScoreAuditor(labels.astype(float), labels)
    ceilings = {m: auditor.ceiling(m, delta=budget.delta, alpha=alpha, seed=seed) for m in TRAINING_BOUNDS}
    best_rule, best_method = max(((r, m) for r in bounds for m in TRAINING_BOUNDS), key=lambda rm: bounds[rm[0]][rm[1]].value)
    bound = bounds[best_rule][best_method].value
    ceiling = max(ceilings.values())
    verdict = claim_verdict(bound, ceiling, budget.epsilon)
    aucs = {rule: float(roc_auc_score(labels, s)) if 0 < labels.sum() < len(labels) else float("nan")
            for rule, s in scores.items()}
    n = {"canaries": len(labels), "included": int(labels.sum()), "excluded": int(len(labels) - labels.sum()),
         "runs": len(plans)}
    confidence = f"{config.confidence:.0%}"

    result = CheckResult(CHECK_NAME, title=TITLE, question=QUESTION, headlines=list(HEADLINES))
    result.metrics = {
        "epsilon_lower_bound": Metric(
            bound, "lower", f"epsilon every claim must exceed, proven at {confidence} confidence from the canaries "
            "(the best rule and bound, paid for by Bonferroni)", baseline=0.0, n=n),
        "one_run_bound": Metric(max(b["one_run"].value for b in bounds.values()), "lower",
                                "the Steinke-Nasr-Jagielski one-run bound (best rule)", baseline=0.0, n=n),
        "fdp_bound": Metric(max(b["fdp_one_run"].value for b in bounds.values()), "lower",
                            "the f-DP one-run bound against the claim's Gaussian trade-off (best rule)", baseline=0.0, n=n),
        "ceiling": Metric(ceiling, "info", "the largest bound a perfect attack on these canaries could prove: a claim "
                          "at or above it cannot be refuted by this audit", n=n),
        "claimed_epsilon": Metric(budget.epsilon, "info", "the claim under test", n=n),
        "auc": Metric(max(aucs.values()), "lower", "area under the ROC curve of the best rule, IN against OUT canaries "
                      "(0.5 = no evidence)", range=(0.0, 1.0), baseline=0.5, n=n),
    }
    details: dict[str, Any] = {
        "verdict": verdict,
        "claimed_epsilon": budget.epsilon,
        "claim_violated": verdict == "refuted",
        "claim_warning": None,
        "delta": budget.delta,
        "confidence": config.confidence,
        "alpha_per_bound": alpha,
        "kind": config.kind,
        "runs": len(plans),
        "canaries_per_run": config.canaries,
        "rules": list(scores),
        "best_rule": best_rule,
        "best_bound": best_method,
        "bounds": {rule: {m: b.to_dict() for m, b in per.items()} for rule, per in bounds.items()},
        "ceilings": ceilings,
        "auc_by_rule": aucs,
        "train_seconds": round(train_seconds, 3),
        "run_details": [
            {"run": p.index, "included": int(p.included.sum()), "members": len(p.members),
             "released": len(r.synthetic), "seconds": round(r.seconds, 3),
             "epsilon_reported": None if r.manifest is None else r.manifest.epsilon,
             "reaccounted": None if r.manifest is None else reaccount_declared(r.manifest.details, budget.epsilon,
                                                                                budget.delta)}
            for p, r in zip(plans, releases)
        ],
        "score_hist": _histogram(scores[best_rule], labels, best_rule),
    }
    unsupported = [d for d in details["run_details"] if (d["reaccounted"] or {}).get("supports_claim") is False]
    details["reaccount_warning"] = None if not unsupported else not_supported_warning(
        max((d["reaccounted"] for d in unsupported), key=lambda r: r["epsilon"]), budget.epsilon, budget.delta,
        f"the manifest of run{'s' if len(unsupported) > 1 else ''} {', '.join(str(d['run']) for d in unsupported)}")
    if verdict == "refuted":
        details["claim_warning"] = (
            f"PRIVACY CLAIM REFUTED: the training audit proves epsilon >= {bound:.2f} at {confidence} confidence "
            f"({best_rule} scores, {best_method} bound, {len(labels)} canaries), above the claimed epsilon {budget.epsilon:g}."
        )
    elif verdict == "inconclusive":
        needed = canaries_needed(best_method if ceilings[best_method] == ceiling else max(ceilings, key=ceilings.get),
                                 budget.epsilon, delta=budget.delta, alpha=alpha)
        details["canaries_needed"] = needed
        more = (f"about {needed} canaries would be needed" if needed is not None
                else "no number of canaries would do at this delta")
        details["inconclusive_note"] = (
            f"INCONCLUSIVE: with {len(labels)} canaries no attack could prove more than epsilon {ceiling:.2f}, not "
            f"above the claimed {budget.epsilon:g}; {more} (--runs or a larger profile)."
        )
    result.details = details
    _add_exposed_figure(result, plans, releases, scores[best_rule])
    return result


def _histogram(scores: np.ndarray, labels: np.ndarray, rule: str) -> dict:
    """Counts of IN and OUT canaries' scores over shared bins (the report's histogram)."""
    finite = scores[np.isfinite(scores) & (scores > -1e5)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1, HISTOGRAM_BINS + 1)
    clipped = np.clip(scores, edges[0], edges[-1])
    return {"rule": rule, "edges": edges.tolist(),
            "included": np.histogram(clipped[labels == 1], edges)[0].tolist(),
            "excluded": np.histogram(clipped[labels == 0], edges)[0].tolist()}


def _add_exposed_figure(result: CheckResult, plans, releases, scores: np.ndarray) -> None:
    """The highest-scoring IN canaries next to their nearest synthetic image of the same label
    (searched again for these few rows: the scores keep distances, not neighbours)."""
    offsets = np.cumsum([0] + [len(p.included) for p in plans])
    rows = []
    for r, (plan, release) in enumerate(zip(plans, releases)):
        for i in np.flatnonzero(plan.included):
            rows.append((scores[offsets[r] + i], r, i))
    rows = sorted(rows, key=lambda row: -row[0])[:EXPOSED_ROWS]
    if not rows:
        return
    canary_tiles, nearest_tiles = [], []
    for _, r, i in rows:
        canary = plans[r].canaries.images.subset([i])
        synthetic = releases[r].synthetic
        _, idx = nearest_by_label(canary.x, canary.y, synthetic.x, synthetic.y)
        canary_tiles.append(canary.take(0))
        nearest_tiles.append(synthetic.take(int(idx[0])) if idx[0] >= 0 else torch.ones_like(canary_tiles[-1]))
    result.add_figure("exposed_canaries", columns_grid([torch.stack(canary_tiles), torch.stack(nearest_tiles)]),
                      "The included canaries with the highest scores (left) and the nearest synthetic image of their "
                      "label (right).")
