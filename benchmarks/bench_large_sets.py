"""Peak memory and time of a quick audit of 200,000 synthetic 32x32 RGB images against references
of growing size (up to 500,000 members), each audit in its own process.

    python benchmarks/bench_large_sets.py DIR [--sizes 50000 100000 200000 500000] [--synthetic 200000]

Writes random 8-bit sets into DIR once (np.savez, uncompressed: what dpaudit memory-maps;
`members-<N>.npz` per size, `holdout.npz` 50,000, `test.npz` 10,000, `synthetic-<N>.npz`; about
3.3 GB for the default sizes), then runs `evaluate` (profile quick, every check) once per size in
a fresh process and prints a Markdown row per size: the wall time, the process's peak resident
memory (and the peaks of its anonymous and file-backed parts, sampled), and its resident memory
once the sets are loaded. Random pixels are enough here: the
benchmark measures memory and time, not the audit's verdict. The features come from a fixed
random-weight CNN (an nn.Module extractor), not from the LeNet dpaudit trains on a reference of
its own (at least 10 epochs over the members: longer than the audit at this size).

Run it with the code to compare on the path (e.g. PYTHONPATH=<a checkout of an older commit>)
to measure an older version on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (32, 32, 3)  # H x W x C, as the files hold them
HOLDOUT, TEST = 50_000, 10_000


def write_set(path: Path, n: int, seed: int) -> None:
    """n random 8-bit images and labels (10 classes), uncompressed, written in slices."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(path.with_suffix(".x.npy"), mode="w+", dtype=np.uint8, shape=(n, *SHAPE))
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        x[start:stop] = rng.integers(0, 256, size=(stop - start, *SHAPE), dtype=np.uint8)
    x.flush()
    y = rng.integers(0, 10, size=n)
    np.savez(path, x=x, y=y)  # np.savez streams a memory-mapped array into the archive
    del x
    path.with_suffix(".x.npy").unlink()


class MemorySampler(threading.Thread):
    """The peaks of this process's anonymous and file-backed resident memory, sampled every 0.1 s
    (the kernel keeps no peak of each: ru_maxrss is the peak of their sum). File-backed pages of
    a memory-mapped set are the page cache, shared and given back under memory pressure;
    anonymous memory is what the process itself holds."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self.start()

    def run(self) -> None:
        while True:
            now = memory_kib()
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now[key])
            time.sleep(0.1)


def memory_kib() -> dict[str, int]:
    """This process's memory lines of /proc/self/status (VmRSS, RssAnon, RssFile, ...), in KiB."""
    with open("/proc/self/status") as fh:
        return {line.split(":")[0]: int(line.split()[1]) for line in fh if line.rstrip().endswith(" kB")}


def audit(folder: Path, members: int, synthetic: int) -> dict:
    """One quick audit (in this process): wall time, peak and after-loading resident memory."""
    sampler = MemorySampler()
    import torch
    from torch import nn

    from dpaudit.audit.pipeline import evaluate
    from dpaudit.datasets import reference_from_folders
    from dpaudit.images import load_images
    from dpaudit.memory import peak_rss_mib

    start = time.perf_counter()
    reference = reference_from_folders(folder / f"members-{members}.npz", folder / "holdout.npz", folder / "test.npz")
    synthetic_set = load_images(folder / f"synthetic-{synthetic}.npz")
    loaded_rss = memory_kib()["VmRSS"] / 1024
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=2), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten())  # 128 features
    evaluate(synthetic_set, reference, profile="quick", extractor=features, progress=False)
    return {"members": members, "synthetic": synthetic, "wall_s": time.perf_counter() - start,
            "peak_rss_mib": peak_rss_mib(),
            "loaded_rss_mib": loaded_rss, "peak_anon_mib": sampler.peaks["RssAnon"] / 1024,
            "peak_file_mib": sampler.peaks["RssFile"] / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000, 500_000])
    parser.add_argument("--synthetic", type=int, default=200_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one audit
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(audit(args.folder, args.one, args.synthetic)))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(args.sizes):
        write_set(args.folder / f"members-{n}.npz", n, seed=i)
    write_set(args.folder / "holdout.npz", HOLDOUT, seed=100)
    write_set(args.folder / "test.npz", TEST, seed=101)
    write_set(args.folder / f"synthetic-{args.synthetic}.npz", args.synthetic, seed=102)
    import dpaudit

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"dpaudit from {Path(dpaudit.__file__).parent}")
    print("| members | synthetic | wall, s | peak RSS, MiB | peak anonymous, MiB | peak file-backed, MiB "
          "| RSS with the sets loaded, MiB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        run = subprocess.run([sys.executable, __file__, str(args.folder), "--one", str(n),
                              "--synthetic", str(args.synthetic)], capture_output=True, text=True)
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["?"])[-1]
            print(f"| {n:,} | {args.synthetic:,} | failed (exit {run.returncode}: {tail[:120]}) | | | | |", flush=True)
            continue
        row = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {args.synthetic:,} | {row['wall_s']:.0f} | {row['peak_rss_mib']:.0f} | "
              f"{row['peak_anon_mib']:.0f} | {row['peak_file_mib']:.0f} | "
              f"{row['loaded_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
