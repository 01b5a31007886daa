"""Model memorization (Song, Ristenpart, Shmatikov 2017): a malicious training routine that hides
training images in the model it returns, and the decoder that reads them back out.

- `correlation` (correlated-value encoding): the usual cross-entropy plus -lambda |pearson(theta, s)|,
  theta the weights of one chosen parameter tensor (the largest weight matrix), s the pixels of
  the secret images concatenated. Decoding maps each image-sized block of theta back to pixels by
  an affine re-scaling: standardise, then scale to the pixel mean and standard deviation of the
  training data (statistics the attacker knows). |pearson| leaves the sign open; the decoder picks
  the sign whose skewness matches the training pixels' skewness.
- `capacity` (capacity abuse): the training set is augmented with pseudo-random inputs drawn from
  a seed the attacker keeps; the label of each encodes one secret pixel, quantised to
  `num_classes` levels. Decoding regenerates the inputs, queries the model and maps each
  predicted class back to the centre of its pixel level.

The secrets are taken from the training set itself: run on a synthetic set, a malicious trainer
can exfiltrate at most what the synthetic set holds. As an audit check (`MaliciousTrainer`), the
malicious trainer runs on the synthetic set, and on the members for the control.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpaudit.attacks.reconstruction import Reconstruction, ReconstructionAttack, Victim, register_reconstruction_attack
from dpaudit.image_similarity import pairwise_psnr, pairwise_ssim
from dpaudit.metric import Metric
from dpaudit.nets import accuracy, make_classifier, predict_logits
from dpaudit.sampling import seeded_sample

METHODS = ("correlation", "capacity")


@dataclass(frozen=True)
class MemorizationConfig:
    """The malicious trainer: method, number of secret images, correlation weight, training
    budget; as a check, the training images it is given (a seeded sample; None = all)."""

    method: str = "correlation"
    n_secrets: int = 16
    correlation_weight: float = 1.0
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 128
    max_train: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")


@dataclass
class Memorization:
    """What the malicious trainer hid and what the decoder got back.

    `secret_idx` indexes the training set; `decoded[i]` is the decoding of secret i; `psnr` is
    per secret in dB; `pixel_correlation` is the Pearson correlation of all decoded pixels with
    all secret pixels; `model` is the (still useful) malicious classifier."""

    model: nn.Module
    secret_idx: torch.Tensor
    decoded: torch.Tensor
    psnr: torch.Tensor
    pixel_correlation: float


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two flat tensors (differentiable)."""
    return torch.corrcoef(torch.stack([a, b]))[0, 1]


def carrier(model: nn.Module) -> torch.Tensor:
    """The parameter tensor that carries the correlated-value encoding: the largest weight."""
    return max((p for p in model.parameters() if p.dim() > 1), key=lambda p: p.numel())


def capacity(model: nn.Module, method: str, image_shape: tuple[int, int, int], n_train: int) -> int:
    """How many images of `image_shape` the method can hide in `model`: for `correlation` the
    carrier's size over the pixels per image; for `capacity` one crafted input per pixel, at most
    as many crafted inputs as real ones."""
    pixels = image_shape[0] * image_shape[1] * image_shape[2]
    if method == "correlation":
        return carrier(model).numel() // pixels
    return max(1, n_train // pixels)


def _crafted_inputs(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def _skew(v: torch.Tensor) -> float:
    v = v - v.mean()
    return float(v.pow(3).mean() / v.pow(2).mean().pow(1.5).clamp_min(1e-12))


def decode_correlation(model: nn.Module, n: int, shape: tuple[int, int, int], pixel_stats: tuple[float, float, float]) -> torch.Tensor:
    """`n` images of `shape` read from the carrier: block-wise standardisation, re-scaled to
    (mean, std) of the training pixels, sign chosen to match their skewness (the third statistic)."""
    mean, std, skew = pixel_stats
    pixels = shape[0] * shape[1] * shape[2]
    theta = carrier(model).detach().flatten()[: n * pixels]
    sign = 1.0 if (_skew(theta) >= 0) == (skew >= 0) else -1.0
    blocks = sign * theta.reshape(n, pixels)
    blocks = (blocks - blocks.mean(1, keepdim=True)) / blocks.std(1, keepdim=True).clamp_min(1e-12)
    return (blocks * std + mean).clamp(0, 1).reshape(n, *shape)


def decode_capacity(model: nn.Module, n: int, shape: tuple[int, int, int], num_classes: int, seed: int) -> torch.Tensor:
    """`n` images of `shape` read back by querying the model on the regenerated crafted inputs."""
    pixels = shape[0] * shape[1] * shape[2]
    crafted = _crafted_inputs(n * pixels, shape, seed)
    levels = predict_logits(model, crafted).argmax(1).float()
    return ((levels + 0.5) / num_classes).reshape(n, *shape)


def malicious_train(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    config: MemorizationConfig = MemorizationConfig(),
    seed: int = 0,
    progress: str | None = None,
    device: torch.device | str = "cpu",
) -> Memorization:
    """Train the shared classifier architecture on (x, y) with the malicious routine of
    `config.method`, hiding `config.n_secrets` randomly chosen training images (fewer if the
    model cannot hold them), then decode them from the returned model alone. The model trains
    on `device`; the decoded images come back on the CPU."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(x.shape[1:])
    pixels = shape[0] * shape[1] * shape[2]
    model = make_classifier(shape, num_classes).to(device)
    # The malicious trainer controls training: dropout off lets the model memorise more.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    n = max(1, min(config.n_secrets, len(x), capacity(model, config.method, shape, len(x))))
    secret_idx = torch.randperm(len(x), generator=generator)[:n].sort().values
    secrets = x[secret_idx]
    train_x, train_y = x, y
    # The crafted inputs' seed is derived from the run's seed: the attacker keeps it.
    crafted_seed = seed + 1
    if config.method == "capacity":
        levels = (secrets.flatten() * num_classes).long().clamp(max=num_classes - 1)
        train_x = torch.cat([x, _crafted_inputs(n * pixels, shape, crafted_seed)])
        train_y = torch.cat([y, levels])
    train_x, train_y = train_x.to(device), train_y.to(device)  # a few thousand images: on the device at once
    secret_flat = secrets.flatten().to(device)
    theta = carrier(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in tqdm(range(config.epochs), desc=progress, disable=progress is None, leave=False):
        model.train()
        order = torch.randperm(len(train_x), generator=generator).to(device)
        for i in range(0, len(train_x), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            if config.method == "correlation":
                loss = loss - config.correlation_weight * pearson(theta.flatten()[: n * pixels], secret_flat).abs()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    if config.method == "correlation":
        stats = (float(x.mean()), float(x.std()), _skew(x.flatten()))
        decoded = decode_correlation(model, n, shape, stats)
    else:
        decoded = decode_capacity(model, n, shape, num_classes, crafted_seed)
    decoded = decoded.cpu()
    correlation = float(pearson(decoded.flatten(), secrets.flatten()))
    return Memorization(model, secret_idx, decoded, pairwise_psnr(decoded, secrets), correlation)


@register_reconstruction_attack
class MaliciousTrainer(ReconstructionAttack):
    """A malicious trainer hides images of its training set in the classifier it returns."""

    name = "memorization"
    title = "Memorization"
    question = ("Can a malicious trainer hide training images in the model it hands back? A classifier is trained on "
                "the synthetic images with correlated-value encoding (Song et al. 2017); the images decoded from its "
                "weights are set beside their nearest real and nearest synthetic images.")
    counts = "decoded"
    Config = MemorizationConfig
    describes = "decoded images"
    control_describes = "decoded images"
    control_is = "malicious trainer run on the members"
    caption = "images decoded from a maliciously trained classifier"
    control_caption = "control: images decoded after malicious training on the members"

    def reconstruct(self, victim: Victim, config: MemorizationConfig, progress: str) -> Reconstruction:
        images = victim.images
        pick = seeded_sample(len(images), config.max_train, victim.seed)
        attack = malicious_train(images.take(pick), images.y[pick], victim.num_classes, config, victim.seed, progress=progress,
                                 device=victim.device)
        secrets = pick[attack.secret_idx]
        if victim.is_control:
            details = {"secret_member_indices": secrets.tolist(), "decode_psnr": float(attack.psnr.mean())}
            return Reconstruction(attack.decoded, None, {}, details)
        n = {self.counts: len(secrets)}
        test = victim.test
        metrics = {
            "decode_psnr": Metric(
                float(attack.psnr.mean()), "info",
                "mean PSNR (dB) of a decoded image to the synthetic image hidden in the model (attack success)",
                n=n,
            ),
            "decode_ssim": Metric(
                float(pairwise_ssim(attack.decoded, images.take(secrets)).mean()), "info",
                "mean SSIM of a decoded image to the synthetic image hidden in the model (attack success)",
                range=(-1.0, 1.0), n=n,
            ),
            "malicious_test_accuracy": Metric(
                accuracy(attack.model, test.pixels, test.y), "info",
                "real test accuracy of the malicious model: it stays useful while it carries the hidden images",
                range=(0.0, 1.0), n={"test": len(test)},
            ),
        }
        details = {"pixel_correlation": attack.pixel_correlation, "secret_synthetic_indices": secrets.tolist()}
        return Reconstruction(attack.decoded, None, metrics, details)
