"""Membership inference against the downstream model: a classifier trained on the synthetic set.

If the synthetic set leaks its members, a model trained on it fits the members better than
other real images. Two attacks, both scoring (image, label) targets, higher = member:

- `loss_scores`: the loss threshold attack (Yeom et al. 2018): minus the cross-entropy of the
  true label. The confidence threshold (softmax probability of the true label) is a monotone
  function of it, so it has the same ROC and is not reported separately.
- `lira_offline_scores`: offline LiRA (Carlini et al. 2022). OUT shadow models, trained on
  real images that are not targets, give per target the distribution of the logit-scaled
  confidence phi = log(p_y / (1 - p_y)) when the target is absent; the score is how far the
  target model's phi lies above it, (phi - mu_out) / sigma_out, with mu_out per target and one
  pooled sigma_out (Carlini et al.'s fixed variance, the stable choice with few shadows).

Both are registered membership attacks of the "downstream" family; they need the classifier
trained on the synthetic set (none for an unlabelled set) and labelled targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpaudit.attacks.base import AttackScores, MembershipInputs, register_membership_attack
from dpaudit.nets import predict_logits, train_classifier


def logit_confidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j, computed stably from logits."""
    logits = predict_logits(model, x).double()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def loss_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Minus the per-example cross-entropy of the true label."""
    logits = predict_logits(model, x).double()
    return (-F.cross_entropy(logits, y, reduction="none")).numpy()


def train_shadow_models(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_shadows: int,
    train_size: int,
    epochs: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> list[nn.Module]:
    """`n_shadows` models, each trained on its own seeded random subset of (x, y) of
    `train_size` images (all of them if fewer). None of these images may be a target."""
    generator = torch.Generator().manual_seed(seed)
    shadows = []
    for i in tqdm(range(n_shadows), desc="LiRA shadow models", leave=False):
        idx = torch.randperm(len(x), generator=generator)[:train_size]
        torch.manual_seed(seed + 1 + i)  # the initial weights too
        model = make_model()
        train_classifier(model, x[idx], y[idx], epochs=epochs, seed=seed + 1 + i, device=device)
        shadows.append(model)
    return shadows


def lira_offline_scores(model: nn.Module, shadows: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Offline LiRA with a pooled variance: (phi_target - mean phi_shadows) / pooled std."""
    if len(shadows) < 2:
        raise ValueError("offline LiRA needs at least two shadow models")
    phi_out = np.stack([logit_confidence(shadow, x, y) for shadow in shadows])
    mu = phi_out.mean(axis=0)
    sigma = np.sqrt(((phi_out - mu) ** 2).sum() / (phi_out.size - phi_out.shape[1]))
    return (logit_confidence(model, x, y) - mu) / max(sigma, 1e-12)


# ---------------------------------------------------------------- the registered attacks


@dataclass(frozen=True)
class LiraConfig:
    """Offline LiRA's OUT shadow models: how many (fewer than 2: the attack does not run), the
    reference images each trains on (a seeded sample) and its epochs."""

    shadows: int = 0
    train_size: int = 1000
    epochs: int = 2


@register_membership_attack("downstream_loss", family="downstream")
def downstream_loss(inputs: MembershipInputs, config: None) -> AttackScores | None:
    model = inputs.downstream_model()
    if model is None or inputs.target_labels is None:
        return None
    return AttackScores(loss_scores(model, inputs.target_images, inputs.target_labels))


@register_membership_attack("downstream_lira", family="downstream", config=LiraConfig)
def downstream_lira(inputs: MembershipInputs, config: LiraConfig) -> AttackScores | None:
    if config.shadows < 2 or len(inputs.reference_images) == 0 or inputs.reference_labels is None:
        return None
    model = inputs.downstream_model()
    if model is None or inputs.target_labels is None:
        return None
    shadows = train_shadow_models(
        inputs.make_model, inputs.reference_images, inputs.reference_labels, n_shadows=config.shadows,
        train_size=config.train_size, epochs=config.epochs, seed=inputs.seed, device=inputs.device,
    )
    return AttackScores(
        lira_offline_scores(model, shadows, inputs.target_images, inputs.target_labels),
        {"shadows": config.shadows, "shadow_epochs": config.epochs,
         "shadow_train_size": min(config.train_size, len(inputs.reference_images))},
    )
