"""Writing files so that nothing is lost or mixed: every output is written to a temporary file
beside its place and renamed over it (a reader, or the previous run's file, never sees half a
file), and an output folder is checked to be writable before the work that fills it starts."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dpaudit.errors import DpauditError


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`; an OSError
    (a full disk) propagates and leaves `path` as it was and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; renamed over `path` when the block ends without
    an error, removed otherwise (a full disk, an interrupt). An OSError becomes one sentence."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DpauditError(f"{path}: cannot write here ({e.strerror or e}).") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DpauditError(f"{path}: could not be written ({e.strerror or e}); any previous file is unchanged.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable_folder(folder: str | Path) -> Path:
    """Create `folder` if needed and prove that files can be written in it, before long work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DpauditError(f"{folder}: not a folder; choose another --out.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DpauditError(f"{folder}: the output folder is not writable ({e.strerror or e}).") from None
    return folder
