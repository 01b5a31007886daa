"""Metric: one number with what it means. Every check, and every attack that reports its own
success, returns its numbers as Metrics; `dpaudit.audit.result` serialises them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DIRECTIONS = ("higher", "lower", "target", "info")


@dataclass
class Metric:
    """One number with what it means: `direction` says which way is better ("higher",
    "lower", "target" = closer to `target` is better, "info" = neither); `invalid` says why it
    cannot be trusted, where it cannot."""

    value: float
    direction: str
    meaning: str
    range: tuple[float, float] | None = None
    ci: tuple[float, float] | None = None
    baseline: float | None = None
    target: float | None = None
    n: dict[str, int] = field(default_factory=dict)
    # Why the number cannot be trusted, where it cannot (e.g. a holdout that is not exchangeable
    # with the members); the gate fails any rule that reads an invalid metric, saying why.
    invalid: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        # JSON stores NaN as null; read it back as NaN.
        self.value = math.nan if self.value is None else float(self.value)
