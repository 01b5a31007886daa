"""What each process of the distributed DP-SGD tests runs (spawned by torch.multiprocessing,
so it lives in a module): a few DP-SGD steps of a small classifier on digits, the noise calls
counted. Writes {"params", "history", "noise_calls", "batch_sizes", "draws"} to OUT/rank{r}.pt."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from opacus.optimizers import optimizer as opacus_optimizer
from opacus.optimizers import optimizer_fast_gradient_clipping
from torch import nn

from dpaudit.datasets import load_split
from dpaudit.generators.dp_training import DPSGD

STEPS = 6


def train(out: Path, rank: int, clipping: str = "per-sample") -> None:
    """Train with DPSGD in this process (inside a process group or alone) and save the outcome."""
    calls = []
    real_noise = opacus_optimizer._generate_noise

    def counted(*args, **kwargs):
        calls.append(1)
        return real_noise(*args, **kwargs)

    opacus_optimizer._generate_noise = counted
    optimizer_fast_gradient_clipping._generate_noise = counted  # ghost clipping's optimizer imports it by name
    members = load_split("digits").members
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.5), n=len(members), sample_rate=0.05,
               noise_multiplier=1.0, max_grad_norm=1.0, seed=3, clipping=clipping)
    batch_sizes, draws = [], []

    def loss_fn(module, idx, rng):
        batch_sizes.append(len(idx))
        draws.append(float(torch.rand(1, generator=rng)))  # the method's own randomness
        return nn.functional.cross_entropy(module(members.x[idx]), members.y[idx], reduction="none")

    try:
        dp.train(loss_fn, STEPS)
    finally:  # the single-process run shares the test process
        opacus_optimizer._generate_noise = optimizer_fast_gradient_clipping._generate_noise = real_noise
    torch.save({"params": [p.detach().clone() for p in model.parameters()], "history": dp.history_entry(),
                "noise_calls": len(calls), "batch_sizes": batch_sizes, "draws": draws}, out / f"rank{rank}.pt")


def spawned(rank: int, world: int, out: str, port: int, clipping: str) -> None:
    """torch.multiprocessing.spawn's entry: join a gloo group of `world` processes, then train."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train(Path(out), rank, clipping)
    finally:
        torch.distributed.destroy_process_group()
