"""Reconstruction checks: leakage is high for a memorizer synthetic set (synthetic = members) and
low for a disjoint real set (the digits test split: neither members nor holdout)."""

import base64
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from dpaudit.audit import reconstruction_checks as rc
from dpaudit.audit import utility
from dpaudit.audit.context import AuditContext
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet, to_uint8

SMALL = {
    "gradient_matching": {"batches": 3, "batch_size": 1, "iterations": 100, "restarts": 1, "method": "geiping"},
    "gan_attack": {"steps": 60, "prototypes": 1},
    "memorization": {"method": "correlation", "secrets": 6, "epochs": 12, "max_train": 400},
    "grid_rows": 4,
}


@pytest.fixture(scope="module")
def small_budgets():
    """Quick-profile budgets cut down for tests (the TSTR/TRTR classifiers train 100 steps)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(rc.PROFILES, "quick", SMALL)
        patch.setitem(utility.PROFILES, "quick", {**utility.PROFILES["quick"], "min_steps": 100})
        yield


@pytest.fixture(scope="module")
def results(digits, small_budgets):
    """All three checks on a memorizer set and on a disjoint real set."""
    out = {}
    for name, synthetic in (("memorizer", digits.members), ("disjoint", digits.test)):
        ctx = AuditContext(synthetic, digits, "quick", seed=0)
        out[name] = {
            "gradient_matching": rc.run_gradient_matching(ctx),
            "gan_attack": rc.run_gan_attack(ctx),
            "memorization": rc.run_memorization(ctx),
        }
    return out


def _value(result, metric):
    return result.metrics[metric].value


def test_expected_max_matches_enumeration():
    values = torch.tensor([0.3, 0.9, 0.1, 0.5])
    for n in (1, 2, 3):
        brute = np.mean([max(draw) for draw in itertools.product(values.tolist(), repeat=n)])
        assert rc.expected_max(values, n) == pytest.approx(brute, abs=1e-9)


def test_match_by_class_matches_brute_force(digits):
    refs = digits.members
    queries, labels = digits.test.x[:12], digits.test.y[:12]
    matches = rc.match_by_class(queries, labels, refs, top_k=3)
    for q, c, idx in zip(queries, labels, matches.idx):
        pool = torch.nonzero(refs.y == c).flatten()
        distances = ((refs.x[pool] - q) ** 2).flatten(1).sum(1)
        assert int(idx) == int(pool[distances.argmin()])
        assert int(refs.y[idx]) == int(c)
    assert (refs.y[matches.best_ssim_idx] == labels).all()


def test_grid_figure_layout():
    columns = [torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grid = rc.grid_figure(columns)
    # 8x8 tiles enlarged 3x (to 24 px), 2-pixel white gutters around every tile.
    assert grid.dtype == np.uint8 and grid.shape == (2 * 24 + 3 * 2, 3 * 24 + 4 * 2)
    second_row_third_column = grid[2 + 24 + 2 : 2 + 24 + 2 + 24, 2 + 2 * 26 : 2 + 2 * 26 + 24]
    expected = to_uint8(columns[2][1, 0]).numpy().repeat(3, 0).repeat(3, 1)
    np.testing.assert_array_equal(second_row_third_column, expected)
    assert (grid[:2] == 255).all()


def test_memorization_leaks_what_the_synthetic_set_holds(results):
    memorizer = results["memorizer"]["memorization"]
    disjoint = results["disjoint"]["memorization"]
    # The decoding itself works in both cases (attack success against the synthetic images).
    assert _value(memorizer, "decode_psnr") > 20 and _value(disjoint, "decode_psnr") > 15
    # A memorizer's decoded images are members: all above the near-copy threshold.
    assert _value(memorizer, "share_above_threshold") == 1.0
    assert _value(memorizer, "mean_member_psnr") > 20
    # Decoded test digits are no closer to the members than holdout digits are.
    assert _value(disjoint, "share_above_threshold") == 0.0
    assert _value(disjoint, "mean_member_psnr") < disjoint.metrics["mean_member_psnr"].baseline
    assert _value(memorizer, "mean_member_ssim") > _value(disjoint, "mean_member_ssim") + 0.1
    # The control (the same trainer on the members) leaks fully in both audits.
    assert _value(disjoint, "control_share_above_threshold") == 1.0


def test_gradient_matching_leaks_members_only_for_a_memorizer(results):
    memorizer = results["memorizer"]["gradient_matching"]
    disjoint = results["disjoint"]["gradient_matching"]
    # Both inversions work: the reconstructions resemble the attacked images (noise: about 5 dB).
    assert _value(memorizer, "batch_psnr") > 14 and _value(disjoint, "batch_psnr") > 14
    # Memorizer: the attacked image is a member, so the nearest member is at least as close.
    assert memorizer.details["label_accuracy"] == 1.0 and "iDLG" in memorizer.details["labels"]
    for member, batch in zip(memorizer.details["member_psnr"], memorizer.details["batch_psnr"]):
        assert member >= batch - 1e-3
    # Disjoint: reconstructions of test digits are closer to their originals than to any member.
    assert _value(disjoint, "mean_member_psnr") < _value(disjoint, "batch_psnr") - 1
    assert _value(memorizer, "mean_member_psnr") > _value(disjoint, "mean_member_psnr") + 1
    # synthetic = members: the TSTR classifier IS the members-trained control, so are the numbers.
    for key in ("max_member_ssim", "mean_member_psnr", "share_above_threshold"):
        assert _value(memorizer, f"control_{key}") == pytest.approx(_value(memorizer, key))


def test_every_check_reports_metrics_with_baselines_and_a_grid(results):
    for checks in results.values():
        for name, result in checks.items():
            assert result.check == name
            for key in ("max_member_ssim", "mean_member_ssim", "max_member_psnr", "mean_member_psnr", "share_above_threshold"):
                metric = result.metrics[key]
                assert np.isfinite(metric.value) and metric.baseline is not None and metric.direction == "lower"
                assert "." not in key
            image = Image.open(io.BytesIO(base64.b64decode(result.figures["grid"]["png"])))
            assert image.width == 3 * 24 + 4 * 2  # reconstruction | nearest real | nearest synthetic
    gan = results["memorizer"]["gan_attack"]
    assert len(gan.details["prototype_labels"]) == 10
    assert 0.0 <= _value(gan, "target_confidence") <= 1.0


def test_same_seed_same_numbers(digits, small_budgets):
    def run():
        ctx = AuditContext(digits.test, digits, "quick", seed=3)
        return {k: m.value for k, m in rc.run_memorization(ctx).metrics.items()}

    assert run() == run()


def test_unlabelled_synthetic_set_is_refused(digits, small_budgets):
    unlabelled = ImageSet(digits.test.x[:50], name="unlabelled", source="unlabelled.npz")
    ctx = AuditContext(unlabelled, digits, "quick", seed=0)
    with pytest.raises(DpauditError, match="unlabelled.npz"):
        rc.run_memorization(ctx)
    with pytest.raises(DpauditError, match="unlabelled.npz"):
        rc.run_gradient_matching(ctx)
