"""Feature extractors: the shipped LeNets (sha256 verified), the per-reference LeNet cache,
Inception's missing-weights error, and arbitrary nn.Modules."""

import json
import shutil

import pytest
import torch
from torch import nn

from dpaudit.audit import features
from dpaudit.audit.features import load_extractor
from dpaudit.datasets import Reference, load_split
from dpaudit.errors import DpauditError
from dpaudit.nets import LeNet, accuracy


def test_shipped_weights_are_indexed_and_small():
    index = features.shipped_index()
    assert set(index) == {"digits", "mnist", "fashion-mnist"}
    for entry in index.values():
        data = (features.WEIGHTS_DIR / entry["file"]).read_bytes()
        assert features.file_sha256(data) == entry["sha256"]
        assert len(data) < 400_000


def test_shipped_digits_extractor(digits):
    extractor = load_extractor(digits)
    info = extractor.describe()
    assert info["name"] == "lenet-digits" and info["dim"] == 84 and info["source"] == "shipped"
    assert info["sha256"] == features.shipped_index()["digits"]["sha256"]
    f = extractor(digits.holdout)
    assert f.shape == (360, 84) and f.dtype == torch.float32
    assert torch.equal(f, extractor(digits.holdout))  # deterministic
    # Batch size changes only the last bits (BLAS kernels differ by matrix size).
    assert torch.allclose(f[:7], extractor(digits.holdout.subset(range(7))), atol=1e-5)


def test_shipped_digits_net_has_the_recorded_test_accuracy(digits):
    entry = features.shipped_index()["digits"]
    model = LeNet(1, 10)
    model.load_state_dict(torch.load(features.WEIGHTS_DIR / entry["file"], weights_only=True))
    assert accuracy(model, digits.test.x, digits.test.y) == pytest.approx(entry["test_accuracy"], abs=1e-4)
    # the extractor's features are this net's penultimate layer
    with torch.no_grad():
        expected = model.features(digits.test.x[:50])
    assert torch.allclose(load_extractor(digits)(digits.test.subset(range(50))), expected)


def test_tampered_weights_are_refused(digits, tmp_path, monkeypatch):
    shutil.copytree(features.WEIGHTS_DIR, tmp_path / "weights")
    path = tmp_path / "weights" / "lenet-digits.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    monkeypatch.setattr(features, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(features, "WEIGHTS_INDEX", tmp_path / "weights" / "lenet.json")
    with pytest.raises(DpauditError, match=r"lenet-digits\.pt: sha256 .* differs from the recorded"):
        load_extractor(digits)


@pytest.fixture
def fast_recipe(monkeypatch, tmp_path):
    """A private cache and a two-epoch recipe, so that training a LeNet takes a second."""
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(features.LENET_RECIPE, "min_epochs", 2)
    monkeypatch.setitem(features.LENET_RECIPE, "max_epochs", 2)
    return tmp_path / "cache" / "features"


def test_other_split_trains_a_lenet_and_caches_it(fast_recipe, monkeypatch):
    reference = load_split("digits", seed=1)  # not the shipped split
    extractor = load_extractor(reference)
    info = extractor.describe()
    cached = list(fast_recipe.glob("lenet-*.pt"))
    assert len(cached) == 1 and info["path"] == str(cached[0])
    assert info["source"] == "trained on the members" and info["trained_on"] == reference.split_id
    assert info["name"] == f"lenet-digits-{info['sha256'][:8]}"
    assert features.file_sha256(cached[0].read_bytes()) == info["sha256"]
    f = extractor(reference.test)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of using the cache")

    monkeypatch.setattr(features, "train_lenet", no_training)
    again = load_extractor(reference)
    assert again.describe() == info and torch.equal(again(reference.test), f)


def test_custom_reference_is_trained_deterministically(fast_recipe, digits):
    custom = Reference(digits.members, digits.holdout, digits.test, "custom:test", dataset=None)
    first = load_extractor(custom).describe()
    assert first["name"].startswith("lenet-custom-")
    shutil.rmtree(fast_recipe)
    assert load_extractor(custom).describe()["sha256"] == first["sha256"]  # retrained: same weights


def test_corrupt_cache_entry_is_retrained(fast_recipe, digits):
    custom = Reference(digits.members, digits.holdout, digits.test, "custom:test", dataset=None)
    info = load_extractor(custom).describe()
    (fast_recipe / info["path"].rsplit("/", 1)[1]).write_bytes(b"not a weights file")
    assert load_extractor(custom).describe()["sha256"] == info["sha256"]


def test_inception_without_weights_file_is_a_clear_error(digits, tmp_path):
    with pytest.raises(DpauditError, match="Inception-v3 weights file not found"):
        load_extractor(digits, f"inception:{tmp_path / 'missing.pth'}")


def test_unknown_spec_is_a_clear_error(digits):
    with pytest.raises(DpauditError, match="unknown feature extractor 'vgg'"):
        load_extractor(digits, "vgg")


def test_any_module_gives_its_outputs(digits):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 7))
    extractor = load_extractor(digits, module)
    info = extractor.describe()
    assert info["name"] == "module-Sequential" and info["dim"] == 7
    with torch.no_grad():
        expected = module(digits.holdout.x)
    assert torch.allclose(extractor(digits.holdout), expected)
    with torch.no_grad():
        module[1].bias.add_(1)
    assert load_extractor(digits, module).describe()["sha256"] != info["sha256"]


def test_wrong_channel_count_is_a_clear_error(digits):
    colour = digits.holdout.subset(range(4), name="colour")
    colour.x = colour.x.expand(-1, 3, -1, -1).contiguous()
    with pytest.raises(DpauditError, match="3-channel images, but the feature extractor lenet-digits takes 1-channel"):
        load_extractor(digits)(colour)


def test_weights_index_records_the_recipe():
    index = json.loads(features.WEIGHTS_INDEX.read_text())
    assert index["recipe"] == features.LENET_RECIPE


@pytest.mark.mnist
def test_shipped_mnist_net_separates_real_from_noise(mnist):
    from dpaudit.audit.fidelity import fid

    entry = features.shipped_index()["mnist"]
    extractor = load_extractor(mnist)
    assert extractor.describe()["name"] == "lenet-mnist"
    assert accuracy(extractor.module.lenet, mnist.test.x, mnist.test.y) == pytest.approx(entry["test_accuracy"], abs=1e-4)
    members = extractor(mnist.members.subset(range(5000)))
    holdout = extractor(mnist.holdout.subset(range(2000)))
    noise = mnist.holdout.subset(range(2000))
    noise.x = torch.rand(noise.x.shape, generator=torch.Generator().manual_seed(0))
    assert fid(members, holdout) < fid(members, extractor(noise)) / 50
