"""Images matched to their nearest members: match_to_reference and match_by_class against brute
force and scikit-image (through the reference harness), expected_max against enumeration, and
the holdout baseline (once per context, a seeded sample of the holdout)."""

import dataclasses
import itertools

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dpaudit.audit.context import AuditContext
from dpaudit.audit.matching import expected_max, holdout_baseline, match_by_class, match_to_reference
from dpaudit.audit.profiles import QUICK
from dpaudit.image_similarity import ssim_window
from tests.reference import brute_force_neighbors, compare_to_reference


def skimage_ssim(a, b):
    _, sigma = ssim_window(a.shape[-2], a.shape[-1])
    return np.array([
        structural_similarity(x, y, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0,
                              channel_axis=0)
        for x, y in zip(a.double().numpy(), b.double().numpy())
    ])


def reference_l2_match(queries, refs):
    """The L2-nearest reference of each query (brute force) and the distance to it."""
    sq, idx = brute_force_neighbors(queries, refs, 1)
    return {"idx": idx[:, 0], "l2": sq[:, 0].sqrt()}


def reference_similarity_match(queries, refs, top_k):
    """SSIM (skimage) to the L2-nearest reference, and the best SSIM among the top-k L2
    candidates (brute force) and where it is."""
    _, idx = brute_force_neighbors(queries, refs, top_k)
    ssim = np.stack([skimage_ssim(q.expand(idx.shape[1], -1, -1, -1), refs[i]) for q, i in zip(queries, idx)])
    best = torch.from_numpy(ssim.argmax(1))[:, None]
    return {"ssim": ssim[:, 0], "best_ssim": ssim.max(1), "best_ssim_idx": idx.gather(1, best)[:, 0]}


def reference_psnr(queries, refs):
    """PSNR (skimage) to the L2-nearest reference (brute force)."""
    nearest = brute_force_neighbors(queries, refs, 1)[1][:, 0]
    return np.array([peak_signal_noise_ratio(q.double().numpy(), refs[i].double().numpy(), data_range=1.0)
                     for q, i in zip(queries, nearest)])


def fields(matches, names):
    return {name: getattr(matches, name) for name in names}


def test_match_to_reference_finds_copies_and_the_best_ssim_candidate(digits):
    members = digits.members.x
    queries = torch.cat([members[[3, 40, 41]], digits.holdout.x[:20]])
    inputs = {"3 members and 20 holdout digits vs the members": (queries, members)}
    compare_to_reference(lambda q, r: fields(match_to_reference(q, r, top_k=5), ("idx", "l2")), reference_l2_match,
                         inputs, atol=1e-5, rtol=0.0, compare={"idx": "indices", "l2": "values"},
                         name="match_to_reference: nearest member and L2")
    compare_to_reference(lambda q, r: fields(match_to_reference(q, r, top_k=5), ("ssim", "best_ssim", "best_ssim_idx")),
                         lambda q, r: reference_similarity_match(q, r, 5), inputs, atol=1e-3, rtol=0.0,
                         compare={"ssim": "values", "best_ssim": "values", "best_ssim_idx": "indices"},
                         name="match_to_reference: SSIM and the best-SSIM candidate")
    # PSNR of the holdout digits (copies get 80 dB here, infinity in skimage).
    compare_to_reference(lambda q, r: match_to_reference(q, r, top_k=5).psnr[3:], lambda q, r: reference_psnr(q[3:], r),
                         inputs, atol=1e-3, rtol=0.0, name="match_to_reference: PSNR")
    m = match_to_reference(queries, members, top_k=5)
    assert torch.all(m.psnr[:3] == 80.0)
    assert torch.equal(m.idx[:3], torch.tensor([3, 40, 41]))
    assert torch.allclose(m.ssim[:3], torch.ones(3)) and torch.all(m.l2[:3] == 0)
    assert torch.all(m.best_ssim >= m.ssim)
    assert len(m) == len(queries)


def reference_match_by_class(queries, labels, refs):
    """The L2-nearest reference image of each query among those of its class (brute force)."""
    idx = []
    for q, c in zip(queries, labels):
        pool = torch.nonzero(refs.y == c).flatten()
        distances = ((refs.x[pool].double() - q.double()) ** 2).flatten(1).sum(1)
        idx.append(int(pool[distances.argmin()]))
    return torch.tensor(idx)


def test_match_by_class_matches_brute_force(digits):
    refs = digits.members
    queries, labels = digits.test.x[:12], digits.test.y[:12]
    compare_to_reference(lambda q, c, r: match_by_class(q, c, r, top_k=3).idx, reference_match_by_class,
                         {"12 test digits vs the members": (queries, labels, refs)}, atol=0, rtol=0, compare="indices",
                         name="match_by_class")
    matches = match_by_class(queries, labels, refs, top_k=3)
    for c, idx in zip(labels, matches.idx):
        assert int(refs.y[idx]) == int(c)
    assert (refs.y[matches.best_ssim_idx] == labels).all()


def test_match_by_class_without_labels_is_match_to_reference(digits):
    queries = digits.test.x[:12]
    got, want = match_by_class(queries, None, digits.members, top_k=3), match_to_reference(queries, digits.members.x, 3)
    for name in ("idx", "l2", "psnr", "ssim", "best_ssim", "best_ssim_idx"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def enumerated_expected_max(values, n):
    """The mean of max(draw) over every ordered draw of n values with replacement."""
    return np.mean([max(draw) for draw in itertools.product(values.tolist(), repeat=n)])


def test_expected_max_matches_enumeration():
    inputs = {f"{name}, n={n}": (values, n)
              for name, values in {"4 values": torch.tensor([0.3, 0.9, 0.1, 0.5]),
                                   "ties": torch.tensor([0.5, 0.2, 0.5, 0.2, 0.7])}.items()
              for n in (1, 2, 3)}
    compare_to_reference(expected_max, enumerated_expected_max, inputs, atol=1e-9, rtol=0.0)


def test_holdout_baseline_is_computed_once_per_context(digits):
    ctx = AuditContext(digits.members, digits, "quick")
    baseline = holdout_baseline(ctx)
    assert holdout_baseline(ctx) is baseline  # computed once per context
    # Quick's cap (2,000) exceeds the 360 holdout digits: all of them, in order.
    want = match_to_reference(digits.holdout.x, digits.members.x, QUICK.matching.top_k,
                              transforms=QUICK.matching.transforms)
    for name in ("idx", "l2", "psnr", "ssim", "best_ssim", "best_ssim_idx", "best_ssim_move", "moved_l2"):
        assert torch.equal(getattr(baseline, name), getattr(want, name)), name


def test_holdout_baseline_is_a_seeded_sample_of_the_profile_size(digits):
    capped = dataclasses.replace(QUICK, matching=dataclasses.replace(QUICK.matching, max_holdout=100))
    full = holdout_baseline(AuditContext(digits.members, digits, "quick"))
    first = holdout_baseline(AuditContext(digits.members, digits, capped, seed=0))
    again = holdout_baseline(AuditContext(digits.members, digits, capped, seed=0))
    other = holdout_baseline(AuditContext(digits.members, digits, capped, seed=1))
    assert len(first) == len(other) == 100
    assert torch.equal(first.idx, again.idx) and torch.equal(first.best_ssim, again.best_ssim)
    assert not torch.equal(first.l2, other.l2)
    # Every sampled row is the matching of some holdout image.
    rows = {(int(i), round(float(d), 5)) for i, d in zip(full.idx, full.l2)}
    assert all((int(i), round(float(d), 5)) in rows for i, d in zip(first.idx, first.l2))
