"""Time `evaluate` on 10,000 synthetic images against MNIST (50,000 members), stage by stage,
and the nearest-neighbour search against the machine's float32 matrix-multiply throughput.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_evaluate.py [--profiles quick standard] [--no-shipped-cache] [--device cuda]

Prints a Markdown table for benchmarks/RESULTS.md: each profile runs twice in a fresh user
cache, as the first audit against the reference (which trains the TRTR ceiling, unless the
package ships it: quick, seed 0; `--no-shipped-cache` times a reference of your own) and as a
later one (which reads it from the cache). Both run in one process, so the second also finds
torch's kernels and the allocator warm: time `dpaudit evaluate` itself for a cold process.
The "synthetic" set is the 10,000 labelled MNIST test images (members and holdout use all
60,000 training images); only the times matter here: utility then tests on the images it
trained on.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from dpaudit import cache
from dpaudit.audit.pipeline import evaluate
from dpaudit.datasets import load_split
from dpaudit.memory import keep_freed_memory, peak_rss_mib
from dpaudit.neighbors import nearest_neighbors


def matmul_gflops(n: int, m: int, d: int, repeats: int = 3) -> float:
    """Best-of-`repeats` float32 throughput of an (n x d) @ (d x m) product, in GFLOP/s."""
    a, b = torch.rand(n, d), torch.rand(d, m)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n * m * d / best / 1e9


def nn_gflops(n: int, m: int, d: int, repeats: int = 3) -> float:
    """The same count of multiply-adds, done by dpaudit's exact blocked nearest-neighbour search."""
    a, b = torch.rand(n, d), torch.rand(m, d)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        nearest_neighbors(a, b, k=1)
        best = min(best, time.perf_counter() - start)
    return 2 * n * m * d / best / 1e9



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", nargs="+", default=["quick", "standard"])
    parser.add_argument("--synthetic", type=int, default=10_000, help="at most 10,000")
    parser.add_argument("--device", default="cpu", help="where the networks run (evaluate's --device)")
    parser.add_argument("--no-shipped-cache", action="store_true",
                        help="ignore the ceilings shipped in the package (time a reference of your own)")
    args = parser.parse_args()
    if args.no_shipped_cache:
        cache.SHIPPED_DIR = Path("/nonexistent/dpaudit-shipped-cache")
    keep_freed_memory()  # as the dpaudit command does

    reference = load_split("mnist")
    synthetic = reference.test.subset(range(args.synthetic), "mnist-test-as-synthetic")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, networks on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    mm = matmul_gflops(10_000, 50_000, 784)
    nn = nn_gflops(10_000, 50_000, 784)
    print("\n| float32 matmul 10k x 50k x 784 | nearest-neighbour search, same size | share |")
    print(f"|---|---|---|\n| {mm:.1f} GFLOP/s | {nn:.1f} GFLOP/s | {nn / mm:.0%} |")

    for profile in args.profiles:
        # A fresh user cache: the first audit trains the TRTR ceiling (or reads the shipped one:
        # the quick profile's, for MNIST's default split), the second reads it.
        os.environ["DPAUDIT_CACHE"] = tempfile.mkdtemp(prefix="dpaudit-bench-cache-")
        runs = {}
        for run in ("first audit (cold cache)", "next audit (warm cache)"):
            start = time.perf_counter()
            result = evaluate(synthetic, reference, profile=profile, seed=0, device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs[run] = (result, time.perf_counter() - start)
        print(f"\nprofile {profile}")
        print(f"| stage | {' | '.join(runs)} |\n|---|---|---|")
        for name in result.checks:
            print(f"| {name} | {' | '.join(f'{r.checks[name].seconds:.1f}' for r, _ in runs.values())} |")
        rest = [total - sum(c.seconds for c in r.checks.values()) for r, total in runs.values()]
        print(f"| features, loading, report data (rest) | {' | '.join(f'{t:.1f}' for t in rest)} |")
        print(f"| **total** | {' | '.join(f'**{total:.1f}**' for _, total in runs.values())} |")
        print(f"| peak resident memory of the process so far, MiB | {peak_rss_mib():.0f} | |")
        if args.device.startswith("cuda"):
            print(f"| peak GPU memory allocated so far, MiB | {torch.cuda.max_memory_allocated() / 2**20:.0f} | |")
        shutil.rmtree(os.environ.pop("DPAUDIT_CACHE"), ignore_errors=True)


if __name__ == "__main__":
    main()
