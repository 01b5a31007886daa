"""The report's plots: valid PNGs, stable bytes, and colours that say what they should."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dpaudit.reports import plots
from tests.reports.fakes import roc

RED, GREY, BLUE, ORANGE = (214, 39, 40), (127, 127, 127), (31, 119, 180), (255, 127, 14)


def decode(png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))


def pixels_of(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == colour, axis=-1).sum())


def widest_row(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Pixels of `colour` in the row that has most of them: a horizontal bar's length."""
    return int(np.all(image == colour, axis=-1).sum(axis=1).max())


def test_epsilon_bar_is_red_only_when_the_claim_is_broken():
    broken = decode(plots.epsilon_vs_claimed(12.0, 10.0))
    kept = decode(plots.epsilon_vs_claimed(0.4, 10.0))
    assert pixels_of(broken, RED) > 100 and pixels_of(broken, GREY) > 100
    assert pixels_of(kept, RED) == 0 and pixels_of(kept, BLUE) > 10
    # the bars' lengths follow the values: 12 against 10
    assert widest_row(broken, RED) / widest_row(broken, GREY) == pytest.approx(1.2, abs=0.02)


def test_epsilon_without_a_claim():
    image = decode(plots.epsilon_vs_claimed(0.7, None, ci=(0.5, 0.9)))
    assert widest_row(image, GREY) < 10 and widest_row(image, BLUE) > 100  # no claim bar, only the bound


def test_grouped_bars_share_one_axis():
    grouped = decode(plots.per_class_bars({"tstr": [0.8, 0.9, 0.7], "trtr": [0.95, 0.96, 0.97]}))
    assert pixels_of(grouped, BLUE) > 100 and pixels_of(grouped, ORANGE) > 100
    panels = decode(plots.per_class_bars({"fid": [30.0, 40.0], "recall": [0.4, 0.5]}, grouped=False))
    assert panels.shape[0] > 1.3 * decode(plots.per_class_bars({"fid": [30.0, 40.0]}, grouped=False)).shape[0]


def test_bar_heights_are_proportional():
    image = decode(plots.per_class_bars({"tstr": [0.25, 1.0]}))
    mask = np.all(image == BLUE, axis=-1)
    columns = np.nonzero(mask.any(axis=0))[0]
    left, right = mask[:, columns[0]].sum(), mask[:, columns[-1]].sum()
    assert left / right == pytest.approx(0.25, abs=0.02)


def test_roc_log_axes_drop_zeros():
    attacks = {"a": {"auc": 0.6, "roc": roc(0.8)}, "only-zeros": {"roc": {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 0.5, 1.0]}}}
    image = decode(plots.roc_curves(attacks, strongest="a"))
    assert image.shape[1] > 2 * image.shape[0]  # linear and log-log side by side


def test_ssim_histogram_with_and_without_baseline():
    edges = np.linspace(0, 1, 11)
    with_baseline = decode(plots.ssim_histogram(edges, [0, 1, 5, 10, 5, 1, 0, 0, 0, 0], [0, 0, 2, 8, 8, 2, 0, 0, 0, 0]))
    alone = decode(plots.ssim_histogram(edges, [0, 1, 5, 10, 5, 1, 0, 0, 0, 0], None))
    assert pixels_of(with_baseline, ORANGE) > 50 and pixels_of(alone, ORANGE) == 0


def test_user_text_is_not_parsed_as_math():
    # unescaped, "$\\frac{$" would make matplotlib's mathtext raise
    plots.per_class_bars({"$\\frac{$": [0.5, 0.6]})
    plots.privacy_utility_scatter([("$\\frac{$", 0.1, 0.8), ("b", 0.5, 0.6)], xlabel="x", ylabel="y")
    plots.roc_curves({"$\\frac{$": {"roc": roc(0.9)}})


def test_stable_bytes():
    args = ([("a", 0.1, 0.8), ("b", 0.5, 0.6)],)
    assert plots.privacy_utility_scatter(*args, xlabel="x", ylabel="y") == plots.privacy_utility_scatter(*args, xlabel="x", ylabel="y")
