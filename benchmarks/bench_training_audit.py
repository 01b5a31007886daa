"""The training audit's known answers on the embedded digits set: for each trainer and canary kind,
the bounds reached (one-run and f-DP) against the ceiling, the verdict and the time.

    OMP_NUM_THREADS=1 python benchmarks/bench_training_audit.py [--canaries 200] [--runs 1]
    python benchmarks/bench_training_audit.py --needed-only

Prints a Markdown table (and, first, the canaries a perfect attack needs to refute a claim) (benchmarks/RESULTS.md, "The training audit"). The trainers are the test
fixtures of tests/audit/training_fixtures.py (run from the repository root).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.attacks.auditor import MAX_CANARIES, TRAINING_BOUNDS, canaries_needed, perfect_ceiling  # noqa: E402
from dpaudit.audit.trainers import GeneratorTrainer  # noqa: E402
from dpaudit.audit.training_audit import TrainingAuditConfig, audit_training  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.generators import get_generator  # noqa: E402
from dpaudit.privacy import PrivacyBudget  # noqa: E402
from tests.audit.training_fixtures import Copier, DataIgnorer, NoiselessGenerator  # noqa: E402

MERF = tuple(f"{k}={v}" for k, v in {**get_generator("dp-merf").test_overrides, "steps": "50"}.items())
# The model the RESULTS rows were measured with: N(0, I) prior, full-resolution decoder (8x8 digits).
VAE = ("epochs=300", "batch_size=64", "lipschitz=10", "latent_std=0.1", "latent_dim=2", "prior=standard", "decoder=mlp")


def cases(canaries):
    small = dict(members=100, samples=5000)
    return [
        ("copier", Copier(), 1.0, {}),
        ("copier", Copier(), 10.0, {}),
        ("data-ignorer", DataIgnorer(), 1.0, {}),
        ("dp-merf", GeneratorTrainer("dp-merf", MERF), 1.0, {}),
        ("dp-merf, noise skipped", NoiselessGenerator("dp-merf", MERF), 1.0, {}),
        ("lipschitz-vae (memorising config)", GeneratorTrainer("lipschitz-vae", VAE), 1.0, small),
        ("lipschitz-vae, noise and clipping off", NoiselessGenerator("lipschitz-vae", VAE + ("max_grad_norm=1e6",)), 1.0, small),
    ]


def print_needed(delta=1e-5, alpha=0.025):
    """Canaries (half IN) a perfect attack needs to refute each claim, per bound, at the alpha one
    rule and two bounds leave (0.05 / 2); and each bound's ceiling at MAX_CANARIES."""
    claims = (1.0, 4.0, 10.0)
    print(f"| bound | {' | '.join(f'claim {c:g}' for c in claims)} | ceiling at {MAX_CANARIES:,} |")
    print("|---|" + "---|" * (len(claims) + 1))
    for method in TRAINING_BOUNDS:
        needed = [canaries_needed(method, c, delta=delta, alpha=alpha) for c in claims]
        cells = " | ".join("none" if n is None else f"{n:,}" for n in needed)
        print(f"| {method} | {cells} | {perfect_ceiling(method, MAX_CANARIES, delta=delta, alpha=alpha):.2f} |", flush=True)
    print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--canaries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--kinds", default="mislabeled,stamped,ood,clean")
    parser.add_argument("--needed-only", action="store_true", help="Only the canaries-needed table.")
    args = parser.parse_args()
    print_needed()
    if args.needed_only:
        return
    reference = load_split("digits")
    print("| trainer | claim | kind | one-run | f-DP | ceiling | AUC | verdict | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, trainer, epsilon, extra in cases(args.canaries):
        for kind in args.kinds.split(","):
            config = TrainingAuditConfig(canaries=args.canaries, kind=kind, features=False, **extra)
            start = time.perf_counter()
            result = audit_training(trainer, reference, PrivacyBudget(epsilon, 1e-5), config=config, runs=args.runs,
                                    seed=0, progress=False)
            check = result.checks["training_audit"]
            m = {k: v.value for k, v in check.metrics.items()}
            print(f"| {name} | {epsilon:g} | {kind} | {m['one_run_bound']:.2f} | {m['fdp_bound']:.2f} | "
                  f"{m['ceiling']:.2f} | {m['auc']:.3f} | {check.details['verdict']} | "
                  f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
