"""The report's plots, drawn with matplotlib (Agg) and returned as base64 PNG text.

Each function takes plain numbers (what an AuditResult stores) and returns the PNG as base64,
ready for `<img src="data:image/png;base64,...">`. Figures are built with
`matplotlib.figure.Figure` directly, not pyplot, so no global state or GUI backend is touched.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

# One colour per series, the same in every plot (matplotlib's tab10).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def plain(text: str) -> str:
    """User text (a generator or attack name) shown literally: matplotlib would parse `$...$` as math."""
    return str(text).replace("$", r"\$")


def to_png(fig: Figure, dpi: int = 100) -> str:
    """Render a figure to base64 PNG text (no timestamp or version metadata, so the bytes are stable)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def per_class_bars(per_class: Mapping[str, Sequence[float]], *, ylabel: str = "", grouped: bool = True) -> str:
    """Bars per class. `grouped`: all series side by side on one axis (same scale, e.g. TSTR vs
    TRTR accuracy); otherwise one panel per series (different scales, e.g. FID and recall)."""
    series = {name: np.asarray(values, dtype=float) for name, values in per_class.items()}
    n_classes = max(len(v) for v in series.values())
    classes = np.arange(n_classes)
    if grouped:
        fig = Figure(figsize=(max(4.0, 0.55 * n_classes + 1.5), 2.8))
        ax = fig.add_subplot()
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar(np.arange(len(values)) + offset, values, width, label=plain(name), color=COLOURS[i % len(COLOURS)])
        if len(series) > 1:
            ax.legend(fontsize=8, loc="lower right")
        ax.set_ylabel(ylabel)
        axes = [ax]
    else:
        fig = Figure(figsize=(max(4.0, 0.4 * n_classes + 1.5), 1.9 * len(series)))
        axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        for i, (ax, (name, values)) in enumerate(zip(axes, series.items())):
            ax.bar(np.arange(len(values)), values, 0.7, color=COLOURS[i % len(COLOURS)])
            ax.set_ylabel(plain(name), fontsize=8)
    for ax in axes:
        ax.set_xticks(classes)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel("class")
    fig.tight_layout()
    return to_png(fig)


def ssim_histogram(edges: Sequence[float], synthetic: Sequence[float], holdout: Sequence[float] | None) -> str:
    """Histogram of each synthetic image's SSIM to its nearest real member, beside the same for
    holdout images (real images the generator never saw): mass to the right of the holdout
    curve means synthetic images closer to training images than fresh real data is."""
    return share_histogram(edges, {"synthetic": synthetic, "holdout (baseline)": holdout}, "SSIM to the nearest member")


def share_histogram(edges: Sequence[float], series: Mapping[str, Sequence[float] | None], xlabel: str) -> str:
    """Counts over shared bins as shares of each series: the first filled, the others as lines
    (a series that is None is left out)."""
    edges = np.asarray(edges, dtype=float)
    fig = Figure(figsize=(5.0, 2.8))
    ax = fig.add_subplot()
    for i, (name, counts) in enumerate(series.items()):
        if counts is None:
            continue
        counts = np.asarray(counts, dtype=float)
        share = counts / counts.sum() if counts.sum() > 0 else counts
        ax.stairs(share, edges, label=plain(name), color=COLOURS[i], fill=(i == 0), alpha=0.5 if i == 0 else 1.0,
                  linewidth=1.8)
    ax.set_xlabel(plain(xlabel))
    ax.set_ylabel("share")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def roc_curves(attacks: Mapping[str, Mapping], strongest: str | None = None) -> str:
    """ROC curves of the membership attacks on linear axes and on log-log axes (where the
    low-FPR regime that matters for privacy is visible); the strongest attack drawn thickest."""
    fig = Figure(figsize=(9.0, 3.8))
    linear, loglog = fig.subplots(1, 2)
    smallest = 1.0
    for i, (name, attack) in enumerate(attacks.items()):
        fpr = np.asarray(attack["roc"]["fpr"], dtype=float)
        tpr = np.asarray(attack["roc"]["tpr"], dtype=float)
        auc = attack.get("auc")
        label = plain(name) if auc is None else f"{plain(name)} (AUC {auc:.3f})"
        style = {"color": COLOURS[i % len(COLOURS)], "linewidth": 2.4 if name == strongest else 1.3}
        linear.plot(fpr, tpr, label=label, **style)
        keep = (fpr > 0) & (tpr > 0)  # zeros have no place on log axes
        if keep.any():
            loglog.plot(fpr[keep], tpr[keep], **style)
            smallest = min(smallest, fpr[keep].min(), tpr[keep].min())
    floor = 10 ** math.floor(math.log10(smallest)) if smallest < 1 else 1e-3
    linear.plot([0, 1], [0, 1], "k:", linewidth=1, label="chance")
    loglog.plot([floor, 1], [floor, 1], "k:", linewidth=1)
    linear.set(xlim=(0, 1), ylim=(0, 1), title="ROC (linear)")
    loglog.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1), title="ROC (log-log)")
    for ax in (linear, loglog):
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    linear.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return to_png(fig)


def epsilon_vs_claimed(empirical: float, claimed: float | None, ci: Sequence[float] | None = None) -> str:
    """The empirical epsilon lower bound (what the attacks proved) beside the claimed epsilon
    (what the generator promised). A lower bound above the claim means the claim is false."""
    fig = Figure(figsize=(5.0, 1.9))
    ax = fig.add_subplot()
    names = ["empirical lower bound"]
    values = [0.0 if not math.isfinite(empirical) else empirical]
    colours = [COLOURS[3] if claimed is not None and empirical > claimed else COLOURS[0]]
    if claimed is not None:
        names.append("claimed")
        values.append(claimed)
        colours.append(COLOURS[7])
    bars = ax.barh(names, values, color=colours, height=0.55)
    if ci is not None:
        ax.errorbar([empirical], [0], xerr=[[empirical - ci[0]], [ci[1] - empirical]], fmt="none", ecolor="k", capsize=4)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.3g}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    if claimed is None:
        ax.set_title("no claimed epsilon (the manifest gives none)", fontsize=9)
    ax.set_xlabel("epsilon")
    ax.set_xlim(0, max(values + [1e-9]) * 1.25 or 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return to_png(fig)


def _error(value: float, ci: Sequence[float] | None) -> list[list[float]] | None:
    """An interval as matplotlib's asymmetric error bar (None: no bar)."""
    return None if ci is None else [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def privacy_utility_scatter(points: Sequence[tuple], *, xlabel: str, ylabel: str) -> str:
    """One point per generator, (label, x, y[, x interval, y interval]): privacy leakage (x, lower
    is better) against utility (y, higher is better), with the 95% intervals as error bars; the
    best corner is the top left."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for i, (label, x, y, *intervals) in enumerate(points):
        x_ci, y_ci = (list(intervals) + [None, None])[:2]
        ax.errorbar([x], [y], xerr=_error(x, x_ci), yerr=_error(y, y_ci), fmt="o", markersize=7, capsize=3,
                    color=COLOURS[i % len(COLOURS)], zorder=3)
        ax.annotate(plain(label), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    return to_png(fig)


def utility_frontier(series: Mapping[str, Sequence[tuple[float, float, Sequence[float] | None]]], *, ylabel: str) -> str:
    """Utility against the claimed epsilon, one line per generator through its (epsilon, value,
    interval) points, sorted by epsilon, on a log epsilon axis: the privacy-utility frontier."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for i, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda p: p[0])
        eps = [p[0] for p in points]
        values = [p[1] for p in points]
        errors = [[max(0.0, v - ci[0]) if ci else 0.0 for _, v, ci in points],
                  [max(0.0, ci[1] - v) if ci else 0.0 for _, v, ci in points]]
        ax.errorbar(eps, values, yerr=errors, fmt="-o", capsize=3, color=COLOURS[i % len(COLOURS)], label=plain(label))
    ax.set_xscale("log")
    ax.set_xlabel("claimed epsilon (log scale; left is more private)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return to_png(fig)
