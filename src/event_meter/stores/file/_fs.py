"""File-system primitives: atomic replace and ``flock`` locks. One home for both."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from event_meter.errors import LockLostError

__all__ = [
    "FlockLease",
    "atomic_write",
    "ensure_dir",
    "exclusive",
    "fsync_dir",
    "read_json",
    "remove_stale_temp_files",
    "try_flock",
]


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in folder ``path`` durable (survive a power loss)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename over ``path``.

    Readers see the old content or the new, never a part. With ``fsync`` the
    folder is fsynced too, so the rename itself survives a power loss; a caller
    writing many files may pass ``sync_dir=False`` and ``fsync_dir`` each folder
    once before it relies on the renames.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=TEMP_SUFFIX)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        if fsync and sync_dir:
            fsync_dir(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


TEMP_SUFFIX = ".tmp"


def remove_stale_temp_files(folder: Path, max_age_seconds: float) -> int:
    """Unlink ``atomic_write`` temp files a killed writer left in ``folder``.

    Only dot-prefixed ``.tmp`` files older than ``max_age_seconds`` of real time
    (mtimes are real time) go, so a live writer's temp file is never touched.
    Returns how many were removed.
    """
    cutoff = time.time() - max_age_seconds
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
    return removed


def read_json(path: Path) -> object | None:
    """The JSON value in ``path``; None when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return orjson.loads(data) if data else None


def try_flock(path: Path) -> int | None:
    """Open ``path`` (created if needed) and take a non-blocking exclusive ``flock``.

    Returns the fd holding the lock, or None when another holder has it. The
    kernel drops the lock when the holder dies, so a crashed holder never
    blocks anyone. Lock files are never unlinked (that would race).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold a blocking exclusive ``flock`` on ``path`` for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class FlockLease:
    """A lease held as an ``flock`` on an open fd: it cannot expire while we live."""

    __slots__ = ("_fd", "_pid")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pid = os.getpid()

    def check(self) -> None:
        if self._fd < 0:
            raise LockLostError("the file lock was released before this write")
        if os.getpid() != self._pid:
            raise LockLostError("a forked child cannot use its parent's file lock")

    def release(self) -> None:
        if self._fd >= 0 and os.getpid() == self._pid:
            os.close(self._fd)
        self._fd = -1
