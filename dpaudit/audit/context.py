"""AuditContext: the inputs of one audit and what checks share (features, the downstream model).

Every check is a function `run(ctx: AuditContext) -> CheckResult`. A check reads its own
budgets with `ctx.settings(PROFILES)`, where PROFILES maps profile name -> settings dict and
is defined in the check's own module. Work that two checks need (features of a set, the
classifier trained on the synthetic set) is computed once and kept in the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest

PROFILE_NAMES = ("quick", "standard", "paper")


@dataclass
class AuditContext:
    """The synthetic set, the real reference, the profile, the seed and the shared caches."""

    synthetic: ImageSet
    reference: Reference
    profile: str = "quick"
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    manifest: Manifest | None = None
    # images -> N x D float32 features; set by the pipeline (see audit/features.py).
    extractor: Callable[[ImageSet], torch.Tensor] | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_NAMES:
            raise DpauditError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILE_NAMES)}.")

    def settings(self, profiles: dict[str, dict]) -> dict:
        """This profile's settings from a check's PROFILES table."""
        return profiles[self.profile]

    def images(self, role: str) -> ImageSet:
        """`synthetic`, `members`, `holdout` or `test`."""
        return self.synthetic if role == "synthetic" else getattr(self.reference, role)

    def features(self, role: str) -> torch.Tensor:
        """Features of `synthetic`, `members`, `holdout` or `test`, computed once."""
        key = f"features:{role}"
        if key not in self.shared:
            if self.extractor is None:
                raise RuntimeError("AuditContext.extractor is not set")
            self.shared[key] = self.extractor(self.images(role))
        return self.shared[key]

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per context under `key` (e.g. the classifier trained on the synthetic set)."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]

    def warn(self, message: str) -> None:
        """Record a warning that goes into the result and the report."""
        if message not in self.warnings:
            self.warnings.append(message)
