"""Where lipschitz-vae keeps the class: train it on MNIST's members and report how much of the
encoder means' variance lies between the class means (a diagnosis of the samples' class mix-up
with the N(0, I) prior; benchmarks/RESULTS.md, "lipschitz-vae: the prior and the decoder").
It reads the members' encodings, which the generator never releases: a diagnosis, not an audit.

    DPAUDIT_DATA=../shared/data python benchmarks/diagnose_lipschitz_vae.py --epsilon 10 \\
        --set prior=standard --set decoder=mlp
"""

from __future__ import annotations

import argparse
import json

import torch

from dpaudit.datasets import load_split
from dpaudit.generators import get_generator
from dpaudit.privacy import PrivacyBudget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=10.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value hyper-parameter")
    parser.add_argument("--records", type=int, default=10_000, help="members encoded for the statistics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    members = load_split("mnist").members
    generator = get_generator("lipschitz-vae").from_options(args.overrides, progress=True)
    generator.fit(members, PrivacyBudget(args.epsilon, 1e-5), seed=args.seed)
    with torch.no_grad():
        x, y = members.x[: args.records], members.y[: args.records]
        mu = generator.model.encode_mean(x, y)
    class_means = torch.stack([mu[y == c].mean(0) for c in range(members.num_classes)])
    print(json.dumps({
        "overrides": args.overrides,
        "epsilon": args.epsilon,
        "encoder_mean_std_per_dim": float(mu.std(0).mean()),
        "latent_std": generator.config.latent_std,
        "between_class_share_of_variance": float(class_means.var(0).sum() / mu.var(0).sum()),
    }))


if __name__ == "__main__":
    main()
