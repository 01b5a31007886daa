"""What each part of the release audit's copy and membership machinery costs on MNIST, in the
quick and standard profiles: the matching of the synthetic sample against the 50,000 members
(plain L2, then with the profile's transformations, then with blends and partial copies), the
same matching of the holdout baseline, the holdout test and the cross-fitted headlines, and
the similarity check as a whole.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_release_costs.py [--profile quick standard]

The synthetic set is MNIST's 10,000 test images (the profile matches up to its `max_synthetic`
of them). Prints a Markdown table (benchmarks/RESULTS.md, "What the release audit's parts
cost"). Run it alone on the machine, from the repository root.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.attacks.base import draw_targets  # noqa: E402
from dpaudit.attacks.selection import cross_fit  # noqa: E402
from dpaudit.audit.matching import match_to_reference  # noqa: E402
from dpaudit.audit.membership_check import METRIC_MEANINGS  # noqa: E402
from dpaudit.audit.pipeline import evaluate  # noqa: E402
from dpaudit.audit.profiles import get_profile  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.neighbors import nearest_distance  # noqa: E402
from dpaudit.sampling import seeded_sample  # noqa: E402

ATTACKS = 7  # the membership check's attacks, each scoring every target


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parts(name: str, mnist) -> list[tuple[str, str, float]]:
    """(part, size, seconds) for one profile."""
    profile = get_profile(name)
    matching, members = profile.matching, mnist.members.x
    synthetic = mnist.test.x[seeded_sample(len(mnist.test), profile.similarity.max_synthetic, 0)]
    holdout = mnist.holdout.x[seeded_sample(len(mnist.holdout), matching.max_holdout, 1)]
    rows = []
    for label, queries in (("synthetic", synthetic), ("holdout baseline", holdout)):
        size = f"{len(queries):,} x {len(members):,}"
        rows.append((f"{label}: plain L2 and SSIM", size,
                     timed(lambda: match_to_reference(queries, members, matching.top_k))))
        rows.append((f"{label}: + transformations", size,
                     timed(lambda: match_to_reference(queries, members, matching.top_k, transforms=matching.transforms))))
        rows.append((f"{label}: + transformations, blends, partial copies", size,
                     timed(lambda: match_to_reference(queries, members, matching.top_k, transforms=matching.transforms,
                                                      composites=True, blend_search_pool=matching.blend_search_pool))))
    config = profile.membership
    split = draw_targets(len(mnist.members), len(mnist.holdout), per_side=config.per_side,
                         reference=config.reference, seed=0)
    targets, reference = split.targets(mnist.members.x, mnist.holdout.x), split.reference(mnist.holdout.x)

    def holdout_test():
        d = nearest_distance(targets, reference).numpy()
        mannwhitneyu(d[: len(split.member_idx)], d[len(split.member_idx):])

    rows.append(("holdout test", f"{len(targets):,} targets x {len(reference):,}", timed(holdout_test)))
    rng = np.random.default_rng(0)
    scores = {f"attack {i}": rng.normal(size=len(split.labels)) for i in range(ATTACKS)}
    rows.append(("cross-fitted headlines", f"{ATTACKS} attacks x {len(split.labels):,} targets",
                 timed(lambda: cross_fit(scores, split.labels, list(METRIC_MEANINGS), seed=0))))
    rows.append(("similarity check, whole (`evaluate --checks similarity`)", f"{len(synthetic):,} synthetic",
                 timed(lambda: evaluate(mnist.test, mnist, profile=name, checks=["similarity"], seed=0, progress=False))))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", nargs="+", default=["quick", "standard"])
    args = parser.parse_args()
    mnist = load_split("mnist")
    print("| profile | part | size | seconds |")
    print("|---|---|---|---|")
    for name in args.profile:
        for part, size, seconds in parts(name, mnist):
            print(f"| {name} | {part} | {size} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
