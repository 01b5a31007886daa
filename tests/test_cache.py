"""The user cache: keys, atomic entries, unreadable entries treated as absent; the shipped cache behind it."""

import hashlib
import io
import json
import pickle

import pytest
import torch

from dpaudit import cache
from dpaudit.audit import classifiers
from dpaudit.audit.profiles import QUICK
from dpaudit.cache import cache_dir, entry_path, load_entry, save_entry
from dpaudit.datasets import load_split


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


def _ship(monkeypatch, shipped_dir, name, data, sha256):
    """A shipped cache in shipped_dir holding one entry `name` with the given recorded sha256."""
    monkeypatch.setattr(cache, "SHIPPED_DIR", shipped_dir)
    monkeypatch.setattr(cache, "SHIPPED_INDEX", shipped_dir / "index.json")
    (shipped_dir / name).parent.mkdir(parents=True)
    (shipped_dir / name).write_bytes(data)
    (shipped_dir / "index.json").write_text(json.dumps({"entries": {name: {"sha256": sha256}}}))


def test_a_shipped_entry_is_read_when_the_user_cache_lacks_it_and_its_sha256_matches(monkeypatch, tmp_path):
    buffer = io.BytesIO()
    torch.save({"best_epoch": 4}, buffer)
    data = buffer.getvalue()
    _ship(monkeypatch, tmp_path / "shipped", "trtr/dpdm-abc.pt", data, hashlib.sha256(data).hexdigest())
    user = tmp_path / "user" / "trtr" / "dpdm-abc.pt"
    assert load_entry(user) == {"best_epoch": 4}
    save_entry(user, {"best_epoch": 7})  # the user's own entry comes first
    assert load_entry(user) == {"best_epoch": 7}
    assert load_entry(tmp_path / "user" / "trtr" / "dpdm-other.pt") is None


def test_a_shipped_entry_whose_sha256_does_not_match_is_absent(monkeypatch, tmp_path):
    buffer = io.BytesIO()
    torch.save({"best_epoch": 4}, buffer)
    _ship(monkeypatch, tmp_path / "shipped", "trtr/dpdm-abc.pt", buffer.getvalue(), "0" * 64)
    assert load_entry(tmp_path / "user" / "trtr" / "dpdm-abc.pt") is None


def test_shipped_false_reads_the_user_cache_only(monkeypatch, tmp_path):
    buffer = io.BytesIO()
    torch.save({"best_epoch": 4}, buffer)
    data = buffer.getvalue()
    _ship(monkeypatch, tmp_path / "shipped", "features/x-abc.pt", data, hashlib.sha256(data).hexdigest())
    user = tmp_path / "user" / "features" / "x-abc.pt"
    assert load_entry(user) == {"best_epoch": 4}  # the default still falls back on the shipped entry
    assert load_entry(user, shipped=False) is None
    user.parent.mkdir(parents=True)
    user.write_bytes(b"corrupt")
    assert load_entry(user, shipped=False) is None
    save_entry(user, {"best_epoch": 7})
    assert load_entry(user, shipped=False) == {"best_epoch": 7}


def test_a_failed_write_leaves_the_old_entry_and_no_temporary_file(monkeypatch, tmp_path):
    path = tmp_path / "kind" / "e.pt"
    save_entry(path, {"best_epoch": 1})

    def interrupted(src, dst):
        raise OSError("No space left on device")

    monkeypatch.setattr(cache.os, "replace", interrupted)
    with pytest.raises(OSError):
        save_entry(path, {"best_epoch": 2})
    assert [p.name for p in path.parent.iterdir()] == ["e.pt"] and load_entry(path) == {"best_epoch": 1}


def test_the_shipped_ceiling_of_digits_matches_what_the_quick_profile_would_train(monkeypatch, tmp_path):
    """Guards against drift: the shipped entry is found under the current settings' name, and it
    is what the quick profile trains (the same validation accuracies as a fresh training)."""
    index = json.loads(cache.SHIPPED_INDEX.read_text())["entries"]
    if not any(e["torch"] == torch.__version__ and e["dataset"] == "digits" for e in index.values()):
        pytest.skip(f"no shipped entry for torch {torch.__version__}")
    reference = load_split("digits")
    config, device = QUICK.classifiers, torch.device("cpu")
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    shipped = classifiers.cached_trtr(reference.members, config, 0, device)
    assert shipped.from_cache
    monkeypatch.setattr(cache, "SHIPPED_DIR", tmp_path / "none")
    trained = classifiers.cached_trtr(reference.members, config, 0, device)
    assert not trained.from_cache
    # equal on the machine that wrote it; other CPUs may round differently
    assert trained.val_accuracy == pytest.approx(shipped.val_accuracy, abs=0.03)
