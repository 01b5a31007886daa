"""The TSTR CNN in float32 against bfloat16 autocast (`ClassifierConfig.precision`): its
accuracy, and the power of gradient matching (which inverts it), on MNIST in the quick profile.

Two synthetic sets: MNIST's 10,000 test images (never seen) and the first 10,000 members
(copies: gradient matching should rebuild members). Each is audited with the checks utility and
gradient_matching, once a precision; the TRTR ceiling (the control) comes from the package's
cache in the matching precision.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_precision.py

Prints a Markdown table (benchmarks/RESULTS.md, "bfloat16 classifiers"); run from the
repository root, alone.
"""

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.audit.pipeline import evaluate  # noqa: E402
from dpaudit.audit.profiles import QUICK  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.memory import keep_freed_memory  # noqa: E402


def main() -> None:
    keep_freed_memory()  # as the dpaudit command does
    reference = load_split("mnist")
    sets = {"never-seen (test split)": reference.test, "member copies": reference.members.subset(range(10_000))}
    print("| synthetic set | precision | TSTR accuracy | TRTR accuracy | gradient matching batch PSNR, dB | "
          "mean member PSNR, dB | control batch PSNR, dB | utility s | gradient_matching s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, synthetic in sets.items():
        for precision in ("float32", "bfloat16"):
            profile = dataclasses.replace(QUICK, classifiers=dataclasses.replace(QUICK.classifiers, precision=precision))
            result = evaluate(synthetic, reference, profile=profile, seed=0, checks=["utility", "gradient_matching"],
                              progress=False)
            utility, inversion = result.checks["utility"], result.checks["gradient_matching"]
            assert utility.details["tstr_precision"] == precision, utility.details["tstr_precision"]
            m = inversion.metrics
            print(f"| {name} | {precision} | {utility.metrics['tstr_accuracy'].value:.4f} | "
                  f"{utility.metrics['trtr_accuracy'].value:.4f} | {m['batch_psnr'].value:.2f} | "
                  f"{m['mean_member_psnr'].value:.2f} | {m['control_batch_psnr'].value:.2f} | "
                  f"{utility.seconds:.1f} | {inversion.seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
