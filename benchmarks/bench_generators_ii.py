"""Benchmark the reference generators of issue 8 (latent-diffusion, bn-matching, lipschitz-vae)
on a built-in dataset: train under (epsilon, delta), sample, and measure

- TSTR accuracy: the DPDM-protocol CNN (dpaudit.nets) trained on the synthetic set, the epoch
  picked on a held-out 10% of the SYNTHETIC set, accuracy on the real test split;
- FID in the LeNet feature space (dpaudit.audit.features, the shipped weights) between the
  synthetic set and the real test split;
- training wall time (the machine: 2 shared cores, no GPU; times are distorted by other work).

    DPAUDIT_DATA=../shared/data python benchmarks/bench_generators_ii.py latent-diffusion \
        --dataset mnist --epsilon 10 [--set key=value ...] [--num 60000] [--json out.json]

Prints one Markdown row for benchmarks/RESULTS.md (and writes it as JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dpaudit.audit.features import load_extractor
from dpaudit.audit.fidelity import fid
from dpaudit.datasets import load_split
from dpaudit.generators import get_generator
from dpaudit.nets import accuracy, make_classifier, train_classifier
from dpaudit.privacy import PrivacyBudget


def tstr(synthetic, test, *, epochs: int, seed: int) -> tuple[float, int]:
    """(accuracy on the real test set, epoch kept): the DPDM CNN trained on 90% of the synthetic
    set, its epoch picked on the other 10%."""
    order = torch.randperm(len(synthetic), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, len(synthetic) // 10)
    val, tr = order[:n_val], order[n_val:]
    torch.manual_seed(seed)
    model = make_classifier(synthetic.shape, synthetic.num_classes)
    log = train_classifier(model, synthetic.x[tr], synthetic.y[tr], epochs=epochs, seed=seed,
                           val=(synthetic.x[val], synthetic.y[val]), progress="tstr")
    return accuracy(model, test.x, test.y), log.best_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generator")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--num", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tstr-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json")
    parser.add_argument("--save-samples", help="write the synthetic set as .npz for inspection")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference = load_split(args.dataset)
    gen = get_generator(args.generator).from_options(args.overrides, progress=True)
    start = time.perf_counter()
    gen.fit(reference.members, PrivacyBudget(args.epsilon, args.delta), seed=args.seed)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = gen.sample(args.num, seed=args.seed)
    sample_s = time.perf_counter() - start
    if args.save_samples:
        import numpy as np

        np.savez_compressed(args.save_samples, x=synthetic.x.numpy(), y=synthetic.y.numpy())
    acc, epoch = tstr(synthetic, reference.test, epochs=args.tstr_epochs, seed=args.seed)
    extractor = load_extractor(reference)
    fid_value = fid(extractor(reference.test), extractor(synthetic))
    report = gen.privacy_report()
    row = {
        "generator": args.generator, "dataset": args.dataset, "epsilon_target": args.epsilon,
        "epsilon_spent": report["epsilon"], "delta": args.delta, "tstr_accuracy": acc, "tstr_epoch": epoch,
        "fid_lenet": fid_value, "train_s": train_s, "sample_s": sample_s, "num": args.num,
        "overrides": args.overrides, "history": report["history"],
    }
    print(json.dumps(row))
    print(
        f"| {args.generator} | {args.dataset} | {args.epsilon:g} | {report['epsilon']:.3f} | {100 * acc:.1f} | "
        f"{fid_value:.1f} | {train_s / 60:.1f} | {sample_s / 60:.1f} | {' '.join(args.overrides) or 'defaults'} |"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
