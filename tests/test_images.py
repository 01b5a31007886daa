"""ImageSet readers and writers: round trips, formats, and every bad input the issue lists."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from dpaudit.errors import DpauditError
from dpaudit.images import (
    ImageSet,
    from_array,
    load_images,
    read_idx,
    save_images,
    to_uint8,
)


def _random_set(n=12, channels=1, size=8, labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n) if labelled else None
    return from_array(pixels, labels, name="t", source="test", num_classes=3 if labelled else None)


@pytest.mark.parametrize("fmt", ["png", "npz"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_is_exact(tmp_path, fmt, channels):
    images = _random_set(channels=channels)
    save_images(images, tmp_path / "out", fmt)
    back = load_images(tmp_path / "out")
    assert torch.equal(to_uint8(back.x), to_uint8(images.x))
    assert torch.equal(back.y, images.y)
    assert back.fingerprint() == images.fingerprint()


def test_png_folder_from_a_third_party_reads_every_class(tmp_path):
    for label, value in ((3, 10), (1, 20), (1, 30)):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / str(label) / f"{value}.png")
    images = load_images(tmp_path)
    assert images.y.tolist() == [3, 1, 1]
    assert (images.x[:, 0, 0, 0] * 255).round().tolist() == [10, 20, 30]


def test_flat_folder_with_labels_csv(tmp_path):
    for i, value in enumerate([0, 128, 255]):
        Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "labels.csv").write_text("file,label\nimg0.png,2\nimg1.png,0\nimg2.png,1\n")
    images = load_images(tmp_path)
    assert images.y.tolist() == [2, 0, 1]
    assert images.x[:, 0, 0, 0].tolist() == pytest.approx([0, 128 / 255, 1])


def test_flat_folder_without_labels(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    images = load_images(tmp_path)
    assert images.y is None and images.shape == (3, 4, 4)


@pytest.mark.parametrize(
    "array, expected_shape",
    [
        (np.zeros((2, 5, 6), np.uint8), (1, 5, 6)),  # N x H x W
        (np.zeros((2, 5, 6, 3), np.uint8), (3, 5, 6)),  # HWC
        (np.zeros((2, 3, 5, 6), np.float32), (3, 5, 6)),  # CHW float
        (np.zeros((2, 1, 5, 6), np.float64), (1, 5, 6)),
    ],
)
def test_layouts_and_dtypes(array, expected_shape):
    assert from_array(array, name="a", source="a").shape == expected_shape


def test_float_in_0_255_is_scaled():
    images = from_array(np.full((1, 2, 2), 51.0), name="a", source="a")
    assert images.x.max().item() == pytest.approx(0.2)


def test_idx_plain_and_gzip(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 2, 3, 4) + data.tobytes()
    (tmp_path / "x-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as fh:
        fh.write(raw)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte"), data)
    assert np.array_equal(load_images(tmp_path / "x-idx3-ubyte.gz").x[:, 0].mul(255).round().byte().numpy(), data)


# ------------------------------------------------------------------ bad input


def _error(path_fn, match):
    with pytest.raises(DpauditError, match=match) as info:
        path_fn()
    return str(info.value)


def test_empty_folder(tmp_path):
    message = _error(lambda: load_images(tmp_path), "holds no PNG or JPEG")
    assert str(tmp_path) in message


def test_truncated_image(tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    assert "bad.png" in _error(lambda: load_images(tmp_path), "cannot read the image")


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello")
    assert "a.png" in _error(lambda: load_images(tmp_path), "cannot read the image")


def test_mixed_sizes(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    assert "b.png" in _error(lambda: load_images(tmp_path), "same size")


def test_mixed_channels(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.png")
    _error(lambda: load_images(tmp_path), "same size and channels")


def test_labels_csv_missing_label(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("a.png,1\n")
    assert "b.png" in _error(lambda: load_images(tmp_path), "no label for")


def test_labels_csv_non_integer(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,cat\n")
    assert "labels.csv" in _error(lambda: load_images(tmp_path), "not an integer")


def test_class_folder_not_an_integer(tmp_path):
    (tmp_path / "cats").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "cats" / "a.png")
    assert "cats" in _error(lambda: load_images(tmp_path), "integer labels")


def test_labels_out_of_range(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 7]))
    assert "a.npz" in _error(lambda: load_images(tmp_path / "a.npz", num_classes=3), r"outside 0\.\.2")


def test_negative_or_fractional_labels(tmp_path):
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, -1]))
    np.savez(tmp_path / "frac.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 0.5]))
    _error(lambda: load_images(tmp_path / "neg.npz"), "outside")
    _error(lambda: load_images(tmp_path / "frac.npz"), "must be integers")


def test_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1]))
    _error(lambda: load_images(tmp_path / "a.npz"), "expected 3 labels")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_pixels(tmp_path, bad):
    x = np.zeros((2, 4, 4), np.float32)
    x[1, 2, 2] = bad
    np.savez(tmp_path / "a.npz", x=x)
    assert "a.npz" in _error(lambda: load_images(tmp_path / "a.npz"), "NaN or infinity")


def test_out_of_range_pixels(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.full((2, 4, 4), 300.0))
    np.savez(tmp_path / "b.npz", x=np.full((2, 4, 4), -0.5))
    _error(lambda: load_images(tmp_path / "a.npz"), "outside")
    _error(lambda: load_images(tmp_path / "b.npz"), "outside")


def test_npz_with_object_array_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((4, 4)), "payload"
    np.savez(tmp_path / "evil.npz", x=x)
    assert "evil.npz" in _error(lambda: load_images(tmp_path / "evil.npz"), "refused")
    assert calls == []


def test_npz_without_x(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4)))
    _error(lambda: load_images(tmp_path / "a.npz"), "no array named 'x'")


def test_corrupt_npz(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"PK\x03\x04garbage")
    _error(lambda: load_images(tmp_path / "a.npz"), "cannot read the .npz")


def test_decompression_bomb(tmp_path, monkeypatch):
    import dpaudit.images as images_module

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert "big.png" in _error(lambda: load_images(tmp_path), "limit")


def test_bad_idx(tmp_path):
    (tmp_path / "a-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    (tmp_path / "b-idx3-ubyte").write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 2, 3, 4) + b"\x00" * 5)
    _error(lambda: read_idx(tmp_path / "a-idx3-ubyte"), "bad magic")
    _error(lambda: read_idx(tmp_path / "b-idx3-ubyte"), "promises 24")


def test_missing_path(tmp_path):
    _error(lambda: load_images(tmp_path / "nope"), "no such file")


def test_imageset_rejects_wrong_types():
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2))
