"""The user cache: keys, atomic entries, and unreadable entries treated as absent."""

import pickle

import torch

from dpaudit.cache import cache_dir, entry_path, load_entry, save_entry


class Boom:
    """Unpickling this would run code: a weights-only load must refuse it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled')",))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DPAUDIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dpaudit"


def test_entry_path_depends_on_every_input_but_not_on_key_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    a = entry_path("trtr", "dpdm", {"seed": 0, "members": "abc"})
    assert a == entry_path("trtr", "dpdm", {"members": "abc", "seed": 0})
    assert a != entry_path("trtr", "dpdm", {"members": "abc", "seed": 1})
    assert a.parent == tmp_path / "trtr" and a.name.startswith("dpdm-") and a.suffix == ".pt"


def test_entries_round_trip_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "kind" / "e.pt"
    entry = {"state": {"w": torch.arange(6.0).reshape(2, 3)}, "best_epoch": 3, "val_accuracy": [0.5, 0.75]}
    data = save_entry(path, entry)
    assert path.read_bytes() == data
    loaded = load_entry(path)
    assert torch.equal(loaded["state"]["w"], entry["state"]["w"])
    assert loaded["best_epoch"] == 3 and loaded["val_accuracy"] == [0.5, 0.75]
    assert [p.name for p in path.parent.iterdir()] == ["e.pt"]


def test_missing_corrupt_and_pickled_entries_are_absent(tmp_path):
    assert load_entry(tmp_path / "none.pt") is None
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    assert load_entry(corrupt) is None
    pickled = tmp_path / "pickled.pt"
    torch.save({"x": Boom()}, pickled, pickle_module=pickle)
    assert load_entry(pickled) is None  # refused by weights_only, never executed
