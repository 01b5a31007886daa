"""Privacy budgets and accounting through opacus.

Generators ask here for the noise that meets a budget and for the epsilon of the steps they
really took; the attacks' empirical lower bounds are held against these claims.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

from dpaudit.errors import DpauditError

# delta where none is given: of a generator's budget, and of the audit's bounds when a manifest
# claims none (the usual convention for MNIST-sized data, below 1 / the number of records).
DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class PrivacyBudget:
    """An (epsilon, delta) target. epsilon = inf means no privacy (a non-DP baseline)."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (self.epsilon > 0):
            raise DpauditError(f"epsilon must be positive, got {self.epsilon}.")
        if not (0 < self.delta < 1):
            raise DpauditError(f"delta must be in (0, 1), got {self.delta}.")

    @property
    def is_private(self) -> bool:
        return math.isfinite(self.epsilon)


def make_accountant(name: str = "rdp"):
    """An opacus accountant by its registry name ("rdp", "prv" or "gdp")."""
    from opacus.accountants import create_accountant

    return create_accountant(name)


def dpsgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of `steps` Poisson-subsampled Gaussian steps, from opacus' accountant."""
    acc = make_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


def composed_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str = "rdp") -> float:
    """Epsilon of a composition of Gaussian releases, one (noise multiplier, sampling rate, steps)
    entry each, from opacus' accountant. A full-batch Gaussian release is (sigma, 1.0, 1)."""
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf
    acc = make_accountant(accountant)
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta=delta))


@contextmanager
def calibrating(budget: PrivacyBudget, accountant: str):
    """Around a search for the noise that meets `budget`: opacus' accountants raise ValueError
    ("The privacy budget is too low", a negative subtraction) when the budget lies beyond the
    orders they evaluate; say so in one sentence instead."""
    try:
        yield
    except ValueError as e:
        raise DpauditError(
            f"--epsilon {budget.epsilon:g} at delta {budget.delta:g} is too small for opacus' {accountant} "
            f"accountant to calibrate ({e}); ask for a larger epsilon."
        ) from None


def dpsgd_noise(budget: PrivacyBudget, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier that meets `budget` for `steps` steps (opacus' search)."""
    from opacus.accountants.utils import get_noise_multiplier

    with calibrating(budget, accountant):
        return float(
            get_noise_multiplier(
                target_epsilon=budget.epsilon,
                target_delta=budget.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=min(0.005, 0.005 * budget.epsilon),  # within 0.5% even for small epsilon
            )
        )


# Adjacency relations a manifest may declare (details.adjacency).
ADJACENCIES = ("add-remove", "replace-one")


def reaccount(history: list[tuple[float, float, int]], delta: float, adjacency: str = "add-remove") -> dict[str, float]:
    """Epsilon of a declared history of Poisson-subsampled Gaussian releases, recomputed with
    Google's dp-accounting (PLD and RDP): accountants independent of opacus, which the generators
    use. Each entry is (noise multiplier, sampling rate, steps); the noise multiplier is the noise's
    standard deviation over the L2 sensitivity under the declared `adjacency` (the clipping norm C
    under add-remove, 2C under replace-one), as a generator's own accountant reads it. Each result
    is an upper bound; the smaller one proves more. Needs `pip install 'dpaudit[accounting]'`."""
    try:
        import dp_accounting
    except ImportError:
        raise DpauditError("re-accounting a claim needs dp-accounting: pip install 'dpaudit[accounting]'.") from None
    if adjacency not in ADJACENCIES:
        raise DpauditError(f"adjacency {adjacency!r} is not one of {', '.join(ADJACENCIES)}.")
    for entry in history:
        if len(entry) != 3 or not entry[0] >= 0 or not 0 < entry[1] <= 1 or int(entry[2]) != entry[2] or entry[2] < 0:
            raise DpauditError(f"history entry {list(entry)} is not [noise_multiplier >= 0, 0 < sample_rate <= 1, steps >= 0].")
    # Without subsampling the privacy loss of a Gaussian release depends only on noise over sensitivity, so any
    # adjacency is accounted as add-remove. Subsampled replace-one releases need dp-accounting's REPLACE_ONE, which
    # only its PLD accountant covers and which counts the noise multiplier against C, not 2C (hence 2 sigma).
    replace = adjacency == "replace-one" and any(rate < 1 for _, rate, _ in history)
    accountants = ("pld",) if replace else ("pld", "rdp")
    if any(sigma == 0 and steps > 0 for sigma, _, steps in history):
        return dict.fromkeys(accountants, math.inf)
    events = []
    for sigma, rate, steps in history:
        gaussian = dp_accounting.GaussianDpEvent(2 * sigma if replace else sigma)
        event = gaussian if rate == 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
        events.append(dp_accounting.SelfComposedDpEvent(event, int(steps)))
    composed = dp_accounting.ComposedDpEvent(events)
    relation = dp_accounting.NeighboringRelation
    # 1e-4 discretisation, pessimistic PLD: an upper bound; tests/test_privacy.py finds it within 1% of the exact
    # epsilon of one Gaussian release.
    pld = dp_accounting.pld.PLDAccountant(relation.REPLACE_ONE if replace else relation.ADD_OR_REMOVE_ONE,
                                          value_discretization_interval=1e-4)
    epsilons = {"pld": float(pld.compose(composed).get_epsilon(delta))}
    if "rdp" in accountants:
        epsilons["rdp"] = float(dp_accounting.rdp.RdpAccountant().compose(composed).get_epsilon(delta))
    return epsilons
