"""Gradient matching (gradient inversion): rebuild a training batch from the gradient it produced.

The attacker sees the model and the gradient of the mean cross-entropy on one batch, as in
federated learning, and optimises dummy images until their gradient matches:

- `geiping` (Inverting Gradients, Geiping et al. 2020): loss 1 - cos(grad', grad) summed over
  all parameters at once, plus a total-variation prior; Adam (lr 0.1) on the SIGN of the image
  gradient, learning rate decayed 10x at 3/8, 5/8 and 7/8 of the iterations, pixels projected
  onto [0, 1] after every step; several random restarts, the one with the lowest loss is kept.
- `dlg` (Deep Leakage from Gradients, Zhu et al. 2019): squared L2 gradient distance with
  L-BFGS (lr 1, 20 evaluations per step); here the pixels are projected onto [0, 1] after
  each step and the labels are not optimised (iDLG or known, as below).

Labels: for a batch of one they are recovered from the last linear layer's weight gradient
(iDLG, Zhao et al. 2020: with softmax cross-entropy and non-negative inputs to that layer, only
the true class's row has a negative sum); for larger batches they are assumed known.

The model is attacked in eval mode (dropout off), the attacker's usual simplification.

As an audit check (`GradientMatching`), it inverts batches of the victim classifier's own
training images: the synthetic images for the classifier trained on them, the members for the
control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import piq
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from tqdm.auto import tqdm

from dpaudit.attacks.reconstruction import Reconstruction, ReconstructionAttack, Victim, register_reconstruction_attack
from dpaudit.image_similarity import pairwise_psnr, pairwise_ssim
from dpaudit.metric import Metric
from dpaudit.nets import device_of

METHODS = ("geiping", "dlg")
# L-BFGS evaluations per projected step of DLG; `iterations` counts evaluations for both methods.
LBFGS_INNER = 20


@dataclass(frozen=True)
class InversionConfig:
    """How hard to attack: method, iterations per restart, restarts, learning rate, TV weight,
    whether labels are recovered from the gradient (batches of one); as a check, how many
    batches of how many training images are inverted."""

    method: str = "geiping"
    iterations: int = 300
    restarts: int = 2
    lr: float = 0.1
    tv_weight: float = 1e-4
    infer_labels: bool = True
    batches: int = 4
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")


@dataclass
class Inversion:
    """The outcome of one attacked batch.

    `images` are the reconstructions, reordered so that `images[i]` is the reconstruction
    matched (Hungarian, on MSE) to original `i`; `psnr` is per pair in dB; `loss` is the
    gradient-matching loss of the kept restart; `labels_inferred` says whether the labels were
    recovered from the gradient (True) or assumed known (False)."""

    images: torch.Tensor
    labels: torch.Tensor
    psnr: torch.Tensor
    loss: float
    labels_inferred: bool


def batch_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The gradient of the mean cross-entropy of (x, y) w.r.t. every trainable parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last `nn.Linear` layer (its output layer for the networks of dpaudit.nets)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("label inference needs a model whose output layer is nn.Linear")
    return linears[-1]


def infer_label(model: nn.Module, gradient: list[torch.Tensor]) -> int:
    """iDLG: the label of a single image from the output layer's weight gradient."""
    weight = last_linear(model).weight
    params = [p for p in model.parameters() if p.requires_grad]
    index = next(i for i, p in enumerate(params) if p is weight)
    return int(gradient[index].sum(dim=1).argmin())


def _dlg_loss(model, x, labels, target) -> torch.Tensor:
    """DLG's squared L2 distance between the gradient of (x, labels) and the observed one."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), labels), params, create_graph=True)
    return sum((g - t).pow(2).sum() for g, t in zip(grads, target))


def _dlg_restart(model, target, labels, shape, config: InversionConfig, generator: torch.Generator):
    x = torch.rand(shape, generator=generator).to(labels.device).requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=LBFGS_INNER)

    def closure():
        optimizer.zero_grad()
        loss = _dlg_loss(model, x, labels, target)
        loss.backward()
        return loss

    for _ in range(max(1, config.iterations // LBFGS_INNER)):
        optimizer.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)
    final = float(_dlg_loss(model, x, labels, target).detach())
    return x.detach(), final if np.isfinite(final) else float("inf")


def invert_gradient(
    model: nn.Module,
    gradient: list[torch.Tensor],
    labels: torch.Tensor,
    shape: tuple[int, int, int, int],
    config: InversionConfig,
    seed: int,
) -> tuple[torch.Tensor, float]:
    """Images of `shape` (B x C x H x W) whose gradient under `labels` matches `gradient`:
    the best of `config.restarts` random starts by matching loss. Returns (images, loss)."""
    if config.method == "geiping":
        return invert_gradients(model, [gradient], [labels], shape, config, [seed])[0]
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    best, best_loss = None, float("inf")
    for _ in range(config.restarts):
        x, loss = _dlg_restart(model, gradient, labels, shape, config, generator)
        if best is None or loss < best_loss:
            best, best_loss = x, loss
    return best, best_loss


def _geiping_losses(model: nn.Module, gradients: list[list[torch.Tensor]], labels: torch.Tensor, config: InversionConfig):
    """A function of dummy images x (B x b x C x H x W) giving B losses, one a batch: 1 - cosine
    between the gradient of (x[i], labels[i]) and gradients[i], summed over all parameters, plus
    the total-variation prior. The B gradients come from one pass (torch.func's vmap of grad);
    each loss depends on its own batch only."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    targets = [torch.stack(per_param) for per_param in zip(*gradients)]  # one B x ... tensor a parameter
    target_norm = sum(t.pow(2).flatten(1).sum(1) for t in targets).sqrt()

    def gradient_of(xb, yb):
        grads = torch.func.grad(lambda p: F.cross_entropy(torch.func.functional_call(model, p, (xb,)), yb))(params)
        return list(grads.values())

    def losses(x: torch.Tensor) -> torch.Tensor:
        grads = torch.func.vmap(gradient_of)(x, labels)
        dot = sum((g * t).flatten(1).sum(1) for g, t in zip(grads, targets))
        grad_norm = sum(g.pow(2).flatten(1).sum(1) for g in grads).sqrt()
        tv = piq.total_variation(x.flatten(0, 1), reduction="none", norm_type="l1").view(x.shape[:2]).sum(1)
        return 1 - dot / (grad_norm * target_norm + 1e-12) + config.tv_weight * tv

    return losses


def invert_gradients(
    model: nn.Module,
    gradients: list[list[torch.Tensor]],
    labels: list[torch.Tensor],
    shape: tuple[int, int, int, int],
    config: InversionConfig,
    seeds: list[int],
    progress: str | None = None,
) -> list[tuple[torch.Tensor, float]]:
    """Geiping's inversion of several batches of the same `shape` in one optimisation: batch i
    starts from the generator of seeds[i], as it would alone, and every step's update of it
    depends on its own loss only (Adam and the sign are elementwise), so each result is that of
    its inversion alone (`invert_gradient`, which is this with one batch), up to rounding
    (batched kernels sum in another order; over hundreds of sign steps a rounding difference can
    send a pixel along another trajectory, as good: benchmarks/RESULTS.md, "Gradient matching,
    batched"). The batched passes are what is saved (1.4-1.9x over the inversions one after
    another in quick, 2.4-2.6x in standard, ibid.)."""
    if config.method != "geiping":
        raise ValueError("only the geiping method inverts batches together (DLG's L-BFGS couples them)")
    model.eval()
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    losses = _geiping_losses(model, gradients, torch.stack(labels), config)
    best = [None] * len(seeds)
    best_loss = [float("inf")] * len(seeds)
    milestones = [int(config.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    for _ in range(config.restarts):
        x = torch.stack([torch.rand(shape, generator=g) for g in generators]).to(labels[0].device).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=config.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
        for _ in tqdm(range(config.iterations), desc=progress, disable=progress is None, leave=False):
            optimizer.zero_grad()
            losses(x).sum().backward()
            x.grad.sign_()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        for i, loss in enumerate(losses(x).detach().tolist()):
            loss = loss if np.isfinite(loss) else float("inf")
            if best[i] is None or loss < best_loss[i]:
                best[i], best_loss[i] = x[i].detach().clone(), loss
    return list(zip(best, best_loss))


def match_order(reconstructions: torch.Tensor, originals: torch.Tensor) -> np.ndarray:
    """Hungarian assignment on per-pair MSE: `order[i]` is the reconstruction matched to original i."""
    cost = torch.cdist(originals.flatten(1), reconstructions.flatten(1)).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: InversionConfig = InversionConfig(),
    seed: int = 0,
) -> Inversion:
    """Compute the gradient of the batch (x, y) on `model`, invert it, and score the
    reconstructions against the batch (Hungarian-matched). Labels are inferred from the
    gradient for a batch of one when `config.infer_labels`, otherwise taken as known."""
    gradient, labels, inferred = _observed(model, x, y, config)
    images, loss = invert_gradient(model, gradient, labels, tuple(x.shape), config, seed)
    return _scored(images, labels, x, loss, inferred)


def _observed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: InversionConfig):
    """What the attacker sees of the batch (x, y): its gradient, and the labels it attacks with
    (iDLG's for a batch of one when `config.infer_labels`, else the true ones), on the model's device."""
    model.eval()
    model.requires_grad_(True)
    device = device_of(model)
    gradient = batch_gradient(model, x.to(device), y.to(device))
    inferred = config.infer_labels and len(x) == 1
    labels = torch.tensor([infer_label(model, gradient)], device=device) if inferred else y.to(device, copy=True)
    return gradient, labels, inferred


def _scored(images: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, loss: float, inferred: bool) -> Inversion:
    images, labels = images.cpu(), labels.cpu()
    order = torch.as_tensor(match_order(images, x))
    images = images[order]
    return Inversion(images, labels[order], pairwise_psnr(images, x), loss, inferred)


def attack_batches(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    config: InversionConfig = InversionConfig(),
    seed: int = 0,
    progress: str | None = None,
) -> list[Inversion]:
    """`attack_batch` on each batch, seeds `seed`, `seed + 1`, ...; geiping's inversions of
    batches of one shape run together (`invert_gradients`: the same computation, faster)."""
    shapes = {tuple(x.shape) for x, _ in batches}
    if config.method != "geiping" or len(shapes) != 1:
        return [
            attack_batch(model, x, y, config, seed + i)
            for i, (x, y) in enumerate(tqdm(batches, desc=progress, disable=progress is None, leave=False))
        ]
    observed = [_observed(model, x, y, config) for x, y in batches]
    inverted = invert_gradients(model, [o[0] for o in observed], [o[1] for o in observed], shapes.pop(), config,
                                [seed + i for i in range(len(batches))], progress)
    return [_scored(images, o[1], x, loss, o[2]) for (images, loss), o, (x, _) in zip(inverted, observed, batches)]


@register_reconstruction_attack
class GradientMatching(ReconstructionAttack):
    """Inverting Gradients on batches of the victim classifier's own training images."""

    name = "gradient_matching"
    title = "Gradient matching (gradient inversion)"
    question = ("Can training images be reconstructed from a model's gradients? Gradients of the classifier trained "
                "on the synthetic images are inverted; the reconstructions are set beside their nearest real and "
                "nearest synthetic images.")
    counts = "reconstructions"
    Config = InversionConfig
    describes = "gradient-matching reconstructions"
    control_describes = "reconstructions"
    control_is = "classifier trained on the members"
    caption = "gradient inversion of the classifier trained on the synthetic set"
    control_caption = "control: gradient inversion of the classifier trained on the members"

    def reconstruct(self, victim: Victim, config: InversionConfig, progress: str) -> Reconstruction:
        model, train_idx = victim.trained()
        generator = torch.Generator().manual_seed(victim.seed)
        pick = train_idx[torch.randperm(len(train_idx), generator=generator)[: config.batches * config.batch_size]]
        batches = [(victim.images.take(b), victim.images.y[b]) for b in pick.split(config.batch_size)]
        inversions = attack_batches(model, batches, config, victim.seed, progress=progress)
        images = torch.cat([inv.images for inv in inversions])
        labels = torch.cat([inv.labels for inv in inversions])
        batch_psnr = torch.cat([inv.psnr for inv in inversions])
        batch_ssim = pairwise_ssim(images, victim.images.take(pick))
        n = {self.counts: len(images)}
        if victim.is_control:
            metrics = {"control_batch_psnr": Metric(
                float(batch_psnr.mean()), "info",
                "control: mean PSNR (dB) of a reconstruction to the member it was inverted from, on the classifier "
                "trained on members", n=n,
            )}
            details = {"attacked_member_indices": pick.tolist(), "batch_psnr": batch_psnr.tolist(),
                       "batch_ssim": batch_ssim.tolist()}
            return Reconstruction(images, labels, metrics, details)
        metrics = {
            "batch_psnr": Metric(
                float(batch_psnr.mean()), "info",
                "mean PSNR (dB) of a reconstruction to the synthetic training image it was inverted from (attack success)",
                n=n,
            ),
            "batch_ssim": Metric(
                float(batch_ssim.mean()), "info",
                "mean SSIM of a reconstruction to the synthetic training image it was inverted from (attack success)",
                range=(-1.0, 1.0), n=n,
            ),
        }
        inferred = all(inv.labels_inferred for inv in inversions)
        details = {
            "method": config.method,
            "labels": "recovered from the output layer's gradient (iDLG)" if inferred else "assumed known",
            "label_accuracy": float((labels == victim.images.y[pick]).float().mean()),
            "attacked_synthetic_indices": pick.tolist(),
            "matching_loss": [inv.loss for inv in inversions],
            "batch_psnr": batch_psnr.tolist(),
        }
        return Reconstruction(images, labels, metrics, details)
