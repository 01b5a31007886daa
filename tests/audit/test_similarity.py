"""The similarity check: the DCR member share (corrected to equal set sizes) and known answers on
digits (copies of members, unseen images). The search, SSIM / PSNR and the matching it is built
on are tested against their references in tests/test_neighbors.py, tests/test_image_similarity.py
and tests/audit/test_matching.py."""

import base64
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from statsmodels.stats.proportion import confint_proportions_2indep

from dpaudit.audit import similarity
from dpaudit.audit.context import AuditContext
from dpaudit.audit.matching import holdout_baseline
from dpaudit.audit.pipeline import evaluate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.similarity import dcr_member_share
from dpaudit.datasets import Reference, load_official, split_indices
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from tests.transformed_copies import blended, jittered, patched

# Pixel noise on the moved copies: mild, as a generator's own noise would be.
NOISE = 0.02


def test_dcr_share_is_corrected_to_equal_set_sizes():
    d_m = torch.tensor([1.0, 1.0, 1.0, 3.0])
    d_h = torch.tensor([2.0, 2.0, 2.0, 2.0])
    # equal sizes: the plain share
    assert dcr_member_share(d_m, d_h, 100, 100)["value"] == pytest.approx(0.75)
    # three times as many members: a raw share of 3/4 is exactly what chance gives
    assert dcr_member_share(d_m, d_h, 300, 100)["value"] == pytest.approx(0.5)
    # ties count one half
    assert dcr_member_share(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), 5, 5)["raw_share"] == 0.25
    assert dcr_member_share(torch.zeros(4), torch.ones(4), 300, 100)["value"] == 1.0


def test_members_as_synthetic_are_all_near_copies(digits):
    ctx = AuditContext(digits.members, digits, "quick")
    result = similarity.run(ctx)
    assert result.metrics["near_copy_share"].value == 1.0
    assert result.metrics["dcr_member_share"].value >= 0.99
    assert result.metrics["mean_nn_ssim"].value == pytest.approx(1.0)
    baseline = holdout_baseline(ctx)  # the one the check used (computed once per context)
    base_share = float((baseline.best_ssim >= 0.95).float().mean())
    assert result.metrics["near_copy_share"].baseline == pytest.approx(base_share)
    assert result.metrics["near_copy_excess"].value == pytest.approx(1.0 - base_share)
    assert result.metrics["near_copy_excess"].ci[0] > 0.5  # strong evidence of copying
    hist = result.details["ssim_hist"]
    assert sum(hist["synthetic"]) == len(digits.members) and sum(hist["holdout"]) == len(digits.holdout)
    assert len(hist["edges"]) == len(hist["synthetic"]) + 1
    distances = result.details["l2_hist"]  # copies: every synthetic image at distance 0, the first bin
    assert distances["synthetic"][0] == len(digits.members) and sum(distances["holdout"]) == len(digits.holdout)
    assert sum(distances["holdout"][1:]) > 0.9 * len(digits.holdout)
    png = Image.open(io.BytesIO(base64.b64decode(result.figures["worst_pairs"]["png"])))
    assert png.mode == "L" and png.width > png.height > 0


def test_unseen_images_give_dcr_near_one_half_and_no_excess():
    train, test = load_official("digits")
    member_idx, holdout_idx = split_indices(len(train), 500, 500, seed=1)
    unseen = np.setdiff1d(np.arange(len(train)), np.concatenate([member_idx, holdout_idx]))
    reference = Reference(train.subset(member_idx), train.subset(holdout_idx), test, "digits-500-500")
    result = similarity.run(AuditContext(train.subset(unseen), reference, "quick"))
    dcr = result.metrics["dcr_member_share"]
    assert abs(dcr.value - 0.5) < 0.1 and dcr.ci[0] < 0.5 < dcr.ci[1]
    excess = result.metrics["near_copy_excess"]
    assert abs(excess.value) < 0.05
    assert excess.ci[0] < 0 < excess.ci[1]  # no evidence of copying
    assert result.metrics["near_copy_share"].value < 0.5
    # The excess's interval is Newcombe's of the two counts (statsmodels as the reference).
    d = result.details
    reference_ci = confint_proportions_2indep(d["near_copy_count"], len(unseen), d["holdout_near_copy_count"],
                                              d["baseline_n"]["holdout"], method="newcomb", compare="diff")
    assert excess.ci == pytest.approx(reference_ci)


def test_profile_caps_the_matched_synthetic_images(digits):
    profile = dataclasses.replace(QUICK, similarity=dataclasses.replace(QUICK.similarity, max_synthetic=100))
    ctx = AuditContext(digits.members, digits, profile)
    result = similarity.run(ctx)
    assert result.metrics["near_copy_share"].n["synthetic"] == 100
    assert any("100 of 1077" in w for w in ctx.warnings)


def test_shape_mismatch_is_a_user_error(digits):
    # The pipeline refuses it before any check runs (the check no longer validates shapes itself).
    wrong = ImageSet(torch.zeros(3, 1, 9, 9), name="s", source="synthetic.npz")
    with pytest.raises(DpauditError, match="synthetic.npz"):
        evaluate(wrong, digits, checks=["similarity"], progress=False)


@pytest.mark.mnist
@pytest.mark.parametrize("family", ["shift", "intensity", "control"])
def test_jittered_copies_are_near_copies_and_jittered_unseen_images_are_not(mnist, family):
    """A quarter of the synthetic set is members moved by a small transformation plus pixel noise
    (the release audit's failure case: plain L2 and SSIM to the L2-nearest missed it); the rest
    are never-seen test images. The control moves never-seen images the same way (shifts).
    Rotated copies are found as nearest (tests/test_transforms.py) but a 6-10 degree turn, undone
    to the nearest 5 degrees, stays below SSIM 0.95: they are not near-copies by this threshold."""
    g = torch.Generator().manual_seed(3)
    if family == "control":
        moved = jittered(mnist.test.x[:500], seed=4, family="shift", noise=NOISE)
    else:
        moved = jittered(mnist.members.x[torch.randperm(len(mnist.members), generator=g)[:500]], seed=4,
                         family=family, noise=NOISE)
    synthetic = ImageSet(torch.cat([moved, mnist.test.x[500:2000]]), None, None, name=family)
    result = similarity.run(AuditContext(synthetic, mnist, "quick"))
    excess = result.metrics["near_copy_excess"].value
    if family == "control":
        assert excess <= 0.02, excess
    else:
        assert excess >= 0.2, (family, excess)  # 0.25 if every copy is found
        assert result.details["near_copy_moved_count"] >= (100 if family != "intensity" else 0)


@pytest.mark.mnist
@pytest.mark.parametrize("source", ["members", "never-seen"])
def test_blends_and_partial_copies_of_members_are_caught_and_of_unseen_images_are_not(mnist, source):
    """A quarter of the synthetic set is blends of two images (the mean, plus noise), a quarter
    is images with a 10 x 10 patch replaced by noise; the rest are never-seen test images. Made
    from members, both kinds stand out against the holdout (0.25 each if every one is found);
    made from never-seen test images the same way, neither does."""
    g = torch.Generator().manual_seed(5)
    pool = mnist.members.x[torch.randperm(len(mnist.members), generator=g)[:1000]] if source == "members" \
        else mnist.test.x[-1000:]
    made = torch.cat([blended(pool[:500], seed=6), patched(pool[500:], seed=7, side=10)])
    synthetic = ImageSet(torch.cat([made, mnist.test.x[:1000]]), None, None, name=source)
    result = similarity.run(AuditContext(synthetic, mnist, "quick"))
    blends, partials = result.metrics["blend_excess"], result.metrics["partial_copy_excess"]
    if source == "members":
        assert blends.ci[0] >= 0.18 and partials.ci[0] >= 0.15, (blends, partials)
        example = result.details["composites"]["blend"]["examples"][0]
        assert example["synthetic_index"] < 500 and 0.3 <= example["weight"] <= 0.7
        # the report's figures: the 16 best-fitting composites beside their sources, 4 a row
        for figure, tiles in (("blends", 3), ("partial_copies", 2)):
            png = Image.open(io.BytesIO(base64.b64decode(result.figures[figure]["png"])))
            assert png.width == pytest.approx(tiles * png.height, rel=0.05)
    else:
        assert blends.ci[0] <= 0.005 and partials.ci[0] <= 0.005, (blends, partials)
    assert result.metrics["near_copy_excess"].ci[0] <= 0.005  # neither kind is a near-copy


def test_distance_histogram_counts_every_image_in_shared_bins():
    synthetic, holdout = torch.tensor([0.0, 0.5, 1.0, 9.0]), torch.tensor([2.0, 2.5, 3.0])
    hist = similarity.distance_histogram(synthetic, holdout, bins=4)
    edges = np.array(hist["edges"])
    assert edges[0] == 0 and edges[-1] == pytest.approx(float(torch.quantile(synthetic, 0.995)))
    want_s, _ = np.histogram(synthetic.clamp(max=edges[-1]).numpy(), bins=edges)
    assert hist["synthetic"] == want_s.tolist() and sum(hist["holdout"]) == 3
