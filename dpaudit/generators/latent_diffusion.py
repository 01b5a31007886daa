"""DP latent diffusion (after Ge, Zhang, Sun 2024; compare DP-LDM, Liu et al. 2024).

Two stages touch the private members, and both are trained with DP-SGD (opacus):

1. an autoencoder (conv encoder -> tanh latent of `latent_dim`, transposed-conv decoder),
   trained to reconstruct the member images;
2. a DDPM over the latents: an MLP denoiser eps(z_t, t, class) trained on the latents of the
   member images, with their labels.

Why stage 2 needs its own DP-SGD: the encoder's weights are private (DP-SGD), but the latents
E(x_i) of the private images are a fresh, non-private function of every x_i; training on them
without noise would leak. Stage 2 therefore clips and noises per-record gradients as well.
Each record's loss averages `noise_multiplicity` independent (t, noise) draws BEFORE
clipping (DPDM's noise multiplicity: the draws sit in one [B, K, ...] tensor, so opacus'
per-sample gradient of the record sums over them and the record's clipped gradient is still
bounded by the clip norm).

Accounting: one opacus history with both stages, [(sigma_ae, q_ae, T_ae), (sigma_dm, q_dm, T_dm)],
the steps really taken. The budget is split by the noise: sigma_ae = c * ae_noise_weight,
sigma_dm = c * diffusion_noise_weight, with c calibrated so that the composed epsilon meets
the budget (dpaudit.generators.dp_training.calibrate_noise). Adjacency is add/remove of one
record (image and label), as in opacus. Sampling (decoding DDIM samples of the prior) is
post-processing. Classes are sampled balanced: no class counts are released.

Randomness (Poisson batches, DP noise) comes from torch generators seeded by `seed`: runs
are reproducible; for a release whose noise an adversary must not know, keep the seed secret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dpaudit.errors import DpauditError
from dpaudit.generators.base import Generator, Positive, PrivacyReport, register
from dpaudit.generators.dp_training import DPSGD, calibrate_noise, sample_rate_for, steps_for
from dpaudit.images import ImageSet
from dpaudit.privacy import PrivacyBudget


@dataclass
class LatentDiffusionConfig:
    """Hyper-parameters of DP latent diffusion (stage 1: ae_*, stage 2: diffusion_*)."""

    latent_dim: Positive[int] = 16
    ae_width: Positive[int] = 32
    ae_batch_size: Positive[int] = 512  # expected Poisson batch
    ae_epochs: Positive[float] = 10.0
    ae_lr: Positive[float] = 2e-3
    ae_max_grad_norm: Positive[float] = 1.0
    ae_noise_weight: Positive[float] = 1.0  # relative noise of stage 1 (the split of the budget)
    ae_latent_penalty: float = 1e-2  # weight of mean(z^2): keeps latents of order 1 without data statistics
    ae_latent_noise: float = 0.1  # std of noise added to z while training the decoder (robust decoding)
    latent_bound: Positive[float] = 3.0  # latents are clamped to [-b, b] for the diffusion and its samples
    diffusion_hidden: Positive[int] = 256
    diffusion_layers: Positive[int] = 3
    diffusion_batch_size: Positive[int] = 1024
    diffusion_epochs: Positive[float] = 40.0
    diffusion_lr: Positive[float] = 2e-3
    diffusion_max_grad_norm: Positive[float] = 1.0
    diffusion_noise_weight: Positive[float] = 1.0  # relative noise of stage 2
    noise_multiplicity: Positive[int] = 8  # (t, noise) draws averaged per record before clipping
    timesteps: Positive[int] = 1000
    sample_steps: Positive[int] = 100  # DDIM steps when sampling
    label_dropout: float = 0.1  # share of draws trained unconditionally (classifier-free guidance)
    guidance: float = 0.0  # classifier-free guidance weight at sampling (0: plain conditional)
    accountant: Literal["rdp", "prv"] = "rdp"
    # how DP-SGD clips (dpaudit/generators/dp_training.py): the same result, the faster for these models (both stages)
    clipping: Literal["per-sample", "ghost"] = "ghost"


class Autoencoder(nn.Module):
    """Conv encoder (two stride-2 convs, FC) and a mirrored transposed-conv decoder."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, width: int):
        super().__init__()
        channels, height, wid = shape
        self.shape = shape
        self.base = (math.ceil(height / 4), math.ceil(wid / 4))
        flat = 2 * width * self.base[0] * self.base[1]
        convs = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.SiLU(), nn.Flatten()
        )
        encoded = convs(torch.zeros(1, *shape)).shape[1]
        self.encoder = nn.Sequential(*convs, nn.Linear(encoded, latent_dim))
        self.decode_fc = nn.Sequential(nn.Linear(latent_dim, flat), nn.SiLU())
        self.decode_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )
        self.width = width

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decode_fc(z).view(len(z), 2 * self.width, *self.base)
        return self.decode_conv(h)[..., : self.shape[1], : self.shape[2]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_logits(self.encode(x))


def time_embedding(t: torch.Tensor, timesteps: int, dim: int = 32) -> torch.Tensor:
    """Sinusoidal embedding of integer times (any shape) -> shape + (dim,)."""
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angle = (t.float() / timesteps * 1000.0).unsqueeze(-1) * freqs
    return torch.cat([angle.sin(), angle.cos()], -1)


class Denoiser(nn.Module):
    """An MLP eps(z_t, t, class): inputs [..., latent + time embedding + one-hot (classes + null)]."""

    def __init__(self, latent_dim: int, num_classes: int, hidden: int, layers: int, time_dim: int = 32):
        super().__init__()
        self.num_classes, self.time_dim = num_classes, time_dim
        dims = [latent_dim + time_dim + num_classes + 1] + [hidden] * layers
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, latent_dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, timesteps: int) -> torch.Tensor:
        """labels == num_classes means "no class" (the unconditional model)."""
        onehot = F.one_hot(labels, self.num_classes + 1).float()
        return self.net(torch.cat([z, time_embedding(t, timesteps, self.time_dim), onehot], -1))


def alpha_bars(timesteps: int) -> torch.Tensor:
    """Cumulative products of 1 - beta_t for DDPM's linear schedule (1e-4 .. 0.02 over 1000 steps)."""
    scale = 1000 / timesteps
    betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


@register
class LatentDiffusion(Generator):
    """DP latent diffusion: a DP-SGD autoencoder, then a DP-SGD DDPM over its latents."""

    name = "latent-diffusion"
    data_parallel = True
    Config = LatentDiffusionConfig
    test_overrides = {"ae_width": "4", "latent_dim": "4", "ae_batch_size": "64", "ae_epochs": "0.2",
                      "diffusion_hidden": "16", "diffusion_layers": "2", "diffusion_batch_size": "128",
                      "diffusion_epochs": "0.5", "noise_multiplicity": "2", "timesteps": "50", "sample_steps": "10"}

    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        cfg, n = self.config, len(members)
        if not 0 <= cfg.label_dropout < 1:
            raise DpauditError(f"--set label_dropout: must be in [0, 1), got {cfg.label_dropout}.")
        if cfg.sample_steps > cfg.timesteps:
            raise DpauditError(f"--set sample_steps: at most timesteps ({cfg.timesteps}), got {cfg.sample_steps}.")
        q_ae, q_dm = sample_rate_for(cfg.ae_batch_size, n), sample_rate_for(cfg.diffusion_batch_size, n)
        t_ae, t_dm = steps_for(cfg.ae_epochs, q_ae), steps_for(cfg.diffusion_epochs, q_dm)
        sigma_ae, sigma_dm = calibrate_noise(
            budget, [(q_ae, t_ae, cfg.ae_noise_weight), (q_dm, t_dm, cfg.diffusion_noise_weight)], cfg.accountant
        )
        torch.manual_seed(seed)
        self._build()
        ae = DPSGD(self.autoencoder, torch.optim.Adam(self.autoencoder.parameters(), lr=cfg.ae_lr), n=n,
                   sample_rate=q_ae, noise_multiplier=sigma_ae, max_grad_norm=cfg.ae_max_grad_norm, seed=seed + 10,
                   clipping=cfg.clipping)
        dm = DPSGD(self.denoiser, torch.optim.Adam(self.denoiser.parameters(), lr=cfg.diffusion_lr), n=n,
                   sample_rate=q_dm, noise_multiplier=sigma_dm, max_grad_norm=cfg.diffusion_max_grad_norm, seed=seed + 20,
                   clipping=cfg.clipping)
        saved = self.checkpoint.load()
        if saved is not None:
            ae.load_state_dict(saved["autoencoder"])
            dm.load_state_dict(saved["diffusion"])

        def save():
            self.checkpoint.maybe_save(ae.step + dm.step, lambda: {"autoencoder": ae.state_dict(), "diffusion": dm.state_dict()})

        x = members.x.to(self.device)

        def ae_loss(module, idx, rng):
            z = self.autoencoder.encode(x[idx])
            noisy = z + cfg.ae_latent_noise * torch.randn(z.shape, generator=rng).to(z.device)
            recon = F.binary_cross_entropy_with_logits(self.autoencoder.decode_logits(noisy), x[idx], reduction="none")
            return recon.flatten(1).mean(1) + cfg.ae_latent_penalty * (z**2).mean(1)

        ae.train(ae_loss, t_ae, desc=f"{self.name}: autoencoder", progress=self.progress, after_step=save)
        # The latents are a non-private function of the members: only stage 2's DP-SGD reads them.
        with torch.no_grad():
            latents = torch.cat([self.autoencoder.encode(x[i : i + 2048]) for i in range(0, n, 2048)])
            latents = latents.clamp(-cfg.latent_bound, cfg.latent_bound)
        y = members.y.to(self.device)

        def dm_loss(module, idx, rng):
            k = cfg.noise_multiplicity
            z0 = latents[idx].unsqueeze(1).expand(-1, k, -1)
            t = torch.randint(0, cfg.timesteps, (len(idx), k), generator=rng).to(z0.device)
            eps = torch.randn(z0.shape, generator=rng).to(z0.device)
            ab = self.alpha_bar[t].unsqueeze(-1)
            labels = y[idx].unsqueeze(1).expand(-1, k).clone()
            labels[torch.rand(labels.shape, generator=rng).to(z0.device) < cfg.label_dropout] = self.num_classes
            pred = module(ab.sqrt() * z0 + (1 - ab).sqrt() * eps, t, labels, cfg.timesteps)
            return ((pred - eps) ** 2).mean((1, 2))

        dm.train(dm_loss, t_dm, desc=f"{self.name}: diffusion", progress=self.progress, after_step=save)
        self.autoencoder.eval()
        self.denoiser.eval()
        history = [ae.history_entry(), dm.history_entry()]
        return PrivacyReport.of_history(
            history, budget, cfg.accountant,
            mechanism=(
                f"{self.name}: DP-SGD (opacus) on the autoencoder (clip {cfg.ae_max_grad_norm:g}), then DP-SGD on the "
                f"latent DDPM (clip {cfg.diffusion_max_grad_norm:g}, {cfg.noise_multiplicity} draws per record inside "
                "one clipped gradient); both stages composed in one accountant history; sampling is post-processing"
            ),
            extra={"stages": ["autoencoder", "diffusion"], "members": n},
        )

    def _build(self) -> None:
        cfg = self.config
        self.autoencoder = Autoencoder(self.shape, cfg.latent_dim, cfg.ae_width).to(self.device)
        self.denoiser = Denoiser(cfg.latent_dim, self.num_classes, cfg.diffusion_hidden, cfg.diffusion_layers).to(self.device)
        self.alpha_bar = alpha_bars(cfg.timesteps).to(self.device)

    def released_state(self) -> dict:
        return {"autoencoder": self.autoencoder.state_dict(), "denoiser": self.denoiser.state_dict()}

    def load_released_state(self, state: dict) -> None:
        self._build()
        self.autoencoder.load_state_dict(state["autoencoder"])
        self.denoiser.load_state_dict(state["denoiser"])
        self.autoencoder.eval()
        self.denoiser.eval()

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """DDIM (eta = 0) over `sample_steps` of the training times, then the decoder."""
        cfg = self.config
        rng = torch.Generator().manual_seed(seed)
        times = torch.linspace(cfg.timesteps - 1, 0, cfg.sample_steps).round().long()
        out = []
        for i in range(0, len(labels), 2000):
            y = labels[i : i + 2000].to(self.device)
            z = torch.randn(len(y), cfg.latent_dim, generator=rng).to(self.device)
            null = torch.full_like(y, self.num_classes)
            for j, t in enumerate(times):
                tt = torch.full((len(y),), int(t), device=self.device)
                eps = self.denoiser(z, tt, y, cfg.timesteps)
                if cfg.guidance:
                    eps = (1 + cfg.guidance) * eps - cfg.guidance * self.denoiser(z, tt, null, cfg.timesteps)
                ab = self.alpha_bar[t]
                z0 = ((z - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-cfg.latent_bound, cfg.latent_bound)
                ab_prev = self.alpha_bar[times[j + 1]] if j + 1 < len(times) else torch.tensor(1.0)
                z = ab_prev.sqrt() * z0 + (1 - ab_prev).sqrt() * eps
            out.append(torch.sigmoid(self.autoencoder.decode_logits(z)))
        return torch.cat(out)
