"""DP-SGD with opacus for the generators that train networks on the private data, and the
calibration of noise when several private stages share one budget.

`DPSGD` wraps a model in opacus' `GradSampleModule` and its optimizer in `DPOptimizer`, and
samples batches itself: every step draws a Poisson batch (each record independently with
probability q), the sampling the accountant assumes. Per-sample gradients are clipped to
`max_grad_norm` and Gaussian noise of std `noise_multiplier * max_grad_norm` is added, by
opacus. The batch sampler, the optimizer's noise and the method's own randomness (diffusion
times, reparameterisation noise) come from seeded torch generators that are checkpointed,
so a run is reproducible and resumes exactly where it stopped.

Under torchrun (dpaudit/distributed.py) every process draws the same Poisson batch over the
whole member set and trains on its share (every N-th sampled record); opacus' DPDDP and
`DistributedDPOptimizer` sum the clipped per-sample gradients across processes and add the
noise once, on rank 0, so a step is the single-process step (up to the order of summation) and
the accountant's history is the same.

Clipping runs one of two ways, with the same result (the sum of every record's gradient clipped
to `max_grad_norm`; then one Gaussian noise, the same accountant history): `per-sample`, opacus'
GradSampleModule, forms each record's gradient, clips and sums; `ghost`, opacus' fast gradient
clipping, gets each record's gradient norm from a layer's activations and backprops (in closed
form for nn.Linear and SpectralLinear, from per-sample gradients that are dropped for other
layers), then backpropagates the loss weighted by the clipping factors a second time. Ghost
clipping never holds B copies of the largest weights, which is where the per-sample path spends
its time and memory on wide linear layers; a generator picks the faster one for its model
(benchmarks/bench_dp_step.py).

`calibrate_noise` splits one (epsilon, delta) budget over several stages: stage i gets the noise
multiplier c * w_i for weights w_i, and c is the smallest value (by bisection) for which opacus'
accountant, given ALL stages in one history, reports at most the budget's epsilon. The
composition is therefore exact (RDP or PRV composition of the whole history), not a sum of
per-stage epsilons.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from opacus import GradSampleModule
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import (
    DistributedDPOptimizer,
    DistributedDPOptimizerFastGradientClipping,
    DPOptimizer,
    DPOptimizerFastGradientClipping,
)
from torch import nn
from tqdm.auto import tqdm

from dpaudit import distributed
from dpaudit.nets import device_of, seeded_generator
from dpaudit.privacy import PrivacyBudget, calibrating, composed_epsilon


def calibrate_noise(
    budget: PrivacyBudget,
    stages: Sequence[tuple[float, int, float]],
    accountant: str = "rdp",
    rel_tolerance: float = 0.005,
) -> list[float]:
    """Noise multipliers c * w_i for stages given as (sample_rate, steps, weight w_i), with c
    such that the composed epsilon of the whole history is in [(1 - rel_tolerance) eps, eps].
    A non-private budget gives zeros (no noise)."""
    if not budget.is_private:
        return [0.0] * len(stages)

    def eps(c: float) -> float:
        with calibrating(budget, accountant):
            return composed_epsilon([(c * w, q, t) for q, t, w in stages], budget.delta, accountant)

    lo, hi = 1.0, 1.0
    eps_hi = eps(hi)
    while eps_hi > budget.epsilon:
        lo, hi = hi, 2 * hi
        eps_hi = eps(hi)
    while eps(lo) <= budget.epsilon:
        hi, eps_hi, lo = lo, eps(lo), lo / 2
    # Bisection by hand: opacus' get_noise_multiplier searches one (rate, steps) stage only.
    while eps_hi < budget.epsilon * (1 - rel_tolerance) and hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        eps_mid = eps(mid)
        if eps_mid > budget.epsilon:
            lo = mid
        else:
            hi, eps_hi = mid, eps_mid
    return [hi * w for _, _, w in stages]


CLIPPING = ("per-sample", "ghost")  # the ways DPSGD clips (the module docstring)


class DPSGD:
    """One DP-SGD stage: `train(loss_fn, steps)` runs Poisson-sampled, clipped, noised steps.

    `loss_fn(module, indices, rng)` returns one loss per sampled record (a tensor [B]); the
    module is opacus' GradSampleModule (or, with `clipping="ghost"`, its fast-gradient-clipping
    variant) around `model`, `rng` a seeded torch generator for the
    method's own randomness. With noise_multiplier 0 (a non-private run) gradients are still
    clipped, so the only difference to the private run is the noise. `clipping`: "per-sample" or
    "ghost" (the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        n: int,
        sample_rate: float,
        noise_multiplier: float,
        max_grad_norm: float,
        seed: int,
        clipping: str = "per-sample",
    ):
        if clipping not in CLIPPING:
            raise ValueError(f"clipping must be one of {CLIPPING}, not {clipping!r}")
        self.clipping = clipping
        self.n, self.sample_rate = n, sample_rate
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.rank, self.world = distributed.world()
        self.model = model
        wrapped = DPDDP(model) if self.world > 1 else model
        if clipping == "ghost":
            self.module = GradSampleModuleFastGradientClipping(wrapped, max_grad_norm=max_grad_norm, loss_reduction="mean")
        else:
            self.module = GradSampleModule(wrapped, loss_reduction="mean")
        self.noise = seeded_generator(device_of(model), seed)  # opacus draws the noise on the weights' device
        # Each process divides by its share of the expected batch and the optimizer divides the
        # sum over processes by their number: the mean over the whole expected batch either way.
        optimizer_class = {
            ("per-sample", False): DPOptimizer, ("per-sample", True): DistributedDPOptimizer,
            ("ghost", False): DPOptimizerFastGradientClipping, ("ghost", True): DistributedDPOptimizerFastGradientClipping,
        }[clipping, self.world > 1]
        self.optimizer = optimizer_class(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, round(sample_rate * n)) / self.world,
            loss_reduction="mean",
            generator=self.noise,
        )
        self.sampler = torch.Generator().manual_seed(seed + 1)  # the same on every process: one batch
        self.seed = seed
        self.rng = torch.Generator().manual_seed(self._rng_seed(0))
        self.step = 0

    def _rng_seed(self, step: int) -> int:
        """Seed of the method's own randomness: per process under torchrun, so that the records of
        one batch get independent draws (diffusion times, reparameterisation noise)."""
        return self.seed + 2 if self.rank == 0 else self.seed + 2 + 1_000_003 * (self.rank + step * self.world)

    def batch(self) -> torch.Tensor:
        """Indices of one Poisson batch (each record independently with probability q), or of this
        process's share of it: every process draws the same batch and takes every world-th record."""
        drawn = torch.nonzero(torch.rand(self.n, generator=self.sampler) < self.sample_rate).flatten()
        return drawn[self.rank :: self.world]

    def train(
        self,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
        steps: int,
        *,
        desc: str = "dp-sgd",
        progress: bool = False,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        """Run until `steps` steps have been taken in total (resumes from `self.step`), once per
        stage. `after_step` is called after every step (checkpoints, constraints)."""
        self.module.train()
        bar = tqdm(total=steps, initial=self.step, desc=desc, disable=not progress, leave=False)
        while self.step < steps:
            idx = self.batch()
            self.optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(self.module, idx, self.rng)
            with warnings.catch_warnings():
                # opacus' hooks fire on module outputs when the inputs need no gradient: expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                self._backward(losses)
            self.optimizer.step()
            self.step += 1
            bar.update(1)
            if after_step is not None:
                after_step()
        bar.close()
        self.module.eval()
        # Later use of the model (sampling, synthesis) is post-processing: drop opacus' hooks.
        self.module.to_standard_module()

    def _backward(self, losses: torch.Tensor) -> None:
        """Leave the sum of the records' clipped gradients where the optimizer adds the noise. An
        empty Poisson batch still takes a (pure-noise) step, as the accountant assumes."""
        first = losses.mean() if len(losses) else losses.sum()
        if self.clipping == "per-sample":
            first.backward()
            return
        # Ghost clipping, as opacus' DPLossFastGradientClipping: the first pass gives the norms...
        first.backward(retain_graph=True)
        coefficients = self.module.get_clipping_coef()
        self.optimizer.zero_grad(set_to_none=True)
        # ... the second, without hooks, the gradient of the clipped-weighted sum.
        self.module.disable_hooks()
        try:
            (coefficients * losses).sum().backward()
        finally:
            self.module.enable_hooks()
        for p in self.model.parameters():  # a weight the batch did not reach (an empty batch)
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)

    def history_entry(self) -> tuple[float, float, int]:
        """(noise multiplier, sampling rate, steps taken): this stage in the accountant's history."""
        return (self.noise_multiplier, self.sample_rate, self.step)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.original_optimizer.state_dict(),
            "noise": self.noise.get_state(),
            "sampler": self.sampler.get_state(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.original_optimizer.load_state_dict(state["optimizer"])
        self.noise.set_state(state["noise"])
        self.sampler.set_state(state["sampler"])
        if self.rank == 0:
            self.rng.set_state(state["rng"])
        else:  # rank 0 saved its own draws; the others start afresh where the run stopped
            self.rng.manual_seed(self._rng_seed(self.step))


def sample_rate_for(batch_size: int, n: int) -> float:
    """The Poisson sampling rate whose expected batch is `batch_size` records (at most 1)."""
    return min(1.0, batch_size / n)


def steps_for(epochs: float, sample_rate: float) -> int:
    """Steps that visit each record `epochs` times in expectation."""
    return max(1, math.ceil(epochs / sample_rate))
