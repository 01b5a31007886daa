"""The image grids of the result's figures: layout, enlargement of tiny tiles, grey kept grey."""

import numpy as np
import torch

from dpaudit.audit.figures import columns_grid, sample_grid, tile_grid
from dpaudit.images import to_uint8


def test_columns_grid_layout():
    columns = [torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grid = columns_grid(columns)[:, :, 0]
    # 8x8 tiles enlarged 3x (to 24 px), 2-pixel white gutters around every tile.
    assert grid.dtype == np.uint8 and grid.shape == (2 * 24 + 3 * 2, 3 * 24 + 4 * 2)
    second_row_third_column = grid[2 + 24 + 2 : 2 + 24 + 2 + 24, 2 + 2 * 26 : 2 + 2 * 26 + 24]
    expected = to_uint8(columns[2][1, 0]).numpy().repeat(3, 0).repeat(3, 1)
    np.testing.assert_array_equal(second_row_third_column, expected)
    assert (grid[:2] == 255).all()


def test_sample_grid_has_one_row_per_class_and_white_fill(digits):
    grid = sample_grid(digits.test, per_row=4)
    assert grid.dtype == np.uint8 and grid.shape == (10 * 9 + 1, 4 * 9 + 1, 1)
    few = digits.test.subset(torch.nonzero(digits.test.y < 2).flatten()[:5])  # class 0 and 1, short rows
    grid = sample_grid(few, per_row=8)
    assert grid.shape == (2 * 9 + 1, 8 * 9 + 1, 1) and (grid[1:9, -9:-1] == 255).all()


def test_colour_tiles_keep_three_channels_and_full_size_tiles_are_not_enlarged():
    tiles = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    grid = tile_grid(tiles, 2)
    assert grid.shape == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2, 3)
    np.testing.assert_array_equal(grid[2:30, 2:30], to_uint8(tiles[0]).permute(1, 2, 0).numpy())
