"""Self-contained HTML reports from AuditResults: one audit (`write_report`) or several
generators side by side (`write_comparison`).

The page is built from the AuditResult alone and knows nothing about how it was computed: the
scorecard first (dpaudit/audit/scorecard.py), a summary of the headline metrics, then a section
per check with its headline metrics, the others folded, and its figures, plus the special plots whose inputs a check
left in its `details` (per-class values, the SSIM histogram, ROC curves, the epsilon claim).
One file, no network: CSS inline, images as base64 PNG, no JavaScript, and a
Content-Security-Policy that forbids fetching anything. Jinja2 autoescapes every string.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from scipy.stats import rankdata

from dpaudit.audit.gate import Verdict
from dpaudit.audit.result import AuditResult, CheckResult, Metric
from dpaudit.audit.scorecard import scorecard
from dpaudit.errors import DpauditError
from dpaudit.files import staged
from dpaudit.reports import plots

DIRECTION_TEXT = {
    "higher": ("\u2191", "higher is better"),
    "lower": ("\u2193", "lower is better"),
    "target": ("\u25ce", "closer to the target is better"),
    "info": ("\u00b7", "for information"),
}
# Titles of the figures checks attach (the name otherwise, in words).
FIGURE_TITLES = {
    "worst_pairs": "The most exposed members: the synthetic images closest to a member",
    "blends": "Best-fitting blends of two members",
    "partial_copies": "Best-fitting partial copies",
    "grid": "Reconstructions beside their nearest images",
    "control_grid": "The same attack on the control (a generator that never saw the members)",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL_IMAGE = 320  # narrower images (tiny grids of 28-px tiles) are shown scaled up, pixelated


def fmt(value, digits: int = 4) -> str:
    """A number for people: 4 significant digits, integers as integers, missing as a dash."""
    if value is None or isinstance(value, str):
        return "\u2014" if value is None else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("dpaudit.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


def image(png: str, caption: str = "", title: str = "") -> dict | None:
    """An embeddable image from base64 PNG text, with its display width; None if not a PNG."""
    try:
        raw = base64.b64decode(png, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None
    if raw[:8] != PNG_SIGNATURE or len(raw) < 24:
        return None
    width, height = struct.unpack(">II", raw[16:24])  # the IHDR chunk always comes first
    scale = max(1, min(8, SMALL_IMAGE // max(width, 1)))
    return {"png": png, "caption": caption, "title": title, "width": width * scale, "height": height * scale,
            "pixelated": scale > 1}


def _metric_row(check: str, name: str, metric: Metric, space: str = "") -> dict:
    """A metric as the tables show it; `space`: the feature space its value was measured in."""
    arrow, text = DIRECTION_TEXT[metric.direction]
    return {
        "space": space,
        "check": check,
        "name": name,
        "path": f"{check}.{name}",
        "arrow": arrow,
        "direction": text if metric.direction != "target" else f"closer to {fmt(metric.target)} is better",
        "better": metric.direction if metric.direction != "target" else f"near {fmt(metric.target)}",
        "value": metric.value,
        "ci": metric.ci,
        "baseline": metric.baseline,
        "range": metric.range,
        "meaning": metric.meaning,
        "n": metric.n,
        "invalid": metric.invalid,
    }


def ordered_checks(result: AuditResult) -> list[tuple[str, CheckResult]]:
    """The checks in report order: the order the audit ran them in."""
    return list(result.checks.items())


def check_title(name: str, check: CheckResult) -> str:
    """The check's declared title; for a result of an older version, its name in words."""
    return check.title or name.replace("_", " ").capitalize()


def headline_paths(results: Sequence[AuditResult]) -> list[str]:
    """`check.metric` of every headline metric the checks of `results` declare, in report order."""
    paths: list[str] = []
    for result in results:
        for name, check in ordered_checks(result):
            paths += [f"{name}.{m}" for m in check.headlines if f"{name}.{m}" not in paths]
    return paths


def _per_class_plot(per_class: dict) -> dict:
    values = [v for series in per_class.values() for v in series if v is not None]
    same_scale = all(0 <= v <= 1 for v in values)  # shares and accuracies fit one axis; FID does not
    clean = {k: [math.nan if v is None else v for v in series] for k, series in per_class.items()}
    caption = "Per class: " + ", ".join(per_class) + "."
    return image(plots.per_class_bars(clean, grouped=same_scale), caption, "Per class")


def _ssim_plot(hist: dict) -> dict:
    png = plots.ssim_histogram(hist["edges"], hist["synthetic"], hist.get("holdout"))
    caption = ("SSIM of each synthetic image to its nearest member (filled) against the same for holdout "
               "images, which the generator never saw (line). Mass right of the line means closer to the "
               "training images than fresh real data comes.")
    return image(png, caption, "SSIM to the nearest training image")


def _canary_score_plot(hist: dict) -> dict:
    png = plots.share_histogram(hist["edges"], {"canaries trained on (IN)": hist["included"],
                                                "canaries left out (OUT)": hist["excluded"]},
                                f"{hist['rule']} score (higher: more evidence of training)")
    caption = ("Scores of the canaries that went into training (filled) against those that did not (line). "
               "Without leakage the two have the same distribution; IN mass to the right is the evidence the bounds count.")
    return image(png, caption, "Canary scores")


def _distance_plot(hist: dict) -> dict:
    png = plots.share_histogram(hist["edges"], {"synthetic": hist["synthetic"], "holdout (baseline)": hist["holdout"]},
                                "L2 distance to the nearest member (pixels in [0, 1])")
    caption = ("Distance of each synthetic image to its nearest member (filled) against the same for holdout images, "
               "which the generator never saw (line). Mass left of the line means closer to the training images than "
               "fresh real data comes; a spike at 0 is copies.")
    return image(png, caption, "Distance to the nearest training image")


def _roc_plot(details: dict) -> dict:
    attacks = {name: a for name, a in details["attacks"].items() if isinstance(a, dict) and "roc" in a}
    if not attacks:
        raise KeyError("no attack has a 'roc' curve")
    png = plots.roc_curves(attacks, details.get("strongest"))
    caption = ("ROC of each membership attack, members against holdout. Left: linear axes. Right: log-log, "
               "where the low false-positive rates that matter for privacy are visible; the dotted line is chance.")
    return image(png, caption, "ROC curves")


def _epsilon_plot(check: CheckResult, result: AuditResult) -> dict:
    metric = check.metrics["epsilon_lower_bound"]
    claimed = check.details.get("claimed_epsilon", (result.manifest or {}).get("epsilon"))
    png = plots.epsilon_vs_claimed(metric.value, claimed, metric.ci)
    caption = ("The epsilon the attacks prove at least (a lower bound) against the epsilon the generator claims. "
               "A lower bound above the claim means the claim cannot be true.")
    return image(png, caption, "Empirical epsilon against the claim")


def _attack_table(details: dict) -> dict | None:
    attacks = details.get("attacks")
    if not isinstance(attacks, dict) or not attacks:
        return None
    columns = []
    for attack in attacks.values():
        for key, value in (attack.items() if isinstance(attack, dict) else []):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in columns:
                columns.append(key)
    rows = [[name] + [a.get(c) if isinstance(a, dict) else None for c in columns] for name, a in attacks.items()]
    return {"title": "Attacks", "columns": ["attack"] + columns, "rows": rows, "strongest": details.get("strongest")}


def _special_plots(check: CheckResult, result: AuditResult) -> tuple[list[dict], list[str]]:
    """The plots whose inputs this check holds; a note for any that could not be drawn."""
    details, found, notes = check.details, [], []
    builders = [
        ("per_class", "per_class" in details, lambda: _per_class_plot(details["per_class"])),
        ("ssim_hist", "ssim_hist" in details, lambda: _ssim_plot(details["ssim_hist"])),
        ("l2_hist", "l2_hist" in details, lambda: _distance_plot(details["l2_hist"])),
        ("score_hist", "score_hist" in details, lambda: _canary_score_plot(details["score_hist"])),
        ("attacks", "attacks" in details, lambda: _roc_plot(details)),
        ("epsilon_lower_bound", "epsilon_lower_bound" in check.metrics, lambda: _epsilon_plot(check, result)),
    ]
    for key, present, build in builders:
        if not present:
            continue
        try:
            found.append(build())
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            notes.append(f"could not draw {key!r} from the details: {e}")
    return found, notes


def _scalar_details(details: dict) -> list[tuple[str, object]]:
    return [(k, v) for k, v in details.items() if v is None or isinstance(v, (str, int, float, bool))]


def _alerts(result: AuditResult) -> list[str]:
    """Findings that belong at the top of the page, above the other warnings (a warning that is
    also an alert is listed once, as the alert)."""
    alerts = []
    for _, check in ordered_checks(result):  # membership, privacy_claim and the training audit
        for key in ("holdout_warning", "reaccount_warning"):  # membership's holdout test, the training audit's runs
            if check.details.get(key):
                alerts.append(check.details[key])
        if not check.details.get("claim_violated"):
            continue
        bound = check.metrics.get("epsilon_lower_bound")
        claimed = check.details.get("claimed_epsilon")
        alerts.append(check.details.get("claim_warning") or (
            f"The empirical epsilon lower bound ({fmt(bound.value if bound else None)}) exceeds the claimed "
            f"epsilon ({fmt(claimed)}): the generator's privacy claim does not hold."
        ))
    return alerts


def sample_grid(result: AuditResult) -> dict | None:
    """A grid of synthetic samples: `result.synthetic["samples_png"]`, else a figure named "samples" in any check."""
    png = result.synthetic.get("samples_png")
    if isinstance(png, str):
        labelled = result.synthetic.get("labelled")
        caption = "Random synthetic samples, one row per class." if labelled else "Random synthetic samples."
        return image(png, caption, "Synthetic samples" + (", one row per class" if labelled else ""))
    for _, check in ordered_checks(result):
        figure = check.figures.get("samples")
        if isinstance(figure, dict) and isinstance(figure.get("png"), str):
            return image(figure["png"], figure.get("caption", ""), "Samples")
    return None


def _sections(result: AuditResult, rules_by_metric: dict[str, list]) -> list[dict]:
    sections = []
    for name, check in ordered_checks(result):
        title, blurb = check_title(name, check), check.question
        plots_, notes = _special_plots(check, result)
        figures = []
        for fig_name, figure in check.figures.items():
            png = figure.get("png") if isinstance(figure, dict) else None
            embedded = image(png, figure.get("caption", ""), fig_name) if isinstance(png, str) else None
            if embedded is None:
                notes.append(f"figure {fig_name!r} is not a valid PNG and is left out")
            else:
                figures.append(embedded | {"title": FIGURE_TITLES.get(fig_name, fig_name.replace("_", " ").capitalize())})
        space = str(check.details.get("extractor") or "")  # a check measured in a feature space names it (fidelity)
        rows = [_metric_row(name, k, m, space) | {"gate": rules_by_metric.get(f"{name}.{k}", []),
                                                  "headline": k in check.headlines or not check.headlines}
                for k, m in check.metrics.items()]
        sections.append({
            "id": f"check-{name}",
            "name": name,
            "title": title,
            "blurb": blurb,
            "seconds": check.seconds,
            "headline_metrics": [row for row in rows if row["headline"]],
            "other_metrics": [row for row in rows if not row["headline"]],
            "plots": plots_,
            "figures": figures,
            "attacks": _attack_table(check.details),
            "details": _scalar_details(check.details),
            "notes": notes,
        })
    return sections


def _title(result: AuditResult) -> str:
    return (result.manifest or {}).get("generator") or result.synthetic.get("name") or "synthetic images"


def render_report(result: AuditResult, verdict: Verdict | None = None) -> str:
    """The report as an HTML string (see `write_report`)."""
    rules_by_metric: dict[str, list] = {}
    if verdict is not None:
        for outcome in verdict.outcomes:
            path = ".".join(outcome.rule.metric.split(".")[:2])
            rules_by_metric.setdefault(path, []).append(outcome)
    sections = _sections(result, rules_by_metric)
    return _environment().get_template("report.html.j2").render(
        result=result,
        title=_title(result),
        verdict=verdict,
        sections=sections,
        card=scorecard(result, verdict),
        summary=[row for section in sections for row in section["headline_metrics"]],
        alerts=_alerts(result),
        samples=sample_grid(result),
        synthetic_items=[(k, v) for k, v in result.synthetic.items() if k != "samples_png"],
        manifest_rest={k: v for k, v in (result.manifest or {}).items() if k not in ("details", "versions")},
    )


def write_report(result: AuditResult, path: str | Path, *, verdict: Verdict | None = None) -> Path:
    """Write the self-contained HTML report of one audit (atomically); with `verdict`, a gate
    banner on top."""
    html = render_report(result, verdict)
    with staged(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(path)


# ---- comparison of several generators ----

def _identity(result: AuditResult) -> dict[str, object]:
    """What must be equal for two results to be comparable: the reference data and the feature space."""
    reference, extractor = result.reference, result.feature_extractor
    identity = {
        "reference dataset": reference.get("dataset"),
        "reference split_id": reference.get("split_id"),
        "feature extractor name": extractor.get("name"),
        "feature extractor sha256": extractor.get("sha256"),
    }
    for role in ("members", "holdout", "test"):
        part = reference.get(role)
        identity[f"{role} fingerprint"] = part.get("fingerprint") if isinstance(part, dict) else None
    return identity


def check_comparable(results: Sequence[AuditResult], sources: Sequence[str]) -> None:
    """DpauditError naming what differs when the results were made against different reference
    data, splits or feature extractors (their numbers would not mean the same thing)."""
    if len(results) < 2:
        raise DpauditError("compare needs at least two results.")
    identities = [_identity(r) for r in results]
    differ = []
    for key in identities[0]:
        values = [identity[key] for identity in identities]
        if len(set(map(repr, values))) > 1:
            differ.append(f"{key} ({'; '.join(f'{s}: {v}' for s, v in zip(sources, values))})")
    if differ:
        raise DpauditError("cannot compare results made against different references or feature extractors; they differ in " + ", ".join(differ) + ".")


def _labels(results: Sequence[AuditResult]) -> list[str]:
    labels, seen = [], {}
    for result in results:
        label = _title(result)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def _metric(result: AuditResult, path: str) -> Metric | None:
    check, _, name = path.partition(".")
    return result.checks[check].metrics.get(name) if check in result.checks else None


def _ranking(results: Sequence[AuditResult], labels: list[str]) -> dict:
    """Rank the generators per headline metric (1 = best, ties share) and order them by mean rank."""
    common = [p for p in headline_paths(results) if all(_metric(r, p) is not None for r in results)]
    if not common:
        all_paths = [f"{c}.{m}" for c, check in ordered_checks(results[0]) for m in check.metrics]
        common = [p for p in all_paths if all(_metric(r, p) is not None for r in results)
                  and _metric(results[0], p).direction != "info"]
    columns, ranks = [], []
    for path in common:
        metrics = [_metric(r, path) for r in results]
        direction = metrics[0].direction
        if direction == "info":
            continue
        values = np.array([m.value for m in metrics], dtype=float)
        badness = {"higher": -values, "lower": values}.get(direction, np.abs(values - (metrics[0].target or 0.0)))
        badness = np.where(np.isnan(badness), np.inf, badness)  # an unmeasured value ranks last
        ranks.append(rankdata(badness, method="average"))
        columns.append({"path": path, "arrow": DIRECTION_TEXT[direction][0], "direction": DIRECTION_TEXT[direction][1]})
    mean_rank = np.mean(ranks, axis=0) if ranks else np.zeros(len(results))
    order = sorted(range(len(results)), key=lambda i: (mean_rank[i], labels[i]))
    rows = [{
        "label": labels[i],
        "mean_rank": float(mean_rank[i]),
        "cells": [{"value": _metric(results[i], c["path"]).value, "rank": float(r[i])} for c, r in zip(columns, ranks)],
    } for i in order]
    return {"columns": columns, "rows": rows}


def _scatter(results: Sequence[AuditResult], labels: list[str]) -> dict | None:
    utility = "utility.tstr_accuracy"
    for privacy, name in (("membership.epsilon_lower_bound", "empirical epsilon (lower bound)"), ("membership.auc", "membership AUC")):
        points = []
        for label, result in zip(labels, results):
            x, y = _metric(result, privacy), _metric(result, utility)
            if x is not None and y is not None and math.isfinite(x.value) and math.isfinite(y.value):
                points.append((label, x.value, y.value, x.ci, y.ci))
        if len(points) == len(results):
            png = plots.privacy_utility_scatter(points, xlabel=f"{name}, lower is more private", ylabel="TSTR accuracy")
            return image(png, f"Privacy ({name}) against utility (TSTR accuracy), with 95% intervals as bars where the "
                         "metric has one: the best generators sit top left.", "Privacy against utility")
    return None


def _frontier(results: Sequence[AuditResult]) -> dict | None:
    """TSTR accuracy against the claimed epsilon, one line per generator, where the results hold
    at least two claimed epsilons (a privacy-utility frontier); None otherwise."""
    series: dict[str, list] = {}
    for result in results:
        claimed, tstr = (result.manifest or {}).get("epsilon"), _metric(result, "utility.tstr_accuracy")
        if isinstance(claimed, (int, float)) and claimed > 0 and tstr is not None and math.isfinite(tstr.value):
            series.setdefault(_title(result), []).append((float(claimed), tstr.value, tstr.ci))
    if len({eps for points in series.values() for eps, _, _ in points}) < 2:
        return None
    png = plots.utility_frontier(series, ylabel="TSTR accuracy")
    return image(png, "Utility (TSTR accuracy, 95% intervals) against the claimed epsilon, one line per generator: "
                 "the privacy-utility frontier. Higher at the same epsilon is better.", "Utility against epsilon")


def render_comparison(results: Sequence[AuditResult], sources: Sequence[str] | None = None) -> str:
    """The comparison as an HTML string (see `write_comparison`)."""
    sources = list(sources) if sources is not None else [f"result {i + 1}" for i in range(len(results))]
    check_comparable(results, sources)
    labels = _labels(results)
    paths = []
    for result in results:
        for check, c in ordered_checks(result):
            paths += [f"{check}.{m}" for m in c.metrics if f"{check}.{m}" not in paths]
    table = []
    for path in paths:
        cells = [_metric(r, path) for r in results]
        first = next(m for m in cells if m is not None)
        table.append({"path": path, "meaning": first.meaning, "direction": _metric_row("", "", first)["direction"], "cells": cells})
    profiles = sorted({r.profile for r in results})
    warnings = [f"The results were made with different profiles ({', '.join(profiles)}); their numbers are less comparable."] if len(profiles) > 1 else []
    return _environment().get_template("compare.html.j2").render(
        entries=[{"label": label, "source": source, "result": r, "samples": sample_grid(r), "claimed": (r.manifest or {}).get("epsilon")}
                 for label, source, r in zip(labels, sources, results)],
        reference=results[0].reference,
        extractor=results[0].feature_extractor,
        ranking=_ranking(results, labels),
        scatter=_scatter(results, labels),
        frontier=_frontier(results),
        table=table,
        labels=labels,
        warnings=warnings,
    )


def write_comparison(results: Sequence[AuditResult], path: str | Path, *, sources: Sequence[str] | None = None) -> Path:
    """Write one HTML comparing generators audited against the same reference: a ranking, a
    privacy-utility scatter, sample grids side by side and every metric. `sources` name the
    results (e.g. their files) in messages; results that are not comparable raise DpauditError."""
    html = render_comparison(results, sources)
    with staged(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(path)
