"""The user cache on disk: where it is, and how its entries are written and read.

Work that depends only on the real reference, such as the LeNet feature net of a custom
reference or the classifier trained on the real members (the TRTR ceiling), is kept here under
a hash of everything it depends on, so that the next audit against the same reference skips
it. Entries are torch files written atomically and read with `weights_only=True` (tensors,
numbers, strings, lists and dicts; nothing is unpickled). An unreadable entry counts as absent.

Behind the user cache sits a read-only one shipped in the package (`dpaudit/weights/cache/`,
written by `scripts/ship_cache.py`): entries for the built-in datasets' default splits, under the
same names, each checked against the sha256 in its `index.json` before it is read. A fresh
machine (a CI runner) then audits against a built-in dataset as fast as a warm one, as
precomputed reference statistics do for FID tools.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from dpaudit.files import write_atomic

SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "cache"
SHIPPED_INDEX = SHIPPED_DIR / "index.json"


def cache_dir() -> Path:
    """The user cache: $DPAUDIT_CACHE, else $XDG_CACHE_HOME/dpaudit, else ~/.cache/dpaudit."""
    if os.environ.get("DPAUDIT_CACHE"):
        return Path(os.environ["DPAUDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dpaudit"


def entry_path(kind: str, prefix: str, depends_on: dict) -> Path:
    """`<cache_dir>/<kind>/<prefix>-<hash>.pt`, the hash over the JSON of `depends_on`."""
    key = hashlib.sha256(json.dumps(depends_on, sort_keys=True).encode()).hexdigest()
    return cache_dir() / kind / f"{prefix}-{key[:32]}.pt"


def save_entry(path: Path, entry: Any) -> bytes:
    """torch.save `entry` to `path` atomically, its tensors moved to the CPU (an entry written
    by a GPU run loads on any machine); returns the bytes written."""
    import torch  # here, not at the top: `dpaudit datasets` finds the cache without torch

    buffer = io.BytesIO()
    torch.save(_on_cpu(entry), buffer)
    data = buffer.getvalue()
    write_atomic(path, data)
    return data


def _on_cpu(entry: Any) -> Any:
    """`entry` (tensors inside dicts, lists and tuples) with every tensor on the CPU."""
    if hasattr(entry, "cpu") and hasattr(entry, "device"):
        return entry.cpu()
    if isinstance(entry, dict):
        return {k: _on_cpu(v) for k, v in entry.items()}
    if isinstance(entry, (list, tuple)):
        return type(entry)(_on_cpu(v) for v in entry)
    return entry


def shipped_name(path: Path) -> str:
    """`<kind>/<file>`: the name of a cache entry, the same in the user and the shipped cache."""
    return f"{path.parent.name}/{path.name}"


def _read(data: bytes) -> Any | None:
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on a bad file
        return None


def load_entry(path: Path, *, shipped: bool = True) -> Any | None:
    """The entry at `path`, else the shipped entry of the same name (if its sha256 matches the
    index), else None: missing or unreadable entries count as absent (the caller recomputes
    the entry and writes it to `path`). `shipped=False` reads the user cache only, for entries
    that are never shipped (the features of a user's images)."""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError:  # removed between the check and the read, or unreadable
            data = b""
        entry = _read(data)
        if entry is not None:
            return entry
    if not shipped:
        return None
    shipped_path = SHIPPED_DIR / shipped_name(path)
    if not (SHIPPED_INDEX.is_file() and shipped_path.is_file()):
        return None
    recorded = json.loads(SHIPPED_INDEX.read_text())["entries"].get(shipped_name(path), {}).get("sha256")
    if recorded is None:
        return None
    data = shipped_path.read_bytes()
    return _read(data) if recorded == hashlib.sha256(data).hexdigest() else None
