"""The audit-core acceptance run on MNIST, through the user's own-data path of the CLI.

members = 40,000 training images, holdout = 10,000 others, test = the official test split;
the remaining 10,000 training images are the "real" synthetic set (a generator that learned
the distribution without copying), and 10,000 member images the "copy" synthetic set.

    DPAUDIT_DATA=../shared/data python benchmarks/acceptance_mnist.py --work /tmp/acc [--profile standard]

Prints the numbers the issue asks for, with their targets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from dpaudit.datasets import load_official, split_indices
from dpaudit.images import save_images


def write_sets(work: Path) -> None:
    """Export members / holdout / test / real-10k / copy-10k as .npz folders (once)."""
    if (work / "copy" / "images.npz").exists():
        return
    train, test = load_official("mnist")
    members_idx, holdout_idx = split_indices(len(train), 40_000, 10_000, seed=0)
    rest = np.setdiff1d(np.arange(len(train)), np.concatenate([members_idx, holdout_idx]))
    copies = np.random.default_rng(1).choice(members_idx, 10_000, replace=False)
    sets = {"members": members_idx, "holdout": holdout_idx, "real": rest, "copy": copies}
    for name, idx in sets.items():
        save_images(train.subset(torch.as_tensor(idx)), work / name, "npz")
    save_images(test, work / "test", "npz")


def audit(work: Path, synthetic: str, profile: str, checks: str) -> dict:
    out = work / f"out-{synthetic}-{profile}"
    subprocess.run(
        [str(Path(sys.executable).parent / "dpaudit"), "evaluate", "--synthetic", str(work / synthetic),
         "--members", str(work / "members"), "--holdout", str(work / "holdout"), "--test", str(work / "test"),
         "--profile", profile, "--checks", checks, "--out", str(out), "--no-report"],
        check=True,
    )
    return json.loads((out / "result.json").read_text())


def noise_fid(work: Path, profile: str) -> float:
    """FID of 10,000 uniform-noise images against the members."""
    noise = work / "noise"
    if not noise.exists():
        rng = np.random.default_rng(0)
        noise.mkdir(parents=True)
        np.savez(noise / "images.npz", x=rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8),
                 y=rng.integers(0, 10, 10_000))
    return audit(work, "noise", profile, "fidelity")["checks"]["fidelity"]["metrics"]["fid"]["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--profile", default="standard")
    args = parser.parse_args()
    write_sets(args.work)

    real = audit(args.work, "real", args.profile, "fidelity,utility,similarity")["checks"]
    copy = audit(args.work, "copy", args.profile, "similarity")["checks"]
    fid_noise = noise_fid(args.work, args.profile)

    sim = real["similarity"]["metrics"]
    rows = [
        ("real-10k TSTR accuracy", real["utility"]["metrics"]["tstr_accuracy"]["value"], ">= 0.97"),
        ("real-10k DCR member share", sim["dcr_member_share"]["value"], "0.5 +/- 0.03"),
        ("real-10k near-copy share", sim["near_copy_share"]["value"], "within 0.01 of the baseline"),
        ("holdout baseline near-copy share", sim["near_copy_share"]["baseline"], ""),
        ("real-10k FID (LeNet)", real["fidelity"]["metrics"]["fid"]["value"], "< noise FID / 50"),
        ("uniform-noise FID (LeNet)", fid_noise, ""),
        ("copy-10k near-copy share", copy["similarity"]["metrics"]["near_copy_share"]["value"], ">= 0.99"),
        ("copy-10k DCR member share", copy["similarity"]["metrics"]["dcr_member_share"]["value"], ">= 0.99"),
    ]
    print(f"\nprofile {args.profile}\n| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.4f} | {target} |")


if __name__ == "__main__":
    main()
