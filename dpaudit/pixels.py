"""Pixels as stored, read as float32: how an ImageSet holds a set larger than its float copy.

An ImageSet's images stay as they came: float32 in [0, 1], or 8-bit values (0..255) in memory
(a quarter of float32's size) or memory-mapped from an uncompressed `.npz` / `.npy` on disk
(none of it held: the operating system pages the file in and out). Readers ask for images by
index (`pixels[idx]`) or in blocks (`pixels.blocks()`) and get float32 in [0, 1], converted
on the way; `pixels.float()` is the whole set as float32, a copy of everything (free only for
a set stored as float32), for sets known to be small.

`pixels.map(fn)` reads the same images through a per-image function (a spectrum, a pooled or
normalised image): a search over 500,000 references streams them block by block, converted
and mapped one block at a time, instead of holding all of them converted (dpaudit.neighbors).
"""

from __future__ import annotations

import mmap
from typing import Callable, Iterator

import numpy as np
import torch

# Float32 values one block holds (64 MiB): large enough for full-speed matrix products, small
# beside the sets it streams.
BLOCK_VALUES = 1 << 24


class Pixels:
    """Stored images (float32 in [0, 1], or uint8 0..255 as a torch tensor or a numpy array,
    possibly memory-mapped), read as float32 in [0, 1], each read image passed through `fn`
    when given (a per-image function of a float32 batch). With `index`, only the stored images
    at those positions, in that order (a view: nothing is copied)."""

    def __init__(self, data: torch.Tensor | np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 index: torch.Tensor | None = None):
        stored = (torch.float32, torch.uint8) if isinstance(data, torch.Tensor) else (np.uint8,)
        if data.dtype not in stored:
            raise ValueError(f"Pixels hold float32 or uint8 values, not {data.dtype}")
        self.data, self.fn, self.index = data, fn, index

    def __len__(self) -> int:
        return len(self.data) if self.index is None else len(self.index)

    def dim(self) -> int:
        """As torch.Tensor.dim() (of the stored images): code that reads a tensor by index and
        slice (nets.train_classifier, predict_logits) reads Pixels the same way."""
        return 1 + len(self.stored_shape)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The shape of one stored image (before `fn`)."""
        return tuple(self.data.shape[1:])

    @property
    def is_float_tensor(self) -> bool:
        """True when `float()` is the stored tensor itself (float32, no `fn`): no copy, no conversion."""
        return (isinstance(self.data, torch.Tensor) and self.data.dtype == torch.float32 and self.fn is None
                and self.index is None)

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self.data, np.memmap) or isinstance(getattr(self.data, "base", None), np.memmap)

    def _convert(self, raw: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(raw, np.ndarray):
            raw = torch.from_numpy(raw)
        out = raw if raw.dtype == torch.float32 else raw.float().div_(255)
        return out if self.fn is None else self.fn(out)

    def _stored(self, idx) -> torch.Tensor | np.ndarray:
        """The stored images at `idx` (a slice, or a 1-D tensor of positions in this view); from
        a numpy array, a C-ordered copy (a memory map's pages are then let go: `release_pages`)."""
        if self.index is not None:
            idx = self.index[idx]
        if isinstance(self.data, torch.Tensor):
            return self.data[idx] if isinstance(idx, slice) else self.data[idx.to(self.data.device)]
        raw = np.array(self.data[idx if isinstance(idx, slice) else idx.numpy()], order="C")
        self.release_pages()
        return raw

    def __getitem__(self, idx) -> torch.Tensor:
        """The images at `idx` (an int, a slice, or ints of any shape) as float32 [*idx, ...]."""
        if isinstance(idx, slice):
            return self._convert(self._stored(idx))
        if isinstance(idx, int):
            return self[[idx]][0]
        idx = torch.as_tensor(idx, dtype=torch.long)
        out = self._convert(self._stored(idx.reshape(-1)))
        return out.reshape(*idx.shape, *out.shape[1:])

    def rows_per_block(self) -> int:
        """Images a block holds: BLOCK_VALUES float32 values (at least one image)."""
        return max(1, BLOCK_VALUES // max(1, int(np.prod(self.stored_shape))))

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, images start..start + rows as float32) over the whole set, in order."""
        rows = rows or self.rows_per_block()
        for start in range(0, len(self), rows):
            yield start, self[start : start + rows]

    def release_pages(self) -> None:
        """Drop this process's mappings of the memory map's pages (madvise MADV_DONTNEED), after
        every read: they stay in the page cache, so a later read costs a minor page fault, but
        they no longer count in the process's resident memory, which a pass over a large set (or
        a few thousand scattered rows, each fault mapping its neighbours too) would otherwise fill
        with the file. Nothing for sets in memory."""
        mapping = getattr(self.data, "_mmap", None) if self.memory_mapped else None
        if mapping is not None and hasattr(mapping, "madvise"):
            mapping.madvise(mmap.MADV_DONTNEED)

    def float(self) -> torch.Tensor:
        """Every image as float32 (through `fn`): the stored tensor itself when is_float_tensor,
        else a converted copy of everything."""
        if self.is_float_tensor:
            return self.data
        if len(self) == 0:
            return self[:0]
        return torch.cat([block for _, block in self.blocks()])

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Pixels":
        """The same images read through `fn` (after this one's own function, if any)."""
        inner = self.fn
        return Pixels(self.data, fn if inner is None else lambda x: fn(inner(x)), self.index)

    def view(self, idx) -> "Pixels":
        """The images at `idx` (ints), read from this storage when read (nothing copied)."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        return Pixels(self.data, self.fn, idx if self.index is None else self.index[idx])

    def subset(self, idx) -> "Pixels":
        """The stored images at `idx` (ints), copied into memory as stored (uint8 stays uint8)."""
        raw = self._stored(torch.as_tensor(idx, dtype=torch.long).reshape(-1))
        return Pixels(torch.from_numpy(raw) if isinstance(raw, np.ndarray) else raw, self.fn)

    def stored_blocks(self, rows: int | None = None) -> Iterator[np.ndarray | torch.Tensor]:
        """The stored values block by block, C-contiguous (what a digest hashes)."""
        rows = rows or self.rows_per_block()
        for start in range(0, len(self), rows):
            raw = self._stored(slice(start, start + rows))
            yield raw if isinstance(raw, np.ndarray) else raw.contiguous()

    def float_bytes(self) -> int:
        """Bytes of `float()`: every image as float32, after `fn`."""
        return 0 if len(self) == 0 else 4 * len(self) * self[:1][0].numel()


def as_pixels(rows: "torch.Tensor | Pixels") -> Pixels:
    """`rows` as Pixels (a float32 tensor is wrapped without a copy)."""
    if isinstance(rows, Pixels):
        return rows
    return Pixels(rows if rows.dtype in (torch.float32, torch.uint8) else rows.float())
