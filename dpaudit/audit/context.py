"""AuditContext: the inputs of one audit and what checks share (features, the downstream model).

Every check is a function `run(ctx: AuditContext) -> CheckResult`. A check reads its settings
from the typed profile, `ctx.profile.<check>` (dpaudit/audit/profiles.py). Work that two checks
need (features of a set, the classifier trained on the synthetic set) is computed once and kept
in the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from dpaudit.datasets import Reference
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest

if TYPE_CHECKING:
    from dpaudit.audit.profiles import Profile


@dataclass
class AuditContext:
    """The synthetic set, the real reference, the profile, the seed and the shared caches."""

    synthetic: ImageSet
    reference: Reference
    profile: "Profile | str" = "quick"
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    manifest: Manifest | None = None
    # images -> N x D float32 features; set by the pipeline (see audit/features.py).
    extractor: Callable[[ImageSet], torch.Tensor] | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from dpaudit.audit.profiles import get_profile  # the profiles import every check's config

        self.profile = get_profile(self.profile)

    def images(self, role: str) -> ImageSet:
        """`synthetic`, `members`, `holdout` or `test`."""
        return self.synthetic if role == "synthetic" else getattr(self.reference, role)

    def features(self, role: str) -> torch.Tensor:
        """Features of `synthetic`, `members`, `holdout` or `test`, computed once (the real sets'
        from the on-disk feature cache, see `real_features`)."""
        key = f"features:{role}"
        if key not in self.shared:
            images = self.images(role)
            self.shared[key] = self.extractor(images) if role == "synthetic" else self.real_features(images)
        return self.shared[key]

    def real_features(self, images: ImageSet) -> torch.Tensor:
        """Features of real images (the reference's sets or parts of them) through the on-disk
        cache, so that later audits against the same reference read them instead of extracting
        them again (an extractor without a cache is called directly)."""
        if self.extractor is None:
            raise RuntimeError("AuditContext.extractor is not set")
        if "real_extractor" not in self.shared:
            cached = getattr(self.extractor, "cached", None)
            self.shared["real_extractor"] = cached() if callable(cached) else self.extractor
        return self.shared["real_extractor"](images)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per context under `key` (e.g. the classifier trained on the synthetic set)."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]

    def warn(self, message: str) -> None:
        """Record a warning that goes into the result and the report."""
        if message not in self.warnings:
            self.warnings.append(message)
