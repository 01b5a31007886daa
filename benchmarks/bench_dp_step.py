"""Per-step time and peak memory of each DP-SGD generator's private step, against the same step
without privacy, at the default batch and at 4x it (issue 20, item 1).

    DPAUDIT_DATA=../shared/data python benchmarks/bench_dp_step.py [--dataset mnist] [--steps 5] [--batch-factors 1 4]

A private step is what training runs: a Poisson batch, opacus' per-sample gradients, clipping,
the Gaussian noise, the optimizer's update. The same step without privacy runs the same loss on
the same batch with opacus' hooks off and the plain optimizer (one batch gradient: no
per-sample gradients, no clipping, no noise). Every (generator stage, batch factor, mode) runs
in its own process, so that its peak resident memory is its own: the table gives the process's
peak and its resident size just before the first step (the data and models loaded). Each time
is the median of `--steps` steps after two warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (generator, stage, the option holding its expected batch); a stage is one DPSGD in training order.
STAGES = [
    ("lipschitz-vae", "vae", "batch_size"),
    ("latent-diffusion", "autoencoder", "ae_batch_size"),
    ("latent-diffusion", "diffusion", "diffusion_batch_size"),
    ("bn-matching", "classifier", "clf_batch_size"),
    ("dpsgd-gan", "discriminator", "batch_size"),
]


def rss_mib() -> float:
    """This process's resident size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Measured(Exception):
    """Raised once the stage of interest is timed: the rest of the training is not needed."""


def measure(generator_name: str, stage: str, option: str, factor: int, clipping: str | None, steps: int,
            dataset: str) -> dict:
    """Time `steps` steps of one stage in this process: private with `clipping`, or non-private (None)."""
    import torch

    from dpaudit.datasets import load_split
    from dpaudit.generators import dp_training, dpsgd_gan, get_generator
    from dpaudit.memory import keep_freed_memory, peak_rss_mib
    from dpaudit.privacy import PrivacyBudget
    from dpaudit.threads import configure

    configure()
    keep_freed_memory()  # as the dpaudit command does
    members = load_split(dataset).members
    cls = get_generator(generator_name)
    batch = int(getattr(cls.Config(), option)) * factor
    private = clipping is not None
    overrides = {option: str(batch)} | ({"clipping": clipping} if private and generator_name != "dpsgd-gan" else {})
    generator = cls.from_options(overrides)
    order = [s for g, s, _ in STAGES if g == generator_name]
    seen, times, sizes, before = [], [], [], {}

    def timed(run_step):
        """Two warm-up steps, then `steps` timed ones (the resident size read before the first)."""
        for i in range(2 + steps):
            if i == 0:
                before["rss"] = rss_mib()
            start = time.perf_counter()
            size = run_step()
            if i >= 2:
                times.append(time.perf_counter() - start)
                sizes.append(size)

    def dpsgd_train(self, loss_fn, total_steps, desc="", progress=False, after_step=None):
        seen.append(order[len(seen)])
        if seen[-1] != stage:
            self.step = total_steps  # a stage before the one timed: skip it
            self.module.to_standard_module()
            return

        def step():
            idx = self.batch()
            if private:
                self.optimizer.zero_grad(set_to_none=True)
                losses = loss_fn(self.module, idx, self.rng)
                (losses.mean() if len(idx) else losses.sum()).backward()
                self.optimizer.step()
            else:
                optimizer = self.optimizer.original_optimizer
                self.module.disable_hooks()
                optimizer.zero_grad(set_to_none=True)
                losses = loss_fn(self.module, idx, self.rng)
                (losses.mean() if len(idx) else losses.sum()).backward()
                optimizer.step()
                self.module.enable_hooks()
            return len(idx)

        timed(step)
        raise Measured

    original_d_step = dpsgd_gan.DPSGDGAN._discriminator_step

    def discriminator_step(self, x_real, y_real, batch_size, d_opt, rng):
        def step():
            if private:
                original_d_step(self, x_real, y_real, batch_size, d_opt, rng)
            else:
                self.discriminator.disable_hooks()
                original_d_step(self, x_real, y_real, batch_size, d_opt.original_optimizer, rng)
                self.discriminator.enable_hooks()
            return len(x_real)

        timed(step)
        raise Measured

    dp_training.DPSGD.train = dpsgd_train
    dpsgd_gan.DPSGDGAN._discriminator_step = discriminator_step
    torch.manual_seed(0)
    try:
        generator.fit(members, PrivacyBudget(10.0, 1e-5), seed=0)
    except Measured:
        pass
    return {
        "generator": generator_name, "stage": stage, "expected_batch": batch, "mean_batch": statistics.mean(sizes),
        "clipping": clipping, "step_s": statistics.median(times), "rss_before_mib": before["rss"],
        "peak_rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-factors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--stages", nargs="+", help="generator:stage pairs to run (default: all)")
    parser.add_argument("--clipping", nargs="+", default=["per-sample", "ghost"], choices=["per-sample", "ghost"],
                        help="DP-SGD's clipping modes to time (dpsgd-gan has its own optimizer: per-sample only)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one), args.steps, args.dataset)))
        return
    stages = [s for s in STAGES if args.stages is None or f"{s[0]}:{s[1]}" in args.stages]
    print("| generator | stage | expected batch | mode | step, s | x non-private | peak RSS, MiB | RSS before the steps, MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for g, stage, option in stages:
        modes = [None] + (["per-sample"] if g == "dpsgd-gan" else args.clipping)
        for factor in args.batch_factors:
            plain = None
            for clipping in modes:
                spec = json.dumps([g, stage, option, factor, clipping])
                out = subprocess.run([sys.executable, __file__, "--one", spec, "--steps", str(args.steps),
                                      "--dataset", args.dataset], capture_output=True, text=True)
                mode = "non-private" if clipping is None else f"private, {clipping}"
                if out.returncode != 0:
                    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
                    print(f"| {g} | {stage} | x{factor} | {mode} | failed: {last[:120]} | | | |", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                plain = row if clipping is None else plain
                ratio = f"{row['step_s'] / plain['step_s']:.1f}x" if plain else ""
                print(f"| {g} | {stage} | {row['expected_batch']} | {mode} | {row['step_s']:.3f} | {ratio} | "
                      f"{row['peak_rss_mib']:.0f} | {row['rss_before_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
