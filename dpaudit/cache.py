"""The user cache on disk: where it is, and how its entries are written and read.

Work that depends only on the real reference, such as the LeNet feature net of a custom
reference or the classifier trained on the real members (the TRTR ceiling), is kept here under
a hash of everything it depends on, so that the next audit against the same reference skips
it. Entries are torch files written atomically and read with `weights_only=True` (tensors,
numbers, strings, lists and dicts; nothing is unpickled). An unreadable entry counts as absent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it: a concurrent reader
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def save_entry(path: Path, entry: Any) -> bytes:
    """torch.save `entry` to `path` atomically; returns the bytes written."""
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    data = buffer.getvalue()
    write_atomic(path, data)
    return data


def load_entry(path: Path) -> Any | None:
    """The entry at `path`, or None when it is missing or unreadable (a corrupt or stale entry
    is recomputed and overwritten by the caller)."""
    if not path.is_file():
        return None
    try:
        return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on a bad file
        return None
