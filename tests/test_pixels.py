"""Pixels: stored images read as float32, the same whichever way they are stored (float32, 8-bit
in memory, 8-bit memory-mapped in N x H x W x C), by index, slice, block, view, subset and map."""

import numpy as np
import pytest
import torch

from dpaudit import pixels as pixels_module
from dpaudit.pixels import Pixels, as_pixels

RNG = np.random.default_rng(0)
STORED = RNG.integers(0, 256, size=(37, 3, 5, 4), dtype=np.uint8)  # N x C x H x W
EXPECTED = torch.from_numpy(STORED.astype(np.float32) / 255)  # what every reader must see


def _memmap(tmp_path) -> np.ndarray:
    """STORED on disk as N x H x W x C (how .npz files hold images), mapped and viewed as N x C x H x W."""
    path = tmp_path / "pixels.u8"
    on_disk = np.memmap(path, dtype=np.uint8, mode="w+", shape=(37, 5, 4, 3))
    on_disk[:] = STORED.transpose(0, 2, 3, 1)
    on_disk.flush()
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(37, 5, 4, 3)).transpose(0, 3, 1, 2)


@pytest.fixture(params=["float32", "uint8 tensor", "uint8 array", "memory map"])
def stored(request, tmp_path) -> Pixels:
    return Pixels({
        "float32": lambda: EXPECTED.clone(),
        "uint8 tensor": lambda: torch.from_numpy(STORED.copy()),
        "uint8 array": lambda: STORED.copy(),
        "memory map": lambda: _memmap(tmp_path),
    }[request.param]())


def test_every_read_gives_the_float32_images(stored, monkeypatch):
    monkeypatch.setattr(pixels_module, "BLOCK_VALUES", 5 * 60)  # five images a block: the last block short
    idx = torch.tensor([[3, 0], [36, 3]])
    assert len(stored) == 37 and stored.stored_shape == (3, 5, 4) and stored.dim() == 4
    assert torch.equal(stored[4], EXPECTED[4])
    assert torch.equal(stored[2:9], EXPECTED[2:9])
    assert torch.equal(stored[idx], EXPECTED[idx])  # ints of any shape: [*idx, C, H, W]
    assert torch.equal(stored.float(), EXPECTED)
    blocks = list(stored.blocks())
    assert [start for start, _ in blocks] == list(range(0, 37, 5))
    assert torch.equal(torch.cat([block for _, block in blocks]), EXPECTED)
    assert all(block.dtype == torch.float32 for _, block in blocks)


def test_views_subsets_and_maps_read_the_images_they_name(stored):
    pick = torch.tensor([30, 2, 2, 11])
    view = stored.view(pick)
    assert len(view) == 4 and torch.equal(view.float(), EXPECTED[pick])
    assert torch.equal(view.view([3, 0])[0:2], EXPECTED[[11, 30]])  # a view of a view
    subset = stored.subset(pick)
    assert isinstance(subset.data, torch.Tensor) and subset.data.dtype == (
        torch.float32 if stored.data.dtype == torch.float32 else torch.uint8)  # 8-bit stays 8-bit
    assert torch.equal(subset.float(), EXPECTED[pick])
    doubled = view.map(lambda x: x * 2).map(lambda x: x.flatten(1))
    assert torch.equal(doubled.float(), (EXPECTED[pick] * 2).flatten(1))
    assert torch.equal(doubled[[1]], (EXPECTED[[2]] * 2).flatten(1))
    assert doubled.float_bytes() == 4 * 4 * 60


def test_only_an_unmapped_float32_tensor_is_returned_without_a_copy(stored):
    assert stored.is_float_tensor == (stored.data.dtype == torch.float32)
    assert (stored.float() is stored.data) == stored.is_float_tensor
    assert not stored.map(lambda x: x).is_float_tensor and not stored.view([0]).is_float_tensor
    assert as_pixels(EXPECTED).data is EXPECTED


def test_memory_maps_are_told_apart(stored):
    assert stored.memory_mapped == isinstance(stored.data, np.memmap)


def test_other_value_types_are_refused():
    for data in (torch.zeros(2, 1, 2, 2, dtype=torch.float64), np.zeros((2, 1, 2, 2), np.float32)):
        with pytest.raises(ValueError, match="float32 or uint8"):
            Pixels(data)


def _resident_file_pages_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssFile"))


def test_a_pass_over_a_memory_map_does_not_keep_its_pages_resident(tmp_path, monkeypatch):
    path = tmp_path / "big.u8"
    n, row = 2000, 64 * 1024  # 125 MiB on disk
    np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, 1, 256, 256)).flush()
    stored = Pixels(np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 1, 256, 256)))
    monkeypatch.setattr(pixels_module, "BLOCK_VALUES", 100 * row)  # 20 blocks of 6.25 MiB
    before = _resident_file_pages_kib()
    most = max(_resident_file_pages_kib() - before for _ in stored.blocks())
    assert most < 4 * 100 * row / 1024  # a block or two resident at a time, never the file (128,000 KiB)
    assert sum(float(block[:, 0, 0, 0].sum()) for _, block in stored.blocks()) == 0  # and still read right
    most = max(_resident_file_pages_kib() - before for _ in stored.stored_blocks())
    assert most < 4 * 100 * row / 1024
    scattered = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:500]
    most = max(_resident_file_pages_kib() - before for rows in scattered.split(100) if len(stored[rows]))
    assert most < 4 * 100 * row / 1024  # nor do scattered reads
