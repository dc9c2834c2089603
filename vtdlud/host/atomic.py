"""Atomic file replacement: write a temp file, fsync it, rename over the target, fsync the dir.

A reader (or a crash at any instant, SIGKILL included) sees either the old file or the new one,
never a mix or a truncated file.  Used for the ledger, the daemon's status.json and metrics.

The directory must exist: a missing parent is an error (``collect -o /nonexistent/x.tar.gz``
must not create ``/nonexistent`` as root).  A writer killed mid-write leaves its temp file
(``.NAME.<random>.tmp``); the next write of the same file removes those older than
:data:`STALE_SECONDS`, and the daemon removes its own at start (:func:`sweep_temps`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pathlib is imported by the callers that make paths
    from pathlib import Path

STALE_SECONDS = 600  # no write of one of these files takes that long: its temp is a leftover


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file object whose contents replace ``path`` when the block ends without an error;
    on an error (or a kill) the old ``path`` stays and the temp file is removed."""
    sweep_temps(path, older_than=STALE_SECONDS)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def sweep_temps(path: Path, *, older_than: float = 0) -> int:
    """Remove the temp files writers of ``path`` left (killed mid-write) that are older than
    ``older_than`` seconds; returns how many.  Errors are ignored: this is tidying."""
    now = time.time()
    prefix, n = f".{path.name}.", 0
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        stale = path.parent / name
        try:
            if now - os.lstat(stale).st_mtime >= older_than:
                stale.unlink()
                n += 1
        except OSError:
            continue
    return n


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, private (0600) temp file beside ``path``, as tempfile.mkstemp makes one; done here
    with O_EXCL and a random name so the CLI does not import tempfile (and random, shutil)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp name for {path.name}")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_file(path, mode=mode) as f:
        f.write(data)


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
