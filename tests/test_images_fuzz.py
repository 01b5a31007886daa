"""Fuzzing the readers: random and mutated bytes in a PNG or JPEG, an .npz, IDX (plain and
.gz) and labels.csv. The only outcomes allowed are a valid ImageSet or a one-line DpauditError naming the
file; anything else (a numpy or zlib traceback, a hang, a huge allocation) fails.

Derandomized, so CI runs the same examples every time; DPAUDIT_FUZZ_EXAMPLES raises the count
for a longer local campaign.
"""

import gzip
import io
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet, load_images, quote_path, read_idx

EXAMPLES = int(os.environ.get("DPAUDIT_FUZZ_EXAMPLES", "60"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Small enough that a header claiming a large set is refused fast, large enough for the seeds.
BUDGET = "64M"


@pytest.fixture(autouse=True)
def _small_budget(monkeypatch):
    monkeypatch.setenv("DPAUDIT_MEMORY_BUDGET", BUDGET)


def _outcome(read, named: Path):
    """Run `read`; pass on a valid ImageSet or a one-line DpauditError that names `named`."""
    try:
        images = read()
    except DpauditError as e:
        message = str(e)
        assert quote_path(named) in message, message
        assert "\n" not in message and "\r" not in message, message
        return None
    assert isinstance(images, ImageSet)
    assert images.x.dtype == torch.float32 and images.x.dim() == 4 and len(images) > 0
    assert torch.isfinite(images.x).all() and images.x.min() >= 0 and images.x.max() <= 1
    if images.y is not None:
        assert images.y.dtype == torch.int64 and images.y.shape == (len(images),)
    return images


# ------------------------------------------------------------------ seeds and mutations


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


_RNG = np.random.default_rng(0)
PNG_SEEDS = [
    _png(_RNG.integers(0, 256, (6, 5), dtype=np.uint8)),
    _png(_RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)),
    _png(_RNG.integers(0, 65536, (4, 3), dtype=np.uint16)),
]
JPEG_SEEDS = [
    _jpeg(_RNG.integers(0, 256, (8, 8), dtype=np.uint8)),
    _jpeg(_RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
]
NPY_SEEDS = [
    _npy(_RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)),
    _npy(_RNG.random((2, 1, 3, 3), dtype=np.float32)),
    _npy(np.array([0, 1, 2])),
]
IDX_SEEDS = [
    _idx(_RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)),
    _idx(_RNG.random((2, 3, 3)).astype(">f4"), 0x0D),
]
CSV_SEED = b"file,label\na.png,0\nb.png,1\n"


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes flipped, set, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            del data[i:]
    return bytes(data)


def random_or_mutated(seeds: list[bytes]):
    return st.one_of(st.binary(max_size=256), mutated(seeds), st.sampled_from(seeds))


@st.composite
def png_with_valid_crcs(draw) -> bytes:
    """A PNG whose header fields and pixel data are random but whose chunk CRCs are right, so
    the decoder gets past its checksums."""
    width, height = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 5]))
    interlace = draw(st.sampled_from([0, 1, 2]))
    raw = draw(st.binary(max_size=600))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    kinds = st.sampled_from([b"PLTE", b"tRNS", b"zTXt", b"iTXt", b"tEXt", b"iCCP", b"sBIT", b"gAMA", b"pHYs", b"acTL", b"eXIf"])
    bodies = st.one_of(st.binary(max_size=24), st.binary(max_size=8).map(lambda b: b"key\x00\x00" + zlib.compress(b)))
    extra = b"".join(chunk(kind, body) for kind, body in draw(st.lists(st.tuples(kinds, bodies), max_size=3)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------ the readers


def _png_folder(data: bytes, root: Path, name: str = "a.png") -> Path:
    folder = root / "set"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return folder


@fuzz
@given(random_or_mutated(PNG_SEEDS))
def test_png_in_a_folder(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _png_folder(data, Path(tmp))
        _outcome(lambda: load_images(folder), folder)


@fuzz
@given(random_or_mutated(JPEG_SEEDS))
def test_jpeg_in_a_folder(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _png_folder(data, Path(tmp), "a.jpg")
        _outcome(lambda: load_images(folder), folder)


@fuzz
@given(png_with_valid_crcs())
def test_png_with_valid_checksums(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = _png_folder(data, Path(tmp))
        _outcome(lambda: load_images(folder), folder)


@fuzz
@given(random_or_mutated([_zip({"x.npy": s}) for s in NPY_SEEDS[:2]] + [_zip({"x.npy": NPY_SEEDS[0]}, zipfile.ZIP_STORED)]))
def test_npz_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.npz"
        path.write_bytes(data)
        _outcome(lambda: load_images(path), path)


@fuzz
@given(random_or_mutated(NPY_SEEDS), st.one_of(st.none(), random_or_mutated(NPY_SEEDS)), st.booleans())
def test_npz_with_mutated_members(x, y, compressed):
    """The archive is sound, its .npy members are not: this reaches the header checks."""
    members = {"x.npy": x} if y is None else {"x.npy": x, "y.npy": y}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.npz"
        path.write_bytes(_zip(members, zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED))
        _outcome(lambda: load_images(path), path)


@fuzz
@given(random_or_mutated(IDX_SEEDS))
def test_idx_plain(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set-idx3-ubyte"
        path.write_bytes(data)
        _outcome(lambda: load_images(path), path)
        try:
            read_idx(path)
        except DpauditError as e:
            assert quote_path(path) in str(e)


@fuzz
@given(random_or_mutated(IDX_SEEDS), st.booleans())
def test_idx_gzip(data, mutate_the_gzip):
    compressed = gzip.compress(data, mtime=0)
    if mutate_the_gzip and len(compressed) > 12:  # past the gzip header, into the stream
        i = 10 + len(data) % (len(compressed) - 10)
        compressed = compressed[:i] + bytes([compressed[i] ^ 0x5A]) + compressed[i + 1 :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set-idx3-ubyte.gz"
        path.write_bytes(compressed)
        _outcome(lambda: load_images(path), path)


@fuzz
@given(st.one_of(random_or_mutated([CSV_SEED]), st.text(max_size=80).map(str.encode)))
def test_labels_csv(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        folder.mkdir()
        for name in ("a.png", "b.png"):
            (folder / name).write_bytes(PNG_SEEDS[0])
        (folder / "labels.csv").write_bytes(data)
        _outcome(lambda: load_images(folder), folder)


NAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: "/" not in s and "\x00" not in s and s not in (".", "..")  # what a file name can hold
)


@fuzz
@given(NAMES)
def test_any_file_name_gives_one_line(name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        with pytest.raises(DpauditError) as info:
            load_images(path)
        assert quote_path(path) in str(info.value)
        assert str(info.value).count("\n") == 0 and "\r" not in str(info.value)
