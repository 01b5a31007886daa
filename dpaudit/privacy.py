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
