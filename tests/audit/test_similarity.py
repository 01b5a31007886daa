"""Similarity: nearest neighbours against brute force, SSIM / PSNR against scikit-image,
and known answers on digits (copies of members, unseen images)."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dpaudit.audit import similarity
from dpaudit.audit.context import AuditContext
from dpaudit.audit.similarity import (
    dcr_member_share,
    holdout_baseline,
    match_to_reference,
    nearest_neighbors,
    pairwise_psnr,
    pairwise_ssim,
    ssim_window,
)
from dpaudit.datasets import Reference, load_official, split_indices
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet


def brute_force(queries, refs, k):
    """float64 distances to every reference, sorted with ties to the lower index."""
    d = ((queries.double()[:, None, :] - refs.double()[None]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d.numpy()), axis=1)[:, :k]
    return torch.from_numpy(np.take_along_axis(d.numpy(), order, 1)), torch.from_numpy(order)


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_neighbors_equal_brute_force_with_ties_and_ragged_blocks(k):
    g = torch.Generator().manual_seed(0)
    queries, refs = torch.rand(301, 37, generator=g), torch.rand(1003, 37, generator=g)
    refs[100] = refs[7]  # duplicate references: a tie for every query
    refs[500] = refs[501] = queries[5]  # two exact copies of one query
    queries[9] = queries[10]  # duplicate queries
    dist, idx = nearest_neighbors(queries, refs, k=k, block_size=64, ref_block_size=250)
    want_d, want_i = brute_force(queries, refs, k)
    assert dist.shape == idx.shape == (301, k)
    assert torch.allclose(dist.double(), want_d, rtol=1e-6, atol=1e-9)
    assert torch.equal(idx, want_i)
    assert idx[5, 0] == 500 and dist[5, 0] == 0
    assert torch.equal(idx[9], idx[10])


def test_nearest_neighbors_exact_where_the_expanded_formula_cancels():
    # Near-copies far from the origin: ||a||^2 + ||b||^2 - 2ab loses everything in float32.
    g = torch.Generator().manual_seed(1)
    refs = 50 + torch.rand(400, 784, generator=g)
    queries = refs[:40] + 1e-3 * torch.randn(40, 784, generator=g)
    dist, idx = nearest_neighbors(queries, refs, k=2)
    want_d, want_i = brute_force(queries, refs, 2)
    assert torch.equal(idx, want_i)
    assert torch.allclose(dist.double(), want_d, rtol=1e-6)


def test_nearest_neighbors_takes_images_and_caps_k():
    g = torch.Generator().manual_seed(2)
    queries, refs = torch.rand(7, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    dist, idx = nearest_neighbors(queries, refs, k=5)
    want_d, want_i = brute_force(queries.reshape(7, -1), refs.reshape(3, -1), 3)
    assert torch.equal(idx, want_i) and torch.allclose(dist.double(), want_d, rtol=1e-6)


def _skimage_ssim(a, b):
    kernel, sigma = ssim_window(a.shape[-2], a.shape[-1])
    values = []
    for x, y in zip(a.double().numpy(), b.double().numpy()):
        values.append(structural_similarity(
            x, y, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0,
            channel_axis=0,
        ))
    return torch.tensor(values)


def _pairs(shape, n, seed):
    """Image pairs from unrelated to close (PSNR up to about 40 dB): smoothed noise, and partners
    mixed with it to varying degrees."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.avg_pool2d(torch.rand(n, *shape, generator=g), 3, 1, 1)
    b = torch.nn.functional.avg_pool2d(torch.rand(n, *shape, generator=g), 3, 1, 1)
    w = torch.linspace(0, 0.9, n)[:, None, None, None]
    return a, (w * a + (1 - w) * b).clamp(0, 1)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 20), (1, 11, 13)])
def test_ssim_and_psnr_equal_skimage(shape):
    a, b = _pairs(shape, 24, seed=3)
    assert (pairwise_ssim(a, b).double() - _skimage_ssim(a, b)).abs().max() < 1e-3
    want_psnr = torch.tensor([peak_signal_noise_ratio(x.double().numpy(), y.double().numpy(), data_range=1.0)
                              for x, y in zip(a, b)])
    assert (pairwise_psnr(a, b).double() - want_psnr).abs().max() < 1e-3
    # piq adds 1e-8 to the squared error: identical images get 80 dB where skimage says infinity.
    assert torch.allclose(pairwise_psnr(a[:2], a[:2]), torch.full((2,), 80.0))


def test_ssim_on_digits_uses_a_window_that_fits_and_equals_skimage(digits):
    assert ssim_window(8, 8) == (7, pytest.approx(1.5 * 7 / 11))
    assert ssim_window(28, 28) == (11, 1.5)
    a, b = digits.members.x[:60], digits.holdout.x[:60]
    assert (pairwise_ssim(a, b).double() - _skimage_ssim(a, b)).abs().max() < 1e-3


def test_match_to_reference_finds_copies_and_the_best_ssim_candidate(digits):
    members = digits.members.x
    queries = torch.cat([members[[3, 40, 41]], digits.holdout.x[:20]])
    m = match_to_reference(queries, members, top_k=5)
    _, idx = nearest_neighbors(queries, members, k=5)
    assert torch.equal(m.idx, idx[:, 0])
    assert torch.equal(m.idx[:3], torch.tensor([3, 40, 41]))
    assert torch.allclose(m.ssim[:3], torch.ones(3)) and torch.all(m.l2[:3] == 0)
    for i in range(len(queries)):
        candidate_ssim = _skimage_ssim(queries[i].expand(5, -1, -1, -1), members[idx[i]])
        assert m.best_ssim[i] == pytest.approx(float(candidate_ssim.max()), abs=1e-3)
        assert m.best_ssim_idx[i] == idx[i, int(candidate_ssim.argmax())]
    assert torch.all(m.best_ssim >= m.ssim)
    want_l2 = (queries - members[m.idx]).flatten(1).norm(dim=1)
    assert torch.allclose(m.l2, want_l2, atol=1e-5)


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
    baseline = holdout_baseline(ctx)
    assert holdout_baseline(ctx) is baseline  # computed once per context
    base_share = float((baseline.best_ssim >= 0.95).float().mean())
    assert result.metrics["near_copy_share"].baseline == pytest.approx(base_share)
    assert result.metrics["near_copy_excess"].value == pytest.approx(1.0 - base_share)
    hist = result.details["ssim_hist"]
    assert sum(hist["synthetic"]) == len(digits.members) and sum(hist["holdout"]) == len(digits.holdout)
    assert len(hist["edges"]) == len(hist["synthetic"]) + 1
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
    assert abs(result.metrics["near_copy_excess"].value) < 0.05
    assert result.metrics["near_copy_share"].value < 0.5


def test_profile_caps_the_matched_synthetic_images(digits, monkeypatch):
    monkeypatch.setitem(similarity.PROFILES, "quick", dict(similarity.PROFILES["quick"], max_synthetic=100))
    ctx = AuditContext(digits.members, digits, "quick")
    result = similarity.run(ctx)
    assert result.metrics["near_copy_share"].n["synthetic"] == 100
    assert any("100 of 1077" in w for w in ctx.warnings)


def test_shape_mismatch_is_a_user_error(digits):
    wrong = ImageSet(torch.zeros(3, 1, 9, 9), name="s", source="synthetic.npz")
    with pytest.raises(DpauditError, match="synthetic.npz"):
        similarity.run(AuditContext(wrong, digits, "quick"))
