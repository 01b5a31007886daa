"""Benchmark of a reference DP generator (default dp-merf; any name in GENERATORS): train on a
built-in dataset's members at a given epsilon, sample a labelled synthetic set, and measure

- TSTR accuracy: the DPDM-protocol CNN trained on the synthetic set (90% train, the epoch picked
  on the other 10%, synthetic validation data, never the real test set; dpaudit.audit.classifiers'
  fit_classifier), accuracy on the real test set; and the DPDM protocol's figure beside it, the
  mean real-test accuracy of the last 5 epochs (measured after each epoch, never used to pick);
- FID in dpaudit's LeNet feature space (dpaudit.audit.features / fidelity), synthetic vs the
  real test set, and PRDC (precision, recall, density, coverage; k = 5) in the same space, the
  real test set against as many synthetic images (a seeded subset, all of them if fewer: PRDC
  depends on the sizes);
- peak resident memory: of the process when training ended (when loading ended, with
  --load-generator), and at the end;
- training time: wall clock and the process's CPU time (torch threads as given; the machine may
  be shared with other work, so wall time overstates the cost on an idle machine), and the
  sampling's wall time.

One JSON line per run is appended to --log and a markdown row is printed. `--save-generator
FILE` keeps the fitted generator; `--load-generator FILE` measures a saved one again without
training (another --num, --classifier-epochs or sampling --seed; --method, --dataset, --epsilon,
--delta and --set are then taken from the file, and the training time from its report). Example:

    DPAUDIT_DATA=/work/shared/data python benchmarks/bench_generators.py --method dp-merf \\
        --dataset mnist --epsilon 10 --num 60000 --save-generator dp-merf.pt
    DPAUDIT_DATA=/work/shared/data python benchmarks/bench_generators.py --load-generator dp-merf.pt \\
        --num 10000 --classifier-epochs 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dpaudit.audit.features import load_extractor
from dpaudit.audit.fidelity import fid, prdc
from dpaudit.audit.classifiers import ClassifierConfig, fit_classifier
from dpaudit.datasets import load_split
from dpaudit.generators import Checkpointer, TrainingRun, get_generator, load_generator, save_generator
from dpaudit.memory import keep_freed_memory, peak_rss_mib
from dpaudit.nets import accuracy
from dpaudit.privacy import PrivacyBudget



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dp-merf")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value hyper-parameter")
    parser.add_argument("--num", type=int, default=60_000, help="synthetic images to sample")
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (resume after an interruption)")
    parser.add_argument("--save", default=None, help="save 100 samples here (.pt) to look at")
    parser.add_argument("--log", default="benchmarks/generator_runs.jsonl")
    parser.add_argument("--save-generator", help="save the fitted generator to this file")
    parser.add_argument("--load-generator", help="measure this saved generator again instead of training one")
    args = parser.parse_args()
    keep_freed_memory()  # as the dpaudit command does
    torch.set_num_threads(args.threads)

    if args.load_generator:
        generator, run = load_generator(args.load_generator, progress=True)
        args.method, args.dataset = generator.name, run.dataset
        args.epsilon, args.delta = run.budget.epsilon, run.budget.delta
        args.overrides = [f"(loaded from {args.load_generator})"]
    reference = load_split(args.dataset)
    if args.load_generator:
        if run.split_id != reference.split_id:
            raise SystemExit(f"{args.load_generator}: trained on split {run.split_id}, not {reference.split_id}.")
        wall, cpu = generator.report.wall_time_s, float("nan")  # the training's, as reported; CPU not saved
    else:
        generator = get_generator(args.method).from_options(args.overrides, progress=True,
                                                            checkpoint=Checkpointer(args.checkpoint))
        wall, cpu = time.perf_counter(), time.process_time()
        budget = PrivacyBudget(args.epsilon, args.delta)
        generator.fit(reference.members, budget, seed=args.seed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if args.save_generator:
            run = TrainingRun(budget, args.dataset, reference.split_id, reference.members.fingerprint(), args.seed)
            save_generator(generator, run, args.save_generator)
    train_peak_rss_mib = peak_rss_mib()
    report = generator.privacy_report()
    sample_wall = time.perf_counter()
    synthetic = generator.sample(args.num, seed=args.seed + 1)
    sample_wall = time.perf_counter() - sample_wall
    if args.save:
        torch.save(synthetic.x[:: max(1, args.num // 100)][:100].clone(), args.save)
    config = ClassifierConfig(epochs=args.classifier_epochs, min_steps=0, val_fraction=0.1)
    per_epoch = []  # real-test accuracy after each epoch: the DPDM protocol reports the last 5's mean

    def measure(model, epoch):
        per_epoch.append(accuracy(model, reference.test.x, reference.test.y))

    tstr = fit_classifier(synthetic, synthetic.num_classes, config, None, args.seed, torch.device("cpu"), "TSTR",
                          on_epoch=measure)
    extractor = load_extractor(reference)
    real_features, synthetic_features = extractor(reference.test), extractor(synthetic)
    subset = torch.randperm(len(synthetic_features), generator=torch.Generator().manual_seed(args.seed))
    prdc_scores = prdc(real_features, synthetic_features[subset[: len(real_features)]])
    row = {
        "method": args.method,
        "dataset": args.dataset,
        "epsilon_target": args.epsilon,
        "epsilon": report["epsilon"],
        "delta": args.delta,
        "sigma": report["sigma"],
        "sample_rate": report["sample_rate"],
        "steps": report["steps"],
        "history": report["history"],
        "overrides": args.overrides,
        "num": args.num,
        "tstr": accuracy(tstr.model, reference.test.x, reference.test.y),
        "tstr_epoch": tstr.best_epoch,
        "tstr_last5_mean": sum(per_epoch[-5:]) / len(per_epoch[-5:]),
        "tstr_per_epoch": per_epoch,
        "classifier_epochs": args.classifier_epochs,
        "fid_lenet": fid(real_features, synthetic_features),
        "prdc_lenet": prdc_scores,
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "sample_wall_s": round(sample_wall, 1),
        "train_peak_rss_mib": round(train_peak_rss_mib),
        "peak_rss_mib": round(peak_rss_mib()),
        "threads": args.threads,
        "loaded_from": args.load_generator,
    }
    print(json.dumps(row), flush=True)
    print(
        f"| {args.method} | {args.dataset} | {args.epsilon:g} | {report['epsilon']:.3f} | {100 * row['tstr']:.1f} "
        f"| {100 * row['tstr_last5_mean']:.1f} "
        f"| {row['fid_lenet']:.1f} | {prdc_scores['recall']:.2f} | {prdc_scores['coverage']:.2f} | {wall / 60:.1f} "
        f"| {cpu / 60:.1f} | {row['train_peak_rss_mib'] / 1024:.1f} | {' '.join(args.overrides)} |"
    )
    with Path(args.log).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
