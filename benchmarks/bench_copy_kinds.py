"""Every kind of copy the release audit looks for, made from members and, as the control, made
the same way from never-seen test images: the share of the made images each kind's criterion
flags (near-copy: best SSIM >= 0.95 up to the profile's transformations; blend and partial
copy: their ratio, dpaudit/composites.py), beside the rate for holdout images.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_copy_kinds.py --dataset mnist [--profile quick]

500 images of each kind, pixel noise sd 0.02 on all. Kinds marked "held out" were not used to
set any threshold (blends weighted 0.3/0.7, a patch taken from another member, a mid-grey
patch, an 8 x 8 patch). Prints a Markdown table (benchmarks/RESULTS.md, "Detection by kind");
run from the repository root.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.audit.matching import match_to_reference  # noqa: E402
from dpaudit.audit.profiles import get_profile  # noqa: E402
from dpaudit.composites import BLEND_MAX_RATIO, PARTIAL_MAX_RATIO  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from tests.transformed_copies import blended, jittered, patched  # noqa: E402

N = 500
NOISE = 0.02


def weighted_blend(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    partner = torch.roll(torch.arange(len(x)), 1)
    return (0.3 * x + 0.7 * x[partner] + NOISE * torch.randn(x.shape, generator=g)).clamp(0, 1)


def patch_from(x: torch.Tensor, donors: torch.Tensor, seed: int, side: int, fill: float | None = None) -> torch.Tensor:
    """A side x side patch at a random place taken from a donor image (or a constant `fill`)."""
    g = torch.Generator().manual_seed(seed)
    out = x.clone()
    h, w = x.shape[-2:]
    for i in range(len(x)):
        top, left = (int(torch.randint(0, h - side + 1, (1,), generator=g)) for _ in range(2))
        out[i, :, top : top + side, left : left + side] = (
            fill if fill is not None else donors[i, :, top : top + side, left : left + side])
    return (out + NOISE * torch.randn(x.shape, generator=g)).clamp(0, 1)


KINDS = {
    "shift 1-2 px": ("copy", lambda x, d: jittered(x, 4, "shift", NOISE)),
    "rotation 6-10 deg": ("copy", lambda x, d: jittered(x, 4, "rotation", NOISE)),
    "intensity a x + b": ("copy", lambda x, d: jittered(x, 4, "intensity", NOISE)),
    "blend 0.5/0.5": ("blend", lambda x, d: blended(x, 6, NOISE)),
    "blend 0.3/0.7 (held out)": ("blend", lambda x, d: weighted_blend(x, 6)),
    "10 x 10 noise patch": ("partial", lambda x, d: patched(x, 7, 10, NOISE)),
    "8 x 8 noise patch (held out)": ("partial", lambda x, d: patched(x, 7, 8, NOISE)),
    "10 x 10 patch of another member (held out)": ("partial", lambda x, d: patch_from(x, d, 7, 10)),
    "10 x 10 grey patch (held out)": ("partial", lambda x, d: patch_from(x, d, 7, 10, fill=0.5)),
}


def flagged(matches, kind: str, threshold: float) -> torch.Tensor:
    copies = matches.best_ssim >= threshold
    if kind == "copy":
        return copies
    if kind == "blend":
        return (matches.blends.ratio <= BLEND_MAX_RATIO) & ~copies
    return (matches.partials.ratio <= PARTIAL_MAX_RATIO) & ~copies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--profile", default="quick")
    args = parser.parse_args()
    reference, matching = load_split(args.dataset), get_profile(args.profile).matching
    members = reference.members.x

    def match(x):
        return match_to_reference(x, members, matching.top_k, transforms=matching.transforms, composites=True,
                                  blend_search_pool=matching.blend_search_pool)

    g = torch.Generator().manual_seed(3)
    pick = torch.randperm(len(members), generator=g)[: 2 * N]
    sources = {"members": (members[pick[:N]], members[pick[N:]]),
               "never-seen": (reference.test.x[:N], reference.test.x[N : 2 * N])}
    holdout = match(reference.holdout.x[:2000])
    print("| dataset | kind | criterion | flagged, made from members | flagged, made from never-seen | holdout images flagged |")
    print("|---|---|---|---|---|---|")
    for name, (kind, make) in KINDS.items():
        rates = {src: float(flagged(match(make(x, donors)), kind, matching.near_copy_ssim).float().mean())
                 for src, (x, donors) in sources.items()}
        base = float(flagged(holdout, kind, matching.near_copy_ssim).float().mean())
        print(f"| {args.dataset} | {name} | {kind} | {rates['members']:.3f} | {rates['never-seen']:.3f} | {base:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
