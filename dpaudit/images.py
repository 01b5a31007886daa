"""ImageSet, the one image container of dpaudit, with its readers and writers.

Every reader validates what it reads and raises :class:`DpauditError` with one sentence
naming the file. Conversions (uint8 -> float, HWC -> CHW) happen here, at the edge, and
nowhere else: inside dpaudit images are float32 N x C x H x W in [0, 1].
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dpaudit.errors import DpauditError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Largest image (in pixels) a reader accepts; PIL's own bomb check is tied to this.
MAX_PIXELS = 4096 * 4096
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass
class ImageSet:
    """Images as float32 N x C x H x W in [0, 1], optional int64 labels, and provenance."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    num_classes: int | None = None
    name: str = "images"
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError("ImageSet.x must be a float32 tensor N x C x H x W")
        if self.y is not None:
            if self.y.dtype != torch.int64 or self.y.shape != (len(self.x),):
                raise ValueError("ImageSet.y must be an int64 tensor with one label per image")
            if self.num_classes is None:
                self.num_classes = int(self.y.max()) + 1 if len(self.y) else 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def subset(self, indices, name: str | None = None) -> "ImageSet":
        """The images at `indices` (a sequence or tensor of ints), labels kept."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(
            self.x[idx],
            None if self.y is None else self.y[idx],
            self.num_classes,
            name or self.name,
            self.source,
        )

    def fingerprint(self) -> str:
        """sha256 of the pixels (as uint8) and labels: equal content, equal fingerprint."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(str(tuple(self.x.shape)).encode())
            h.update(to_uint8(self.x).numpy().tobytes())
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
    """Validate an array of images (N x H x W, N x H x W x C or N x C x H x W; uint8 or float)
    and labels, and build an ImageSet. `source` names the file in every error message."""
    if pixels.dtype == object or labels is not None and labels.dtype == object:
        raise DpauditError(f"{source}: object arrays are not images.")
    if pixels.ndim not in (3, 4) or len(pixels) == 0:
        raise DpauditError(
            f"{source}: expected a non-empty array of images (N x H x W or N x H x W x C), "
            f"got shape {pixels.shape}."
        )
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    elif pixels.shape[-1] in (1, 3) and pixels.shape[1] not in (1, 3):
        pixels = pixels.transpose(0, 3, 1, 2)  # HWC -> CHW
    if pixels.shape[1] not in (1, 3):
        raise DpauditError(
            f"{source}: images must have 1 or 3 channels, got shape {pixels.shape}."
        )
    n_pixels = pixels.shape[2] * pixels.shape[3]
    if n_pixels > MAX_PIXELS:
        raise DpauditError(f"{source}: images of {n_pixels} pixels exceed the limit of {MAX_PIXELS}.")
    if pixels.dtype == np.uint8:
        x = torch.from_numpy(np.array(pixels, dtype=np.float32)).div_(255)
    elif np.issubdtype(pixels.dtype, np.floating) or np.issubdtype(pixels.dtype, np.integer):
        values = pixels.astype(np.float32)
        if not np.isfinite(values).all():
            raise DpauditError(f"{source}: pixel values contain NaN or infinity.")
        low, high = float(values.min()), float(values.max())
        if np.issubdtype(pixels.dtype, np.integer) or high > 1.0:
            if low < 0 or high > 255:
                raise DpauditError(
                    f"{source}: pixel values span [{low:g}, {high:g}], outside [0, 1] and [0, 255]."
                )
            values = values / 255.0
        elif low < 0:
            raise DpauditError(f"{source}: pixel values span [{low:g}, {high:g}], outside [0, 1].")
        x = torch.from_numpy(np.ascontiguousarray(values))
    else:
        raise DpauditError(f"{source}: pixel type {pixels.dtype} is not supported.")
    y = None if labels is None else _validate_labels(labels, len(x), source, num_classes)
    return ImageSet(x, y, num_classes, name, source)


def _validate_labels(labels: np.ndarray, n: int, source: str, num_classes: int | None) -> torch.Tensor:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DpauditError(f"{source}: expected {n} labels, one per image, got shape {labels.shape}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise DpauditError(f"{source}: labels must be integers.")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DpauditError(f"{source}: labels must be integers, got {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        top = "" if num_classes is None else f"..{num_classes - 1}"
        raise DpauditError(
            f"{source}: labels range over [{labels.min()}, {labels.max()}], outside 0{top}."
        )
    return torch.from_numpy(labels)


# ---------------------------------------------------------------- readers


def load_images(path: str | Path, *, name: str | None = None, num_classes: int | None = None) -> ImageSet:
    """Read an image folder, an `.npz` file or an IDX file (plain or .gz) into an ImageSet."""
    path = Path(path)
    name = name or path.stem
    if not path.exists():
        raise DpauditError(f"{path}: no such file or folder.")
    if path.is_dir():
        npz_files = sorted(path.glob("*.npz"))
        if len(npz_files) == 1 and not any(path.glob("**/*.png")):
            return read_npz(npz_files[0], name=name, num_classes=num_classes)
        return read_image_folder(path, name=name, num_classes=num_classes)
    if path.suffix == ".npz":
        return read_npz(path, name=name, num_classes=num_classes)
    if "idx" in path.name or path.name.endswith("-ubyte.gz"):
        return from_array(read_idx(path), name=name, source=str(path), num_classes=num_classes)
    raise DpauditError(f"{path}: not an image folder, .npz or IDX file.")


def read_image_folder(folder: Path, *, name: str, num_classes: int | None = None) -> ImageSet:
    """A folder of PNG/JPEG: class sub-folders `DIR/<label>/*.png`, or flat with `labels.csv`
    (columns `file,label`), or flat without labels."""
    folder = Path(folder)
    files, labels = _list_folder(folder)
    if not files:
        raise DpauditError(f"{folder}: the folder holds no PNG or JPEG images.")
    arrays = [_read_one_image(f) for f in files]
    first = arrays[0]
    for f, a in zip(files, arrays):
        if a.shape != first.shape:
            raise DpauditError(
                f"{f}: size {_describe(a)} differs from {_describe(first)} of {files[0]}; "
                "all images must have the same size and channels."
            )
    y = None
    if labels is not None:
        y = _validate_labels(np.array(labels), len(files), str(folder), num_classes)
    images = from_array(np.stack(arrays), name=name, source=str(folder), num_classes=num_classes)
    return ImageSet(images.x, y, num_classes, name, str(folder))


def _describe(a: np.ndarray) -> str:
    channels = 1 if a.ndim == 2 else a.shape[2]
    return f"{a.shape[1]}x{a.shape[0]}x{channels}"


def _list_folder(folder: Path) -> tuple[list[Path], list[int] | None]:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        pairs = []
        for d in subdirs:
            if not d.name.isdigit():
                raise DpauditError(f"{d}: class folders must be named by integer labels (0, 1, ...).")
            pairs += [(f, int(d.name)) for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
        # Ordered by file name across classes, so that a written set reads back in its order.
        pairs.sort(key=lambda pair: (pair[0].name, pair[1]))
        return [f for f, _ in pairs], [label for _, label in pairs]
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    csv_path = folder / "labels.csv"
    if not csv_path.exists():
        return files, None
    return files, _read_labels_csv(csv_path, files)


def _read_labels_csv(csv_path: Path, files: list[Path]) -> list[int]:
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0][:2] == ["file", "label"]:
        rows = rows[1:]
    table = {}
    for line, row in enumerate(rows, start=2):
        if len(row) < 2:
            raise DpauditError(f"{csv_path}: line {line} needs two columns, file and label.")
        try:
            table[row[0]] = int(row[1])
        except ValueError:
            raise DpauditError(f"{csv_path}: line {line}: label {row[1]!r} is not an integer.") from None
    missing = [f.name for f in files if f.name not in table]
    if missing:
        raise DpauditError(f"{csv_path}: no label for {missing[0]} ({len(missing)} images lack one).")
    return [table[f.name] for f in files]


def _read_one_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DpauditError(
                    f"{path}: {im.width}x{im.height} pixels exceed the limit of {MAX_PIXELS}."
                )
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
            return np.asarray(im)
    except DpauditError:
        raise
    except Image.DecompressionBombError:
        raise DpauditError(f"{path}: the image exceeds the limit of {MAX_PIXELS} pixels.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DpauditError(f"{path}: cannot read the image ({e}).") from None


def read_npz(path: Path, *, name: str, num_classes: int | None = None) -> ImageSet:
    """An `.npz` with array `x` and optional `y`. Object arrays are refused, never unpickled."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise DpauditError(f"{path}: the .npz holds no array named 'x' (found {data.files}).")
            x = data["x"]
            y = data["y"] if "y" in data.files else None
    except DpauditError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DpauditError(f"{path}: holds an object (pickled) array; refused for safety.") from None
        raise DpauditError(f"{path}: cannot read the .npz ({e}).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DpauditError(f"{path}: cannot read the .npz ({e}).") from None
    return from_array(x, y, name=name, source=str(path), num_classes=num_classes)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path: str | Path) -> bytes:
    """The content of an IDX file, decompressed when it ends in .gz."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as e:
        raise DpauditError(f"{path}: cannot read the IDX file ({e}).") from None


def read_idx(path: str | Path, raw: bytes | None = None) -> np.ndarray:
    """An IDX file (plain or gzip) as a numpy array; `raw` is its content when already read.
    Hand-written: the format is 4 header bytes and big-endian sizes, and torchvision's reader
    is private API."""
    path = Path(path)
    raw = read_idx_bytes(path) if raw is None else raw
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DpauditError(f"{path}: not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DpauditError(f"{path}: the IDX header is truncated.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DpauditError(
            f"{path}: the IDX file holds {len(raw) - header} data bytes, its header promises {expected}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


# ---------------------------------------------------------------- writers


def write_png_folder(images: ImageSet, folder: str | Path) -> Path:
    """Write PNGs: `folder/<label>/<index>.png` when labelled, else `folder/<index>.png`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(images.x).permute(0, 2, 3, 1).numpy()
    width = len(str(len(images)))
    for i, img in enumerate(pixels):
        sub = folder if images.y is None else folder / str(int(images.y[i]))
        sub.mkdir(exist_ok=True)
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(sub / f"{i:0{width}d}.png")
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
        raise DpauditError(f"{path}: the folder is not empty; choose a new --out.")
