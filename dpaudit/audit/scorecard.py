"""The scorecard: three answers a person signing off a release reads first, from an AuditResult.

Is it faithful? Is it useful? Does it leak? Each answer has a verdict, one headline figure with
its 95% interval and its baseline, and one plain sentence; the claimed epsilon, the epsilons
the audit proved and the most it could have proved sit together beside them. The HTML report
heads its page with it, `evaluate` prints it, and the gate's JUnit file carries it.

Where does a verdict come from? From the gate's policy where one is applied and it has rules on
that question's checks (fidelity for faithful, utility for useful, every other check for
leaking); otherwise from the default thresholds below, and the answer says which. A violated
privacy claim (a check's `claim_violated`, or a manifest whose declared mechanism does not give
the claimed epsilon) always answers "does it leak?" with yes.

Default thresholds (documented in the README; a policy replaces them):

- faithful: coverage (Naeem et al. 2020: the share of members whose k-NN ball holds a synthetic
  image) against the same for as many fresh holdout images: at least 90% of the holdout's
  coverage "yes", at least 50% "partly", below "no". Coverage, not FID, because it is on a scale
  a reader can judge (a share) and it is not fooled by outliers; FID is in the sentence.
- useful: the share of the real data's gain over chance that training on synthetic data keeps,
  (TSTR - chance) / (TRTR - chance): at least 90% "yes", at least 50% "partly", below "no".
- leaking: DEFAULT_LEAKAGE_POLICY, the README's example policy (fail on evidence of leakage:
  each rule reads the low end of a 95% interval), the rules whose checks ran. A rule that reads
  an invalid metric (a holdout not exchangeable with the members) makes the answer "cannot tell".
"""

from __future__ import annotations

import math
import textwrap
import tomllib
from dataclasses import dataclass, field

from dpaudit.audit.gate import Outcome, Policy, Verdict, apply_policy, parse_policy
from dpaudit.audit.result import AuditResult, Metric
from dpaudit.errors import DpauditError

FAITHFUL_YES, FAITHFUL_PARTLY = 0.9, 0.5  # coverage / the holdout's coverage
USEFUL_YES, USEFUL_PARTLY = 0.9, 0.5  # (TSTR - chance) / (TRTR - chance)
DEFAULT_LEAKAGE_TOML = """
[[rule]]
metric = "membership.auc.ci_low"
max = 0.6

[[rule]]
metric = "membership.tpr_at_fpr_0p1pct.ci_low"
max = 0.01

[[rule]]
metric = "similarity.near_copy_excess.ci_low"
max = 0.005

[[rule]]
metric = "similarity.blend_excess.ci_low"
max = 0.005

[[rule]]
metric = "similarity.partial_copy_excess.ci_low"
max = 0.005
"""
DEFAULT_LEAKAGE_POLICY = parse_policy(tomllib.loads(DEFAULT_LEAKAGE_TOML), "dpaudit's default leakage thresholds")
DEFAULT_SOURCE = "default thresholds"

# status: how the answer reads for a release, whatever the question ("pass" is good news)
PASS, PARTLY, FAIL, UNKNOWN = "pass", "partly", "fail", "unknown"


@dataclass(frozen=True)
class Figure:
    """The one number an answer stands on: a metric's value, interval and baseline."""

    label: str
    path: str
    value: float
    ci: tuple[float, float] | None
    baseline: float | None
    baseline_label: str
    percent: bool = False

    def text(self) -> str:
        """'AUC 0.44 (95% CI 0.38-0.50; chance 0.5)'."""
        parts = [f"95% CI {number(self.ci[0], self.percent)}-{number(self.ci[1], self.percent)}"] if self.ci else []
        if self.baseline is not None:
            parts.append(f"{self.baseline_label} {number(self.baseline, self.percent)}")
        return f"{self.label} {number(self.value, self.percent)}" + (f" ({'; '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class Answer:
    """One question's answer: `verdict` in words, `status` (pass, partly, fail, unknown) for
    colour, `source` (the policy or the default thresholds), the headline figure, one sentence,
    and the broken rules behind a failing verdict."""

    key: str
    question: str
    verdict: str
    status: str
    source: str
    figure: Figure | None
    sentence: str
    broken: tuple[str, ...] = ()


@dataclass(frozen=True)
class Epsilons:
    """The privacy claim beside the evidence: claimed, re-accounted from the declared mechanism,
    proven by each attack family (lower bounds), and the most this audit could have proven."""

    claimed: float | None = None
    reaccounted: float | None = None
    proven: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None

    def sentence(self) -> str:
        if self.claimed is None and not self.proven:
            return ""
        parts = [f"claimed epsilon {number(self.claimed)}" if self.claimed is not None else "no epsilon claimed"]
        if self.reaccounted is not None:
            parts.append(f"re-accounted from the declared mechanism {number(self.reaccounted)}")
        for name, value in self.proven.items():
            parts.append(f"proven at least {number(value)} ({name})")
        if self.ceiling is not None:
            parts.append(f"the most this audit could have proven {number(self.ceiling)}")
        return "Privacy: " + "; ".join(parts) + "."


@dataclass(frozen=True)
class Scorecard:
    answers: tuple[Answer, ...]
    epsilons: Epsilons

    @property
    def title(self) -> str:
        """One line: 'faithful: partly; useful: yes; leaks: no evidence'."""
        return "; ".join(f"{a.key}: {a.verdict}" for a in self.answers)


def number(value: float | None, percent: bool = False) -> str:
    """3 significant digits (a percentage with one decimal), a dash for None, n/a for NaN."""
    if value is None:
        return "\u2014"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3g}"


def _metric(result: AuditResult, path: str) -> Metric | None:
    check, _, name = path.partition(".")
    metric = result.checks[check].metrics.get(name) if check in result.checks else None
    return metric if metric is not None and isinstance(metric.value, (int, float)) and not math.isnan(metric.value) else None


def _figure(result: AuditResult, path: str, label: str, baseline_label: str, percent: bool = False,
            baseline: float | None = None) -> Figure | None:
    metric = _metric(result, path)
    if metric is None:
        return None
    return Figure(label, path, float(metric.value), tuple(metric.ci) if metric.ci else None,
                  metric.baseline if baseline is None else baseline, baseline_label, percent)


def _level(ratio: float, yes: float, partly: float) -> tuple[str, str]:
    return ("yes", PASS) if ratio >= yes else ("partly", PARTLY) if ratio >= partly else ("no", FAIL)


def _from_policy(verdict: Verdict | None, checks: set[str]) -> list[Outcome]:
    if verdict is None:
        return []
    return [o for o in verdict.outcomes if o.rule.metric.split(".")[0] in checks]


def _policy_answer(outcomes: list[Outcome], good: str, bad: str, policy: str) -> tuple[str, str, str, tuple[str, ...]]:
    broken = tuple(o.message for o in outcomes if not o.passed)
    rules = f"{len(outcomes)} rule{'s' if len(outcomes) != 1 else ''}"
    return (bad, FAIL, f"policy {policy or 'given'} ({rules})", broken) if broken else (good, PASS, f"policy {policy or 'given'} ({rules})", ())


def _faithful(result: AuditResult, verdict: Verdict | None) -> Answer:
    question = "Is it faithful?"
    coverage = _figure(result, "fidelity.coverage", "coverage", "fresh real images", percent=True)
    fid = _metric(result, "fidelity.fid")
    if coverage is None and fid is None:
        return Answer("faithful", question, "not measured", UNKNOWN, "", None, "The fidelity check did not run.")
    space = result.checks["fidelity"].details.get("extractor") or result.feature_extractor.get("name", "")
    sentences = []
    if coverage is not None:
        sentences.append(f"The synthetic images reach {number(coverage.value, True)} of the members' neighbourhoods "
                         f"(coverage), where as many fresh real images reach {number(coverage.baseline, True)}.")
    if fid is not None:
        sentences.append(f"FID {number(fid.value)} against {number(fid.baseline)} for those real images, "
                         f"in {space} features.")
    outcomes = _from_policy(verdict, {"fidelity"})
    if outcomes:
        word, status, source, broken = _policy_answer(outcomes, "yes", "no", verdict.policy)
    elif coverage is not None and coverage.baseline:
        (word, status), source, broken = _level(coverage.value / coverage.baseline, FAITHFUL_YES, FAITHFUL_PARTLY), DEFAULT_SOURCE, ()
    else:
        word, status, source, broken = "not measured", UNKNOWN, DEFAULT_SOURCE, ()
    figure = coverage or _figure(result, "fidelity.fid", "FID", "fresh real images")
    return Answer("faithful", question, word, status, source, figure, " ".join(sentences), broken)


def _chance(result: AuditResult) -> float:
    classes = (result.reference.get("members") or {}).get("num_classes") or result.synthetic.get("num_classes")
    return 1.0 / classes if isinstance(classes, int) and classes > 1 else 0.0


def _useful(result: AuditResult, verdict: Verdict | None) -> Answer:
    question = "Is it useful?"
    tstr = _metric(result, "utility.tstr_accuracy")
    if tstr is None:
        return Answer("useful", question, "not measured", UNKNOWN, "", None, "The utility check did not run.")
    trtr_metric = _metric(result, "utility.trtr_accuracy")
    ceiling = trtr_metric.value if trtr_metric is not None else tstr.baseline
    figure = _figure(result, "utility.tstr_accuracy", "TSTR accuracy", "trained on real data", percent=True, baseline=ceiling)
    chance = _chance(result)
    sentence = (f"A classifier trained on the synthetic images scores {number(tstr.value, True)} on real test images"
                + (f", against {number(ceiling, True)} when trained on the real members" if ceiling is not None else "") + ".")
    retained = (tstr.value - chance) / (ceiling - chance) if ceiling is not None and ceiling > chance else None
    if retained is not None:
        sentence += f" It keeps {number(retained, True)} of the real data's gain over chance ({number(chance, True)})."
    outcomes = _from_policy(verdict, {"utility"})
    if outcomes:
        word, status, source, broken = _policy_answer(outcomes, "yes", "no", verdict.policy)
    elif retained is not None:
        (word, status), source, broken = _level(retained, USEFUL_YES, USEFUL_PARTLY), DEFAULT_SOURCE, ()
    else:
        word, status, source, broken = "not measured", UNKNOWN, DEFAULT_SOURCE, ()
    return Answer("useful", question, word, status, source, figure, sentence, broken)


def _default_leakage_outcomes(result: AuditResult) -> list[Outcome]:
    """The default leakage rules whose metrics this result holds."""
    rules = []
    for rule in DEFAULT_LEAKAGE_POLICY.rules:
        try:
            if result.get(rule.metric) is not None:
                rules.append(rule)
        except DpauditError:
            continue  # a check that did not run, or an older result without the metric
    return list(apply_policy(result, Policy(tuple(rules), DEFAULT_SOURCE)).outcomes) if rules else []


def _leak_sentences(result: AuditResult) -> list[str]:
    sentences = []
    auc = _metric(result, "membership.auc")
    if auc is not None:
        better = auc.ci is not None and auc.ci[0] > 0.5
        ci = f", 95% CI {number(auc.ci[0])}-{number(auc.ci[1])}" if auc.ci else ""
        sentences.append(("The best membership attack does better than guessing" if better else
                          "No membership attack did better than guessing") + f" (AUC {number(auc.value)}{ci}).")
        details = result.checks["membership"].details
        targets = (details.get("targets") or {}).get("members")
        ceiling = _membership_ceiling(result)
        bound = _metric(result, "membership.epsilon_lower_bound")
        if bound is not None and bound.value > 0:
            sentences.append(f"The attacks prove epsilon >= {number(bound.value)}.")
        if ceiling is not None and targets:
            sentences.append(f"With {targets:,} targets a side, this audit could not have proven an epsilon above {number(ceiling)}.")
    canaries = _metric(result, "training_audit.epsilon_lower_bound")
    if canaries is not None:
        ceiling = _metric(result, "training_audit.ceiling")
        sentences.append(f"The canaries prove epsilon >= {number(canaries.value)}"
                         + (f"; a perfect attack on them could prove at most {number(ceiling.value)}." if ceiling else "."))
    copies = _metric(result, "similarity.near_copy_share")
    if copies is not None:
        sentences.append(f"{number(copies.value, True)} of synthetic images nearly copy a member, against "
                         f"{number(copies.baseline, True)} of fresh real images.")
    return sentences


def _membership_ceiling(result: AuditResult) -> float | None:
    ceiling = result.checks["membership"].details.get("ceiling") if "membership" in result.checks else None
    values = [v for v in ceiling.values() if isinstance(v, (int, float))] if isinstance(ceiling, dict) else []
    return max(values) if values else None


def _claim_failures(result: AuditResult) -> list[str]:
    failures = []
    for name, check in result.checks.items():
        if check.details.get("claim_violated"):
            failures.append(check.details.get("claim_warning") or f"{name}: the privacy claim does not hold")
        if check.details.get("reaccount_warning"):
            failures.append(check.details["reaccount_warning"])
    return failures


def _leaking(result: AuditResult, verdict: Verdict | None) -> Answer:
    question = "Does it leak?"
    leak_checks = set(result.checks) - {"fidelity", "utility"}
    if not leak_checks:
        return Answer("leaks", question, "not measured", UNKNOWN, "", None, "No privacy check ran.")
    outcomes = _from_policy(verdict, leak_checks)
    source = f"policy {verdict.policy or 'given'} ({len(outcomes)} rules)" if outcomes else DEFAULT_SOURCE
    if not outcomes:
        outcomes = _default_leakage_outcomes(result)
    claim = _claim_failures(result)
    evidence = [o.message for o in outcomes if not o.passed and "cannot be trusted" not in o.message]
    untrusted = [o.message for o in outcomes if not o.passed and "cannot be trusted" in o.message]
    if claim or evidence:
        word, status = "yes", FAIL
    elif untrusted:
        word, status = "cannot tell", UNKNOWN
    else:
        word, status = "no evidence", PASS
    figure = (_figure(result, "membership.auc", "membership AUC", "chance")
              or _figure(result, "training_audit.epsilon_lower_bound", "epsilon proven", "ceiling")
              or _figure(result, "similarity.near_copy_excess", "near-copy excess", "fresh real images", percent=True))
    sentence = " ".join(_leak_sentences(result) + claim)
    return Answer("leaks", question, word, status, source, figure, sentence, tuple(claim + evidence + untrusted))


def _epsilons(result: AuditResult) -> Epsilons:
    claimed = (result.manifest or {}).get("epsilon")
    if claimed is None and (m := _metric(result, "training_audit.claimed_epsilon")) is not None:
        claimed = m.value
    reaccounted = _metric(result, "privacy_claim.reaccounted_epsilon")
    proven = {}
    for path, name in (("membership.epsilon_lower_bound", "membership attacks"), ("training_audit.epsilon_lower_bound", "canaries")):
        if (m := _metric(result, path)) is not None:
            proven[name] = float(m.value)
    ceilings = [c for c in (_membership_ceiling(result), getattr(_metric(result, "training_audit.ceiling"), "value", None)) if c is not None]
    return Epsilons(claimed=claimed if isinstance(claimed, (int, float)) else None,
                    reaccounted=None if reaccounted is None else float(reaccounted.value),
                    proven=proven, ceiling=max(ceilings) if ceilings else None)


def scorecard(result: AuditResult, verdict: Verdict | None = None) -> Scorecard:
    """The three answers and the epsilons of `result`; with `verdict` (the gate's, on this
    result), each question the policy has rules on is answered by them."""
    return Scorecard((_faithful(result, verdict), _useful(result, verdict), _leaking(result, verdict)), _epsilons(result))


def format_scorecard(card: Scorecard, width: int = 100) -> str:
    """The scorecard as plain text for the terminal: a line per answer, its sentence wrapped below."""
    lines = []
    for a in card.answers:
        source = f"  [{a.source}]" if a.source else ""
        lines.append(f"{a.question:<17} {a.verdict.upper():<13}{a.figure.text() if a.figure else ''}{source}".rstrip())
        lines += textwrap.wrap(a.sentence, width, initial_indent="    ", subsequent_indent="    ")
        lines += [f"    broken: {b}" for b in a.broken if b not in a.sentence]
    if card.epsilons.sentence():
        lines += textwrap.wrap(card.epsilons.sentence(), width)
    return "\n".join(lines)
