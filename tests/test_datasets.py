"""Built-in datasets, their discovery, checksums and the seeded member/holdout splits."""

import gzip
import shutil

import numpy as np
import pytest

from dpaudit.datasets import (
    available,
    load_official,
    load_split,
    load_split_by_id,
    locate,
    reference_from_folders,
    split_id,
    split_indices,
)
from dpaudit.errors import DpauditError
from dpaudit.images import save_images


def test_digits_split_sizes_and_disjointness(digits):
    assert (len(digits.members), len(digits.holdout), len(digits.test)) == (1077, 360, 360)
    train, _ = load_official("digits")
    member_idx, holdout_idx = split_indices(len(train), 1077, 360, seed=0)
    assert not set(member_idx) & set(holdout_idx)
    assert np.array_equal(digits.members.x.numpy(), train.x[member_idx].numpy())
    assert digits.split_id == split_id("digits", 0, member_idx, 360)


def test_split_is_random_not_first_n_and_depends_on_seed():
    a, _ = split_indices(1000, 500, 100, seed=0)
    b, _ = split_indices(1000, 500, 100, seed=1)
    assert not np.array_equal(a, np.arange(500))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, split_indices(1000, 500, 100, seed=0)[0])


def test_split_id_names_dataset_seed_sizes_and_members():
    sid = load_split("digits", seed=3, n_members=100, n_holdout=50).split_id
    assert sid.startswith("digits:s3:m100:h50:")
    assert sid != load_split("digits", seed=4, n_members=100, n_holdout=50).split_id


def test_split_too_large():
    with pytest.raises(DpauditError, match="exceed the 1437 training images"):
        load_split("digits", n_members=1400, n_holdout=100)


def test_unknown_dataset():
    with pytest.raises(DpauditError, match="unknown dataset 'nope'"):
        load_split("nope")


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DPAUDIT_DATA", raising=False)
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    monkeypatch.setattr("dpaudit.datasets.DEBIAN_FASHION_MNIST", tmp_path / "none")
    with pytest.raises(DpauditError, match="DPAUDIT_DATA.*--download"):
        load_official("fashion-mnist")
    rows = {r["name"]: r for r in available()}
    assert rows["digits"]["found"] and not rows["mnist"]["found"]


@pytest.mark.mnist
def test_mnist_found_through_data_root_and_checksummed(tmp_path, monkeypatch):
    source, _ = locate("mnist")
    monkeypatch.delenv("DPAUDIT_DATA", raising=False)
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))
    assert locate("mnist") is None
    root = tmp_path / "root"
    shutil.copytree(source, root / "mnist")
    assert locate("mnist", root) == (root / "mnist", "--data-root")
    train, test = load_official("mnist", root)
    assert train.x.shape == (60000, 1, 28, 28) and len(test) == 10000
    # A corrupted file is refused with its name.
    bad = tmp_path / "bad" / "mnist"
    shutil.copytree(source, bad)
    with gzip.open(bad / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        content = bytearray(fh.read())
    content[100] = (content[100] + 1) % 10
    with gzip.open(bad / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(bytes(content))
    with pytest.raises(DpauditError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_official("mnist", tmp_path / "bad")


@pytest.mark.mnist
def test_mnist_default_split(mnist):
    assert (len(mnist.members), len(mnist.holdout), len(mnist.test)) == (50000, 10000, 10000)
    assert mnist.split_id.startswith("mnist:s0:m50000:h10000:")
    assert mnist.members.y.bincount().min() > 4000


def test_reference_from_folders(tmp_path, digits):
    for role in ("members", "holdout", "test"):
        save_images(getattr(digits, role), tmp_path / role)
    ref = reference_from_folders(tmp_path / "members", tmp_path / "holdout", tmp_path / "test")
    assert ref.members.fingerprint() == digits.members.fingerprint()
    assert ref.split_id.startswith("custom:m1077:h360:")
    assert ref.members.num_classes == 10


def test_reference_from_folders_needs_labels(tmp_path, digits):
    for role in ("members", "holdout"):
        save_images(getattr(digits, role), tmp_path / role)
    unlabeled = digits.test.subset(range(len(digits.test)))
    unlabeled.y = None
    save_images(unlabeled, tmp_path / "test")
    with pytest.raises(DpauditError, match="test: the reference sets need labels"):
        reference_from_folders(tmp_path / "members", tmp_path / "holdout", tmp_path / "test")


def test_split_rebuilt_from_its_id():
    reference = load_split("digits", seed=5, n_members=700, n_holdout=300)
    again = load_split_by_id(reference.split_id)
    assert again.members.fingerprint() == reference.members.fingerprint()
    with pytest.raises(DpauditError, match="does not match"):
        load_split_by_id(reference.split_id[:-4] + "0000")
    with pytest.raises(DpauditError, match="is not of the form"):
        load_split_by_id("digits:five")
