"""Writing files so that nothing is lost or mixed: every output is written to a temporary file
beside its place and renamed over it (a reader, or the previous run's file, never sees half a
file), and an output folder is checked to be writable before the work that fills it starts."""

from __future__ import annotations

import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dpaudit.errors import DpauditError


def create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file in `path`'s folder, opened for writing: (descriptor, path).
    Hand-written rather than tempfile.mkstemp, whose files are mode 0600: the output renamed
    from it must get the usual mode (0666 less the umask), like any file the user writes."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`; an OSError
    (a full disk) propagates and leaves `path` as it was and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; renamed over `path` when the block ends without
    an error, removed otherwise (a full disk, an interrupt). An OSError becomes one sentence."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_beside(path)
    except OSError as e:
        raise DpauditError(f"{path}: cannot write here ({e.strerror or e}).") from None
    os.close(fd)
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
