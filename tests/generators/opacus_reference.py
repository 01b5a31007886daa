"""The independent reference for generator accounting tests: opacus' accountant called directly."""

from opacus.accountants import PRVAccountant, RDPAccountant


def opacus_epsilon(history, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of an accountant history, straight from a fresh opacus accountant."""
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta=delta))
