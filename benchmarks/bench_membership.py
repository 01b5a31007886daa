"""Time the membership check on 10,000 synthetic images against MNIST (50,000 members).

    DPAUDIT_DATA=../shared/data python benchmarks/bench_membership.py [--profiles quick standard]

The "synthetic" set is the 10,000 labelled MNIST test images (real images from neither split).
Work the check shares with other checks is timed apart: the synthetic set's features (also
used by fidelity) and the classifier trained on the synthetic set (the utility check's TSTR
model, cached in the context). Prints a Markdown table for benchmarks/RESULTS.md, with the
load average: on a shared machine the times are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from dpaudit.audit import membership_check
from dpaudit.audit.classifiers import tstr_classifier
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import load_extractor
from dpaudit.datasets import load_split
from dpaudit.memory import keep_freed_memory


def timed(fn):
    """fn's result, wall seconds and CPU seconds (the CPU time is what contention does not inflate much)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", nargs="+", default=["quick"])
    parser.add_argument("--synthetic", type=int, default=10_000)
    args = parser.parse_args()
    keep_freed_memory()  # as the dpaudit command does

    reference = load_split("mnist")
    synthetic = reference.test.subset(range(args.synthetic), "mnist-test-as-synthetic")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.1f}")
    print("\n| profile | synthetic features (shared) | TSTR classifier (shared) | membership check | its CPU time | "
          "attacks | strongest AUC | epsilon lower bound | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for profile in args.profiles:
        ctx = AuditContext(synthetic, reference, profile, seed=0)
        ctx.extractor = load_extractor(reference)
        _, t_features, _ = timed(lambda: ctx.features("synthetic"))
        _, t_tstr, _ = timed(lambda: tstr_classifier(ctx))
        result, t_check, cpu_check = timed(lambda: membership_check.run(ctx))
        print(f"| {profile} | {t_features:.1f} s | {t_tstr:.1f} s | {t_check:.1f} s | {cpu_check:.1f} s "
              f"| {len(result.details['attacks'])} "
              f"| {result.metrics['auc'].value:.3f} ({result.details['strongest']}) "
              f"| {result.metrics['epsilon_lower_bound'].value:.2f} | {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
