"""The CI gate: a TOML policy of thresholds on an AuditResult -> a verdict, an exit code, JUnit XML.

A policy is a list of rules; each names a metric by its path in the result
(`check.metric` for the value, `check.metric.field` for `ci_low`, `ci_high`, `baseline`,
`target`) and bounds it from above and/or below:

    [[rule]]
    metric = "membership.auc"
    max = 0.6

    [[rule]]
    metric = "utility.tstr_accuracy"
    min = 0.8

    [[rule]]
    name = "empirical epsilon within the claim"    # optional label (default: the rule itself)
    metric = "membership.epsilon_lower_bound"
    max_from = "manifest.epsilon"                  # a bound read from the result itself

`max_from` / `min_from` take the bound from the same result: `manifest.<field>` (the claimed
`epsilon` or `delta`) or another metric path (e.g. `similarity.near_copy_share.baseline`).

A rule passes when the value is within its bounds. A value that is not a number (NaN: the check
ran but could not measure it) fails, and so does a metric marked invalid (e.g. the membership
numbers when the holdout is not exchangeable with the members), with the reason. A path that names nothing, a check that was not run, a
missing bound source (a manifest without `epsilon`) or a malformed policy are errors of the
policy (exit 2), never a pass; their message names the policy file and the rule's number.

A policy file over MAX_POLICY_BYTES, or nested deeper than MAX_DEPTH, is refused before it is
parsed. The JUnit file is written atomically (a temporary file beside it, then a rename).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpaudit.audit.result import AuditResult
from dpaudit.schema import describe, parse_toml, quote, read_text
from dpaudit.errors import DpauditError
from dpaudit.files import staged

if TYPE_CHECKING:
    from dpaudit.audit.scorecard import Scorecard

BOUND_KEYS = ("min", "max", "min_from", "max_from")
RULE_KEYS = ("metric", "name", *BOUND_KEYS)
EXIT_PASS, EXIT_FAIL = 0, 1
# Largest policy file read: a policy is a few [[rule]] tables, well under 10 KB; 1 MiB is
# thousands of rules, and what tomllib needs for it stays a few tens of MB.
MAX_POLICY_BYTES = 2**20


@dataclass(frozen=True)
class Rule:
    """One threshold: `metric` within [min, max], either bound fixed or read from the result."""

    metric: str
    name: str = ""
    min: float | None = None
    max: float | None = None
    min_from: str | None = None
    max_from: str | None = None

    @property
    def label(self) -> str:
        """The rule's name, or what it says (`membership.auc <= 0.6`)."""
        if self.name:
            return self.name
        parts = [f"{self.metric} >= {_bound_text(self.min, self.min_from)}"] if self.has_min else []
        if self.has_max:
            parts.append(f"{self.metric} <= {_bound_text(self.max, self.max_from)}")
        return " and ".join(parts)

    @property
    def has_min(self) -> bool:
        return self.min is not None or self.min_from is not None

    @property
    def has_max(self) -> bool:
        return self.max is not None or self.max_from is not None


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    source: str = ""


@dataclass(frozen=True)
class Outcome:
    """How one rule fared: the measured value, the bounds it was held to, pass or fail."""

    rule: Rule
    value: float
    low: float | None
    high: float | None
    passed: bool
    message: str


@dataclass(frozen=True)
class Verdict:
    """All rules' outcomes; passes when every rule passes."""

    outcomes: tuple[Outcome, ...]
    policy: str = ""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def summary(self) -> str:
        n = len(self.outcomes)
        if self.passed:
            return f"PASS: all {n} rules hold"
        return f"FAIL: {len(self.failures)} of {n} rules broken"


def _bound_text(value: float | None, source: str | None) -> str:
    return f"{value:g}" if source is None else source


def _got(value) -> str:
    return describe(value, "a table")


def _number(source: str, where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DpauditError(f"{source}: {where}: {key!r} must be a finite number, got {_got(value)}.")
    return float(value)


def _path(source: str, where: str, key: str, value) -> str:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[\w-]+", part) for part in parts):
        raise DpauditError(f"{source}: {where}: {key!r} must be a path like 'check.metric' or 'check.metric.field', "
                           f"got {_got(value)}.")
    if parts[0] == "manifest" and len(parts) != 2:
        raise DpauditError(f"{source}: {where}: {key!r} must name one field of the manifest, like 'manifest.epsilon', "
                           f"got {_got(value)}.")
    return value


def parse_policy(data: dict, source: str = "policy") -> Policy:
    """A Policy from parsed TOML; DpauditError naming `source` and the rule (its number, from 1)
    for anything malformed: an unknown key, a missing metric or bound, a value of the wrong type."""
    source = quote(source)
    if not isinstance(data, dict):
        raise DpauditError(f"{source}: a policy must be a table of [[rule]] tables, got {_got(data)}.")
    unknown = sorted(quote(k) for k in set(data) - {"rule"})
    if unknown:
        raise DpauditError(f"{source}: unknown top-level keys {unknown}; a policy is a list of [[rule]] tables.")
    rules = data.get("rule")
    if isinstance(rules, dict):
        raise DpauditError(f"{source}: 'rule' must be an array of tables: write [[rule]], with two brackets, above each rule.")
    if not isinstance(rules, list) or not rules:
        raise DpauditError(f"{source}: no rules; add at least one [[rule]] table with a 'metric' and a bound.")
    parsed = []
    for i, rule in enumerate(rules, start=1):
        where = f"rule {i}"
        if not isinstance(rule, dict):
            raise DpauditError(f"{source}: {where} must be a [[rule]] table, got {_got(rule)}.")
        unknown = sorted(quote(k) for k in set(rule) - set(RULE_KEYS))
        if unknown:
            raise DpauditError(f"{source}: {where} has unknown keys {unknown}; allowed: {', '.join(RULE_KEYS)}.")
        if "metric" not in rule:
            raise DpauditError(f"{source}: {where} needs a 'metric' (a path like 'membership.auc').")
        metric = _path(source, where, "metric", rule["metric"])
        for side in ("min", "max"):
            if side in rule and f"{side}_from" in rule:
                raise DpauditError(f"{source}: {where} ({metric}) gives both {side!r} and '{side}_from'; keep one.")
        if not any(k in rule for k in BOUND_KEYS):
            raise DpauditError(f"{source}: {where} ({metric}) has no bound; give 'min', 'max', 'min_from' or 'max_from'.")
        name = rule.get("name", "")
        if not isinstance(name, str):
            raise DpauditError(f"{source}: {where}: 'name' must be a string, got {_got(name)}.")
        low = _number(source, where, "min", rule["min"]) if "min" in rule else None
        high = _number(source, where, "max", rule["max"]) if "max" in rule else None
        if low is not None and high is not None and low > high:
            raise DpauditError(f"{source}: {where} ({metric}): min {low:g} is above max {high:g}.")
        parsed.append(
            Rule(
                metric=metric,
                name=name,
                min=low,
                max=high,
                min_from=_path(source, where, "min_from", rule["min_from"]) if "min_from" in rule else None,
                max_from=_path(source, where, "max_from", rule["max_from"]) if "max_from" in rule else None,
            )
        )
    return Policy(tuple(parsed), source)


def load_policy(path: str | Path) -> Policy:
    """Read a TOML policy file: its size and nesting checked before parsing, then every rule."""
    text = read_text(path, max_bytes=MAX_POLICY_BYTES, what="policy file")
    return parse_policy(parse_toml(text, path), str(path))


def _lookup(result: AuditResult, path: str, where: str) -> float:
    """The number at `path`: `manifest.<field>` or a metric path; DpauditError (its message
    headed by `where`: the policy file and the rule) if it names nothing."""
    head, _, rest = path.partition(".")
    if head == "manifest":
        manifest = result.manifest or {}
        value = manifest.get(rest)
        if value is None:
            raise DpauditError(f"{where}: {path!r} names nothing: the result's manifest has no {rest!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DpauditError(f"{where}: {path!r} is not a finite number (got {describe(value)}).")
        return float(value)
    if head not in result.checks:
        raise DpauditError(
            f"{where}: {path!r}: the check {head!r} was not run for this result "
            f"(it has {', '.join(sorted(result.checks)) or 'no checks'}); run it or drop the rule."
        )
    try:
        value = result.get(path)
    except DpauditError as e:
        raise DpauditError(f"{where}: {e}") from None
    if value is None:
        raise DpauditError(f"{where}: {path!r} is not set in this result.")
    return float(value)


def _invalid(result: AuditResult, path: str | None) -> str | None:
    """Why the metric at `path` cannot be trusted (its `invalid` reason); None for a valid metric
    or a bound from the manifest."""
    if path is None or path.startswith("manifest."):
        return None
    check, metric = path.split(".")[:2]
    return result.checks[check].metrics[metric].invalid


def apply_policy(result: AuditResult, policy: Policy) -> Verdict:
    """Hold every rule against `result`; DpauditError, naming the policy file and the rule, for a
    rule that names nothing in it."""
    outcomes = []
    for i, rule in enumerate(policy.rules, start=1):
        where = f"{policy.source or 'policy'}: rule {i}"
        value = _lookup(result, rule.metric, where)
        low = _lookup(result, rule.min_from, where) if rule.min_from else rule.min
        high = _lookup(result, rule.max_from, where) if rule.max_from else rule.max
        reasons = [r for p in (rule.metric, rule.min_from, rule.max_from) if (r := _invalid(result, p))]
        if reasons:
            passed, message = False, f"{rule.metric} cannot be trusted: {reasons[0]}"
        elif math.isnan(value):
            passed, message = False, f"{rule.metric} was not measured (NaN)"
        elif any(b is not None and math.isnan(b) for b in (low, high)):
            passed, message = False, f"the bound {rule.min_from or rule.max_from} was not measured (NaN)"
        elif low is not None and value < low:
            passed, message = False, f"{rule.metric} = {value:.4g} is below {low:.4g}"
        elif high is not None and value > high:
            passed, message = False, f"{rule.metric} = {value:.4g} is above {high:.4g}"
        else:
            passed, message = True, f"{rule.metric} = {value:.4g} is within bounds"
        outcomes.append(Outcome(rule, value, low, high, passed, message))
    return Verdict(tuple(outcomes), policy.source)


def _bounds(outcome: Outcome) -> str:
    rule, parts = outcome.rule, []
    if outcome.low is not None:
        parts.append(f">= {outcome.low:.4g}" + (f" ({rule.min_from})" if rule.min_from else ""))
    if outcome.high is not None:
        parts.append(f"<= {outcome.high:.4g}" + (f" ({rule.max_from})" if rule.max_from else ""))
    return ", ".join(parts)


def format_table(verdict: Verdict) -> str:
    """The rules as a plain-text table, one line each, and the verdict."""
    rows = [("rule", "value", "bound", "status")]
    for o in verdict.outcomes:
        rows.append((o.rule.label, f"{o.value:.4g}", _bounds(o), "pass" if o.passed else "FAIL"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(lines + ["", verdict.summary()])


def write_junit(verdict: Verdict, path: str | Path, *, result_name: str = "", card: Scorecard | None = None) -> Path:
    """JUnit XML for CI dashboards: one testsuite, one testcase per rule, broken rules as <failure>.
    With `card` (the result's scorecard), the suite is named by its answers and its text is the
    suite's <system-out>, so that a dashboard shows the three answers beside the rules.
    Written atomically (a temporary file beside it, then a rename: dpaudit.files.staged);
    DpauditError naming the file when it cannot be written (a folder that cannot be made, or is
    not writable), the previous file then unchanged."""
    from dpaudit.audit.scorecard import format_scorecard  # here: the scorecard module imports this one

    suites = ET.Element("testsuites", name="dpaudit gate")
    name = "dpaudit gate" + (f" ({result_name})" if result_name else "") + (f": {card.title}" if card else "")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=name,
        tests=str(len(verdict.outcomes)),
        failures=str(len(verdict.failures)),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (("policy", verdict.policy), ("result", result_name)):
        ET.SubElement(properties, "property", name=key, value=value)
    for o in verdict.outcomes:
        case = ET.SubElement(suite, "testcase", classname="dpaudit.gate", name=o.rule.label)
        if not o.passed:
            failure = ET.SubElement(case, "failure", message=o.message, type="threshold")
            failure.text = f"{o.message}; bound: {_bounds(o)}"
    if card is not None:
        ET.SubElement(suite, "system-out").text = format_scorecard(card)
    data = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    with staged(path) as temporary:  # an OSError becomes a DpauditError naming the file
        temporary.write_bytes(data)
    return Path(path)
