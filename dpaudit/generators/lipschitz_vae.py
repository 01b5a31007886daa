"""Lipschitz-regularised conditional VAE (after Gross and Wunder 2023), trained with DP-SGD.

The model. The encoder reads a record (image x, label y) as one vector u = [x, onehot(y)] and
outputs the mean mu(u) of a Gaussian posterior N(mu(u), s^2 I) whose standard deviation s
(`latent_std`) is a constant, not a function of the data. mu is an MLP of spectrally
normalised linear layers and ReLUs: every weight matrix is divided by its spectral norm
(estimated by power iteration, as in Miyato et al. 2018) and multiplied by
`lipschitz ** (1 / layers)`, so mu is `lipschitz`-Lipschitz in u. The decoder (an MLP to the
pixels, or to logits at half the image's side upsampled bilinearly) maps z and the label to
pixel logits. The prior is N(0, I), or a Gaussian per class whose mean and standard deviation
are weights of the model (`prior=class`, a learned conditional prior as in conditional VAEs: the
KL is taken against it). Sampling draws z from the prior of the asked label and decodes.

Spectral normalisation and opacus. torch's `parametrizations.spectral_norm` keeps its power
iteration vectors in buffers, which opacus' GradSampleModule refuses ("trainable layer with
buffers"). `SpectralLinear` therefore computes W / sigma(W) with sigma = u^T W v from power
iteration vectors held as plain tensors (updated after every optimiser step, outside the
forward pass); its per-sample gradients have a closed form, registered with opacus
(`spectral_linear_grad_sample`).

What is guaranteed, and by what.

- The reported epsilon is DP-SGD's, and only DP-SGD's: every weight of the encoder and the
  decoder is trained by DP-SGD (opacus: Poisson rate q, clip C, noise multiplier sigma, T
  steps; history [(sigma, q, T)], add/remove adjacency of one record). That covers everything
  the generator releases (the decoder, its samples) and the encoder too.
- The Lipschitz argument gives something else, reported apart under `lipschitz_analysis`:
  with the weights FIXED, releasing one encoding z = mu(u) + s * N(0, I) of one record is a
  Gaussian mechanism with L2 sensitivity L * D, where L is the certified Lipschitz constant of
  mu (the product of the exact spectral norms of its layers, computed after training) and
  D = sqrt(C*H*W + 2) the largest distance between two records (pixels in [0, 1], one-hot
  labels differing in two places): replace-one adjacency, one record, one draw. Its epsilon
  (`per_record_epsilon`) is of opacus' accountant for noise multiplier s / (L D), one full
  step. It does not cover the weights: they are a function of all the data, so the Lipschitz
  argument alone gives no end-to-end guarantee for a trained model, and sampling from the
  prior never releases an encoding anyway. That is why the accounting falls back on DP-SGD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from opacus.grad_sample import register_grad_sampler, register_norm_sampler
from torch import nn

from dpaudit.generators.base import Generator, Positive, PrivacyReport, register
from dpaudit.generators.dp_training import DPSGD, calibrate_noise, sample_rate_for, steps_for
from dpaudit.images import ImageSet
from dpaudit.privacy import PrivacyBudget, dpsgd_epsilon


@dataclass
class LipschitzVAEConfig:
    """Hyper-parameters of the Lipschitz VAE and its DP-SGD training."""

    latent_dim: Positive[int] = 16
    hidden: Positive[int] = 256
    lipschitz: Positive[float] = 1.0  # bound on the encoder mean's Lipschitz constant
    latent_std: Positive[float] = 0.5  # s: the posterior's fixed standard deviation
    beta: float = 1.0  # weight of the KL term
    # "standard": the prior N(0, I); "class": a learned Gaussian per class, N(m_y, diag(s_y^2)),
    # trained by DP-SGD with the rest (the KL is taken against it, and samples are drawn from it)
    prior: Literal["standard", "class"] = "class"
    # "mlp": three linear layers to the pixels; "mlp-upsampled": the same to logits at half the
    # image's side, upsampled bilinearly (a fixed low-pass: fewer weights, no per-pixel speckle of
    # DP noise; for images of 28 pixels and more: 8x8 digits need "mlp")
    decoder: Literal["mlp", "mlp-upsampled"] = "mlp-upsampled"
    batch_size: Positive[int] = 512  # expected Poisson batch
    epochs: Positive[float] = 20.0
    lr: Positive[float] = 2e-3
    max_grad_norm: Positive[float] = 1.0
    accountant: Literal["rdp", "prv"] = "rdp"
    # how DP-SGD clips (dpaudit/generators/dp_training.py): the same result, the faster for this model
    clipping: Literal["per-sample", "ghost"] = "ghost"


class SpectralLinear(nn.Module):
    """A linear layer with weight scale * W / sigma(W), sigma from power iteration vectors
    kept as plain tensors (not buffers, which opacus refuses); `power_iteration()` refines them."""

    def __init__(self, in_features: int, out_features: int, scale: float, generator: torch.Generator):
        super().__init__()
        layer = nn.Linear(in_features, out_features)
        self.weight, self.bias = layer.weight, layer.bias
        self.scale = scale
        self.u = F.normalize(torch.randn(out_features, generator=generator), dim=0)
        self.v = F.normalize(torch.randn(in_features, generator=generator), dim=0)

    def _apply(self, fn, recurse=True):
        # u and v are plain tensors (see above): move and cast them with the weights.
        super()._apply(fn, recurse)
        self.u, self.v = fn(self.u), fn(self.v)
        return self

    @torch.no_grad()
    def power_iteration(self, iterations: int = 1) -> None:
        for _ in range(iterations):
            self.v = F.normalize(self.weight.T @ self.u, dim=0)
            self.u = F.normalize(self.weight @ self.v, dim=0)

    def effective_weight(self) -> torch.Tensor:
        return self.scale * self.weight / (self.u @ self.weight @ self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


@register_grad_sampler(SpectralLinear)
def spectral_linear_grad_sample(layer: SpectralLinear, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    """Per-sample gradients of a SpectralLinear in closed form (opacus' functorch fallback is
    exact but slow): with W_eff = s W / sigma and sigma = u^T W v (u, v constants), the
    gradient G_i = sum_t b_it a_it^T with respect to W_eff gives
    dL_i/dW = (s / sigma) (G_i - <G_i, W> u v^T / sigma).

    Written as ONE batched product [s b_i / sigma, -c_i u]^T [a_i, v] (c_i = s <G_i, W> / sigma^2,
    computed as sum_t b_it^T W a_it without forming G_i): the per-sample gradients are the
    step's largest tensor, built here in one pass instead of five (product, inner product,
    outer-product update, scaling); benchmarks/RESULTS.md has the step times."""
    a = activations[0].to(backprops.dtype)
    n = len(a)
    a, b = a.reshape(n, -1, a.shape[-1]), backprops.reshape(n, -1, backprops.shape[-1])
    sigma = layer.u @ layer.weight @ layer.v
    inner = ((b @ layer.weight) * a).sum((1, 2))
    left = torch.cat([b * (layer.scale / sigma), (-layer.scale / sigma**2 * inner).view(n, 1, 1) * layer.u], 1)
    right = torch.cat([a, layer.v.expand(n, 1, -1)], 1)
    return {layer.weight: left.transpose(1, 2) @ right, layer.bias: b.sum(1)}


@register_norm_sampler(SpectralLinear)
def spectral_linear_norm_sample(layer: SpectralLinear, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    """Per-sample gradient norms of a SpectralLinear for ghost clipping, without forming the
    gradients (opacus has ghost norms for nn.Linear only). With G_i = sum_t b_it a_it^T and
    c_i = <G_i, W>, dL_i/dW = (s / sigma) (G_i - c_i u v^T / sigma) (see the grad sampler above;
    |u| = |v| = 1), so |dL_i/dW|^2 = (s / sigma)^2 (|G_i|^2 - 2 (c_i / sigma) u^T G_i v + (c_i / sigma)^2),
    where |G_i|^2 = sum_ts (b_it . b_is)(a_it . a_is): Gram matrices of T rows, not out x in."""
    a = activations[0].to(backprops.dtype)
    n = len(a)
    a, b = a.reshape(n, -1, a.shape[-1]), backprops.reshape(n, -1, backprops.shape[-1])
    sigma = layer.u @ layer.weight @ layer.v
    g_sq = ((b @ b.transpose(1, 2)) * (a @ a.transpose(1, 2))).sum((1, 2))
    c = ((b @ layer.weight) * a).sum((1, 2)) / sigma
    u_g_v = ((b @ layer.u) * (a @ layer.v)).sum(1)
    weight_sq = (layer.scale / sigma) ** 2 * (g_sq - 2 * c * u_g_v + c**2)
    return {layer.weight: weight_sq.clamp_min(0).sqrt(), layer.bias: b.sum(1).norm(dim=1)}


def decoder_mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """The decoder's MLP: two hidden ReLU layers of `hidden` units, `outputs` logits."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class UpsampledMLPDecoder(nn.Module):
    """[z, onehot(y)] -> an MLP to logits at half the image's side -> bilinear upsampling."""

    def __init__(self, inputs: int, shape: tuple[int, int, int], hidden: int):
        super().__init__()
        self.shape = shape
        self.half = (shape[0], math.ceil(shape[1] / 2), math.ceil(shape[2] / 2))
        self.mlp = decoder_mlp(inputs, hidden, math.prod(self.half))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(h).view(len(h), *self.half)
        return F.interpolate(logits, size=self.shape[1:], mode="bilinear", align_corners=False).flatten(1)


class LipschitzVAE(nn.Module):
    """Encoder mean: SpectralLinear-ReLU-SpectralLinear on [x, onehot(y)]; decoder: an MLP on
    [z, onehot(y)] to pixel logits, or to half-resolution logits upsampled; prior: N(0, I) or a
    learned Gaussian per class (`prior_mean`, `prior_log_std`: linear maps of onehot(y), so that
    opacus clips their gradients with the rest)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, cfg: LipschitzVAEConfig, generator: torch.Generator):
        super().__init__()
        self.shape, self.num_classes, self.latent_dim = shape, num_classes, cfg.latent_dim
        pixels = math.prod(shape)
        per_layer = cfg.lipschitz ** 0.5
        self.encoder = nn.Sequential(
            SpectralLinear(pixels + num_classes, cfg.hidden, per_layer, generator), nn.ReLU(),
            SpectralLinear(cfg.hidden, cfg.latent_dim, per_layer, generator),
        )
        if cfg.decoder == "mlp-upsampled":
            self.decoder = UpsampledMLPDecoder(cfg.latent_dim + num_classes, shape, cfg.hidden)
        else:
            self.decoder = decoder_mlp(cfg.latent_dim + num_classes, cfg.hidden, pixels)
        self.class_prior = cfg.prior == "class"
        if self.class_prior:
            self.prior_mean = nn.Linear(num_classes, cfg.latent_dim, bias=False)
            self.prior_log_std = nn.Linear(num_classes, cfg.latent_dim, bias=False)
            nn.init.zeros_(self.prior_mean.weight)
            nn.init.zeros_(self.prior_log_std.weight)

    def spectral_layers(self) -> list[SpectralLinear]:
        return [m for m in self.encoder if isinstance(m, SpectralLinear)]

    def encode_mean(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.cat([x.flatten(1), F.one_hot(y, self.num_classes).float()], 1))

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, F.one_hot(y, self.num_classes).float()], 1)).view(len(z), *self.shape)

    def prior(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log std) of the prior of z given the labels, each len(y) x latent_dim."""
        if not self.class_prior:
            zeros = torch.zeros(len(y), self.latent_dim, device=y.device)
            return zeros, zeros
        onehot = F.one_hot(y, self.num_classes).float()
        return self.prior_mean(onehot), self.prior_log_std(onehot)

    def kl(self, mu: torch.Tensor, latent_std: float, y: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, latent_std^2 I) || prior(y)) per record."""
        mean, log_std = self.prior(y)
        ratio = (latent_std**2 + (mu - mean) ** 2) * torch.exp(-2 * log_std)
        return 0.5 * (ratio - 1).sum(1) + (log_std - math.log(latent_std)).sum(1)

    @torch.no_grad()
    def certified_lipschitz(self) -> float:
        """Product of the exact spectral norms of the encoder mean's layers (ReLU is 1-Lipschitz)."""
        return math.prod(float(torch.linalg.matrix_norm(m.effective_weight(), ord=2)) for m in self.spectral_layers())


def gaussian_record_epsilon(latent_std: float, lipschitz: float, diameter: float, delta: float, accountant: str) -> float:
    """Epsilon at delta of releasing one z = mu(u) + N(0, s^2 I) for one record, weights fixed:
    a Gaussian mechanism of sensitivity L * D, i.e. noise multiplier s / (L D), one full step."""
    return dpsgd_epsilon(latent_std / (lipschitz * diameter), 1.0, 1, delta, accountant)


@register
class LipschitzVAEGenerator(Generator):
    """A conditional VAE with a Lipschitz-bounded encoder mean and fixed posterior noise, trained
    with DP-SGD; the epsilon is DP-SGD's (see the module docstring for the Lipschitz extra)."""

    name = "lipschitz-vae"
    data_parallel = True
    Config = LipschitzVAEConfig
    test_overrides = {"batch_size": "64", "epochs": "0.3", "hidden": "32", "latent_dim": "4"}

    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        cfg, n = self.config, len(members)
        q = sample_rate_for(cfg.batch_size, n)
        steps = steps_for(cfg.epochs, q)
        (sigma,) = calibrate_noise(budget, [(q, steps, 1.0)], cfg.accountant)
        torch.manual_seed(seed)
        self.model = LipschitzVAE(self.shape, self.num_classes, cfg, torch.Generator().manual_seed(seed + 3)).to(self.device)
        layers = self.model.spectral_layers()
        for layer in layers:
            layer.power_iteration(20)
        dp = DPSGD(self.model, torch.optim.Adam(self.model.parameters(), lr=cfg.lr), n=n, sample_rate=q,
                   noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm, seed=seed + 10,
                   clipping=cfg.clipping)
        saved = self.checkpoint.load()
        if saved is not None:
            dp.load_state_dict(saved["dpsgd"])
            for layer, (u, v) in zip(layers, saved["power"]):
                layer.u, layer.v = u.to(self.device), v.to(self.device)
        x, y = members.x.to(self.device), members.y.to(self.device)
        pixels = math.prod(self.shape)

        def loss(module, idx, rng):
            mu = self.model.encode_mean(x[idx], y[idx])
            z = mu + cfg.latent_std * torch.randn(mu.shape, generator=rng).to(mu.device)
            recon = F.binary_cross_entropy_with_logits(self.model.decode_logits(z, y[idx]), x[idx], reduction="none").flatten(1).sum(1)
            return (recon + cfg.beta * self.model.kl(mu, cfg.latent_std, y[idx])) / pixels

        def after_step():
            # Power iteration on the released (noisy) weights: post-processing.
            for layer in layers:
                layer.power_iteration()
            self.checkpoint.maybe_save(dp.step, lambda: {"dpsgd": dp.state_dict(), "power": [[l.u, l.v] for l in layers]})

        # The loss calls self.model's submodules, which are the modules the GradSampleModule hooks.
        dp.train(loss, steps, desc=self.name, progress=self.progress, after_step=after_step)
        for layer in layers:
            layer.power_iteration(50)
        self.model.eval()
        history = [dp.history_entry()]
        lipschitz = self.model.certified_lipschitz()
        diameter = math.sqrt(pixels + 2)
        return PrivacyReport.of_history(
            history, budget, cfg.accountant,
            mechanism=(
                f"{self.name}: DP-SGD (opacus, clip {cfg.max_grad_norm:g}) on every weight; the epsilon is DP-SGD's. "
                "The Lipschitz analysis (lipschitz_analysis) covers only one encoding of one record with fixed weights "
                "and is not part of the epsilon"
            ),
            extra={
                "members": n,
                "lipschitz_analysis": {
                    "what": "one encoder sample z of one record, weights fixed (not end-to-end; replace-one adjacency)",
                    "certified_lipschitz": lipschitz,
                    "input_diameter": diameter,
                    "latent_std": cfg.latent_std,
                    "noise_multiplier": cfg.latent_std / (lipschitz * diameter),
                    "per_record_epsilon": gaussian_record_epsilon(cfg.latent_std, lipschitz, diameter, budget.delta, cfg.accountant),
                },
            },
        )

    def released_state(self) -> dict:
        # The power-iteration vectors are plain tensors, not in the state dict (see SpectralLinear).
        return {"model": self.model.state_dict(), "power": [[l.u, l.v] for l in self.model.spectral_layers()]}

    def load_released_state(self, state: dict) -> None:
        # The vectors drawn here are replaced by the saved ones.
        self.model = LipschitzVAE(self.shape, self.num_classes, self.config, torch.Generator()).to(self.device).eval()
        self.model.load_state_dict(state["model"])
        layers = self.model.spectral_layers()
        if len(state["power"]) != len(layers):
            raise ValueError(f"{len(state['power'])} power-iteration pairs saved for {len(layers)} spectral layers")
        for layer, (u, v) in zip(layers, state["power"]):
            if u.shape != layer.u.shape or v.shape != layer.v.shape:
                raise ValueError("power-iteration vectors of the wrong size")
            layer.u, layer.v = u.to(self.device), v.to(self.device)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed)
        labels = labels.to(self.device)
        mean, log_std = self.model.prior(labels)
        z = mean + log_std.exp() * torch.randn(len(labels), self.config.latent_dim, generator=rng).to(self.device)
        return torch.cat([torch.sigmoid(self.model.decode_logits(z[i : i + 2000], labels[i : i + 2000])) for i in range(0, len(labels), 2000)])
