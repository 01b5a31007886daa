"""GAN-based reconstruction (after Hitaj, Ateniese, Perez-Cruz 2017): class prototypes drawn out
of a trained classifier.

The attacker holds the trained classifier and uses it, fixed, in the role of the discriminator:
a small conditional generator is trained so that the classifier assigns its outputs to the
requested target class. A total-variation prior keeps the images smooth and a mode-seeking
diversity term (Mao et al. 2019) keeps the prototypes of a class apart. Hitaj et al. train the
generator against a collaboratively trained model that keeps learning; here the model is
final, which is the threat model of a released classifier.

As an audit check (`GANPrototypes`), the prototypes are drawn from the classifier trained on the
synthetic set, and from the one trained on the members for the control.
"""

from __future__ import annotations

from dataclasses import dataclass

import piq
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpaudit.attacks.reconstruction import Reconstruction, ReconstructionAttack, Victim, register_reconstruction_attack
from dpaudit.metric import Metric
from dpaudit.nets import device_of, image_layout


@dataclass(frozen=True)
class GANAttackConfig:
    """Generator training budget and regularisers; `n_prototypes` images per target class."""

    steps: int = 300
    batch_size: int = 64
    latent_dim: int = 32
    hidden: int = 256
    lr: float = 1e-3
    tv_weight: float = 0.1
    diversity_weight: float = 0.1
    n_prototypes: int = 4


@dataclass
class Prototypes:
    """Generated prototypes, their target classes, and the classifier's probability of that class."""

    images: torch.Tensor
    labels: torch.Tensor
    confidence: torch.Tensor


class PrototypeGenerator(nn.Module):
    """Conditional MLP generator: (noise, one-hot class) -> image in [0, 1]."""

    def __init__(self, latent_dim: int, num_classes: int, shape: tuple[int, int, int], hidden: int = 256):
        super().__init__()
        self.shape, self.num_classes = shape, num_classes
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, shape[0] * shape[1] * shape[2]), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).float()
        return self.net(torch.cat([z, onehot], 1)).view(len(z), *self.shape)


def _mean_tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation per pixel (piq sums over the image; dividing makes the weight size-free)."""
    return piq.total_variation(x, reduction="mean", norm_type="l1") / (x.shape[1] * x.shape[2] * x.shape[3])


def gan_attack(
    classifier: nn.Module,
    shape: tuple[int, int, int],
    num_classes: int,
    target_classes: list[int] | None = None,
    config: GANAttackConfig = GANAttackConfig(),
    seed: int = 0,
    progress: str | None = None,
) -> Prototypes:
    """Train a generator against the fixed `classifier` for `target_classes` (default: all) and
    return `config.n_prototypes` prototypes per class with the classifier's confidence in them."""
    torch.manual_seed(seed)
    generator_rng = torch.Generator().manual_seed(seed)
    targets = torch.tensor(list(range(num_classes)) if target_classes is None else list(target_classes))
    device = device_of(classifier)  # the random draws are made on the CPU: the same on every device
    classifier.eval()
    flags = [p.requires_grad for p in classifier.parameters()]
    classifier.requires_grad_(False)
    generator = PrototypeGenerator(config.latent_dim, num_classes, shape, config.hidden).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    with image_layout(classifier, images=True) as layout:
        try:
            for _ in tqdm(range(config.steps), desc=progress, disable=progress is None, leave=False):
                labels = targets[torch.randint(len(targets), (config.batch_size,), generator=generator_rng)].to(device)
                z1 = torch.randn(config.batch_size, config.latent_dim, generator=generator_rng).to(device)
                z2 = torch.randn(config.batch_size, config.latent_dim, generator=generator_rng).to(device)
                x1, x2 = generator(z1, labels), generator(z2, labels)
                logits = classifier(x1.contiguous(memory_format=layout))
                loss = F.cross_entropy(logits, labels) + config.tv_weight * _mean_tv(x1)
                # Mode seeking: image distance per latent distance, to be maximised.
                spread = (x1 - x2).abs().flatten(1).mean(1) / (z1 - z2).abs().mean(1)
                loss = loss - config.diversity_weight * spread.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            labels = targets.repeat_interleave(config.n_prototypes).to(device)
            with torch.no_grad():
                images = generator(torch.randn(len(labels), config.latent_dim, generator=generator_rng).to(device), labels)
                logits = classifier(images.contiguous(memory_format=layout))
                confidence = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)
        finally:
            for p, flag in zip(classifier.parameters(), flags):
                p.requires_grad_(flag)
    return Prototypes(images.cpu(), labels.cpu(), confidence.cpu())


@register_reconstruction_attack
class GANPrototypes(ReconstructionAttack):
    """Class prototypes generated against the victim classifier, held fixed."""

    name = "gan_attack"
    title = "GAN-based reconstruction"
    question = ("Can a generator trained against a model reproduce its training images? A generator is trained so that "
                "the classifier trained on the synthetic images assigns its outputs to each class (Hitaj et al. "
                "2017); its class prototypes are set beside their nearest real and nearest synthetic images.")
    counts = "prototypes"
    Config = GANAttackConfig
    describes = "GAN prototypes (matched within their class)"
    control_describes = "prototypes"
    control_is = "classifier trained on the members"
    caption = "GAN prototypes from the classifier trained on the synthetic set"
    control_caption = "control: GAN prototypes from the classifier trained on the members"

    def reconstruct(self, victim: Victim, config: GANAttackConfig, progress: str) -> Reconstruction:
        model, _ = victim.trained()
        protos = gan_attack(model, victim.images.shape, victim.num_classes, config=config, seed=victim.seed,
                            progress=progress)
        n = {self.counts: len(protos.labels)}
        if victim.is_control:
            metrics = {"control_target_confidence": Metric(
                float(protos.confidence.mean()), "info",
                "control: mean target-class probability of the prototypes drawn from the classifier trained on members",
                range=(0.0, 1.0), n=n,
            )}
            return Reconstruction(protos.images, protos.labels, metrics, {"confidence": protos.confidence.tolist()})
        metrics = {"target_confidence": Metric(
            float(protos.confidence.mean()), "info",
            "mean probability the attacked classifier gives a prototype's target class (attack success)",
            range=(0.0, 1.0), n=n,
        )}
        details = {
            "baseline_note": "the holdout baseline matches holdout images against all members, not only their class",
            "prototype_labels": protos.labels.tolist(),
        }
        return Reconstruction(protos.images, protos.labels, metrics, details)
