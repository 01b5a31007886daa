"""Metric: the direction is checked, a JSON null reads back as NaN."""

import math

import pytest

from dpaudit.metric import Metric


def test_direction_is_checked_and_null_is_nan():
    with pytest.raises(ValueError, match="direction must be one of"):
        Metric(1.0, "sideways", "x")
    assert math.isnan(Metric(None, "info", "x").value)
    assert Metric(1, "higher", "x").value == 1.0 and isinstance(Metric(1, "higher", "x").value, float)
