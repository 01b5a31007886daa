"""The audit's profiles: QUICK (CI-sized), STANDARD and PAPER (the published protocols).

A profile is a typed object whose fields are the settings of every check and attack, as their
own config classes, so that `evaluate()`, the CLI and `result.json` (its "settings") all read
the same thing. A check's settings are the profile's field of the check's name (`settings()`);
`classifiers` (the TSTR / TRTR CNN) and `matching` (images matched to the members) are shared
by several checks; `training_audit` holds the canary audit's settings (`dpaudit audit-training`).
A check the profile has no field for runs with its Config's defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dpaudit.attacks import RECONSTRUCTION_ATTACKS
from dpaudit.attacks.downstream import LiraConfig
from dpaudit.attacks.gan_attack import GANAttackConfig
from dpaudit.attacks.gradient_matching import InversionConfig
from dpaudit.attacks.membership import DomiasConfig, LoganConfig
from dpaudit.attacks.memorization import MemorizationConfig
from dpaudit.audit.classifiers import ClassifierConfig
from dpaudit.audit.fidelity import FidelityConfig
from dpaudit.audit.matching import MatchingConfig
from dpaudit.audit.membership_check import MembershipConfig
from dpaudit.audit.similarity import SimilarityConfig
from dpaudit.audit.training_audit import TrainingAuditConfig
from dpaudit.audit.utility import UtilityConfig
from dpaudit.transforms import TransformConfig
from dpaudit.errors import DpauditError


@dataclass(frozen=True)
class Profile:
    """Every setting of an audit. `grid_rows`: rows of the reconstruction checks' figures."""

    name: str
    fidelity: FidelityConfig
    classifiers: ClassifierConfig
    utility: UtilityConfig
    matching: MatchingConfig
    similarity: SimilarityConfig
    membership: MembershipConfig
    gradient_matching: InversionConfig
    gan_attack: GANAttackConfig
    memorization: MemorizationConfig
    grid_rows: int
    training_audit: TrainingAuditConfig  # `dpaudit audit-training`, not a check of `evaluate`

    def settings(self, check: str) -> Any:
        """The settings of `check`: this profile's field of that name, else the defaults of the
        registered reconstruction attack of that name."""
        if check in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, check)
        return RECONSTRUCTION_ATTACKS[check].Config()

    def to_dict(self) -> dict:
        """Every setting, as JSON (what `result.json` records)."""
        return dataclasses.asdict(self)


QUICK = Profile(
    name="quick",
    fidelity=FidelityConfig(max_samples=5_000, kid_subsets=20, kid_subset_size=1_000, k=5),
    classifiers=ClassifierConfig(epochs=3, min_steps=300, max_train=5000, trtr_max_train=5000, val_fraction=0.1),
    utility=UtilityConfig(sklearn_max_train=2000, logreg_max_iter=100, mlp_max_iter=30),
    # quick: shifts and intensity only (the rotations add about 9 s to the similarity check on MNIST),
    # and a blend's second source searched on 2 x 2-averaged images (saves about 4 s; RESULTS)
    matching=MatchingConfig(top_k=5, near_copy_ssim=0.95, max_holdout=2000, transforms=TransformConfig(rotations=()),
                            blend_search_pool=2),
    similarity=SimilarityConfig(max_synthetic=2000, n_worst=16),
    # No LiRA shadow models in quick; in standard fewer epochs than the TSTR CNN: both for the time budgets.
    membership=MembershipConfig(per_side=1000, reference=2000, attacks={
        "domias": DomiasConfig(n_components=8, max_fit=5000),
        "classifier": LoganConfig(max_fit=2000),
        "downstream_lira": LiraConfig(shadows=0, train_size=1000, epochs=2),
    }),
    gradient_matching=InversionConfig(method="geiping", iterations=100, restarts=1, batches=4, batch_size=1),
    gan_attack=GANAttackConfig(steps=100, n_prototypes=2),
    memorization=MemorizationConfig(method="correlation", n_secrets=8, epochs=3, max_train=1000),
    grid_rows=8,
    training_audit=TrainingAuditConfig(canaries=200),
)

STANDARD = Profile(
    name="standard",
    fidelity=FidelityConfig(max_samples=10_000, kid_subsets=100, kid_subset_size=1_000, k=5),
    classifiers=ClassifierConfig(epochs=10, min_steps=500, max_train=10000, trtr_max_train=10000, val_fraction=0.1),
    utility=UtilityConfig(sklearn_max_train=10000, logreg_max_iter=200, mlp_max_iter=100),
    matching=MatchingConfig(top_k=10, near_copy_ssim=0.95, max_holdout=10000),
    similarity=SimilarityConfig(max_synthetic=10000, n_worst=24),
    membership=MembershipConfig(per_side=2500, reference=5000, attacks={
        "domias": DomiasConfig(n_components=8, max_fit=10000),
        "classifier": LoganConfig(max_fit=5000),
        "downstream_lira": LiraConfig(shadows=4, train_size=5000, epochs=4),
    }),
    gradient_matching=InversionConfig(method="geiping", iterations=300, restarts=1, batches=8, batch_size=1),
    gan_attack=GANAttackConfig(steps=300, n_prototypes=4),
    memorization=MemorizationConfig(method="correlation", n_secrets=32, epochs=6, max_train=5000),
    grid_rows=12,
    training_audit=TrainingAuditConfig(canaries=1000),
)

PAPER = Profile(
    name="paper",
    fidelity=FidelityConfig(max_samples=None, kid_subsets=100, kid_subset_size=1_000, k=5),
    classifiers=ClassifierConfig(epochs=50, min_steps=0, max_train=None, trtr_max_train=None, val_fraction=0.1,
                                 precision="float32"),  # the published protocol, as written
    utility=UtilityConfig(sklearn_max_train=None, logreg_max_iter=1000, mlp_max_iter=200),
    matching=MatchingConfig(top_k=20, near_copy_ssim=0.95, max_holdout=None),
    similarity=SimilarityConfig(max_synthetic=None, n_worst=32),
    membership=MembershipConfig(per_side=5000, reference=5000, attacks={
        "domias": DomiasConfig(n_components=10, max_fit=20000),
        "classifier": LoganConfig(max_fit=10000),
        "downstream_lira": LiraConfig(shadows=16, train_size=5000, epochs=50),
    }),
    gradient_matching=InversionConfig(method="geiping", iterations=2000, restarts=4, batches=64, batch_size=1),
    gan_attack=GANAttackConfig(steps=3000, n_prototypes=8),
    memorization=MemorizationConfig(method="correlation", n_secrets=64, epochs=30, max_train=None),
    grid_rows=16,
    training_audit=TrainingAuditConfig(canaries=2000),
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (QUICK, STANDARD, PAPER)}


def get_profile(profile: Profile | str) -> Profile:
    """A Profile, or the built-in profile of that name (DpauditError naming the choices)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise DpauditError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    return PROFILES[profile]
