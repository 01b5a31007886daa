"""ImageSet readers and writers: round trips, formats, and every bad input the issue lists."""

import gzip
import io
import math
import struct
import zipfile
import zlib
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dpaudit.errors import DpauditError
from dpaudit.images import (
    DEFAULT_MEMORY_BUDGET,
    ImageSet,
    from_array,
    load_images,
    memory_budget,
    quote_path,
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


# ------------------------------------------------------------------ hostile and odd input
# Known answers for the reliability issue: memory bombs, silent reinterpretation, the true
# cause of a failure, file names that try to forge lines.


def _npy_header(shape, descr="|u1") -> bytes:
    """A .npy header alone, for an array whose data is never written."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def _npy(array, version=None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def _npz(path, compression=zipfile.ZIP_STORED, **members) -> Path:
    """An .npz written member by member: `x=bytes` becomes the member x.npy, `x_=bytes` the
    member named exactly x."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name[:-1] if name.endswith("_") else name + ".npy", data)
    return path


def _savez(path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _write(path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _gz(path, data: bytes) -> Path:
    return _write(path, gzip.compress(data, mtime=0))


def _idx_bytes(dims, data=b"") -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data


def _png(path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pngs(folder, *names, array=None) -> Path:
    for name in names:
        _png(folder / name, np.zeros((4, 4), np.uint8) if array is None else array)
    return folder


def _flat(tmp, csv_text: bytes, names=("a.png", "b.png")):
    folder = _pngs(tmp / "set", *names)
    return folder, _write(folder / "labels.csv", csv_text)


def _patched(path, old: bytes, new: bytes) -> Path:
    return _write(path, path.read_bytes().replace(old, new, 1))


def _reserved_deflate_block(gz: bytes) -> bytes:
    """A gzip file whose first deflate block has the reserved type 3 (its 10-byte header kept)."""
    return gz[:10] + b"\x07" + gz[11:]


def _zeros_npz_by_hand(path, shape) -> Path:
    """An .npz of uint8 zeros of `shape` written without deflating every byte. Hand-written
    (zipfile would compress all of them, seconds for 2 GB): after a full flush deflate writes
    the same block for the same 16 MiB of zeros, so that block is repeated."""
    header, count, chunk = _npy_header(shape), math.prod(shape), 1 << 24
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)]
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(count, chunk)
    parts += [block] * full + [comp.compress(bytes(rest)) + comp.flush()]
    crc, zeros = zlib.crc32(header), bytes(chunk)
    for _ in range(full):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    data, name, size = b"".join(parts), b"x.npy", len(header) + count
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0
    )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), len(local) + len(name) + len(data), 0)
    return _write(path, local + name + data + central + name + end)


def _zip_bomb(t):
    path = _zeros_npz_by_hand(t / "zipbomb.npz", (2_500_000, 28, 28))
    assert path.stat().st_size < 3 * 2**20  # about 2 MB on disk, 9 GiB to read
    return path


def _rgb_three_rows(tmp):
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)  # 3 rows, 5 columns, RGB
    return _png(tmp / "set" / "a.png", pixels).parent, pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255


def _mode_i(path, values) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path, format="TIFF")  # PNG cannot hold mode I; Pillow opens this as I
    return path


_U8 = np.zeros((2, 4, 4), np.uint8)

# build(tmp) -> the path to load, or (path, the name the message must hold); a regex the
# message must match; DPAUDIT_MEMORY_BUDGET for the case; whether reading .npy data is a failure.
Case = namedtuple("Case", "build match budget no_reads", defaults=(None, False))
BAD_INPUTS = {
    # 1. memory bombs and headers that lie
    "npz-header-claims-1e9-images": Case(
        lambda t: _npz(t / "bomb.npz", zipfile.ZIP_DEFLATED, x=_npy_header((10**9, 28, 28)) + bytes(200)),
        r"claims shape \(1000000000, 28, 28\) of uint8, which needs 3.6 TiB.*budget of 8 GiB.*header is wrong",
        no_reads=True,
    ),
    # stored (np.savez): 8-bit images are memory-mapped, so no budget applies; the lie is caught
    "npz-stored-header-claims-1e9-images": Case(
        lambda t: _npz(t / "bomb.npz", x=_npy_header((10**9, 28, 28)) + bytes(200)),
        r"array 'x' holds 200 data bytes, its header promises 784000000000 .*truncated or corrupt",
        no_reads=True,
    ),
    "npz-2MB-deflates-to-2.5M-images": Case(
        _zip_bomb, r"claims shape \(2500000, 28, 28\).*needs 9.1 GiB.*budget of 8 GiB; set DPAUDIT_MEMORY_BUDGET", no_reads=True
    ),
    "npz-over-a-small-budget": Case(
        lambda t: _savez(t / "small.npz", x=np.zeros((10, 8, 8), np.float32)), r"needs 5 KiB.*budget of 1 KiB", "1K"
    ),
    "npz-y-claims-1e12-labels": Case(
        lambda t: _npz(t / "y.npz", x=_npy(_U8), y=_npy_header((10**12,), "<i8")),
        r"array 'y' claims shape \(1000000000000,\)",
        no_reads=True,
    ),
    "npz-header-longer-than-data": Case(
        lambda t: _npz(t / "short.npz", x=_npy_header((10, 4, 4)) + bytes(50)),
        r"holds 50 data bytes, its header promises 160 .*truncated",
        no_reads=True,
    ),
    "npz-data-longer-than-header": Case(
        lambda t: _npz(t / "long.npz", x=_npy(np.zeros((10, 4, 4), np.uint8)) + bytes(10)),
        r"holds 170 data bytes, its header promises 160",
    ),
    "npz-negative-shape": Case(lambda t: _npz(t / "neg.npz", x=_npy_header((-3, 4, 4))), r"impossible shape \(-3, 4, 4\)"),
    "idx-header-claims-1e9-images": Case(
        lambda t: _write(t / "bomb-idx3-ubyte", _idx_bytes((10**9, 28, 28), bytes(100))),
        r"claims shape \(1000000000, 28, 28\).*budget of 8 GiB; the file holds only 100 data bytes",
    ),
    "idx-gz-header-claims-1e9-images": Case(
        lambda t: _gz(t / "bomb-idx3-ubyte.gz", _idx_bytes((10**9, 28, 28), bytes(100))),
        r"claims shape \(1000000000, 28, 28\).*budget of 8 GiB",
    ),
    "idx-gz-more-data-than-header": Case(
        lambda t: _gz(t / "more-idx3-ubyte.gz", _idx_bytes((2, 3, 4), bytes(10**6))),
        r"holds more than the 24 data bytes its header promises",
    ),
    "idx-gz-truncated-data": Case(
        lambda t: _gz(t / "cut-idx3-ubyte.gz", _idx_bytes((2, 3, 4), bytes(10))), r"holds 10 data bytes, its header promises 24"
    ),
    "idx-dims-overflow-int64": Case(
        lambda t: _write(t / "wrap-idx4-ubyte", _idx_bytes((2**32 - 1,) * 4, bytes(16))),
        r"claims shape \(4294967295, 4294967295, 4294967295, 4294967295\)",
    ),
    "idx-zero-beside-huge-dims": Case(
        lambda t: _write(t / "zero-idx3-ubyte", _idx_bytes((0, 2**32 - 1, 2**32 - 1))), r"numpy cannot hold the IDX shape \(0, 4294967295"
    ),
    "idx-100-dimensions": Case(lambda t: _write(t / "deep-idx", _idx_bytes((1,) * 100, b"\x00")), r"numpy cannot hold the IDX shape"),
    "idx-255-huge-dimensions": Case(
        lambda t: _write(t / "wide-idx", _idx_bytes((2**32 - 1,) * 255)), r"claims shape \(4294967295, 4294967295, 4294967295, 4294967295, \.\.\.: 255 dimensions\) of uint8, which needs about 2\^8162 bytes"
    ),
    "idx-over-a-small-budget": Case(
        lambda t: _write(t / "s-idx3-ubyte", _idx_bytes((2, 3, 4), bytes(24))), r"needs 120 bytes.*budget of 100 bytes", "100"
    ),
    "folder-over-a-small-budget": Case(
        lambda t: _pngs(t / "set", *(f"{i}.png" for i in range(5)), array=np.zeros((8, 8), np.uint8)),
        r"5 images of 8x8x1 like 0\.png.*budget of 1 KiB",
        "1K",
    ),
    "bad-budget-variable": Case(
        lambda t: (_savez(t / "ok.npz", x=_U8), "DPAUDIT_MEMORY_BUDGET"), r"DPAUDIT_MEMORY_BUDGET='lots' is not a positive size", "lots"
    ),
    # 2. wrong data that was accepted, or reinterpreted
    "float-1.5-among-fractions": Case(
        lambda t: _savez(t / "f.npz", x=np.where(np.arange(80).reshape(5, 4, 4) == 55, 1.5, 0.25)),
        r"float pixels must lie in \[0, 1\]; found max 1\.5 at image 3,",
    ),
    "float-2-among-fractions": Case(
        lambda t: _savez(t / "g.npz", x=np.array([[[0.5, 2.0]], [[0.1, 0.2]]])), r"found max 2 at image 0, and fractional values rule out"
    ),
    "float-negative": Case(lambda t: _savez(t / "n.npz", x=np.array([[[0.5]], [[-0.25]]])), r"found min -0\.25 at image 1, outside \[0, 1\]"),
    "integer-over-255": Case(
        lambda t: _savez(t / "i.npz", x=np.array([[[1, 2]], [[3, 300]]])), r"integer pixels must lie in 0\.\.255.*found max 300 at image 1"
    ),
    "images-without-pixels": Case(lambda t: _savez(t / "e.npz", x=np.zeros((2, 0, 5), np.uint8)), r"the images have no pixels"),
    "class-folders-and-loose-images": Case(
        lambda t: _pngs(t / "set", "0/a.png", "stray.png", "z.jpg"),
        r"holds class sub-folders and also 2 loose image\(s\) at the top \(stray\.png, z\.jpg\)",
    ),
    "two-class-folders-one-label": Case(lambda t: (_pngs(t / "set", "1/a.png", "01/b.png"), "01"), r"names label 1, as 01 does"),
    "class-folder-superscript-digit": Case(lambda t: (_pngs(t / "set", "\u00b2/a.png"), "\u00b2"), r"named by integer labels"),
    "8-and-16-bit-in-one-folder": Case(
        lambda t: (_png(_pngs(t / "set", "a.png") / "b.png", np.zeros((4, 4), np.uint16)).parent, "b.png"),
        r"16-bit pixels, but .*a\.png has 8-bit ones",
    ),
    "32-bit-image-beyond-16-bits": Case(
        lambda t: (_mode_i(t / "set" / "wide.png", np.array([[0, 70000]], np.int32)).parent, "wide.png"), r"outside the 16-bit range"
    ),
    "labels-csv-conflicting-duplicate": Case(
        lambda t: _flat(t, b"a.png,0\nb.png,1\na.png,2\n"), r"line 3 labels a\.png 2, an earlier line labels it 0"
    ),
    "labels-csv-not-utf8": Case(lambda t: _flat(t, b"a.png,0\nb\xff.png,1\n"), r"not UTF-8 text \(it holds the byte 0xff\)"),
    "labels-csv-field-too-large": Case(lambda t: _flat(t, b'"' + b"a" * 200_000 + b'",1\n'), r"line 1 is not valid CSV"),
    "labels-csv-line-number-without-header": Case(lambda t: _flat(t, b"a.png,cat\n"), r"line 1: label 'cat' is not an integer"),
    # 3. the true cause of a failure
    "text-file-named-npz": Case(lambda t: _write(t / "notes.npz", b"x,y\n1,2\n"), r"not a zip archive"),
    "npy-file-named-npz": Case(lambda t: _write(t / "single.npz", _npy(_U8)), r"a single \.npy array, not an \.npz archive"),
    "npz-member-not-npy": Case(lambda t: _npz(t / "m.npz", x=b"just text"), r"member 'x\.npy' is not a \.npy array"),
    "npz-member-x-without-suffix": Case(lambda t: _npz(t / "raw.npz", x_=bytes(64)), r"member 'x' is not a \.npy array"),
    "npz-object-dtype": Case(
        lambda t: _npz(t / "obj.npz", x=_npy(np.array([None, 1], object))),
        r"dtype object, which would need unpickling; refused",
        no_reads=True,
    ),
    "npz-missing-x": Case(lambda t: _savez(t / "nox.npz", images=_U8), r"no array named 'x' \(found \['images'\]\)"),
    "npz-two-members-named-x": Case(
        lambda t: _write(t / "twice.npz", _npz(t / "a.npz", x=_npy(_U8), a=_npy(_U8)).read_bytes().replace(b"a.npy", b"x.npy")),
        r"holds 2 members named 'x\.npy'",
    ),
    "npz-format-3": Case(lambda t: _npz(t / "v3.npz", x=_npy(_U8, (3, 0))), r"\.npy format 3\.0; dpaudit reads 1\.0 and 2\.0"),
    "npz-malformed-header": Case(
        lambda t: _npz(t / "mal.npz", x=b"\x93NUMPY\x01\x00\x10\x00{'descr': '''  \n"), r"malformed \.npy header"
    ),
    "npz-bad-crc": Case(lambda t: _patched(_npz(t / "crc.npz", x=_npy(_U8)), bytes(32), b"\x01" * 32), r"cannot read the \.npz \(Bad CRC-32"),
    "npz-unknown-compression": Case(
        # compression method 99 (AES) in the local and the central header
        lambda t: _patched(
            _patched(_npz(t / "c99.npz", x=_npy(_U8)), b"PK\x03\x04\x14\x00\x00\x00\x00\x00", b"PK\x03\x04\x14\x00\x00\x00\x63\x00"),
            b"\x14\x00\x00\x00\x00\x00", b"\x14\x00\x00\x00\x63\x00",
        ),
        r"cannot read the \.npz \(.*compression",
    ),
    "idx-gz-corrupt-stream": Case(
        lambda t: _write(t / "z-idx3-ubyte.gz", _reserved_deflate_block(gzip.compress(_idx_bytes((2, 3, 4), bytes(24))))),
        r"cannot read the IDX file \(Error -3 while decompressing data: invalid block type\)",
    ),
    # 4. names that try to forge a line
    "newline-in-image-name": Case(
        lambda t: (_write(t / "set" / "x\nError: all good.png", b"no").parent, "x\nError: all good.png"),
        r"x\\nError: all good\.png: cannot read the image",
    ),
    "escape-in-missing-path": Case(lambda t: t / "gone\x1b[2K", r"gone\\x1b\[2K: no such file"),
    "carriage-return-in-missing-label": Case(
        lambda t: (_flat(t, b"a.png,0\n", ("a.png", "b\r.png"))[0], "b\r.png"), r"no label for b\\r\.png"
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_sentence_naming_the_file(tmp_path, monkeypatch, case):
    build, match, budget, no_reads = BAD_INPUTS[case]
    if budget is None:
        monkeypatch.delenv("DPAUDIT_MEMORY_BUDGET", raising=False)
    else:
        monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", budget)
    built = build(tmp_path)
    path, named = built if isinstance(built, tuple) else (built, built)
    if no_reads:  # the headers alone must stop the read
        monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("array data was read"))
    with pytest.raises(DpauditError, match=match) as info:
        load_images(path)
    message = str(info.value)
    assert quote_path(named) in message, message
    assert "\n" not in message and "\r" not in message and message.endswith("."), message


def _png16(tmp):
    values = np.array([[0, 1, 255], [256, 40000, 65535]], np.uint16)
    return _png(tmp / "set" / "a.png", values).parent, values.astype(np.float32)[None, None] / 65535


def _image_mode_i(tmp):
    values = np.array([[0, 300], [65535, 7]], np.int32)
    return _mode_i(tmp / "set" / "a.png", values).parent, values.astype(np.float32)[None, None] / 65535


def _uint16_npz(tmp):
    values = np.array([[[0, 1000], [65535, 3]]], np.uint16)
    return _savez(tmp / "u16.npz", x=values), values.astype(np.float32)[:, None] / 65535


def _whole_floats(tmp):
    path = _savez(tmp / "w.npz", x=np.array([[[0.0, 51.0], [255.0, 2.0]]]))
    return path, np.array([[[[0, 51], [255, 2]]]], np.float32) / 255


def _csv_with_bom_and_repeat(tmp):
    folder, _ = _flat(tmp, b"\xef\xbb\xbffile,label\na.png,1\nb.png,0\na.png,1\n")
    return folder, np.zeros((2, 1, 4, 4), np.float32)


# Odd inputs that read: build(tmp) -> (path, the pixels it must read as), and its labels.
GOOD_INPUTS = {
    "16-bit-png": (_png16, None),
    "mode-I-image": (_image_mode_i, None),
    "uint16-npz": (_uint16_npz, None),
    "float-whole-numbers-0..255": (_whole_floats, None),
    "rgb-image-3-pixels-tall": (_rgb_three_rows, None),
    "labels-csv-with-bom-and-repeat": (_csv_with_bom_and_repeat, [1, 0]),
}


@pytest.mark.parametrize("case", list(GOOD_INPUTS))
def test_odd_input_reads_with_its_real_values(tmp_path, monkeypatch, case):
    monkeypatch.delenv("DPAUDIT_MEMORY_BUDGET", raising=False)
    build, labels = GOOD_INPUTS[case]
    path, expected = build(tmp_path)
    images = load_images(path)
    assert torch.equal(images.x, torch.from_numpy(expected))
    assert (images.y is None and labels is None) or images.y.tolist() == labels


def test_the_zip_bomb_helper_writes_a_real_npz(tmp_path):
    """The hand-written archive of the 2 MB bomb, at a small size, is an .npz numpy reads."""
    path = _zeros_npz_by_hand(tmp_path / "small.npz", (3, 28, 28))
    with np.load(path) as data:
        assert data["x"].shape == (3, 28, 28) and not data["x"].any()
    assert load_images(path).shape == (1, 28, 28)


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, DEFAULT_MEMORY_BUDGET),
        ("4G", 4 * 2**30),
        ("4GiB", 4 * 2**30),
        (" 512m ", 512 * 2**20),
        ("1.5K", 1536),
        ("123456789", 123456789),
        ("100b", 100),
        ("9" * 400, int("9" * 400)),
    ],
)
def test_memory_budget_values(monkeypatch, text, expected):
    if text is None:
        monkeypatch.delenv("DPAUDIT_MEMORY_BUDGET", raising=False)
    else:
        monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", text)
    assert memory_budget() == expected


@pytest.mark.parametrize("text", ["0", "-5", "4X", "1e9", "G", "4 G B"])
def test_memory_budget_bad_values(monkeypatch, text):
    monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", text)
    with pytest.raises(DpauditError, match=r"^DPAUDIT_MEMORY_BUDGET=.* is not a positive size"):
        memory_budget()


def test_a_set_exactly_at_the_budget_reads(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "a.npz", x=np.zeros((4, 8, 8), np.uint8))  # read, not mapped
    monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", str(4 * 64 * 5))  # 1 byte as stored, 4 as float32
    assert len(load_images(tmp_path / "a.npz")) == 4
    monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", str(4 * 64 * 5 - 1))
    with pytest.raises(DpauditError, match="memory budget"):
        load_images(tmp_path / "a.npz")


@pytest.mark.parametrize(
    "name, quoted",
    [
        ("plain name.png", "plain name.png"),
        ("a\nb", "a\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("right\u202eleft", "right\\u202eleft"),
        ("bad\udcffbyte", "bad\\udcffbyte"),
        ("ünïcode ok", "ünïcode ok"),
        (Path("dir") / "x\ry.png", "dir/x\\ry.png"),
        (b"raw\nbytes", "raw\\nbytes"),
    ],
)
def test_quote_path(name, quoted):
    assert quote_path(name) == quoted


# ---------------------------------------------------------------- memory-mapped sets


def _rgb_set(n=20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(n, 6, 5, 3), dtype=np.uint8), rng.integers(0, 4, size=n)


def test_an_uncompressed_npz_of_8_bit_images_is_memory_mapped_and_reads_as_the_compressed_one(tmp_path):
    x, y = _rgb_set()
    np.savez(tmp_path / "stored.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "compressed.npz", x=x, y=y)
    mapped, read = load_images(tmp_path / "stored.npz"), load_images(tmp_path / "compressed.npz")
    assert mapped.pixels.memory_mapped and not read.pixels.memory_mapped
    assert read.pixels.data.dtype == torch.uint8  # 8-bit stays 8-bit in memory too
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(mapped.x, want) and torch.equal(read.x, want)
    assert torch.equal(mapped.y, read.y) and mapped.fingerprint() == read.fingerprint()
    assert torch.equal(mapped.subset([4, 1]).x, want[[4, 1]])


def test_a_memory_mapped_set_needs_no_memory_budget(tmp_path, monkeypatch):
    x, y = _rgb_set()
    np.savez(tmp_path / "stored.npz", x=x, y=y)
    monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", str(y.nbytes))  # the labels fit, the images would not
    assert len(load_images(tmp_path / "stored.npz")) == 20
    np.savez_compressed(tmp_path / "compressed.npz", x=x, y=y)
    with pytest.raises(DpauditError, match="memory budget"):
        load_images(tmp_path / "compressed.npz")


def test_npy_images_are_memory_mapped_when_8_bit_in_c_order_and_read_otherwise(tmp_path):
    x, _ = _rgb_set()
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    np.save(tmp_path / "u8.npy", x)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x))
    np.save(tmp_path / "float.npy", x.astype(np.float32) / 255)
    for name, mapped in (("u8", True), ("fortran", False), ("float", False)):
        images = load_images(tmp_path / f"{name}.npy")
        assert images.pixels.memory_mapped == mapped, name
        assert torch.allclose(images.x, want, atol=1e-7) and not images.has_labels, name


def test_bad_npy_files_are_one_sentence_errors(tmp_path):
    np.save(tmp_path / "cut.npy", np.zeros((10, 4, 4), np.uint8))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-20])
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not an array")
    for name, match in (("cut", "holds 140 data bytes, its header promises 160"), ("objects", "dtype object"),
                        ("text", "not a .npy array")):
        with pytest.raises(DpauditError, match=match) as info:
            load_images(tmp_path / f"{name}.npy")
        assert f"{name}.npy" in str(info.value)
