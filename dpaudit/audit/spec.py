"""CheckSpec: what a check declares about itself, once.

Every check module ends with `CHECK = CheckSpec(...)`: its name (the CLI's and the result's),
its title and the question it answers (the report's section heading), whether it trains on the
synthetic labels (the pipeline skips it, with a warning, for an unlabelled set), its headline
metrics (the report's summary, the ranking of `compare`, what `demo` prints) and its
`run(ctx) -> CheckResult`. The pipeline's registry, the report and the CLI all read this
declaration; the result carries title, question and headlines, so the report needs no code of
the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from dpaudit.audit.context import AuditContext
    from dpaudit.audit.result import CheckResult


@dataclass(frozen=True)
class CheckSpec:
    """A check's declaration: name, title, question, needs_labels, headline metrics, run."""

    name: str
    title: str
    question: str
    needs_labels: bool
    headlines: tuple[str, ...]
    run: Callable[["AuditContext"], "CheckResult"]

    def __call__(self, ctx: "AuditContext") -> "CheckResult":
        """Run the check and stamp its result with the declaration."""
        result = self.run(ctx)
        result.title, result.question, result.headlines = self.title, self.question, list(self.headlines)
        return result
