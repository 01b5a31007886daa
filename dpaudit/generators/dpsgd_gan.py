"""A class-conditional GAN whose discriminator is trained with DP-SGD (opacus), the EFSGD
generator of Ma and Zhang (2026): DiceSGD error feedback on the discriminator, Gaussian noise
injected into the generator's feature maps while upsampling, and a VAE-style reconstruction
loss; with MSGAN's mode-seeking term (Mao et al. 2019) against the collapse onto one image per
class that the other parts did not prevent (benchmarks/RESULTS.md, "dpsgd-gan").

What the guarantee covers. Only the discriminator reads the member images. Each of its steps
draws a Poisson sample of the members (rate q = batch_size / n), clips every per-sample gradient
and adds Gaussian noise (opacus' GradSampleModule and DPOptimizer, or `DiceSGDOptimizer`,
whose exact accounting is explained in `dicesgd.py`); the opacus RDP accountant composes the
`steps` releases. Everything else is post-processing of those releases: the generator only sees
the discriminator's outputs on generated images, the reconstruction loss uses generated images
as targets (never a member image), and the released images are drawn from the generator. The
guarantee is (epsilon, delta)-DP for adding or removing one member image (with its label),
covering the generator, the synthetic images and the discriminator. Hyper-parameters are taken
as public (not tuned on the members inside this run); the checkpoint folder holds non-private
intermediate state and must be kept as private as the data. The Poisson samples and the
Gaussian noise are drawn from torch generators seeded by `seed`, so that a run is reproducible
and resumes exactly: the guarantee holds against an adversary who does not know the seed, so
keep the seed of a real release secret.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn
from tqdm.auto import tqdm

from dpaudit.errors import DpauditError
from dpaudit.generators.base import Generator, Positive, PrivacyReport, register
from dpaudit.generators.dicesgd import DiceSGDOptimizer
from dpaudit.images import ImageSet
from dpaudit.nets import seeded_generator
from dpaudit.privacy import PrivacyBudget, dpsgd_noise

# Seeds of the per-step random generators: step t of a run with seed s uses s * STRIDE + t, so
# that a resumed run draws exactly the numbers the uninterrupted run would have drawn.
SEED_STRIDE = 1_000_003


# ---------------------------------------------------------------- networks


class NoiseInjection(nn.Module):
    """x + scale_c * N(0, 1) per pixel, with a learned per-channel scale (EFSGD's feature-map
    noise, in the StyleGAN form). The noise is drawn from an explicit generator when given."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # An explicit generator may live on the CPU (seeded draws, the same on every device).
        device = x.device if generator is None else generator.device
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return x + self.scale * noise


class CondGenerator(nn.Module):
    """z and a label embedding -> a 4w x h x w map -> two (upsample, conv, BN, ReLU, noise)
    stages -> conv -> sigmoid, resized to the data's (H, W) when H is not a multiple of 4."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, latent_dim: int, width: int, noise_init: float):
        super().__init__()
        self.shape, self.latent_dim = shape, latent_dim
        channels, height, wide = shape
        self.base = (math.ceil(height / 4), math.ceil(wide / 4))
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.fc = nn.Linear(2 * latent_dim, 4 * width * self.base[0] * self.base[1])
        self.bn0 = nn.BatchNorm2d(4 * width)
        self.noise0 = NoiseInjection(4 * width, noise_init)
        self.conv1 = nn.Conv2d(4 * width, 2 * width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(2 * width)
        self.noise1 = NoiseInjection(2 * width, noise_init)
        self.conv2 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.noise2 = NoiseInjection(width, noise_init)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(len(z), -1, *self.base)
        h = self.noise0(F.relu(self.bn0(h)), generator)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.noise1(F.relu(self.bn1(self.conv1(h))), generator)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.noise2(F.relu(self.bn2(self.conv2(h))), generator)
        x = torch.sigmoid(self.out(h))
        if x.shape[-2:] != self.shape[1:]:
            x = F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False)
        return x


def _conv_trunk(channels: int, width: int) -> nn.Sequential:
    # No normalisation layers: batch statistics would mix samples and break per-sample clipping.
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(),
    )


class CondDiscriminator(nn.Module):
    """A conv trunk phi(x); the adversarial logit is a linear head plus a class projection
    <embed(y), phi(x)> (Miyato and Koyama 2018); with `classify`, an auxiliary head classifies
    phi(x) (without it, the logits returned are None: opacus refuses a parameter that no loss
    reaches)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int, classify: bool = True):
        super().__init__()
        self.trunk = _conv_trunk(shape[0], width)
        features = self.trunk(torch.zeros(1, *shape)).shape[1]
        self.adv = nn.Linear(features, 1)
        self.project = nn.Embedding(num_classes, features)
        nn.init.normal_(self.project.weight, std=0.01)
        self.classify = nn.Linear(features, num_classes) if classify else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        phi = self.trunk(x)
        adv = self.adv(phi).squeeze(1) + (self.project(y) * phi).sum(1)
        return adv, None if self.classify is None else self.classify(phi)


class Encoder(nn.Module):
    """Generated image -> (mu, log variance) of a latent code, for the reconstruction loss."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, width: int):
        super().__init__()
        self.trunk = _conv_trunk(shape[0], width)
        self.head = nn.Linear(self.trunk(torch.zeros(1, *shape)).shape[1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.trunk(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 8)


@contextlib.contextmanager
def frozen(discriminator: GradSampleModule):
    """Use the private discriminator as a fixed function for a generator update.

    The classic opacus GAN pitfall: the generator's loss is back-propagated THROUGH the
    discriminator, and a GradSampleModule's hooks would then compute per-sample gradients of
    the discriminator's weights on generated images (p.grad_sample) and leave them there. The
    next private step would clip and sum them together with the member gradients, with a
    different batch size than accounted, and generator gradients would leak into the
    discriminator's update. Here, for the generator's step, the hooks are switched off and the
    discriminator's weights stop requiring gradients: gradients flow to the generated images
    only, nothing is stored on the discriminator, and no privacy is spent.
    """
    params = list(discriminator.parameters())
    flags = [p.requires_grad for p in params]
    discriminator.disable_hooks()
    for p in params:
        p.requires_grad_(False)
    try:
        yield discriminator
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        discriminator.enable_hooks()


# ---------------------------------------------------------------- the generator


@register
class DPSGDGAN(Generator):
    """Conditional GAN, discriminator trained with DiceSGD (default) or plain DP-SGD."""

    name = "dpsgd-gan"

    @dataclass
    class Config:
        optimizer: Literal["dicesgd", "dpsgd"] = "dicesgd"
        steps: Positive[int] = 3000  # private discriminator steps (the accounted releases)
        batch_size: Positive[int] = 256  # expected Poisson batch of members per discriminator step
        clip: Positive[float] = 1.0  # C1: per-sample gradient clipping
        error_clip: Positive[float] = 1.0  # C2: clipping of the fed-back error state (DiceSGD)
        residual_clip: Positive[float] = 2.0  # C_r: per-sample bound on the clipped-off residual (DiceSGD)
        feedback_share: float = 0.1  # share of the privacy precision spent on the residual
        d_lr: Positive[float] = 6e-4
        g_lr: Positive[float] = 6e-4
        d_steps_per_g: Positive[int] = 1  # discriminator steps per generator step
        fake_batch: Positive[int] = 256  # generated images per discriminator step and per generator step (free in privacy)
        latent_dim: Positive[int] = 64
        d_width: Positive[int] = 16  # channels of the discriminator's first conv (then 2x, 4x)
        g_width: Positive[int] = 16  # channels of the generator's last conv (4x, 2x before)
        recon_batch: int = 16  # generated images reconstructed per generator step
        noise_init: float = 0.1  # initial scale of the feature-map noise (EFSGD)
        recon_weight: float = 0.05  # VAE-style reconstruction of generated images (EFSGD)
        kl_weight: float = 0.01
        latent_weight: float = 1.0  # the encoder must recover the code of a generated image
        class_weight: float = 1.0  # auxiliary classification loss
        # Mode seeking (Mao et al. 2019): pairs of codes of one label must give different images;
        # without it the generator ignores its code (one image per class, even without privacy).
        diversity_weight: float = 1.0
        ema: float = 0.995  # exponential moving average of the generator's weights
        accountant: Literal["rdp", "prv"] = "rdp"

    test_overrides = {"steps": "4", "batch_size": "32", "fake_batch": "16", "recon_batch": "8", "d_width": "4",
                      "g_width": "4", "latent_dim": "8"}

    # ------------------------------------------------------------ training

    def _new_generator_net(self) -> CondGenerator:
        cfg = self.config
        return CondGenerator(self.shape, self.num_classes, cfg.latent_dim, cfg.g_width, cfg.noise_init).to(self.device)

    def _build(self, seed: int) -> None:
        cfg, shape, k = self.config, self.shape, self.num_classes
        torch.manual_seed(seed)
        self.generator_net = self._new_generator_net()
        self.encoder = Encoder(shape, cfg.latent_dim, cfg.g_width).to(self.device)
        self.discriminator = GradSampleModule(
            CondDiscriminator(shape, k, cfg.d_width, classify=cfg.class_weight > 0).to(self.device), loss_reduction="sum"
        )
        self.generator_ema = copy.deepcopy(self.generator_net).eval()
        for p in self.generator_ema.parameters():
            p.requires_grad_(False)

    def _d_optimizer(self, noise_multiplier: float, batch_size: int) -> DPOptimizer:
        cfg = self.config
        adam = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
        if cfg.optimizer == "dpsgd":
            return DPOptimizer(
                adam, noise_multiplier=noise_multiplier, max_grad_norm=cfg.clip,
                expected_batch_size=batch_size, loss_reduction="mean", generator=seeded_generator(self.device, 0),
            )
        return DiceSGDOptimizer(
            adam, noise_multiplier=noise_multiplier, max_grad_norm=cfg.clip, error_max_norm=cfg.error_clip,
            residual_max_norm=cfg.residual_clip, feedback_share=cfg.feedback_share,
            expected_batch_size=batch_size, generator=seeded_generator(self.device, 0),
        )

    def _check_config(self) -> None:
        cfg = self.config
        if not 0 <= cfg.feedback_share < 1:
            raise DpauditError(f"--set feedback_share: must be in [0, 1), got {cfg.feedback_share}.")
        if not 0 <= cfg.ema < 1:
            raise DpauditError(f"--set ema: must be in [0, 1), got {cfg.ema}.")
        if cfg.diversity_weight > 0 and cfg.fake_batch < 2:
            raise DpauditError(f"--set fake_batch: the mode-seeking term needs pairs, so at least 2 (or diversity_weight=0), got {cfg.fake_batch}.")

    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        self._check_config()
        cfg, n = self.config, len(members)
        sample_rate = min(1.0, cfg.batch_size / n)
        batch = max(1, round(sample_rate * n))  # the expected batch size the sums are divided by
        sigma = dpsgd_noise(budget, sample_rate, cfg.steps, cfg.accountant) if budget.is_private else 0.0
        self._build(seed)
        d_opt = self._d_optimizer(sigma, batch)
        g_params = list(self.generator_net.parameters()) + list(self.encoder.parameters())
        g_opt = torch.optim.Adam(g_params, lr=cfg.g_lr, betas=(0.5, 0.999))

        start = 0
        saved = self.checkpoint.load()
        if saved is not None:
            start = self._restore(saved, d_opt, g_opt)
        x_all, y_all = members.x.to(self.device), members.y.to(self.device)
        sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=sample_rate, steps=1)
        bar = tqdm(range(start, cfg.steps), desc=f"{self.name}", initial=start, total=cfg.steps,
                   disable=not self.progress, leave=False)
        for step in bar:
            rng = torch.Generator().manual_seed(seed * SEED_STRIDE + step)
            sampler.generator = rng
            idx = torch.as_tensor(next(iter(sampler)), dtype=torch.long)
            d_opt.generator.manual_seed(seed * SEED_STRIDE + step + SEED_STRIDE // 2)
            d_loss = self._discriminator_step(x_all[idx], y_all[idx], batch, d_opt, rng)
            if (step + 1) % cfg.d_steps_per_g == 0:
                g_loss = self._generator_step(g_opt, rng)
                bar.set_postfix(d=f"{d_loss:.3f}", g=f"{g_loss:.3f}", refresh=False)
            self.checkpoint.maybe_save(step + 1, lambda: self._state(step + 1, d_opt, g_opt))

        extra = {
            "optimizer": cfg.optimizer,
            "clip": cfg.clip,
            "generator_steps": cfg.steps // cfg.d_steps_per_g,
            "expected_batch_size": batch,
            "members": n,
            "guarantee": "add/remove one member image (with its label); discriminator steps are "
            "Poisson-sampled Gaussian releases; generator, reconstruction and sampling are post-processing",
        }
        if cfg.optimizer == "dicesgd":
            extra.update(
                error_clip=cfg.error_clip, residual_clip=cfg.residual_clip, feedback_share=cfg.feedback_share,
                sigma_update=d_opt.sigma_update, sigma_residual=d_opt.sigma_residual,
            )
        return PrivacyReport.of_history(
            [(sigma, sample_rate, cfg.steps)], budget, cfg.accountant,
            mechanism="DiceSGD with privatized residual (dpaudit)" if cfg.optimizer == "dicesgd" else "DP-SGD",
            extra=extra,
        )

    def _fake(self, count: int, rng: torch.Generator, paired: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes, labels, images) of `count` generated images, labels uniform over the classes;
        `paired`: the second half repeats the first half's labels (with other codes)."""
        z = torch.randn(count, self.config.latent_dim, generator=rng).to(self.device)
        y = torch.randint(self.num_classes, (count,), generator=rng).to(self.device)
        if paired:
            half = count // 2
            y[half : 2 * half] = y[:half]
        return z, y, self.generator_net(z, y, rng)

    def _discriminator_step(self, x_real, y_real, batch: int, d_opt: DPOptimizer, rng: torch.Generator) -> float:
        """One private step: per-sample losses on the Poisson batch of members and on
        `fake_batch` generated images (data-independent given the past releases), summed; the
        optimizer clips each sample's gradient, adds the noise and divides by `batch`, the
        expected number of members (the fixed number of generated images does not change the
        sensitivity)."""
        cfg = self.config
        with torch.no_grad():
            _, y_fake, x_fake = self._fake(cfg.fake_batch, rng)
        d_opt.zero_grad(set_to_none=True)
        adv, logits = self.discriminator(torch.cat([x_real, x_fake]), torch.cat([y_real, y_fake]))
        r = len(x_real)
        loss = F.softplus(-adv[:r]).sum() + F.softplus(adv[r:]).sum()
        if cfg.class_weight > 0:  # an empty Poisson batch still reaches the head (a zero sum): opacus needs it
            loss = loss + cfg.class_weight * F.cross_entropy(logits[:r], y_real, reduction="sum")
        loss.backward()
        d_opt.step()
        return loss.item() / (r + cfg.fake_batch)

    def _generator_step(self, g_opt: torch.optim.Optimizer, rng: torch.Generator) -> float:
        """Post-processing: the generator and encoder learn from the frozen discriminator's
        outputs on generated images and from reconstructing generated images."""
        cfg = self.config
        g_opt.zero_grad(set_to_none=True)
        # The backward pass must run inside `frozen` too: opacus' hooks fire during backward.
        with frozen(self.discriminator) as disc:
            z, y, x = self._fake(cfg.fake_batch, rng, paired=cfg.diversity_weight > 0)
            adv, logits = disc(x, y)
            loss = F.softplus(-adv).mean()
            if cfg.class_weight > 0:
                loss = loss + cfg.class_weight * F.cross_entropy(logits, y)
            if cfg.diversity_weight > 0:
                # MSGAN's mode-seeking term: the images of two codes of one label must differ in
                # proportion to the codes, which a generator that ignores its code cannot do.
                h = len(z) // 2
                ratio = (x[:h] - x[h : 2 * h]).abs().mean() / (z[:h] - z[h : 2 * h]).abs().mean()
                loss = loss + cfg.diversity_weight / (ratio + 1e-5)
            if cfg.recon_weight > 0 or cfg.latent_weight > 0:
                # VAE-style: encode a generated image, decode the sampled code with its label, and
                # reconstruct that generated image. The target is generated, never a member image.
                # A generated target alone cannot stop mode collapse (a generator that ignores its
                # code reconstructs perfectly), so the encoder must also recover the code itself,
                # which a collapsed generator makes impossible.
                m = cfg.recon_batch
                target, labels = x[:m], y[:m]
                mu, logvar = self.encoder(target)
                code = mu + torch.randn(mu.shape, generator=rng).to(self.device) * (0.5 * logvar).exp()
                recon = self.generator_net(code, labels, rng)
                kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1).mean()
                rec = F.mse_loss(recon, target.detach(), reduction="sum") / len(target)
                loss = loss + cfg.recon_weight * (rec + cfg.kl_weight * kl)
                loss = loss + cfg.latent_weight * F.mse_loss(mu, z[:m])
            loss.backward()
        g_opt.step()
        self._update_ema()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.config.ema
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator_net.parameters()):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator_net.buffers()):
            b_ema.copy_(b)

    # ------------------------------------------------------------ checkpoints

    def _state(self, step: int, d_opt: DPOptimizer, g_opt: torch.optim.Optimizer) -> dict:
        state = {
            "step": step,
            "discriminator": self.discriminator._module.state_dict(),
            "generator": self.generator_net.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "encoder": self.encoder.state_dict(),
            "d_opt": d_opt.original_optimizer.state_dict(),
            "g_opt": g_opt.state_dict(),
        }
        if isinstance(d_opt, DiceSGDOptimizer):
            state["error"] = d_opt.error_state()
        return state

    def _restore(self, state: dict, d_opt: DPOptimizer, g_opt: torch.optim.Optimizer) -> int:
        self.discriminator._module.load_state_dict(state["discriminator"])
        self.generator_net.load_state_dict(state["generator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.encoder.load_state_dict(state["encoder"])
        d_opt.original_optimizer.load_state_dict(state["d_opt"])
        g_opt.load_state_dict(state["g_opt"])
        if isinstance(d_opt, DiceSGDOptimizer):
            d_opt.load_error_state(state["error"])
        return int(state["step"])

    # ------------------------------------------------------------ sampling

    def released_state(self) -> dict:
        return {"generator_ema": self.generator_ema.state_dict()}

    def load_released_state(self, state: dict) -> None:
        self.generator_ema = self._new_generator_net().eval()
        self.generator_ema.load_state_dict(state["generator_ema"])
        for p in self.generator_ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed)
        net = self.generator_ema.eval()
        out = []
        for chunk in labels.split(1000):
            z = torch.randn(len(chunk), self.config.latent_dim, generator=rng).to(self.device)
            out.append(net(z, chunk.to(self.device), rng))
        return torch.cat(out)
