"""Attacks on a synthetic release and on models trained on it. Importing this package fills the
two registries: `MEMBERSHIP_ATTACKS` (dpaudit/attacks/base.py) and `RECONSTRUCTION_ATTACKS`
(dpaudit/attacks/reconstruction.py). Adding an attack is one module (registering itself) and
one line here; the membership attacks run in the order of these imports."""

from dpaudit.attacks import membership, downstream  # noqa: F401  (membership attacks, in this order)
from dpaudit.attacks import gradient_matching, gan_attack, memorization  # noqa: F401  (reconstruction attacks)
from dpaudit.attacks.base import MEMBERSHIP_ATTACKS, register_membership_attack
from dpaudit.attacks.reconstruction import RECONSTRUCTION_ATTACKS, register_reconstruction_attack

__all__ = ["MEMBERSHIP_ATTACKS", "RECONSTRUCTION_ATTACKS", "register_membership_attack", "register_reconstruction_attack"]
