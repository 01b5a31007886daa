"""The membership check's holdout test on real splits: the built-in holdout against a holdout
taken from the dataset's test split (other writers on digits; MNIST's and Fashion-MNIST's
official test splits), three target draws each, 1,000 targets a side (fewer where the data
is smaller) and 2,000 reference images.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_holdout_test.py

Prints a Markdown table (benchmarks/RESULTS.md, "The holdout test"); run from the repository root.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.attacks.base import MembershipInputs, draw_targets  # noqa: E402
from dpaudit.audit.membership_check import holdout_test  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402


def main():
    print("| dataset | holdout | draw | targets a side | reference | AUC | p | exchangeable |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in ("digits", "mnist", "fashion-mnist"):
        reference = load_split(dataset)
        for name, holdout in (("built-in holdout", reference.holdout), ("test split", reference.test)):
            for seed in (0, 1, 2):
                split = draw_targets(len(reference.members), len(holdout), per_side=1000, reference=2000, seed=seed)
                inputs = MembershipInputs(split.targets(reference.members.x, holdout.x), None,
                                          split.reference(holdout.x), None, None, None, None, None)
                test = holdout_test(inputs, split)
                print(f"| {dataset} | {name} | {seed} | {len(split.member_idx)} | {len(split.reference_idx)} | "
                      f"{test['auc']:.3f} | {test['p_value']:.2g} | {test['exchangeable']} |", flush=True)


if __name__ == "__main__":
    main()
