"""ImageSet, the one image container of dpaudit, with its readers and writers.

Every reader validates what it reads and raises :class:`DpauditError` with one sentence
naming the file. Layouts are settled here (HWC -> CHW, N x C x H x W); values are kept as
read (8-bit stays 8-bit, an uncompressed `.npz` or `.npy` of 8-bit images is memory-mapped)
and every reader of an ImageSet sees float32 in [0, 1] (dpaudit.pixels converts per batch).

Input files are untrusted: sizes are read from headers and checked against
:func:`memory_budget` before anything is allocated, nothing is unpickled, and data that could
mean two things (a float pixel of 1.5) is refused rather than guessed at.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import math
import os
import re
import struct
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dpaudit.errors import DpauditError, quote_path
from dpaudit.pixels import Pixels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Largest image (in pixels) a reader accepts; PIL's own bomb check is tied to this.
MAX_PIXELS = 4096 * 4096
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Memory one reader may need for one set: the array as stored plus its float32 copy. 8 GiB
# holds about 11 CIFAR-10 training sets (0.7 GiB each, 50,000 x 3 x 32 x 32 at 1 + 4 bytes a
# value), or 1.7 billion 8-bit pixels, and leaves room on a 16 GB machine for the features
# and models that come after; a larger set is a deliberate choice, made with
# DPAUDIT_MEMORY_BUDGET.
DEFAULT_MEMORY_BUDGET = 8 * 2**30
MEMORY_BUDGET_ENV = "DPAUDIT_MEMORY_BUDGET"
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_budget() -> int:
    """Bytes a reader may allocate for one set: $DPAUDIT_MEMORY_BUDGET (bytes, or with a
    K, M, G or T suffix, powers of 1024: `4G`) when set, else DEFAULT_MEMORY_BUDGET."""
    text = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_MEMORY_BUDGET
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(?:([kmgt])(?:i?b)?|b)?", text, re.IGNORECASE)
    budget = 0 if match is None else int(Fraction(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])
    if budget <= 0:
        raise DpauditError(
            f"{MEMORY_BUDGET_ENV}={text!r} is not a positive size in bytes; "
            "write a number with an optional K, M, G or T suffix, such as 4G."
        )
    return budget


def _cause(e: BaseException) -> str:
    """A library exception's text, made safe for a one-line message."""
    return quote_path(str(e) or type(e).__name__)


def _format_bytes(n: int) -> str:
    if n >= 2**70:  # an IDX header of 255 huge dimensions: too large for a float
        return f"about 2^{n.bit_length() - 1} bytes"
    if n >= 2**60:
        return f"{n / 2**60:.1f}".removesuffix(".0") + " EiB"
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def _shape(shape: tuple[int, ...]) -> str:
    """A claimed shape for a message; an IDX header may list 255 dimensions."""
    if len(shape) <= 8:
        return str(tuple(shape))
    return f"({', '.join(map(str, shape[:4]))}, ...: {len(shape)} dimensions)"


def _header_is_wrong(what: str, holds: int, promised: int) -> str:
    """The note for _check_budget when a header's size is already known to be false."""
    if holds == promised:
        return ""
    return f"{what} holds {'only ' if holds < promised else ''}{holds} data bytes, so its header is wrong"


def _check_budget(path, claim: str, elements: int, stored: int, note: str = "") -> None:
    """Refuse a read that needs more than memory_budget(): `stored` bytes as read plus
    `elements` float32 values. `claim` says what the header claims; `note` is added when the
    claim is already known to be false (then raising the budget would not help)."""
    needed = stored + 4 * elements
    budget = memory_budget()
    if needed > budget:
        advice = note or f"set {MEMORY_BUDGET_ENV} (bytes, or e.g. 16G) to allow it"
        raise DpauditError(
            f"{quote_path(path)}: {claim}, which needs {_format_bytes(needed)} to read (as stored "
            f"plus as float32), over the memory budget of {_format_bytes(budget)}; {advice}."
        )


class ImageSet:
    """Images N x C x H x W read as float32 in [0, 1], optional int64 labels, and provenance.

    The pixels are kept as stored (`pixels`, dpaudit.pixels): float32, or 8-bit in memory or
    memory-mapped from disk, and converted per read: `take(idx)` reads some of them (and
    `pixels.blocks()` all of them, block by block), `x` all of them at once (a float32 copy of the whole set unless it is stored as float32:
    for sets known to be small, never for the members or the synthetic set of a large audit).
    `x` may be a float32 or uint8 tensor, a uint8 numpy array (memory-mapped or not), or Pixels.
    """

    def __init__(self, x, y: torch.Tensor | None = None, num_classes: int | None = None,
                 name: str = "images", source: str = ""):
        self.pixels = x if isinstance(x, Pixels) else Pixels(x)
        # not a mapped or re-indexed view: the digests (audit/features.pixel_digest) hash the storage
        if self.pixels.fn is not None or self.pixels.index is not None or len(self.pixels.stored_shape) != 3:
            raise ValueError("ImageSet pixels must be stored float32 or uint8 N x C x H x W")
        if y is not None:
            if y.dtype != torch.int64 or y.shape != (len(self.pixels),):
                raise ValueError("ImageSet.y must be an int64 tensor with one label per image")
            if num_classes is None:
                num_classes = int(y.max()) + 1 if len(y) else 0
        self.y, self.num_classes, self.name, self.source = y, num_classes, name, source
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return (f"ImageSet(name={self.name!r}, count={len(self)}, shape={self.shape}, "
                f"stored={self.pixels.data.dtype}, labelled={self.has_labels})")

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def x(self) -> torch.Tensor:
        """Every image as float32 N x C x H x W (a converted copy unless stored as float32)."""
        return self.pixels.float()

    def take(self, indices) -> torch.Tensor:
        """The images at `indices` (a slice, or ints of any shape) as float32."""
        return self.pixels[indices]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.pixels.stored_shape

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def subset(self, indices, name: str | None = None) -> "ImageSet":
        """The images at `indices` (a sequence or tensor of ints), labels kept, in memory as
        stored (8-bit stays 8-bit)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(
            self.pixels.subset(idx),
            None if self.y is None else self.y[idx],
            self.num_classes,
            name or self.name,
            self.source,
        )

    def fingerprint(self) -> str:
        """sha256 of the pixels (as uint8) and labels: equal content, equal fingerprint."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(str((len(self), *self.shape)).encode())
            for block in self.pixels.stored_blocks():
                if isinstance(block, torch.Tensor):
                    block = (block if block.dtype == torch.uint8 else to_uint8(block)).cpu().numpy()
                h.update(block.tobytes())
            if self.y is not None:
                h.update(self.y.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def to_dict(self) -> dict:
        """A JSON-ready summary: name, source, size, shape, classes and fingerprint."""
        return {
            "name": self.name,
            "source": self.source,
            "count": len(self),
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "labelled": self.has_labels,
            "fingerprint": self.fingerprint(),
        }


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 in 0..255, rounded to nearest."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def from_array(
    pixels: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    name: str,
    source: str,
    num_classes: int | None = None,
) -> ImageSet:
    """Validate an array of images (N x H x W, N x H x W x C or N x C x H x W) and labels, and
    build an ImageSet. Pixels: uint8 in 0..255, uint16 in 0..65535, other integers in 0..255,
    floats in [0, 1] (or whole numbers in 0..255: an 8-bit set stored as float); anything else
    is refused, never rescaled by guess. `source` names the file in every error message."""
    src = quote_path(source)
    if pixels.dtype.hasobject or labels is not None and labels.dtype.hasobject:
        raise DpauditError(f"{src}: object arrays are not images.")
    if pixels.ndim not in (3, 4) or len(pixels) == 0:
        raise DpauditError(
            f"{src}: expected a non-empty array of images (N x H x W or N x H x W x C), "
            f"got shape {pixels.shape}."
        )
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    elif pixels.shape[-1] in (1, 3) and pixels.shape[1] not in (1, 3):
        pixels = pixels.transpose(0, 3, 1, 2)  # HWC -> CHW
    if pixels.shape[1] not in (1, 3):
        raise DpauditError(f"{src}: images must have 1 or 3 channels, got shape {pixels.shape}.")
    n_pixels = pixels.shape[2] * pixels.shape[3]
    if n_pixels > MAX_PIXELS:
        raise DpauditError(f"{src}: images of {n_pixels} pixels exceed the limit of {MAX_PIXELS}.")
    if pixels.size == 0:
        raise DpauditError(f"{src}: the images have no pixels (shape {pixels.shape}).")
    if pixels.dtype == np.uint8:  # kept as 8-bit (read as float per batch); a memory map stays one
        x = pixels if isinstance(pixels, np.memmap) else torch.from_numpy(np.array(pixels, order="C"))
    elif pixels.dtype == np.uint16:  # 16-bit PNG or a uint16 array: the full 16-bit range
        x = torch.from_numpy(np.array(pixels, dtype=np.float32)).div_(65535)
    elif np.issubdtype(pixels.dtype, np.floating) or np.issubdtype(pixels.dtype, np.integer):
        values = pixels.astype(np.float32)
        if not np.isfinite(values).all():
            raise DpauditError(f"{src}: pixel values contain NaN or infinity.")
        low, high = float(values.min()), float(values.max())
        if np.issubdtype(pixels.dtype, np.integer):
            if low < 0 or high > 255:
                raise DpauditError(
                    f"{src}: integer pixels must lie in 0..255 (0..65535 as uint16); "
                    f"found {_extreme(values, low < 0)}, outside [0, 255]."
                )
            values = values / 255.0
        elif low < 0 or high > 255:
            raise DpauditError(
                f"{src}: float pixels must lie in [0, 1]; found {_extreme(values, low < 0)}, "
                "outside [0, 1] and [0, 255]."
            )
        elif high > 1.0:
            # Above 1 the set can only be 8-bit values stored as float, and then every value is
            # a whole number; a fractional value beside a 1.5 says the scale is unknown.
            if not _all_whole(values):
                raise DpauditError(
                    f"{src}: float pixels must lie in [0, 1]; found {_extreme(values, False)}, "
                    "and fractional values rule out reading the set as 0..255."
                )
            values = values / 255.0
        x = torch.from_numpy(np.ascontiguousarray(values))
    else:
        raise DpauditError(f"{src}: pixel type {pixels.dtype} is not supported.")
    y = None if labels is None else _validate_labels(labels, len(x), source, num_classes)
    return ImageSet(x, y, num_classes, name, source)


def _extreme(values: np.ndarray, lowest: bool) -> str:
    """'min -0.5 at image 3' or 'max 1.5 at image 3': the extreme value and its first image."""
    per_image = values.reshape(len(values), -1)
    per_image = per_image.min(axis=1) if lowest else per_image.max(axis=1)
    index = int(per_image.argmin() if lowest else per_image.argmax())
    return f"{'min' if lowest else 'max'} {float(per_image[index]):g} at image {index}"


def _all_whole(values: np.ndarray) -> bool:
    """Whether every value is a whole number, checked in chunks to bound the scratch memory."""
    flat = values.reshape(-1)
    step = 1 << 22
    return all(np.array_equal(c, np.round(c)) for c in (flat[i : i + step] for i in range(0, len(flat), step)))


def _validate_labels(labels: np.ndarray, n: int, source: str, num_classes: int | None) -> torch.Tensor:
    src = quote_path(source)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DpauditError(f"{src}: expected {n} labels, one per image, got shape {labels.shape}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise DpauditError(f"{src}: labels must be integers.")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DpauditError(f"{src}: labels must be integers, got {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        top = "" if num_classes is None else f"..{num_classes - 1}"
        raise DpauditError(
            f"{src}: labels range over [{labels.min()}, {labels.max()}], outside 0{top}."
        )
    return torch.from_numpy(labels)


# ---------------------------------------------------------------- readers


def load_images(path: str | Path, *, name: str | None = None, num_classes: int | None = None) -> ImageSet:
    """Read an image folder, an `.npz` or `.npy` file or an IDX file (plain or .gz) into an ImageSet."""
    path = Path(path)
    name = name or path.stem
    if not path.exists():
        raise DpauditError(f"{quote_path(path)}: no such file or folder.")
    if path.is_dir():
        npz_files = sorted(path.glob("*.npz"))
        if len(npz_files) == 1 and not any(path.glob("**/*.png")):
            return read_npz(npz_files[0], name=name, num_classes=num_classes)
        return read_image_folder(path, name=name, num_classes=num_classes)
    if path.suffix == ".npz":
        return read_npz(path, name=name, num_classes=num_classes)
    if path.suffix == ".npy":
        return read_npy(path, name=name, num_classes=num_classes)
    if "idx" in path.name or path.name.endswith("-ubyte.gz"):
        return from_array(read_idx(path), name=name, source=str(path), num_classes=num_classes)
    raise DpauditError(f"{quote_path(path)}: not an image folder, .npz, .npy or IDX file.")


def read_image_folder(folder: Path, *, name: str, num_classes: int | None = None) -> ImageSet:
    """A folder of PNG/JPEG: class sub-folders `DIR/<label>/*.png`, or flat with `labels.csv`
    (columns `file,label`), or flat without labels. 8-bit images are read as 0..255, 16-bit
    PNGs as 0..65535; one set holds one size, channel count and bit depth."""
    folder = Path(folder)
    files, labels = _list_folder(folder)
    if not files:
        raise DpauditError(f"{quote_path(folder)}: the folder holds no PNG or JPEG images.")
    first = _read_one_image(files[0])
    # The first image's size times the count, checked before the others are decoded.
    _check_budget(
        folder,
        f"{len(files)} images of {_describe(first)} like {quote_path(files[0].name)}",
        elements=len(files) * first.size,
        stored=len(files) * first.nbytes,
    )
    stack = np.empty((len(files),) + first.shape, first.dtype)
    stack[0] = first
    for i, f in enumerate(files[1:], start=1):
        a = _read_one_image(f)
        if a.shape != first.shape:
            raise DpauditError(
                f"{quote_path(f)}: size {_describe(a)} differs from {_describe(first)} of "
                f"{quote_path(files[0])}; all images must have the same size and channels."
            )
        if a.dtype != first.dtype:
            raise DpauditError(
                f"{quote_path(f)}: {_bits(a)}-bit pixels, but {quote_path(files[0])} has "
                f"{_bits(first)}-bit ones; all images must have the same bit depth."
            )
        stack[i] = a
    y = None
    if labels is not None:
        y = _validate_labels(np.array(labels), len(files), str(folder), num_classes)
    # Handed over as N x C x H x W: a folder's images are H x W x C, and leaving the layout to
    # from_array's guess would misread RGB images 1 or 3 pixels tall.
    pixels = stack if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
    images = from_array(pixels, name=name, source=str(folder), num_classes=num_classes)
    return ImageSet(images.x, y, num_classes, name, str(folder))


def _describe(a: np.ndarray) -> str:
    channels = 1 if a.ndim == 2 else a.shape[2]
    return f"{a.shape[1]}x{a.shape[0]}x{channels}"


def _bits(a: np.ndarray) -> int:
    return 8 * a.dtype.itemsize


def _list_folder(folder: Path) -> tuple[list[Path], list[int] | None]:
    p = quote_path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise DpauditError(f"{p}: cannot list the folder ({_cause(e)}).") from None
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e for e in entries if e.suffix.lower() in IMAGE_SUFFIXES and not e.is_dir()]
    if subdirs:
        if loose:
            names = ", ".join(quote_path(f.name) for f in loose[:3]) + (", ..." if len(loose) > 3 else "")
            raise DpauditError(
                f"{p}: holds class sub-folders and also {len(loose)} loose image(s) at the top "
                f"({names}); move each image into its class folder, or use a flat folder."
            )
        pairs, label_of = [], {}
        for d in subdirs:
            # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
            if not re.fullmatch(r"[0-9]+", d.name):
                raise DpauditError(
                    f"{quote_path(d)}: class folders must be named by integer labels (0, 1, ...)."
                )
            label = int(d.name)
            if label in label_of:
                raise DpauditError(
                    f"{quote_path(d)}: names label {label}, as {quote_path(label_of[label].name)} "
                    "does; each label needs exactly one class folder."
                )
            label_of[label] = d
            try:
                pairs += [(f, label) for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
            except OSError as e:
                raise DpauditError(f"{quote_path(d)}: cannot list the folder ({_cause(e)}).") from None
        # Ordered by file name across classes, so that a written set reads back in its order.
        pairs.sort(key=lambda pair: (pair[0].name, pair[1]))
        return [f for f, _ in pairs], [label for _, label in pairs]
    files = loose
    csv_path = folder / "labels.csv"
    if not csv_path.exists():
        return files, None
    return files, _read_labels_csv(csv_path, files)


def _read_labels_csv(csv_path: Path, files: list[Path]) -> list[int]:
    p = quote_path(csv_path)
    table: dict[str, int] = {}
    reader = None
    try:
        # utf-8-sig: a byte-order mark (as spreadsheets write) is not part of the first name.
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                line = reader.line_num
                if line == 1 and row[:2] == ["file", "label"]:
                    continue
                if len(row) < 2:
                    raise DpauditError(f"{p}: line {line} needs two columns, file and label.")
                try:
                    label = int(row[1])
                except ValueError:
                    raise DpauditError(f"{p}: line {line}: label {row[1][:40]!r} is not an integer.") from None
                if table.setdefault(row[0], label) != label:
                    raise DpauditError(
                        f"{p}: line {line} labels {quote_path(row[0])} {label}, an earlier line "
                        f"labels it {table[row[0]]}."
                    )
    except UnicodeDecodeError as e:
        raise DpauditError(f"{p}: not UTF-8 text (it holds the byte {e.object[e.start]:#04x}).") from None
    except csv.Error as e:
        raise DpauditError(f"{p}: line {reader.line_num} is not valid CSV ({_cause(e)}).") from None
    except OSError as e:
        raise DpauditError(f"{p}: cannot read the labels ({_cause(e)}).") from None
    missing = [f.name for f in files if f.name not in table]
    if missing:
        raise DpauditError(f"{p}: no label for {quote_path(missing[0])} ({len(missing)} images lack one).")
    return [table[f.name] for f in files]


_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Pillow's errors on malformed data: OSError (unidentified or truncated), SyntaxError (broken
# PNG chunks), ValueError, and EOFError, which its PNG reader raises past the last frame. The
# fuzz tests (PNG and JPEG, 5,000 examples each) met no other type; Pillow wraps struct.error.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def _read_one_image(path: Path) -> np.ndarray:
    """One image as uint8 H x W (x 3), or uint16 H x W for a 16-bit grey PNG."""
    p = quote_path(path)
    try:
        with warnings.catch_warnings():  # an image over MAX_PIXELS gets the sentence below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise DpauditError(f"{p}: {im.width}x{im.height} pixels exceed the limit of {MAX_PIXELS}.")
            im.load()
            if im.mode in _16_BIT_MODES:
                return np.asarray(im).astype(np.uint16)  # native byte order, full 16-bit range
            if im.mode == "I":  # 32-bit integers: 16-bit grey in older Pillow, or a TIFF named .png
                a = np.asarray(im)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise DpauditError(
                        f"{p}: 32-bit pixels span [{a.min()}, {a.max()}], outside the 16-bit range 0..65535."
                    )
                return a.astype(np.uint16)
            if im.mode == "F":
                raise DpauditError(f"{p}: floating-point images (mode F) are not supported; use 8- or 16-bit.")
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
            return np.asarray(im)
    except DpauditError:
        raise
    except Image.DecompressionBombError:
        raise DpauditError(f"{p}: the image exceeds the limit of {MAX_PIXELS} pixels.") from None
    except _IMAGE_ERRORS as e:
        raise DpauditError(f"{p}: cannot read the image ({_cause(e)}).") from None


_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
# What numpy's header parser (tokenize, then ast.literal_eval) raises on a malformed header.
_NPY_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError)
# What zipfile, zlib and numpy raise on a damaged archive or member: RuntimeError for a member
# flagged as encrypted, NotImplementedError for an unknown compression method, zlib.error for a
# broken deflate stream (zipfile does not wrap it), ValueError for numpy's short reads.
_NPZ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def read_npz(path: Path, *, name: str, num_classes: int | None = None) -> ImageSet:
    """An `.npz` with array `x` and optional `y`. The zip directory and the .npy headers are
    read first and checked against memory_budget(); object arrays are refused, never unpickled.
    An 8-bit `x` stored uncompressed (np.savez, not savez_compressed) is memory-mapped, not
    read: it costs no memory and no budget."""
    path = Path(path)
    p = quote_path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            start = fh.read(6)
        if start == b"\x93NUMPY":
            raise DpauditError(
                f"{p}: a single .npy array, not an .npz archive; name it .npy, or save it with np.savez(path, x=...)."
            ) from None
        raise DpauditError(f"{p}: cannot read the .npz: it is not a zip archive, as np.savez writes.") from None
    except _NPZ_ERRORS as e:
        raise DpauditError(f"{p}: cannot read the .npz ({_cause(e)}).") from None
    try:
        with archive:
            members = _npz_members(path, archive)
            if "x" not in members:
                found = sorted(members)
                shown = repr(found[:10])[:-1] + (", ...]" if len(found) > 10 else "]")
                raise DpauditError(f"{p}: the .npz holds no array named 'x' (found {shown}).")
            keys = ["x", "y"] if "y" in members else ["x"]
            headers = {key: _npy_header(path, archive, members[key], key) for key in keys}
            mapped = members["x"].compress_type == zipfile.ZIP_STORED and _mappable(headers["x"])
            stored = 0
            for key in keys:  # x, then x and y together
                header = headers[key]
                stored += 0 if key == "x" and mapped else header.promised
                _check_budget(
                    path, f"array {key!r} claims shape {_shape(header.shape)} of {header.dtype}",
                    elements=0 if mapped else math.prod(headers["x"].shape), stored=stored,
                    note=_header_is_wrong("the member", header.data_bytes, header.promised),
                )
            for key in keys:
                header = headers[key]
                if header.data_bytes != header.promised:
                    raise DpauditError(
                        f"{p}: array {key!r} holds {header.data_bytes} data bytes, its header promises "
                        f"{header.promised} (shape {_shape(header.shape)} of {header.dtype}); the file is "
                        "truncated or corrupt."
                    )
            arrays = {}
            for key in keys:
                if key == "x" and mapped:
                    offset = _zip_data_offset(path, members[key]) + headers[key].header_bytes
                    arrays[key] = _memory_map(path, headers[key], offset)
                    continue
                with archive.open(members[key]) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    except DpauditError:
        raise
    except _NPZ_ERRORS as e:
        raise DpauditError(f"{p}: cannot read the .npz ({_cause(e)}).") from None
    return from_array(arrays["x"], arrays.get("y"), name=name, source=str(path), num_classes=num_classes)


def read_npy(path: Path, *, name: str, num_classes: int | None = None) -> ImageSet:
    """A `.npy` of unlabelled images, memory-mapped when 8-bit and in C order, else read
    (checked against memory_budget()); object arrays are refused, never unpickled."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = _read_npy_header(path, fh, f"{quote_path(path)}: the file ", "x")
            header = dataclasses.replace(header, data_bytes=os.fstat(fh.fileno()).st_size - header.header_bytes)
            if header.data_bytes < header.promised:
                raise DpauditError(
                    f"{quote_path(path)}: the file holds {header.data_bytes} data bytes, its header promises "
                    f"{header.promised} (shape {_shape(header.shape)} of {header.dtype}); it is truncated."
                )
            if _mappable(header):
                pixels = _memory_map(path, header, header.header_bytes)
            else:
                _check_budget(path, f"the array claims shape {_shape(header.shape)} of {header.dtype}",
                              elements=math.prod(header.shape), stored=header.promised)
                fh.seek(0)  # read_array reads the header again
                pixels = np.lib.format.read_array(fh, allow_pickle=False)
    except DpauditError:
        raise
    except _NPZ_ERRORS as e:
        raise DpauditError(f"{quote_path(path)}: cannot read the .npy ({_cause(e)}).") from None
    return from_array(pixels, name=name, source=str(path), num_classes=num_classes)


@dataclass(frozen=True)
class _NpyHeader:
    """What a .npy header says, and where its data starts (bytes after the header's start)."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    header_bytes: int
    data_bytes: int  # what the container really holds after the header

    @property
    def promised(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _mappable(header: _NpyHeader) -> bool:
    """8-bit images in C order map straight onto N x H x W (x C) rows."""
    return header.dtype == np.uint8 and not header.fortran_order and len(header.shape) in (3, 4)


def _memory_map(path: Path, header: _NpyHeader, offset: int) -> np.memmap:
    """The array's data in the file at `offset`, mapped read-only."""
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=header.shape)


def _zip_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored zip member's bytes start in the file: after its local header (30 bytes,
    the name and the extra field; their lengths are the local header's own, which may differ
    from the central directory's). Hand-written: zipfile has no public offset of a member's data."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DpauditError(f"{quote_path(path)}: member {info.filename!r} has a corrupt local zip header.")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _npz_members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member, named as numpy's NpzFile names them ('x.npy' is 'x'; a member
    called exactly 'x' wins over 'x.npy', as in NpzFile). A name held twice is refused: which
    copy a reader takes is up to the reader."""
    names = [info.filename for info in archive.infolist()]
    for name in ("x", "x.npy", "y", "y.npy"):
        if names.count(name) > 1:
            raise DpauditError(f"{quote_path(path)}: the .npz holds {names.count(name)} members named {name!r}.")
    members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
    members.update({info.filename: info for info in archive.infolist() if not info.filename.endswith(".npy")})
    return members


def _npy_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> _NpyHeader:
    """The header of one .npy member, with the zip directory's uncompressed size for the data
    bytes, without reading the data."""
    with archive.open(info) as fh:
        header = _read_npy_header(path, fh, f"{quote_path(path)}: member {info.filename!r} ", key)
    return dataclasses.replace(header, data_bytes=max(0, info.file_size - header.header_bytes))


def _read_npy_header(path: Path, fh, what: str, key: str) -> _NpyHeader:
    """Read a .npy header from `fh` (left at the data); `what` begins each error message."""
    p = quote_path(path)
    try:
        version = np.lib.format.read_magic(fh)
    except ValueError:
        raise DpauditError(f"{what}is not a .npy array (no .npy magic bytes).") from None
    reader = _NPY_HEADER_READERS.get(version)
    if reader is None:
        raise DpauditError(f"{what}is .npy format {version[0]}.{version[1]}; dpaudit reads 1.0 and 2.0.")
    try:
        with warnings.catch_warnings():  # literal_eval of a crafted header warns about escapes
            warnings.simplefilter("ignore")
            shape, fortran_order, dtype = reader(fh)
    except _NPY_HEADER_ERRORS as e:
        raise DpauditError(f"{what}has a malformed .npy header ({_cause(e)}).") from None
    if dtype.hasobject:
        raise DpauditError(
            f"{p}: array {key!r} has dtype object, which would need unpickling; refused, since "
            "input files are untrusted."
        )
    if any(d < 0 for d in shape):
        raise DpauditError(f"{p}: array {key!r} claims the impossible shape {_shape(shape)}.")
    return _NpyHeader(tuple(shape), bool(fortran_order), dtype, fh.tell(), 0)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_idx_magic(path: Path, raw: bytes) -> None:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DpauditError(f"{quote_path(path)}: not an IDX file (bad magic number).")


def _idx_header(path: Path, raw: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) from the first bytes of an IDX file."""
    _check_idx_magic(path, raw)
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DpauditError(f"{quote_path(path)}: the IDX header is truncated.")
    return np.dtype(_IDX_TYPES[raw[2]]), struct.unpack(f">{raw[3]}I", raw[4:header]), header


def _idx_budget(path: Path, dtype: np.dtype, dims: tuple[int, ...], note: str = "") -> int:
    """The data bytes the header promises, once checked against memory_budget()."""
    count = math.prod(dims)  # Python integers: numpy's product of four uint32 could overflow
    _check_budget(path, f"the IDX header claims shape {_shape(dims)} of {dtype}", elements=count,
                  stored=count * dtype.itemsize, note=note)
    return count * dtype.itemsize


def read_idx_bytes(path: str | Path) -> bytes:
    """The content of an IDX file, decompressed when it ends in .gz. The header is read first:
    no more is read than it promises and memory_budget() allows."""
    path = Path(path)
    p = quote_path(path)
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            head = fh.read(4)
            _check_idx_magic(path, head)
            head += fh.read(4 * head[3])
            dtype, dims, header = _idx_header(path, head)
            if gz:
                expected = _idx_budget(path, dtype, dims)
            else:
                on_disk = os.fstat(fh.fileno()).st_size - header
                promised = math.prod(dims) * dtype.itemsize
                expected = _idx_budget(path, dtype, dims, _header_is_wrong("the file", on_disk, promised))
                if on_disk != expected:
                    raise DpauditError(
                        f"{p}: the IDX file holds {on_disk} data bytes, its header promises {expected}."
                    )
            data = fh.read(expected)
            if len(data) < expected:
                raise DpauditError(f"{p}: the IDX file holds {len(data)} data bytes, its header promises {expected}.")
            if fh.read(1):  # for .gz, this read also makes gzip check the CRC at the end
                raise DpauditError(f"{p}: the IDX file holds more than the {expected} data bytes its header promises.")
    except DpauditError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise DpauditError(f"{p}: cannot read the IDX file ({_cause(e)}).") from None
    return head + data


def read_idx(path: str | Path, raw: bytes | None = None) -> np.ndarray:
    """An IDX file (plain or gzip) as a numpy array; `raw` is its content when already read.
    Hand-written: the format is 4 header bytes and big-endian sizes, and torchvision's reader
    is private API."""
    path = Path(path)
    raw = read_idx_bytes(path) if raw is None else raw
    dtype, dims, header = _idx_header(path, raw)
    expected = _idx_budget(path, dtype, dims)
    if len(raw) - header != expected:
        raise DpauditError(
            f"{quote_path(path)}: the IDX file holds {len(raw) - header} data bytes, its header promises {expected}."
        )
    try:
        return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    except ValueError as e:  # too many dimensions, or huge ones beside a zero
        raise DpauditError(f"{quote_path(path)}: numpy cannot hold the IDX shape {_shape(dims)} ({_cause(e)}).") from None


# ---------------------------------------------------------------- writers


def write_png_folder(images: ImageSet, folder: str | Path, *, labels_csv: bool = False) -> Path:
    """Write PNGs: `folder/<label>/<index>.png` when labelled, else `folder/<index>.png`; with
    `labels_csv`, flat `folder/<index>.png` and the labels in `folder/labels.csv` (file,label)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(images.x).permute(0, 2, 3, 1).numpy()
    width = len(str(len(images)))
    rows = []
    for i, img in enumerate(pixels):
        flat = images.y is None or labels_csv
        sub = folder if flat else folder / str(int(images.y[i]))
        sub.mkdir(exist_ok=True)
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(sub / f"{i:0{width}d}.png")
        if images.y is not None and labels_csv:
            rows.append(f"{i:0{width}d}.png,{int(images.y[i])}\n")
    if rows:
        (folder / "labels.csv").write_text("file,label\n" + "".join(rows))
    return folder


def write_npz(images: ImageSet, path: str | Path) -> Path:
    """Write `x` (uint8 N x H x W x C) and, when labelled, `y` (int64) to a compressed .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": to_uint8(images.x).permute(0, 2, 3, 1).numpy()}
    if images.y is not None:
        arrays["y"] = images.y.numpy()
    np.savez_compressed(path, **arrays)
    return path


def save_images(images: ImageSet, out: str | Path, fmt: str = "png") -> Path:
    """Write an ImageSet as a PNG folder (`fmt="png"`) or as `out` / `images.npz` (`fmt="npz"`)."""
    out = Path(out)
    if fmt == "png":
        return write_png_folder(images, out)
    if fmt == "npz":
        return write_npz(images, out if out.suffix == ".npz" else out / "images.npz")
    raise DpauditError(f"unknown image format {fmt!r}; use png or npz.")


def ensure_empty_folder(path: Path, ignore: frozenset[str] | set[str] = frozenset()) -> None:
    """Raise DpauditError unless the output folder `path` is absent or holds only entries named in `ignore`."""
    path = Path(path)
    if path.exists() and any(entry.name not in ignore for entry in path.iterdir()):
        raise DpauditError(f"{quote_path(path)}: the folder is not empty; choose a new --out.")
