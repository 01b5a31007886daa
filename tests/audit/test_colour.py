"""The audit on colour images (3 x 32 x 32, tests/colour_reference.py): a feature net trained on
the members' three channels, SSIM on three channels, and the known answers of grey images:
copies of members are caught, images the generator never saw are not."""

import pytest
import torch

from dpaudit.audit.pipeline import evaluate
from dpaudit.images import ImageSet
from tests.colour_reference import SHAPE, colour_images, colour_reference


@pytest.fixture(scope="module")
def reference():
    return colour_reference()


@pytest.fixture(scope="module")
def audits(reference):
    """The quick audit of copies of 200 members and of 200 never-seen images."""
    copies = reference.members.subset(range(200), "copies")
    never_seen = colour_images(200, 7, "never-seen")
    checks = ["fidelity", "similarity"]
    return {name: evaluate(images, reference, checks=checks, progress=False)
            for name, images in (("copies", copies), ("never-seen", never_seen))}


def test_the_feature_net_reads_three_channels(audits):
    extractor = audits["copies"].feature_extractor
    assert extractor["name"] and extractor["dim"] == 84


def test_copies_of_colour_members_are_caught_and_never_seen_images_are_not(audits):
    copies, fresh = audits["copies"], audits["never-seen"]
    assert copies.synthetic["shape"] == list(SHAPE)
    assert copies.get("similarity.near_copy_share") == pytest.approx(1.0)
    assert fresh.get("similarity.near_copy_share") <= 0.02
    assert copies.get("similarity.dcr_member_share") >= 0.99
    assert 0.35 <= fresh.get("similarity.dcr_member_share") <= 0.65


def test_fidelity_in_colour_ranks_real_images_above_noise(reference, audits):
    g = torch.Generator().manual_seed(9)
    noise = ImageSet(torch.rand(200, *SHAPE, generator=g), torch.arange(200) % 10, num_classes=10, name="noise")
    noise = evaluate(noise, reference, checks=["fidelity"], progress=False)
    assert audits["never-seen"].get("fidelity.fid") * 10 < noise.get("fidelity.fid")
