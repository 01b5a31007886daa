"""What every membership-inference attack shares: the draw of targets, the inputs every attack
is handed, the registry of attacks, and the AttackResult.

An attack scores a balanced, randomly drawn set of targets: members (images the generator
was trained on) and non-members (holdout images it never saw). A higher score means "more
likely a member". The holdout is split in two: non-member targets, and a disjoint
*reference* set of real images that calibrated attacks may use as the attacker's own data.

A membership attack is one function `score(inputs: MembershipInputs, config) -> AttackScores
| None` (None: it does not apply to these inputs), registered under its name with
`@register_membership_attack(name, family=..., space=..., config=ConfigClass)`; its config comes
from the profile (`MembershipConfig.attacks[name]`), else `ConfigClass()`. The membership check
runs every registered attack in registration order.

`AttackResult.from_scores` turns scores into the ROC (sklearn), the AUC with a DeLong
confidence interval, TPR at fixed FPRs, the advantage and the empirical epsilon bounds (the
auditor, `dpaudit.attacks.auditor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from dpaudit.attacks.auditor import RELEASE_BOUNDS, CanaryScoreAuditor
from dpaudit.attacks.epsilon import EpsilonBound
from dpaudit.pixels import Pixels
from dpaudit.transforms import NO_TRANSFORMS, TransformConfig

# Metric-key suffix -> false-positive rate at which the TPR is reported.
FPR_LEVELS = {"10pct": 0.1, "1pct": 0.01, "0p1pct": 0.001}
# Two-sided confidence of the AUC interval.
AUC_CONFIDENCE = 0.95
# ROC curves longer than this are stored interpolated on a fixed FPR grid.
MAX_ROC_POINTS = 256


@dataclass
class TargetSplit:
    """Indices of the member targets (into the members), the non-member targets and the
    reference set (both into the holdout, disjoint). Targets are ordered members first."""

    member_idx: torch.Tensor
    nonmember_idx: torch.Tensor
    reference_idx: torch.Tensor

    @property
    def labels(self) -> np.ndarray:
        """1 for a member target, 0 for a non-member, in target order."""
        return np.r_[np.ones(len(self.member_idx), dtype=int), np.zeros(len(self.nonmember_idx), dtype=int)]

    def targets(self, members: torch.Tensor, holdout: torch.Tensor) -> torch.Tensor:
        """The target rows of `members` and `holdout` (images, features or labels), members first."""
        return torch.cat([members[self.member_idx], holdout[self.nonmember_idx]])

    def reference(self, holdout: torch.Tensor) -> torch.Tensor:
        return holdout[self.reference_idx]

    def to_dict(self) -> dict:
        return {"members": len(self.member_idx), "nonmembers": len(self.nonmember_idx), "reference": len(self.reference_idx)}


def draw_targets(n_members: int, n_holdout: int, *, per_side: int, reference: int, seed: int) -> TargetSplit:
    """A seeded balanced draw: min(per_side, n_members, n_holdout // 2) targets on each side;
    the rest of the holdout (at most `reference` images) becomes the reference set."""
    side = min(per_side, n_members, n_holdout // 2)
    if side < 1:
        raise ValueError("membership inference needs at least one member and two holdout images")
    generator = torch.Generator().manual_seed(seed)
    members = torch.randperm(n_members, generator=generator)[:side]
    holdout = torch.randperm(n_holdout, generator=generator)
    n_reference = min(reference, n_holdout - side)
    return TargetSplit(members.sort().values, holdout[:side].sort().values, holdout[side : side + n_reference].sort().values)


@dataclass
class MembershipInputs:
    """What every membership attack is handed. Targets are members and non-members in an order
    the attack must not use; the reference images are real images known to be non-members (the
    attacker's own data). `features(role)` gives the rows of "targets", "reference" or "synthetic"
    in the audit's feature space (computed once); `downstream_model()` the classifier trained on
    the synthetic set, or None where there is none; `make_model()` a fresh classifier of its
    architecture (for shadow models)."""

    target_images: torch.Tensor
    target_labels: torch.Tensor | None
    reference_images: torch.Tensor
    reference_labels: torch.Tensor | None
    synthetic_images: torch.Tensor | Pixels  # the whole synthetic set: Pixels, read by block
    features: Callable[[str], torch.Tensor]
    downstream_model: Callable[[], nn.Module | None]
    make_model: Callable[[], nn.Module]
    seed: int = 0
    device: torch.device | str = "cpu"
    # the small transformations the pixel-distance attacks see through (the profile's matching.transforms)
    transforms: TransformConfig = NO_TRANSFORMS

    def feature_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets, reference, synthetic) in the audit's feature space."""
        return self.features("targets"), self.features("reference"), self.features("synthetic")


@dataclass
class AttackScores:
    """One score per target (higher = more likely a member) and what the attack says about its run."""

    scores: np.ndarray
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MembershipAttack:
    """A registered membership attack: its function, family ("synthetic": attacks the released
    set; "downstream": attacks a model trained on it), the space it works in and its config class."""

    name: str
    score: Callable[[MembershipInputs, Any], AttackScores | None]
    family: str
    space: str | None = None
    Config: type | None = None

    def default_config(self) -> Any:
        return None if self.Config is None else self.Config()

    def run(self, inputs: MembershipInputs, config: Any) -> AttackScores | None:
        """The attack's scores, with family and space in their details (None if it does not apply)."""
        out = self.score(inputs, config)
        if out is None:
            return None
        where = {"family": self.family, **({"space": self.space} if self.space else {})}
        return AttackScores(np.asarray(out.scores, dtype=float), {**where, **out.details})


MEMBERSHIP_ATTACKS: dict[str, MembershipAttack] = {}


def register_membership_attack(name: str, *, family: str, space: str | None = None, config: type | None = None):
    """Decorator: register `score(inputs, config) -> AttackScores | None` as membership attack `name`."""

    def register(score: Callable[[MembershipInputs, Any], AttackScores | None]):
        MEMBERSHIP_ATTACKS[name] = MembershipAttack(name, score, family, space, config)
        return score

    return register


def delong_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong standard error. sklearn has no AUC interval; this is DeLong et al.
    (1988) computed from midranks (Sun and Xu 2014), O(n log n)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    ranks_all = stats.rankdata(np.r_[pos, neg])
    # Structural components: V10[i] = share of negatives below positive i (ties count 1/2), ...
    v10 = (ranks_all[:m] - stats.rankdata(pos)) / n
    v01 = 1 - (ranks_all[m:] - stats.rankdata(neg)) / m
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    return auc, math.sqrt(var)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """TPR where the ROC curve (points in curve order) crosses FPR = level, interpolating
    linearly between the last point at or below the level and the next one."""
    j = int(np.searchsorted(fpr, level, side="right")) - 1
    if j + 1 >= len(fpr) or fpr[j] == level:
        return float(tpr[j])
    w = (level - fpr[j]) / (fpr[j + 1] - fpr[j])
    return float(tpr[j] + w * (tpr[j + 1] - tpr[j]))


@dataclass(frozen=True)
class Figures:
    """One attack's figures on one set of targets: the ROC, the AUC with its DeLong standard
    error, the TPR at each FPR level, the advantage."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    auc_se: float
    tpr_at: dict[str, float]
    advantage: float
    n_members: int

    def value(self, key: str) -> float:
        """The figure named by a membership metric key (`auc`, `advantage`, `tpr_at_fpr_1pct`, ...)."""
        if key.startswith("tpr_at_fpr_"):
            return self.tpr_at[key.removeprefix("tpr_at_fpr_")]
        return getattr(self, key)


def figures(scores: np.ndarray, labels: np.ndarray) -> Figures:
    """The figures of `scores` (higher = more likely a member) against `labels` (1 = member)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    auc, se = delong_auc(scores, labels)
    return Figures(fpr, tpr, auc, se, {key: tpr_at_fpr(fpr, tpr, level) for key, level in FPR_LEVELS.items()},
                   float(np.max(tpr - fpr)), int(labels.sum()))


def _compact_roc(fpr: np.ndarray, tpr: np.ndarray, n_neg: int) -> dict:
    """The ROC for JSON: exact when short, else interpolated on a log + linear FPR grid."""
    if len(fpr) > MAX_ROC_POINTS:
        grid = np.unique(np.r_[0.0, np.logspace(math.log10(1 / max(n_neg, 1)), 0, 128), np.linspace(0, 1, 65)])
        fpr, tpr = grid, np.array([tpr_at_fpr(fpr, tpr, g) for g in grid])
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


@dataclass
class AttackResult:
    """The outcome of one attack on its targets. Scores: higher = more likely a member."""

    name: str
    scores: np.ndarray
    labels: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    auc_ci: tuple[float, float]
    tpr_at: dict[str, float]
    advantage: float
    epsilon: dict[str, EpsilonBound]
    details: dict = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return int(self.labels.sum())

    @property
    def n_nonmembers(self) -> int:
        return int(len(self.labels) - self.labels.sum())

    @property
    def epsilon_lower_bound(self) -> float:
        """The larger of the attack's epsilon lower bounds."""
        return max(bound.value for bound in self.epsilon.values())

    @classmethod
    def from_scores(
        cls,
        name: str,
        scores,
        labels,
        *,
        delta: float,
        alpha: float = 0.05,
        seed: int = 0,
        details: dict | None = None,
    ) -> "AttackResult":
        """Evaluate scores against labels. The AUC interval is DeLong's at AUC_CONFIDENCE; each
        of the two epsilon bounds holds with probability 1 - alpha (to report the largest of
        several bounds at confidence 1 - a, pass alpha = a / number of bounds)."""
        # A score that could not be computed counts as "least likely a member"; sklearn needs finite values.
        scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-1e300, posinf=1e300, neginf=-1e300)
        labels = np.asarray(labels, dtype=int)
        if labels.min() == labels.max():
            raise ValueError("an attack needs both member and non-member targets")
        f = figures(scores, labels)
        z = stats.norm.ppf((1 + AUC_CONFIDENCE) / 2)
        return cls(
            name=name,
            scores=scores,
            labels=labels,
            fpr=f.fpr,
            tpr=f.tpr,
            auc=float(roc_auc_score(labels, scores)),
            auc_ci=(max(0.0, f.auc - z * f.auc_se), min(1.0, f.auc + z * f.auc_se)),
            tpr_at=f.tpr_at,
            advantage=f.advantage,
            epsilon=CanaryScoreAuditor(scores, labels).epsilon_lower_bounds(
                delta=delta, alpha=alpha, seed=seed, methods=RELEASE_BOUNDS),
            details=dict(details or {}),
        )

    def to_dict(self) -> dict:
        """JSON-ready summary (the ROC compacted; scores left out)."""
        n_neg = self.n_nonmembers
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "advantage": self.advantage,
            **{f"tpr_at_fpr_{key}": value for key, value in self.tpr_at.items()},
            # A TPR at FPR x is only resolved with at least 1/x non-member targets.
            "tpr_at_fpr_resolved": {key: n_neg * level >= 1 for key, level in FPR_LEVELS.items()},
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon": {key: bound.to_dict() for key, bound in self.epsilon.items()},
            "n": {"members": self.n_members, "nonmembers": n_neg},
            "roc": _compact_roc(self.fpr, self.tpr, n_neg),
            **self.details,
        }
