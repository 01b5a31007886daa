"""Re-accounting a declared mechanism with dp-accounting, against opacus and a closed form."""

import math

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from dpaudit.errors import DpauditError
from dpaudit.privacy import composed_epsilon, reaccount

pytest.importorskip("dp_accounting")


@pytest.mark.parametrize("history", [[(1.1, 0.01, 1000)], [(5.0, 1.0, 1)], [(1.0, 0.02, 300), (8.0, 1.0, 1)]])
def test_dp_accounting_agrees_with_opacus(history):
    eps = reaccount(history, 1e-5)
    opacus = composed_epsilon(history, 1e-5)
    assert eps["rdp"] == pytest.approx(opacus, rel=0.03)
    assert eps["pld"] <= eps["rdp"] * 1.01


def test_pld_of_one_gaussian_release_is_the_exact_epsilon():
    mu = 1 / 5.0  # sensitivity 1, noise 5
    exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - 1e-5, 0, 50)
    assert reaccount([(5.0, 1.0, 1)], 1e-5)["pld"] == pytest.approx(exact, rel=0.01)


def test_no_noise_is_no_privacy_and_bad_entries_are_refused():
    assert reaccount([(0.0, 0.1, 10)], 1e-5)["pld"] == math.inf
    with pytest.raises(DpauditError, match="is not"):
        reaccount([(1.0, 1.5, 10)], 1e-5)


def test_replace_one_adjacency_against_add_remove():
    """The noise multiplier counts against the declared adjacency's sensitivity (2C under
    replace-one). One Gaussian release is then as private under either adjacency. A subsampled
    replace-one history (PLD only: dp-accounting's RDP does not cover it) lies between two
    add-remove histories with noise 2 sigma: replacing a record by one whose clipped gradient is
    zero is removing it (a lower bound), and group privacy of two add-remove steps bounds it
    from above at delta / (1 + e^epsilon)."""
    one = reaccount([(5.0, 1.0, 1)], 1e-5, adjacency="replace-one")
    assert one == pytest.approx(reaccount([(5.0, 1.0, 1)], 1e-5), rel=1e-6)
    history = [(1.0, 0.01, 1000)]
    replace = reaccount(history, 1e-5, adjacency="replace-one")
    assert set(replace) == {"pld"}
    doubled = [(2.0, 0.01, 1000)]
    removing = reaccount(doubled, 1e-5)["pld"]
    group = 2 * reaccount(doubled, 1e-5 / (1 + math.exp(removing)))["pld"]
    assert removing < replace["pld"] <= group
    with pytest.raises(DpauditError, match="adjacency 'swap'"):
        reaccount([(5.0, 1.0, 1)], 1e-5, adjacency="swap")
