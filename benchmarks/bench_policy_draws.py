"""The README's example policy over seeded draws: how often never-seen real images pass it, and
how often a set with a quarter of jittered member copies (shifted 1-2 pixels, noise 0.02) fails
it, beside the same bounds held to the values instead of the intervals' low ends (the policy
before the intervals).

Each draw is an audit seed (the membership targets and folds, the 2,000 synthetic and 2,000
holdout images the similarity check matches) on the built-in split; the never-seen images are
the dataset's test split (MNIST: the official 10,000), the copies replace its first quarter.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_policy_draws.py --dataset mnist --draws 10

Prints a Markdown table (benchmarks/RESULTS.md, "Policies over seeded draws"); run from the
repository root.
"""

import argparse
import dataclasses
import re
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpaudit.audit.gate import Policy, apply_policy, parse_policy  # noqa: E402
from dpaudit.audit.pipeline import evaluate  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.images import ImageSet  # noqa: E402
from dpaudit.manifest import Manifest  # noqa: E402
from tests.transformed_copies import jittered  # noqa: E402


def readme_policy() -> Policy:
    text = re.search(r"```toml\n# policy.toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return parse_policy(tomllib.loads(text), "README policy")


def on_values(policy: Policy) -> Policy:
    """The same rules read on the values (`x.ci_low` -> `x`)."""
    return Policy(tuple(dataclasses.replace(r, metric=r.metric.removesuffix(".ci_low")) for r in policy.rules),
                  "the same bounds on the values")


def failed_rules(result, policy: Policy) -> list[str]:
    return [o.rule.metric for o in apply_policy(result, policy).failures]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    reference = load_split(args.dataset)
    never_seen = reference.test
    quarter = len(never_seen) // 4
    policies = {"README (ci_low)": readme_policy()}
    policies["values"] = on_values(policies["README (ci_low)"])
    checks = sorted({r.metric.split(".")[0] for r in policies["values"].rules} - {"manifest"})
    print(f"{args.dataset}: {len(never_seen)} never-seen images, checks {checks}, profile quick", flush=True)
    tallies = {(kind, name): [] for kind in ("never-seen", "copies") for name in policies}
    for seed in range(args.draws):
        x, y = never_seen.x.clone(), never_seen.y.clone()
        x[:quarter] = jittered(reference.members.x[:quarter], seed=seed, family="shift", noise=0.02)
        y[:quarter] = reference.members.y[:quarter]
        for kind, synthetic in (("never-seen", never_seen), ("copies", ImageSet(x, y, never_seen.num_classes))):
            start = time.perf_counter()
            result = evaluate(synthetic, reference, profile="quick", checks=checks, seed=seed,
                              manifest=Manifest("draw", epsilon=1.0, delta=1e-5), progress=False)
            excess = result.checks["similarity"].metrics["near_copy_excess"]
            for name, policy in policies.items():
                failures = failed_rules(result, policy)
                tallies[kind, name].append(not failures)
                print(f"draw {seed} {kind} {name}: {'pass' if not failures else 'FAIL ' + ', '.join(failures)}; "
                      f"near-copy excess {excess.value:.4f} [{excess.ci[0]:.4f}, {excess.ci[1]:.4f}], "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    print("\n| dataset | synthetic set | policy | draws passed |")
    print("|---|---|---|---|")
    for (kind, name), passes in tallies.items():
        print(f"| {args.dataset} | {kind} | {name} | {sum(passes)} of {len(passes)} |")


if __name__ == "__main__":
    main()
