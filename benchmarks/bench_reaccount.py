"""The reference generators' declared histories on MNIST re-accounted: the epsilon opacus' RDP
accountant gives them (what the generators report) against Google's dp-accounting, PLD and RDP
(what `evaluate`'s privacy_claim check computes), at delta 1e-5.

    python benchmarks/bench_reaccount.py

Prints a Markdown table (benchmarks/RESULTS.md, "The claim re-accounted"). The histories are
the MNIST default runs of the RESULTS tables (sigma, sample rate, steps per stage).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.generators.pearl import calibrate  # noqa: E402
from dpaudit.privacy import PrivacyBudget, composed_epsilon, reaccount  # noqa: E402

DELTA = 1e-5


def histories():
    merf = {eps: calibrate(PrivacyBudget(eps, DELTA), 5.0, "rdp") for eps in (10.0, 1.0)}
    return [
        ("dp-merf", 10, [(merf[10.0][0], 1.0, 1), (merf[10.0][1], 1.0, 1)]),
        ("dp-merf", 1, [(merf[1.0][0], 1.0, 1), (merf[1.0][1], 1.0, 1)]),
        ("lipschitz-vae", 10, [(0.627, 0.01024, 1954)]),
        ("lipschitz-vae", 1, [(2.008, 0.01024, 1954)]),
        ("latent-diffusion", 10, [(0.828, 0.01024, 977), (0.828, 0.02048, 1954)]),
        ("latent-diffusion", 1, [(4.0, 0.01024, 977), (4.0, 0.02048, 1954)]),
        ("dpsgd-gan", 10, [(0.513, 256 / 50000, 1500)]),
    ]


def main():
    print("| generator | claim | history (sigma, q, steps) | opacus RDP | dp-accounting RDP | dp-accounting PLD | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, claim, history in histories():
        start = time.perf_counter()
        ours = composed_epsilon(history, DELTA)
        theirs = reaccount(history, DELTA)
        cells = ", ".join(f"({s:.3f}, {q:.5g}, {t})" for s, q, t in history)
        print(f"| {name} | {claim} | {cells} | {ours:.3f} | {theirs['rdp']:.3f} | {theirs['pld']:.3f} | "
              f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
