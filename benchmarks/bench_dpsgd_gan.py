"""Benchmark of the DP-SGD conditional GAN (dpsgd-gan): train on a built-in dataset's members at
a given epsilon, sample a labelled synthetic set, and measure

- TSTR accuracy: the DPDM-protocol CNN trained on the synthetic set (90% train, the epoch picked
  on the other 10%: synthetic validation, never the real test set), accuracy on the real test set;
- FID in the LeNet feature space of dpaudit's fidelity check (synthetic vs the real test set);
- training time: wall clock and the process's CPU time (one torch thread, so CPU time is what the
  run would take on one idle core; the machine may be shared).

One JSON line per run is appended to --log. Example:

    DPAUDIT_DATA=/work/shared/data python benchmarks/bench_dpsgd_gan.py --dataset mnist \\
        --epsilon 10 --set steps=6000 --log benchmarks/dpsgd_gan_runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dpaudit.datasets import load_split
from dpaudit.generators import get_generator
from dpaudit.nets import accuracy, make_classifier, train_classifier
from dpaudit.privacy import PrivacyBudget


def tstr(synthetic, test, *, epochs: int, seed: int) -> tuple[float, int]:
    """DPDM-protocol CNN on the synthetic set, epoch picked on a synthetic validation split;
    returns (accuracy on the real test set, epoch kept)."""
    order = torch.randperm(len(synthetic), generator=torch.Generator().manual_seed(seed))
    n_val = len(synthetic) // 10
    val, train = order[:n_val], order[n_val:]
    model = make_classifier(synthetic.shape, synthetic.num_classes)
    log = train_classifier(
        model, synthetic.x[train], synthetic.y[train], epochs=epochs, seed=seed,
        val=(synthetic.x[val], synthetic.y[val]), progress="tstr",
    )
    return accuracy(model, test.x, test.y), log.best_epoch


def lenet_fid(reference, synthetic) -> float:
    """FID between the real test set and the synthetic set in dpaudit's LeNet feature space."""
    from dpaudit.audit.features import load_extractor
    from dpaudit.audit.fidelity import fid

    extractor = load_extractor(reference)
    return fid(extractor(reference.test), extractor(synthetic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value hyper-parameter")
    parser.add_argument("--num", type=int, default=60_000, help="synthetic images to sample")
    parser.add_argument("--classifier-epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (resume after an interruption)")
    parser.add_argument("--save", default=None, help="save 100 samples here (.pt) to look at")
    parser.add_argument("--log", default="benchmarks/dpsgd_gan_runs.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dpaudit.generators.base import Checkpointer

    reference = load_split(args.dataset)
    generator = get_generator("dpsgd-gan").from_options(
        args.overrides, progress=True, checkpoint=Checkpointer(args.checkpoint)
    )
    wall, cpu = time.perf_counter(), time.process_time()
    generator.fit(reference.members, PrivacyBudget(args.epsilon, args.delta), seed=args.seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    report = generator.privacy_report()
    synthetic = generator.sample(args.num, seed=args.seed + 1)
    if args.save:
        torch.save(synthetic.x[:: max(1, args.num // 100)][:100].clone(), args.save)
    acc, epoch = tstr(synthetic, reference.test, epochs=args.classifier_epochs, seed=args.seed)
    row = {
        "dataset": args.dataset,
        "epsilon_target": args.epsilon,
        "epsilon": report["epsilon"],
        "sigma": report["sigma"],
        "sample_rate": report["sample_rate"],
        "steps": report["steps"],
        "overrides": args.overrides,
        "num": args.num,
        "tstr": acc,
        "tstr_epoch": epoch,
        "classifier_epochs": args.classifier_epochs,
        "fid_lenet": None if args.no_fid else lenet_fid(reference, synthetic),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "threads": args.threads,
    }
    print(json.dumps(row), flush=True)
    with Path(args.log).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
