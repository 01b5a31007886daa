"""Exact against approximate nearest-neighbour search (issue 19, item 1): time and recall@k.

`dpaudit.neighbors.nearest_neighbors` under `--nn-index exact`, `ivf` and `hnsw`
(dpaudit/approximate_search.py) on the same inputs in one process: 10,000 MNIST test images
against the 50,000 members, in pixels and in the shipped LeNet's features, and a large case of
shifted MNIST copies (each image moved by up to 2 pixels and given Gaussian noise of 0.05, so
that no two are equal): `--large-queries` queries from the test split against `--large-refs`
references from the members, in LeNet features and in pixels. An approximate row's time
includes building and tuning its index; "recorded recall" is what result.json would say (1,000
queries not used to tune), "recall, every query" is measured here against the exact row.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_nn_index.py   # needs pip install -e '.[peers]'

Prints Markdown tables (benchmarks/RESULTS.md, "Approximate nearest-neighbour search").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit import threads  # noqa: E402

threads.configure()  # as the dpaudit command does, before torch loads OpenMP: idle workers sleep

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dpaudit import approximate_search  # noqa: E402
from dpaudit.approximate_search import recall_at_k, search_settings  # noqa: E402
from dpaudit.audit.features import load_extractor  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.images import ImageSet  # noqa: E402
from dpaudit.memory import peak_rss_mib  # noqa: E402
from dpaudit.neighbors import nearest_neighbors  # noqa: E402


def shifted_copies(images: ImageSet, n: int, seed: int) -> ImageSet:
    """`n` images drawn from `images`, each translated by up to 2 pixels and noised (sigma 0.05)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(images), (n,), generator=g)
    out = torch.empty(n, *images.x.shape[1:])
    for start in range(0, n, 10_000):
        block = images.x[rows[start : start + 10_000]]
        shift = torch.randint(-2, 3, (len(block), 2), generator=g).float() * 2 / images.x.shape[-1]
        theta = torch.zeros(len(block), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(block.shape), align_corners=False)
        moved = F.grid_sample(block, grid, align_corners=False)
        out[start : start + 10_000] = (moved + 0.05 * torch.randn(moved.shape, generator=g)).clamp(0, 1)
    return ImageSet(out, images.y[rows], num_classes=images.num_classes, name=f"shifted-{n}")


def rows(space: str, queries: torch.Tensor, refs: torch.Tensor, k: int, kinds: list[str]) -> list[str]:
    """One table row per index kind: seconds, speed-up, settings, recorded and true recall."""
    out, exact_seconds, exact_ids = [], None, None
    for kind in ["exact", *kinds]:
        approximate_search._CACHE.clear()  # every row pays for its own index
        start = time.perf_counter()
        with search_settings(kind) as records:
            _, ids = nearest_neighbors(queries, refs, k=k)
        seconds = time.perf_counter() - start
        if kind == "exact":
            exact_seconds, exact_ids = seconds, ids
        record = records[0] if records else None
        settings = ", ".join(f"{key}={value}" for key, value in record.params.items()) if record else ""
        recorded = f"{record.recall:.4f}" if record else ""
        index_seconds = f"{record.build_seconds:.1f} + {record.tune_seconds:.1f}" if record else ""
        out.append(
            f"| {space} | {len(queries):,} x {len(refs):,} x {refs[0].numel()} | {k} | {kind} | {settings} | "
            f"{seconds:.1f} | {index_seconds} | {exact_seconds / seconds:.2f} | {recorded} | {recall_at_k(ids, exact_ids):.4f} |"
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large-queries", type=int, default=50_000)
    parser.add_argument("--large-refs", type=int, default=500_000)
    parser.add_argument("--large-pixel-refs", type=int, default=200_000)
    parser.add_argument("--large-pixel-queries", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()

    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| space | queries x references x dims | k | index | settings | seconds | of which index build + tune | speed-up over exact | recorded recall@k | recall@k, every query |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    mnist = load_split("mnist")
    lenet = load_extractor(mnist, None, torch.device("cpu"))
    test, members = mnist.test.x[:10_000], mnist.members.x
    rows("pixels", test, members, args.k, ["ivf", "hnsw"])
    rows("LeNet features", lenet(mnist.test), lenet(mnist.members), args.k, ["ivf", "hnsw"])
    large_refs = shifted_copies(mnist.members, args.large_refs, seed=1)
    large_queries = shifted_copies(mnist.test, args.large_queries, seed=2)
    rows("LeNet features, shifted copies", lenet(large_queries), lenet(large_refs), args.k, ["ivf", "hnsw"])
    rows("pixels, shifted copies", large_queries.x[: args.large_pixel_queries], large_refs.x[: args.large_pixel_refs],
         args.k, ["ivf"])
    print(f"\npeak resident memory: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
