"""Feature extractors: the shipped LeNets (sha256 verified), the per-reference LeNet cache,
Inception's missing-weights error, and arbitrary nn.Modules."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from dpaudit.audit import features, fidelity
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import load_extractor
from dpaudit.datasets import Reference, load_split
from dpaudit.images import ImageSet, load_images
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


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A weights file of torch-fidelity's FID Inception-v3 architecture with random weights, made
    here (the module built without its download, its state saved): never the real download."""
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")  # the `inception` extra
    cls = inception.FeatureExtractorInceptionV3
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(cls, "load_state_dict", lambda self, state, *a, **k: None)
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_from_a_weights_file(digits, random_inception):
    extractor = load_extractor(digits, f"inception:{random_inception}")
    info = extractor.describe()
    assert info["name"] == "inception-v3" and info["dim"] == 2048
    assert info["sha256"] == features.file_sha256(random_inception.read_bytes())
    members, holdout = digits.members.subset(range(6)), digits.holdout.subset(range(6))
    # the fidelity check on six images a side (Inception at 299 x 299 is slow on a CPU), naming the space next to its FID
    ctx = AuditContext(digits.test.subset(range(6)), Reference(members, holdout, digits.test, "tiny"), profile="quick", seed=0)
    ctx.extractor = extractor
    fid = fidelity.run(ctx)
    assert fid.details["extractor"] == "inception-v3" and fid.metrics["fid"].meaning.endswith("inception-v3 features")
    got = ctx.features("members")
    assert got.shape == (6, 2048) and torch.isfinite(got).all() and got.std() > 0
    # loaded again from the file: the same weights, the same features
    assert torch.equal(load_extractor(digits, f"inception:{random_inception}")(members.subset(range(2))), got[:2])


def test_inception_refuses_other_weights_and_pickled_code(digits, tmp_path):
    lenet = tmp_path / "lenet.pth"
    torch.save(LeNet(1, 10).state_dict(), lenet)
    with pytest.raises(DpauditError, match=r"lenet\.pth: not Inception-v3 weights"):
        load_extractor(digits, f"inception:{lenet}")
    evil = tmp_path / "evil.pth"
    torch.save({"x": Exploit()}, evil)
    with pytest.raises(DpauditError, match=r"evil\.pth: not a readable weights file"):
        load_extractor(digits, f"inception:{evil}")


class Exploit:
    """A pickle that would run code when unpickled."""

    def __reduce__(self):
        return (pytest.fail, ("the weights file was unpickled",))


def test_inception_download_into_the_cache_and_offline(digits, random_inception, tmp_path, monkeypatch):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))

    def offline(url, dst, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DpauditError, match="use --features inception:PATH"):
        load_extractor(digits, "inception")
    downloads = []

    def fetch(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, hash_prefix))
        shutil.copyfile(random_inception, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fetch)
    first = load_extractor(digits, "inception").describe()
    assert load_extractor(digits, "inception").describe() == first and len(downloads) == 1  # cached
    assert downloads == [(features.INCEPTION_URL, features.INCEPTION_SHA256_PREFIX)]
    assert first["path"].startswith(str(tmp_path / "cache"))


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
    colour = ImageSet(digits.holdout.take(slice(0, 4)).expand(-1, 3, -1, -1).contiguous(), name="colour")
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
    noise = ImageSet(torch.rand((2000, *mnist.holdout.shape), generator=torch.Generator().manual_seed(0)))
    assert fid(members, holdout) < fid(members, extractor(noise)) / 50


# ---------------------------------------------------------------- the feature cache


@pytest.fixture
def feature_cache(monkeypatch, tmp_path):
    """A private user cache; returns the folder where feature entries go."""
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / features.FEATURE_CACHE_KIND


def _count_forwards(extractor):
    """A list that grows by one for every forward pass of the extractor's network."""
    calls = []
    extractor.module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _copy(images, name=None):
    """The same pixels in a new ImageSet and a new tensor (nothing memoised)."""
    return features.ImageSet(images.x.clone(), None if images.y is None else images.y.clone(),
                             images.num_classes, name or images.name, images.source)


def test_cached_extractor_is_a_drop_in(digits):
    extractor = load_extractor(digits)
    cached = extractor.cached()
    assert isinstance(cached, features.CachedExtractor)
    assert (cached.name, cached.dim, cached.sha256) == (extractor.name, extractor.dim, extractor.sha256)
    assert cached.describe() == extractor.describe()
    assert cached.module is extractor.module and cached.batch_size == extractor.batch_size
    assert features.CachedExtractor(cached).extractor is extractor  # not cached twice


def test_a_second_call_reads_the_cache_and_runs_no_network(digits, feature_cache):
    extractor = load_extractor(digits)
    direct = extractor(digits.holdout)
    cached = features.CachedExtractor(extractor)
    calls = _count_forwards(extractor)
    first = cached(digits.holdout)
    assert calls and cached.misses == 1 and cached.hits == 0
    assert torch.equal(first, direct)
    entries = list(feature_cache.glob("*.pt"))
    assert len(entries) == 1 and entries[0].name.startswith("lenet-digits-")
    assert entries[0] == cached.entry_path(digits.holdout)
    calls.clear()
    for images in (digits.holdout, _copy(digits.holdout, "another name")):  # same pixels, new objects
        again = cached(images)
        assert not calls and torch.equal(again, direct) and again.dtype == torch.float32
    # another wrapper, as the next audit builds: the same entry
    assert torch.equal(features.CachedExtractor(load_extractor(digits))(digits.holdout), direct)
    assert not calls and cached.hits == 2


def test_labels_do_not_matter_but_every_pixel_does(digits, feature_cache):
    cached = load_extractor(digits).cached()
    holdout = digits.holdout
    cached(holdout)
    unlabelled = features.ImageSet(holdout.x.clone(), name="unlabelled")
    assert cached.entry_path(unlabelled) == cached.entry_path(holdout)
    one_pixel = _copy(holdout)
    one_pixel.x[17, 0, 3, 4] += 1 / 255
    tiny = _copy(holdout)  # the same uint8 fingerprint, other float pixels
    tiny.x[0, 0, 0, 0] += 1e-4
    assert tiny.fingerprint() == holdout.fingerprint()
    paths = {cached.entry_path(s) for s in (holdout, one_pixel, tiny, holdout.subset(range(359)))}
    assert len(paths) == 4
    calls = _count_forwards(cached.extractor)
    f = cached(one_pixel)
    assert calls and torch.equal(f, cached.extractor(one_pixel))


def test_a_tensor_changed_in_place_is_hashed_again(digits, feature_cache):
    cached = load_extractor(digits).cached()
    images = _copy(digits.holdout)
    before = cached(images)
    images.x[5].mul_(0.5)
    calls = _count_forwards(cached.extractor)
    after = cached(images)
    assert calls and not torch.equal(before, after)
    assert torch.equal(after, cached.extractor(images))


def test_another_extractor_batch_size_or_device_misses(digits, feature_cache):
    extractor = load_extractor(digits)
    cached = extractor.cached()
    cached(digits.holdout)
    other_weights = features.FeatureExtractor(
        extractor.module, name=extractor.name, dim=extractor.dim, sha256="0" * 64, device=extractor.device)
    other_batch = features.FeatureExtractor(
        extractor.module, name=extractor.name, dim=extractor.dim, sha256=extractor.sha256,
        device=extractor.device, batch_size=100)
    calls = _count_forwards(extractor)
    for other in (other_weights, other_batch):
        calls.clear()
        f = other.cached()(digits.holdout)
        assert calls and torch.equal(f, other(digits.holdout))
    assert len(list(feature_cache.glob("*.pt"))) == 3
    on_gpu = features.FeatureExtractor(
        extractor.module, name=extractor.name, dim=extractor.dim, sha256=extractor.sha256, device=extractor.device)
    on_gpu.device = torch.device("cuda", 1)  # only the key is computed: no GPU needed
    assert on_gpu.cached().entry_path(digits.holdout) != cached.entry_path(digits.holdout)


@pytest.mark.parametrize("bad", ["garbage", "rows", "dim", "dtype", "not a dict", "pickled"])
def test_a_bad_entry_is_recomputed_and_overwritten(digits, feature_cache, bad):
    import pickle

    cached = load_extractor(digits).cached()
    expected = cached.extractor(digits.holdout)
    path = cached.entry_path(digits.holdout)
    path.parent.mkdir(parents=True)
    if bad == "garbage":
        path.write_bytes(b"not a torch file")
    elif bad == "pickled":
        torch.save({"features": _Boom()}, path, pickle_module=pickle)
    else:
        stored = {"rows": expected[:-1], "dim": expected[:, :-1], "dtype": expected.double(),
                  "not a dict": expected}
        torch.save(stored[bad] if bad == "not a dict" else {"features": stored[bad]}, path)
    calls = _count_forwards(cached.extractor)
    f = cached(digits.holdout)
    assert calls and cached.misses == 1 and torch.equal(f, expected)
    entry = torch.load(path, weights_only=True)
    assert torch.equal(entry["features"], expected)
    calls.clear()
    assert torch.equal(cached(digits.holdout), expected) and not calls


class _Boom:
    """Unpickling this would run code: the feature cache must refuse it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled')",))


def test_entries_are_read_weights_only(digits, feature_cache, monkeypatch):
    cached = load_extractor(digits).cached()
    cached(digits.holdout)
    loads = []
    real = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    cached(digits.holdout)
    assert loads == [True] and cached.hits == 1


def test_the_shipped_cache_is_not_read_for_features(digits, feature_cache, monkeypatch, tmp_path):
    from dpaudit import cache

    cached = load_extractor(digits).cached()
    path = cached.entry_path(digits.holdout)
    name = cache.shipped_name(path)
    shipped = tmp_path / "shipped"
    (shipped / name).parent.mkdir(parents=True)
    data = cache.save_entry(shipped / name, {"features": torch.zeros(len(digits.holdout), 84)})
    (shipped / "index.json").write_text(json.dumps({"entries": {name: {"sha256": features.file_sha256(data)}}}))
    monkeypatch.setattr(cache, "SHIPPED_DIR", shipped)
    monkeypatch.setattr(cache, "SHIPPED_INDEX", shipped / "index.json")
    assert cache.load_entry(path) is not None  # it is a valid shipped entry ...
    f = cached(digits.holdout)
    assert cached.misses == 1 and torch.equal(f, cached.extractor(digits.holdout))  # ... and ignored


def test_an_empty_set_is_not_cached(digits, feature_cache):
    cached = load_extractor(digits).cached()
    f = cached(digits.holdout.subset([]))
    assert f.shape == (0, 84) and not feature_cache.exists()


def test_an_unwritable_cache_warns_and_returns_the_features(digits, feature_cache, monkeypatch):
    cached = load_extractor(digits).cached()

    def full_disk(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(features, "save_entry", full_disk)
    with pytest.warns(UserWarning, match="could not cache the features of digits-holdout"):
        f = cached(digits.holdout)
    assert torch.equal(f, cached.extractor(digits.holdout))


def test_a_memory_mapped_set_and_the_same_set_in_memory_share_their_features(digits, tmp_path):
    x = (digits.holdout.x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "stored.npz", x=x)
    np.savez_compressed(tmp_path / "compressed.npz", x=x)
    mapped, read = load_images(tmp_path / "stored.npz"), load_images(tmp_path / "compressed.npz")
    assert mapped.pixels.memory_mapped and not read.pixels.memory_mapped
    assert features.pixel_digest(mapped) == features.pixel_digest(read)  # one feature-cache entry
    assert features.pixel_digest(mapped) != features.pixel_digest(ImageSet(read.x))  # float32 pixels: another
    extractor = load_extractor(digits)
    assert torch.equal(extractor(mapped), extractor(read))
