"""Black-box membership inference against a released synthetic set.

Each attack maps the targets (N x D rows: flattened pixels or features), the synthetic set and
the attacker's reference set (real holdout images that are not targets) to one score per
target, higher meaning "more likely a member":

- `distance_scores`: GAN-Leaks full black-box (Chen et al. 2020): minus the distance to the
  nearest synthetic row; in pixel space up to the profile's small transformations
  (`dpaudit.transforms`: a shifted or rotated copy is as near as the copy it is).
- `calibrated_distance_scores`: that distance calibrated by the distance to the nearest
  reference row (how unusual the target is anyway): d_reference - d_synthetic.
- `domias_scores`: DOMIAS (van Breugel et al. 2023): log p_synthetic(x) - log p_reference(x),
  both Gaussian KDEs in a low-dimensional whitened PCA space.
- `classifier_scores`: LOGAN-style (Hayes et al. 2019): a classifier trained to tell synthetic
  from reference rows; the score is its P(synthetic).

Each is registered (dpaudit/attacks/base.py): the distances in pixel and in feature space, the
others in feature space. Nearest-neighbour search is `dpaudit.neighbors` (exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import KernelDensity
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dpaudit.attacks.base import AttackScores, MembershipInputs, register_membership_attack
from dpaudit.neighbors import nearest_distance
from dpaudit.sampling import seeded_sample
from dpaudit.transforms import NO_TRANSFORMS, TransformConfig, nearest_transformed


def _nearest(targets: torch.Tensor, others: torch.Tensor, transforms: TransformConfig) -> torch.Tensor:
    """Distance to the nearest of `others`: of rows, or of images up to `transforms`."""
    if transforms.identity_only:
        return nearest_distance(targets, others)
    return nearest_transformed(targets, others, transforms)[0]


def distance_scores(targets: torch.Tensor, synthetic: torch.Tensor, transforms: TransformConfig = NO_TRANSFORMS) -> np.ndarray:
    """GAN-Leaks full black-box: minus the distance to the nearest synthetic row (image, up to
    `transforms`)."""
    return -_nearest(targets, synthetic, transforms).numpy()


def calibrated_distance_scores(targets: torch.Tensor, synthetic: torch.Tensor, reference: torch.Tensor,
                               transforms: TransformConfig = NO_TRANSFORMS) -> np.ndarray:
    """Distance to the nearest reference row minus distance to the nearest synthetic row (images:
    both up to `transforms`)."""
    return (_nearest(targets, reference, transforms) - _nearest(targets, synthetic, transforms)).numpy()


def _subsample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x[seeded_sample(len(x), limit, rng).numpy()]


def domias_scores(
    targets: torch.Tensor,
    synthetic: torch.Tensor,
    reference: torch.Tensor,
    *,
    n_components: int = 8,
    max_fit: int = 5000,
    seed: int = 0,
) -> np.ndarray:
    """DOMIAS density ratio: log p_synthetic - log p_reference under Gaussian KDEs (Scott's
    bandwidth) in the whitened PCA space of synthetic + reference (targets never fitted)."""
    rng = np.random.default_rng(seed)
    syn = _subsample(synthetic.double().numpy(), max_fit, rng)
    ref = _subsample(reference.double().numpy(), max_fit, rng)
    n_components = max(1, min(n_components, syn.shape[1], len(syn) + len(ref) - 1))
    pca = PCA(n_components, whiten=True, random_state=seed).fit(np.r_[syn, ref])
    t, syn, ref = pca.transform(targets.double().numpy()), pca.transform(syn), pca.transform(ref)
    log_p_syn = KernelDensity(bandwidth="scott").fit(syn).score_samples(t)
    log_p_ref = KernelDensity(bandwidth="scott").fit(ref).score_samples(t)
    return log_p_syn - log_p_ref


def classifier_scores(
    targets: torch.Tensor,
    synthetic: torch.Tensor,
    reference: torch.Tensor,
    *,
    hidden: int = 64,
    max_fit: int = 5000,
    seed: int = 0,
) -> np.ndarray:
    """LOGAN-style: P(synthetic) from a one-hidden-layer MLP trained on synthetic vs reference
    rows (equal numbers of each, standardised; early stopping on a 10% split)."""
    rng = np.random.default_rng(seed)
    n = min(len(synthetic), len(reference), max_fit)
    syn = _subsample(synthetic.double().numpy(), n, rng)
    ref = _subsample(reference.double().numpy(), n, rng)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier((hidden,), alpha=1e-3, max_iter=200, early_stopping=True, random_state=seed),
    )
    model.fit(np.r_[syn, ref], np.r_[np.ones(len(syn)), np.zeros(len(ref))])
    return model.predict_proba(targets.double().numpy())[:, 1]


# ---------------------------------------------------------------- the registered attacks


@dataclass(frozen=True)
class DomiasConfig:
    """PCA dimensions and the rows per side the KDEs are fitted on (a seeded sample)."""

    n_components: int = 8
    max_fit: int = 5000


@dataclass(frozen=True)
class LoganConfig:
    """Hidden units of the MLP and rows per side it is trained on (a seeded sample)."""

    hidden: int = 64
    max_fit: int = 5000


def _distance_attacks(space: str):
    """GAN-Leaks' distance and its calibrated form: on images up to the profile's small
    transformations (`space="pixel"`), or on feature rows."""

    def operands(inputs: MembershipInputs):
        if space == "pixel":
            return inputs.target_images, inputs.reference_images, inputs.synthetic_images, inputs.transforms
        return (*inputs.feature_rows(), NO_TRANSFORMS)

    def distance(inputs: MembershipInputs, config: None) -> AttackScores:
        targets, _, synthetic, transforms = operands(inputs)
        return AttackScores(distance_scores(targets, synthetic, transforms))

    def calibrated(inputs: MembershipInputs, config: None) -> AttackScores:
        targets, reference, synthetic, transforms = operands(inputs)
        return AttackScores(calibrated_distance_scores(targets, synthetic, reference, transforms))

    return distance, calibrated


for _space in ("pixel", "feature"):  # registered in this order: distance_pixel, calibrated_distance_pixel, ...
    _distance, _calibrated = _distance_attacks(_space)
    register_membership_attack(f"distance_{_space}", family="synthetic", space=_space)(_distance)
    register_membership_attack(f"calibrated_distance_{_space}", family="synthetic", space=_space)(_calibrated)


@register_membership_attack("domias", family="synthetic", space="feature", config=DomiasConfig)
def domias(inputs: MembershipInputs, config: DomiasConfig) -> AttackScores:
    targets, reference, synthetic = inputs.feature_rows()
    scores = domias_scores(targets, synthetic, reference, n_components=config.n_components, max_fit=config.max_fit,
                           seed=inputs.seed)
    return AttackScores(scores, {"pca_dim": config.n_components})


@register_membership_attack("classifier", family="synthetic", space="feature", config=LoganConfig)
def logan(inputs: MembershipInputs, config: LoganConfig) -> AttackScores:
    targets, reference, synthetic = inputs.feature_rows()
    return AttackScores(classifier_scores(targets, synthetic, reference, hidden=config.hidden, max_fit=config.max_fit,
                                          seed=inputs.seed))

