"""Copies through small transformations on MNIST: the similarity check's near-copy excess and
its time, per transformation family and per transformation set (none, quick's, the full set).

    DPAUDIT_DATA=../shared/data python benchmarks/bench_transforms.py

Each synthetic set holds 500 members moved by one random transformation of the family plus
pixel noise (sd 0.02) and 1,500 never-seen test images; the control moves 500 never-seen test
images instead. Quick profile otherwise (2,000 synthetic images matched, 2,000 holdout images
as the baseline). Prints a Markdown table (benchmarks/RESULTS.md, "Copies through small
transformations"). Run it alone on the machine; run from the repository root.
"""

import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.audit import similarity  # noqa: E402
from dpaudit.audit.context import AuditContext  # noqa: E402
from dpaudit.audit.profiles import QUICK  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.images import ImageSet  # noqa: E402
from dpaudit.transforms import NO_TRANSFORMS, TransformConfig  # noqa: E402
from tests.transformed_copies import jittered  # noqa: E402

SETS = {"none (plain L2)": NO_TRANSFORMS, "quick (shifts, intensity)": QUICK.matching.transforms,
        "full (shifts, rotations, intensity)": TransformConfig()}
FAMILIES = ("shift", "rotation", "intensity", "control")


def synthetic_set(mnist, family: str) -> ImageSet:
    g = torch.Generator().manual_seed(3)
    if family == "control":
        moved = jittered(mnist.test.x[:500], seed=4, family="shift", noise=0.02)
    else:
        moved = jittered(mnist.members.x[torch.randperm(len(mnist.members), generator=g)[:500]], seed=4,
                         family=family, noise=0.02)
    return ImageSet(torch.cat([moved, mnist.test.x[500:2000]]), None, None, name=family)


def main():
    mnist = load_split("mnist")
    print("| transformations | family | near-copy share | holdout baseline | excess | DCR member share | seconds |")
    print("|---|---|---|---|---|---|---|")
    for set_name, transforms in SETS.items():
        profile = dataclasses.replace(QUICK, matching=dataclasses.replace(QUICK.matching, transforms=transforms))
        for family in FAMILIES:
            start = time.perf_counter()
            result = similarity.run(AuditContext(synthetic_set(mnist, family), mnist, profile))
            m = result.metrics
            print(f"| {set_name} | {family} | {m['near_copy_share'].value:.3f} | {m['near_copy_share'].baseline:.3f} | "
                  f"{m['near_copy_excess'].value:.3f} | {m['dcr_member_share'].value:.3f} | "
                  f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
