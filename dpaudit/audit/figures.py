"""Image grids for the result's figures (embedded as PNG): the synthetic samples, the synthetic
images closest to a member, the reconstructions beside their nearest images. One builder,
torchvision's make_grid, for all of them."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid

from dpaudit.images import ImageSet, to_uint8

SAMPLE_GRID_SIZE = 8
SAMPLE_GRID_MAX_CLASSES = 10
MIN_TILE = 28  # tiles smaller than this (8x8 digits) are enlarged by a whole factor


def tile_grid(tiles: torch.Tensor, per_row: int, *, padding: int = 2, enlarge: bool = True) -> np.ndarray:
    """N x C x H x W images in [0, 1] as one uint8 image (H x W x C), read row by row, `per_row` a
    row, white gutters of `padding` pixels; with `enlarge`, small tiles are scaled up to about
    MIN_TILE pixels so that they stay visible. Grey stays grey."""
    scale = max(1, MIN_TILE // tiles.shape[-1]) if enlarge else 1
    tiles = tiles.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(tiles.clamp(0, 1), nrow=per_row, padding=padding, pad_value=1.0)
    # make_grid turns one channel into three equal ones.
    return to_uint8(grid[: tiles.shape[1]]).permute(1, 2, 0).numpy()


def sample_grid(images: ImageSet, per_row: int = SAMPLE_GRID_SIZE, seed: int = 0) -> np.ndarray:
    """Random samples, `per_row` a row: one row per class (the first ten) where labelled, else
    `per_row` rows; short rows are filled with white tiles."""
    generator = torch.Generator().manual_seed(seed)
    if images.y is not None:
        rows = []
        for label in torch.unique(images.y)[:SAMPLE_GRID_MAX_CLASSES].tolist():
            idx = torch.nonzero(images.y == label).flatten()
            rows.append(idx[torch.randperm(len(idx), generator=generator)[:per_row]])
    else:
        idx = torch.randperm(len(images), generator=generator)[: per_row * per_row]
        rows = list(idx.split(per_row))
    blank = torch.ones(1, *images.shape)
    tiles = torch.cat([torch.cat([images.take(row), blank.expand(per_row - len(row), -1, -1, -1)]) for row in rows])
    return tile_grid(tiles, per_row, padding=1, enlarge=False)


def columns_grid(columns: list[torch.Tensor]) -> np.ndarray:
    """One row per index, the given N x C x H x W columns side by side (e.g. synthetic | member)."""
    return tile_grid(torch.stack(columns, 1).flatten(0, 1), len(columns))
