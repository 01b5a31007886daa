"""One-shot embedding generators: DP-MERF (Harder et al. 2021) and PEARL (Liew et al. 2022).

The private data is touched exactly once. Every member image x with label y is mapped to a
random-Fourier-feature embedding of the Gaussian kernel, put in the row of its class:

    phi(x) = [sqrt(a_s / k_s) cos(w.x), sqrt(a_s / k_s) sin(w.x)]  over length scales s,
    w ~ N(0, I / l_s^2) (k_s frequencies per scale, sum_s a_s = 1), so ||phi(x)|| = 1 exactly.

The frequencies are public randomness drawn from the seed; they do not depend on the data.
Two Gaussian releases follow, and nothing else ever reads the data:

1. the per-class sums S_c = sum_{i: y_i = c} phi(x_i), a (classes x D) matrix, plus
   N(0, (sigma_emb * Delta_S)^2) on every entry;
2. the class counts n_c, plus N(0, (sigma_count * Delta_n)^2) on every entry.

Adjacency and sensitivities (L2, of the whole matrix / vector):
- "add-remove" (the default; opacus' DP-SGD uses it too): adding or removing one record changes
  one row of S by phi(x), of norm exactly 1, and one count by 1: Delta_S = 1, Delta_n = 1.
- "replace-one": replacing (x, y) by (x', y') changes S by phi(x') - phi(x) in rows y and y',
  of norm at most 2, and two counts by 1 each (or none): Delta_S = 2, Delta_n = sqrt(2).

The two releases are composed by opacus' accountant as two full-batch Gaussian mechanisms,
history [(sigma_emb, 1.0, 1), (sigma_count, 1.0, 1)]. sigma_count = count_noise_ratio *
sigma_emb; the pair is calibrated so that the composition meets the requested epsilon (two
Gaussian mechanisms compose to one with 1/sigma^2 = 1/sigma_emb^2 + 1/sigma_count^2, so
opacus' noise search for one full-batch step gives the pair directly).

The class-mean embeddings mu_c = S~_c / max(n~_c, 1) are the training target. A conditional
conv generator G(z, c) is then fitted to them: post-processing, no privacy cost however long it
trains. DP-MERF minimises sum_c ||mu_c - mean phi(G(z, c))||^2. PEARL re-weights the
frequencies adversarially: a critic with a learnable per-pixel precision of the frequency
distribution gives importance weights over the FIXED frequencies and maximises the weighted
distance while the generator minimises it; it never touches the data, so it costs nothing.

The privacy guarantee covers the member images and their labels (the record is the pair); the
noise is drawn from a torch generator seeded by `seed`, which makes runs reproducible: for a
release whose noise an adversary must not know, keep the seed secret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpaudit.generators.base import Generator, Positive, PrivacyReport, register
from dpaudit.images import ImageSet
from dpaudit.privacy import PrivacyBudget, composed_epsilon, dpsgd_noise

SENSITIVITY = {"add-remove": (1.0, 1.0), "replace-one": (2.0, math.sqrt(2.0))}


@dataclass
class EmbeddingConfig:
    """Hyper-parameters of DP-MERF / PEARL. Lengths are in pixel units of images in [0, 1]."""

    features: Positive[int] = 4000  # random frequencies in total (each gives a cos and a sin)
    # Kernel length scales in units of sqrt(number of pixel values) (public: 28 on MNIST), each
    # with an equal share of the frequencies.
    length_scales: tuple[float, ...] = (0.15, 0.3, 0.6)
    adjacency: Literal["add-remove", "replace-one"] = "add-remove"
    accountant: Literal["rdp", "prv"] = "rdp"
    count_noise_ratio: Positive[float] = 5.0  # sigma_count / sigma_emb: the counts take 1/(1+r^2) of the budget
    latent_dim: Positive[int] = 32
    decoder: Literal["conv", "mlp"] = "conv"
    width: Positive[int] = 16  # channels of the conv decoder's last hidden layer; the MLP's is 16x
    steps: int = 2400
    batch_size: Positive[int] = 200  # generated images per step
    unbiased: bool = False  # True: the U-statistic in the generated samples (see _loss_terms)
    lr: Positive[float] = 1e-3  # Adam, cosine-decayed to 5% of it over the steps
    critic_lr: Positive[float] = 1e-2  # PEARL only
    critic_mix: float = 0.5  # PEARL only: weights = (1 - mix) + mix * importance weights


class ConditionalDecoder(nn.Module):
    """z and a one-hot class -> an image: FC to a (2*width) x h/4 x w/4 map, two nearest-neighbour
    upsamplings, a 3x3 conv with batch norm and a 5x5 output conv, sigmoid. Small on purpose:
    the loss needs hundreds of generated images per step on a CPU."""

    def __init__(self, latent_dim: int, num_classes: int, shape: tuple[int, int, int], width: int):
        super().__init__()
        channels, height, wid = shape
        self.shape, self.num_classes = shape, num_classes
        self.base = (math.ceil(height / 4), math.ceil(wid / 4))
        flat = 2 * width * self.base[0] * self.base[1]
        self.fc = nn.Sequential(nn.Linear(latent_dim + num_classes, flat), nn.BatchNorm1d(flat), nn.ReLU())
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, channels, 5, padding=2),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, F.one_hot(labels, self.num_classes).float()], 1))
        x = self.body(h.view(len(z), -1, *self.base))
        if x.shape[-2:] != self.shape[1:]:
            x = x[..., : self.shape[1], : self.shape[2]]
        return torch.sigmoid(x)


class MLPDecoder(nn.Module):
    """z and a one-hot class -> an image through two hidden layers (width 8*w and 16*w) with
    batch norm; much cheaper per image than the conv decoder on a CPU."""

    def __init__(self, latent_dim: int, num_classes: int, shape: tuple[int, int, int], width: int):
        super().__init__()
        self.shape, self.num_classes = shape, num_classes
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, 8 * width), nn.BatchNorm1d(8 * width), nn.ReLU(),
            nn.Linear(8 * width, 16 * width), nn.BatchNorm1d(16 * width), nn.ReLU(),
            nn.Linear(16 * width, math.prod(shape)),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.net(torch.cat([z, F.one_hot(labels, self.num_classes).float()], 1))
        return torch.sigmoid(h.view(len(z), *self.shape))


DECODERS = {"conv": ConditionalDecoder, "mlp": MLPDecoder}


class FourierFeatures:
    """The random-Fourier-feature map of an equal mixture of Gaussian kernels of length scales
    `length_scales` * sqrt(dim) on flattened images; ||phi(x)|| = 1 exactly."""

    def __init__(self, dim: int, features: int, length_scales: tuple[float, ...], seed: int):
        g = torch.Generator().manual_seed(seed)
        length_scales = tuple(s * math.sqrt(dim) for s in length_scales)
        per_scale = [features // len(length_scales) + (i < features % len(length_scales)) for i in range(len(length_scales))]
        # Standard normal directions g_j and the scale of each frequency: w_j = g_j / l_j.
        self.directions = torch.randn(dim, features, generator=g)
        self.scales = torch.cat([torch.full((k,), float(s)) for k, s in zip(per_scale, length_scales)])
        share = torch.cat([torch.full((k,), 1.0 / (len(length_scales) * k)) for k in per_scale])
        self.frequencies = self.directions / self.scales
        self.amplitude = share.sqrt()

    def to(self, device: torch.device) -> "FourierFeatures":
        """The same map, computed on `device`."""
        self.directions, self.scales = self.directions.to(device), self.scales.to(device)
        self.frequencies, self.amplitude = self.frequencies.to(device), self.amplitude.to(device)
        return self

    @property
    def dim(self) -> int:
        return 2 * self.frequencies.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        proj = x.flatten(1) @ self.frequencies
        return torch.cat([torch.cos(proj) * self.amplitude, torch.sin(proj) * self.amplitude], 1)


def class_sums(features: FourierFeatures, images: ImageSet, num_classes: int, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of phi(x) (classes x D) and per-class counts, exact, on the private data."""
    sums = torch.zeros(num_classes, features.dim, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        phi = features(images.take(slice(i, i + batch_size)).to(features.frequencies.device)).double().cpu()
        sums.index_add_(0, images.y[i : i + batch_size], phi)
    counts = torch.bincount(images.y, minlength=num_classes).double()
    return sums, counts


def calibrate(budget: PrivacyBudget, count_noise_ratio: float, accountant: str) -> tuple[float, float]:
    """(sigma_emb, sigma_count): noise multipliers whose composition meets the budget."""
    if not budget.is_private:
        return 0.0, 0.0
    sigma_total = dpsgd_noise(budget, sample_rate=1.0, steps=1, accountant=accountant)
    sigma_emb = sigma_total * math.sqrt(1 + 1 / count_noise_ratio**2)
    return sigma_emb, count_noise_ratio * sigma_emb


class EmbeddingGenerator(Generator):
    """DP-MERF, and PEARL when `adversarial`: one Gaussian release of per-class random-feature
    sums and class counts, then a conditional generator fitted to the noisy class means."""

    Config = EmbeddingConfig
    test_overrides = {"features": "300", "steps": "3", "batch_size": "40", "width": "8"}
    adversarial = False

    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        cfg = self.config
        self.features = FourierFeatures(math.prod(members.shape), cfg.features, cfg.length_scales, seed).to(self.device)
        torch.manual_seed(seed)
        self.model = DECODERS[cfg.decoder](cfg.latent_dim, self.num_classes, self.shape, cfg.width)
        self.log_precision = torch.zeros(math.prod(members.shape), device=self.device, requires_grad=True)
        sigma_emb, sigma_count = calibrate(budget, cfg.count_noise_ratio, cfg.accountant)
        history = [(sigma_emb, 1.0, 1), (sigma_count, 1.0, 1)]
        epsilon = composed_epsilon(history, budget.delta, cfg.accountant) if budget.is_private else math.inf

        saved = self.checkpoint.load()
        if saved is None:
            sums, counts = class_sums(self.features, members, self.num_classes)
            noise = torch.Generator().manual_seed(seed + 1)
            delta_s, delta_n = SENSITIVITY[cfg.adjacency]
            sums += sigma_emb * delta_s * torch.randn(sums.shape, generator=noise, dtype=torch.float64)
            counts += sigma_count * delta_n * torch.randn(counts.shape, generator=noise, dtype=torch.float64)
            self.targets = (sums / counts.clamp(min=1).unsqueeze(1)).float()
            self.class_counts = counts.clamp(min=0).float()
            step = 0
            rng = torch.Generator().manual_seed(seed + 2)
        else:
            # The release is restored, never redrawn: redrawing would spend the budget again.
            self.targets, self.class_counts = saved["targets"], saved["class_counts"]
            self.model.load_state_dict(saved["model"])
            step = saved["step"]
            rng = torch.Generator()
            rng.set_state(saved["rng"])
        self._fit_decoder(step, rng, saved)
        return PrivacyReport(
            epsilon=epsilon,
            delta=budget.delta,
            accountant=cfg.accountant,
            history=history,
            mechanism=(
                f"{self.name}: one Gaussian release of per-class random-Fourier-feature sums "
                f"(L2 sensitivity {SENSITIVITY[cfg.adjacency][0]:g}) and one of class counts "
                f"(sensitivity {SENSITIVITY[cfg.adjacency][1]:.4g}), composed; generator training is post-processing"
            ),
            adjacency=cfg.adjacency,
            extra={
                "sigma_count": sigma_count,
                "features": cfg.features,
                "length_scales": list(cfg.length_scales),
                "generator_steps": cfg.steps,
                "members": len(members),
            },
        )

    def _loss_terms(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Squared characteristic-function distances per class and frequency (classes x k),
        unbiased in the generated samples when `config.unbiased`: with m samples of a class the
        plain |mean - target|^2 overstates the distance by (a^2 - |E mean|^2) / m (a = the
        feature's amplitude), which rewards collapsing the samples of a class onto one mode;
        the U-statistic adds (|mean|^2 - a^2) / (m - 1) to remove it."""
        phi = self.features(images)
        onehot = F.one_hot(labels, self.num_classes).float()
        m = onehot.sum(0).clamp(min=1).unsqueeze(1)
        means = (onehot.T @ phi) / m
        k = self.features.frequencies.shape[1]
        diff = (means - self.targets) ** 2
        terms = diff[:, :k] + diff[:, k:]
        if self.config.unbiased:
            own = means[:, :k] ** 2 + means[:, k:] ** 2
            terms = terms + (own - self.features.amplitude**2) / (m - 1).clamp(min=1)
        return terms

    def _frequency_weights(self) -> torch.Tensor:
        """PEARL's importance weights p_theta(w_j) / p_0(w_j), self-normalised to mean 1 and mixed
        with uniform weights. p_theta has the per-pixel precision exp(u) times that of p_0; in
        the standard-normal directions g_j the log-ratio is sum_d (u_d - (e^u_d - 1) g_jd^2) / 2."""
        u = self.log_precision
        log_ratio = 0.5 * (u.sum() - ((u.exp() - 1).unsqueeze(1) * self.features.directions**2).sum(0))
        k = len(log_ratio)
        return (1 - self.config.critic_mix) + self.config.critic_mix * k * torch.softmax(log_ratio, 0)

    def _fit_decoder(self, step: int, rng: torch.Generator, saved: dict | None) -> None:
        cfg = self.config
        self.model.to(self.device).train()  # before the optimizer takes the weights (PyTorch's advice)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        critic = torch.optim.Adam([self.log_precision], lr=cfg.critic_lr)
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            critic.load_state_dict(saved["critic"])
            with torch.no_grad():
                self.log_precision.copy_(saved["log_precision"])
        self.targets = self.targets.to(self.device)
        labels = (torch.arange(cfg.batch_size) % self.num_classes).to(self.device)
        bar = tqdm(total=cfg.steps, initial=step, desc=self.name, disable=not self.progress, leave=False)
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
            z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=rng)
            terms = self._loss_terms(self.model(z.to(self.device), labels), labels)
            if self.adversarial:
                weights = self._frequency_weights()
                critic.zero_grad(set_to_none=True)
                (-(terms.detach() * weights).sum()).backward()
                critic.step()
                loss = (terms * weights.detach()).sum()
            else:
                loss = terms.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.update(1)
            self.checkpoint.maybe_save(step, lambda: self._state(step, rng, optimizer, critic))
        bar.close()
        self.model.eval()

    def _state(self, step, rng, optimizer, critic) -> dict:
        return {
            "step": step,
            "rng": rng.get_state(),
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "critic": critic.state_dict(),
            "log_precision": self.log_precision.detach().cpu(),
            "targets": self.targets.cpu(),
            "class_counts": self.class_counts,
        }

    def released_state(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_released_state(self, state: dict) -> None:
        cfg = self.config
        self.model = DECODERS[cfg.decoder](cfg.latent_dim, self.num_classes, self.shape, cfg.width).to(self.device).eval()
        self.model.load_state_dict(state["model"])

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, len(labels), 1000):
            y = labels[i : i + 1000]
            z = torch.randn(len(y), self.config.latent_dim, generator=rng)
            out.append(self.model(z.to(self.device), y.to(self.device)))
        return torch.cat(out)


@register
class DPMERF(EmbeddingGenerator):
    """DP-MERF: the plain squared distance between noisy and generated mean embeddings."""

    name = "dp-merf"


@register
class PEARL(EmbeddingGenerator):
    """PEARL: DP-MERF's release, with adversarially re-weighted frequencies (no privacy cost)."""

    name = "pearl"
    adversarial = True
