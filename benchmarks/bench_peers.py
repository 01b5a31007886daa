"""dpaudit's nearest-neighbour search and fidelity metrics raced against the field's libraries,
on the same inputs in one process (issue 18, item 4).

- Exact k-NN (k = 1 and k = 5): `dpaudit.neighbors.nearest_neighbors` (its candidates from
  torch's blocked product, and from faiss, with the exact re-measure either way) against faiss-cpu's
  `IndexFlatL2` and scikit-learn's brute-force `NearestNeighbors`, on 10,000 MNIST test images
  against the 50,000 members, in pixels (784) and in the shipped LeNet's features (84), beside
  the machine's float32 matmul throughput for the same product.
- FID, KID and PRDC on LeNet features (10,000 test images against 10,000 members): dpaudit's
  functions against torchmetrics' `FrechetInceptionDistance` / `KernelInceptionDistance` classes
  (fed the features through an identity network) and the authors' `prdc` package.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_peers.py

Needs the `peers` extra (`pip install -e '.[peers]'`: faiss-cpu, prdc). Prints Markdown tables
(benchmarks/RESULTS.md, "Peers raced"); every row is the best of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import prdc as prdc_package
import torch
from sklearn.neighbors import NearestNeighbors
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.audit.features import load_extractor  # noqa: E402
from dpaudit.audit.fidelity import IdentityFeatures, fid, kid, prdc  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.memory import peak_rss_mib  # noqa: E402
from dpaudit.neighbors import nearest_neighbors  # noqa: E402


def best_of(repeats: int, fn):
    """(fewest seconds over `repeats` calls of fn, its last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def matmul_seconds(n: int, m: int, d: int, repeats: int) -> float:
    a, b = torch.rand(n, d), torch.rand(d, m)
    return best_of(repeats, lambda: a @ b)[0]


def knn_rows(name: str, queries: torch.Tensor, refs: torch.Tensor, k: int, repeats: int) -> list[str]:
    q, r = queries.reshape(len(queries), -1).float(), refs.reshape(len(refs), -1).float()
    q_np, r_np = np.ascontiguousarray(q.numpy()), np.ascontiguousarray(r.numpy())
    matmul = matmul_seconds(len(q), len(r), q.shape[1], repeats)

    def with_faiss():
        index = faiss.IndexFlatL2(r.shape[1])
        index.add(r_np)
        return index.search(q_np, k)[1]

    def with_sklearn():
        return NearestNeighbors(n_neighbors=k, algorithm="brute").fit(r_np).kneighbors(q_np, return_distance=False)

    def ours_on(backend):
        os.environ["DPAUDIT_NN_BACKEND"] = backend
        try:
            return nearest_neighbors(q, r, k=k)[1].numpy()
        finally:
            del os.environ["DPAUDIT_NN_BACKEND"]

    t_ours, ours = best_of(repeats, lambda: ours_on("torch"))
    t_ours_faiss, ours_faiss = best_of(repeats, lambda: ours_on("faiss"))
    t_faiss, idx_faiss = best_of(repeats, with_faiss)
    t_sklearn, idx_sklearn = best_of(repeats, with_sklearn)
    rows = []
    for peer, seconds, idx in (("dpaudit, torch candidates", t_ours, ours),
                               ("dpaudit, faiss candidates (the default with faiss)", t_ours_faiss, ours_faiss),
                               ("faiss IndexFlatL2", t_faiss, idx_faiss),
                               ("scikit-learn brute", t_sklearn, idx_sklearn)):
        same = float((idx[:, 0] == ours[:, 0]).mean())
        rows.append(f"| {name} | {len(q):,} x {len(r):,} x {q.shape[1]} | {k} | {peer} | {seconds:.2f} | "
                    f"{seconds / t_ours:.2f} | {matmul / seconds:.0%} | {same:.4f} |")
    return rows


def metric_rows(real: torch.Tensor, fake: torch.Tensor, repeats: int) -> list[str]:
    dim = real.shape[1]

    def torchmetrics_fid():
        metric = FrechetInceptionDistance(feature=IdentityFeatures(dim))
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
        return float(metric.compute())

    def torchmetrics_kid():
        torch.manual_seed(0)
        metric = KernelInceptionDistance(feature=IdentityFeatures(dim), subsets=20, subset_size=1000)
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
        return float(metric.compute()[0])

    def package_prdc():
        return prdc_package.compute_prdc(real.numpy().astype(np.float64), fake.numpy().astype(np.float64), nearest_k=5)

    rows = []
    races = [
        ("FID", lambda: fid(real, fake), torchmetrics_fid, "torchmetrics FrechetInceptionDistance"),
        ("KID (20 subsets of 1,000)", lambda: kid(real, fake, 20, 1000, 0)[0], torchmetrics_kid,
         "torchmetrics KernelInceptionDistance"),
        ("PRDC (k = 5)", lambda: prdc(real, fake, k=5), package_prdc, "prdc 0.2 (Naeem et al.)"),
    ]
    for what, ours, theirs, peer in races:
        t_ours, v_ours = best_of(repeats, ours)
        t_peer, v_peer = best_of(repeats, theirs)
        if isinstance(v_ours, dict):
            shown_ours = ", ".join(f"{key} {v_ours[key]:.4f}" for key in ("precision", "recall", "density", "coverage"))
            shown_peer = ", ".join(f"{key} {v_peer[key]:.4f}" for key in ("precision", "recall", "density", "coverage"))
        else:
            shown_ours, shown_peer = f"{v_ours:.6g}", f"{v_peer:.6g}"
        rows.append(f"| {what} | dpaudit | {t_ours:.2f} | 1.00 | {shown_ours} |")
        rows.append(f"| {what} | {peer} | {t_peer:.2f} | {t_peer / t_ours:.2f} | {shown_peer} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    reference = load_split("mnist")
    members, test = reference.members, reference.test
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
          f"load {os.getloadavg()[0]:.1f}\n")
    extractor = load_extractor(reference)
    f_members, f_test = extractor(members), extractor(test)

    print("| space | queries x references x dims | k | search | seconds | time / dpaudit torch's | "
          "matmul share | same nearest as dpaudit's torch path |")
    print("|---|---|---|---|---|---|---|---|")
    for k in (1, 5):
        for line in knn_rows("pixels", test.x, members.x, k, args.repeats) + \
                knn_rows("LeNet features", f_test, f_members, k, args.repeats):
            print(line, flush=True)

    print("\n| metric | implementation | seconds | time / dpaudit's | value |")
    print("|---|---|---|---|---|")
    for line in metric_rows(f_members[:10_000], f_test, args.repeats):
        print(line, flush=True)
    print(f"\npeak resident memory: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
