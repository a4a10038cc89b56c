"""The append side of the file stream: one open log file per event name and process."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Final

from event_meter.stores.file._fs import ensure_dir
from event_meter.stores.file._stream_layout import DATA_SUFFIX, minute_name

__all__ = ["Writer"]

_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class Writer:
    """The active log file of one event name in this process.

    ``start``/``end`` cache the file's UTC minute as ``[start, end)`` epoch
    seconds, so a write in the same minute costs one clock call and a compare.
    ``seq`` is the id of the last line written. ``lock`` serialises seq
    increment and write, so seq order is line order. ``fd`` is -1 when no file
    is open (before the first write, after an error or ``close``).
    """

    __slots__ = ("check_at", "end", "fd", "ino", "lock", "logs", "path", "pid", "seq", "start")

    def __init__(self, logs: Path) -> None:
        self.lock = threading.Lock()
        self.logs = logs
        self.fd = -1
        self.path = ""
        self.ino = 0
        self.seq = 0
        self.start = 0.0
        self.end = 0.0  # "now >= end" is true for any clock, so the first write opens
        self.pid = -1
        self.check_at = 0.0

    def still_linked(self) -> bool:
        """True while our file is still at its path (not unlinked, renamed or replaced)."""
        try:
            return os.stat(self.path).st_ino == self.ino
        except FileNotFoundError:
            return False

    def refresh(self, now: float, host: str, pid: int, next_check: float) -> None:
        """Start a new file on a new minute, another pid or a vanished file.

        The caller calls this on the first write, when the minute ended, and
        when the monotonic time reached ``check_at`` (the syscall-costing checks
        run at most that often); ``next_check`` becomes the new ``check_at``.
        """
        self.check_at = next_check
        if now < self.end and pid == self.pid and self.still_linked():
            return
        self.open_new(now, host, pid)

    def open_new(self, now: float, host: str, pid: int) -> None:
        """Close the current file and start a new one for the minute of ``now``.

        The 8 random hex digits keep names distinct even when a pid is reused
        or two stores in one process share a path.
        """
        self.close()
        start = int(now // 60) * 60
        path = os.path.join(
            self.logs, f"{minute_name(start)}-{host}-{pid}-{os.urandom(4).hex()}{DATA_SUFFIX}"
        )
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:
            # The folder was never made, or someone removed it: recreate, retry once.
            ensure_dir(self.logs)
            fd = os.open(path, _OPEN_FLAGS, 0o644)
        try:
            self.ino = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.path = path
        self.seq = 0
        self.start = float(start)
        self.end = float(start + 60)
        self.pid = pid

    def close(self) -> None:
        """Close the file; the next write opens a new one."""
        fd, self.fd = self.fd, -1
        self.end = 0.0
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
