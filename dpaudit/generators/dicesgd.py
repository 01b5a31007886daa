"""DiceSGD: DP-SGD with clipped error feedback (Zhang, Bu, Wu, Hong, ICLR 2024), as an opacus
optimizer, in a variant whose privacy we can account exactly.

The paper's update, with per-sample clipping C1 and error clipping C2:

    v_t     = (1/B) sum_i clip(g_i, C1) + clip(e_t, C2)
    theta  -= lr * (v_t + w_t),              w_t ~ N(0, sigma^2 I)
    e_{t+1} = e_t + (1/B) sum_i g_i - v_t  = e_t - clip(e_t, C2) + (1/B) sum_i r_i

with r_i = g_i - clip(g_i, C1) the part of each gradient the clipping cut off.

Accounting. The error state e_t is never released but feeds every later update, and it holds
the UNCLIPPED residuals of every record ever sampled. Worst case, one record moves
clip(e_t, C2) by up to 2 * C2 at every step after it was first sampled, with no amplification
by sampling; the paper's Renyi-DP analysis of this hidden state bounds it under extra
assumptions (bounded gradients) that we could neither verify from its text nor enforce at run
time. We therefore do not claim the paper's accounting. Instead the error state is fed only
by a *released* quantity, which makes it post-processing:

    A_t = sum_i clip(g_i, C1)                + N(0, (sigma_a C1)^2 I)     (the update term)
    R_t = sum_i clip(r_i, C_r)               + N(0, (sigma_r C_r)^2 I)    (the residual term)
    v_t + w_t = A_t / B + clip(e_t, C2)
    e_{t+1}   = e_t - clip(e_t, C2) + R_t / B

Both sums are over the same Poisson-sampled batch. Dividing each by its noise scale, one
step releases a sum of per-sample vectors (a_i / (sigma_a C1), r_i / (sigma_r C_r)) of norm
at most sqrt(1/sigma_a^2 + 1/sigma_r^2) with unit Gaussian noise: exactly one sampled Gaussian
mechanism with noise multiplier

    z = (sigma_a^-2 + sigma_r^-2)^(-1/2),

which is what the opacus accountant is given (`noise_multiplier`). A share `feedback_share`
= z^2 / sigma_r^2 of the privacy "precision" goes to the residual: sigma_a = z / sqrt(1 - s),
sigma_r = z / sqrt(s). With noise off and C_r above every residual norm the update equals the
paper's exactly; the price of exact accounting is that the update term carries 1/sqrt(1 - s)
times the noise of plain DP-SGD at the same epsilon (the paper also needs more noise than
DP-SGD), and the error state accumulates the residual's noise (kept in check by clip C2).
"""

from __future__ import annotations

import math

import torch
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _generate_noise, _mark_as_processed
from torch.optim import Optimizer


def split_noise(noise_multiplier: float, feedback_share: float) -> tuple[float, float]:
    """(sigma_a, sigma_r): the noise multipliers of the update and residual releases whose
    composition is one Gaussian release with `noise_multiplier`. sigma_r is inf for share 0."""
    if not 0 <= feedback_share < 1:
        raise ValueError(f"feedback_share must be in [0, 1), got {feedback_share}")
    sigma_a = noise_multiplier / math.sqrt(1 - feedback_share)
    sigma_r = noise_multiplier / math.sqrt(feedback_share) if feedback_share > 0 else math.inf
    return sigma_a, sigma_r


def clip_by_norm(tensors: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """The tensors scaled jointly so that their total L2 norm is at most `max_norm`."""
    norm = torch.sqrt(sum((t.float() ** 2).sum() for t in tensors))
    factor = (max_norm / (norm + 1e-12)).clamp(max=1.0)
    return [t * factor for t in tensors]


class DiceSGDOptimizer(DPOptimizer):
    """An opacus `DPOptimizer` running the DiceSGD update with a privatized residual (see the
    module docstring). `noise_multiplier` is the multiplier the accountant must be given;
    `max_grad_norm` is C1, `error_max_norm` C2, `residual_max_norm` C_r. The wrapped optimizer
    (SGD, Adam, ...) receives v_t + w_t as the gradient; the loss must be a SUM over samples
    (`loss_reduction="sum"` in the GradSampleModule) and the step divides by
    `expected_batch_size` B."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        error_max_norm: float,
        residual_max_norm: float,
        feedback_share: float,
        expected_batch_size: int,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
            generator=generator,
        )
        self.error_max_norm = error_max_norm
        self.residual_max_norm = residual_max_norm
        self.feedback_share = feedback_share
        self.sigma_update, self.sigma_residual = split_noise(noise_multiplier, feedback_share)
        self.error = [torch.zeros_like(p) for p in self.params]
        for p in self.params:
            p.summed_residual = None

    def clip_and_accumulate(self) -> None:
        """Per-sample: clip(g_i, C1) summed into p.summed_grad and clip(g_i - clip(g_i, C1), C_r)
        summed into p.summed_residual. Both are multiples of g_i, so one factor each suffices."""
        samples = [self._get_flat_grad_sample(p) for p in self.params]
        norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1).norm(2, dim=1)
        keep = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        cut_norm = norms * (1 - keep)  # norm of the residual g_i - clip(g_i, C1)
        residual = (1 - keep) * (self.residual_max_norm / (cut_norm + 1e-6)).clamp(max=1.0)
        for p, g in zip(self.params, samples):
            _check_processed_flag(p.grad_sample)
            g = g.to(p.dtype)
            clipped = torch.einsum("i,i...", keep.to(p.dtype), g)
            cut = torch.einsum("i,i...", residual.to(p.dtype), g)
            p.summed_grad = clipped if p.summed_grad is None else p.summed_grad + clipped
            p.summed_residual = cut if p.summed_residual is None else p.summed_residual + cut
            _mark_as_processed(p.grad_sample)

    def add_noise(self) -> None:
        """p.grad = (A_t + noise) / B + clip(e_t, C2); then e_{t+1} = e_t - clip(e_t, C2) + R_t / B."""
        batch = self.expected_batch_size * self.accumulated_iterations
        feedback = clip_by_norm(self.error, self.error_max_norm)
        for i, p in enumerate(self.params):
            _check_processed_flag(p.summed_grad)
            noise = _generate_noise(self.sigma_update * self.max_grad_norm, p.summed_grad, self.generator)
            p.grad = ((p.summed_grad + noise) / batch + feedback[i]).view_as(p)
            released_residual = p.summed_residual
            if self.feedback_share > 0:
                released_residual = released_residual + _generate_noise(
                    self.sigma_residual * self.residual_max_norm, p.summed_residual, self.generator
                )
                self.error[i] = self.error[i] - feedback[i] + released_residual.view_as(p) / batch
            _mark_as_processed(p.summed_grad)

    def scale_grad(self) -> None:
        """Scaling by 1/B is done in add_noise (the error feedback must not be scaled)."""

    def zero_grad(self, set_to_none: bool = False) -> None:
        for p in self.params:
            if not self._is_last_step_skipped:
                p.summed_residual = None
        super().zero_grad(set_to_none)

    def error_state(self) -> list[torch.Tensor]:
        """The error-feedback state e_t, one tensor per parameter (for checkpoints)."""
        return [e.clone() for e in self.error]

    def load_error_state(self, error: list[torch.Tensor]) -> None:
        self.error = [e.clone().to(p.device, p.dtype) for e, p in zip(error, self.params)]
