"""Gradient matching's inversions one after another (`attack_batch` per batch) against all of
them in one batched optimisation (`attack_batches`, torch.func), on a DPDM CNN trained on 4,500
MNIST members, at the quick and standard profiles' settings: the time, and how close the
reconstructions come to the attacked images either way (mean PSNR) and to one another.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_gradient_matching.py

Prints a Markdown table (benchmarks/RESULTS.md, "Gradient matching, batched"); run alone.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.attacks.gradient_matching import attack_batch, attack_batches  # noqa: E402
from dpaudit.audit.profiles import QUICK, STANDARD  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.nets import make_classifier, train_classifier  # noqa: E402


def main() -> None:
    members = load_split("mnist").members
    torch.manual_seed(0)
    model = make_classifier(members.shape, 10)
    train_classifier(model, members.x[:4500], members.y[:4500], epochs=9, seed=0)
    print("| profile | batches x iterations | one after another, s | batched, s | speed-up | "
          "mean PSNR to the attacked image, one after another / batched, dB | largest pixel difference between the two |")
    print("|---|---|---|---|---|---|---|")
    for profile in (QUICK, STANDARD):
        config = profile.gradient_matching
        batches = [(members.x[i : i + 1], members.y[i : i + 1]) for i in range(config.batches)]
        start = time.perf_counter()
        alone = [attack_batch(model, x, y, config, seed=i) for i, (x, y) in enumerate(batches)]
        t_alone = time.perf_counter() - start
        start = time.perf_counter()
        together = attack_batches(model, batches, config, seed=0)
        t_together = time.perf_counter() - start
        diff = max(float((a.images - b.images).abs().max()) for a, b in zip(alone, together))
        psnr = [float(torch.cat([inv.psnr for inv in run]).mean()) for run in (alone, together)]
        print(f"| {profile.name} | {config.batches} x {config.iterations} | {t_alone:.1f} | {t_together:.1f} | "
              f"{t_alone / t_together:.2f}x | {psnr[0]:.2f} / {psnr[1]:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
