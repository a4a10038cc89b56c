"""``FileStream``: pending events as per-process, per-minute JSON-lines files (SPEC 11).

Writing: each process appends to its own file per UTC minute of the bound
clock, ``logs/YYYYMMDDHHMM-<host>-<pid>-<8 hex>.jsonl``, one line
``{"id": <seq>, "payload": {...}}`` per event, each with a single ``os.write``
on an ``O_APPEND`` fd. There is no user-space buffer: after ``append``
returns, the line is in the kernel's page cache (visible to every reader and
safe from a crash of this process). ``sync="fsync"`` also ``fsync``s every
line (safe from a crash of the machine); ``"flush"`` and ``"none"`` therefore
behave the same.

Reading: files whose minute ended ``CLAIM_GRACE_SECONDS`` ago are claimed
with an ``flock`` on ``claim_locks/<file>.lock`` and moved to
``processing/``; progress through a partly consumed file is kept in
``processing/<file>.offset``. Entry ids are ``<file>:<line number>``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import monotonic as _monotonic
from time import time as _wall_time
from typing import Any, ClassVar, Final

import orjson

from event_meter._time import Clock, SystemClock, iso_us
from event_meter.errors import ConfigurationError, StorageError
from event_meter.stores.base import Entry, StreamBatch, StreamStore
from event_meter.stores.file._fs import ensure_dir
from event_meter.stores.file._stream_claims import (
    BatchHandle,
    Claim,
    claim_file,
    claimable_files,
    close_claim,
    finish_claim,
    read_claim,
    storage_error,
)
from event_meter.stores.file._stream_layout import StreamDirs, sanitize_host
from event_meter.stores.file._stream_quarantine import housekeep, quarantine_rows
from event_meter.stores.file._stream_writer import Writer

__all__ = ["FileStream"]

SYNC_MODES: Final = ("none", "flush", "fsync")
_logger = logging.getLogger("event_meter")
_dumps = orjson.dumps  # a global lookup instead of a module attribute on the hot path
_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
# A write(2) that fails wrote nothing; on a full disk the file stays clean and is kept.
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
# A data file that cannot be read is skipped (and retried on the next pass) rather
# than failing the whole read: it must not block every file after it.
_UNREADABLE: Final = frozenset({errno.EACCES, errno.EPERM, errno.EIO, errno.EISDIR})


class FileStream(StreamStore):
    """The file stream under ``path``. Thread-safe; after ``os.fork()`` the child
    drops the parent's files and claim locks and starts its own files."""

    overlapping_batches = True

    CLAIM_GRACE_SECONDS: ClassVar[float] = 10.0
    STALE_PARTIAL_SECONDS: ClassVar[float] = 600.0
    QUARANTINE_RETENTION_SECONDS: ClassVar[float] = 7 * 86_400.0
    HOUSEKEEPING_INTERVAL_SECONDS: ClassVar[float] = 3_600.0
    STALE_LOCK_SECONDS: ClassVar[float] = 3_600.0
    VANISHED_CHECK_SECONDS: ClassVar[float] = 1.0

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync: str = "flush",
        *,
        host: str | None = None,
        pid: Callable[[], int] | None = None,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ConfigurationError(
                f"stream sync={sync!r} is not a sync mode; use one of {', '.join(SYNC_MODES)}"
            )
        self.path = Path(path)
        self.sync = sync
        self._fsync = sync == "fsync"
        self._host = sanitize_host(socket.gethostname() if host is None else host)
        self._pid = os.getpid if pid is None else pid
        self._pid_injected = pid is not None
        self.clock = SystemClock()  # until ``bind`` gives the meter's clock
        self._lock = threading.Lock()
        self._writers: dict[str, Writer] = {}
        self._claims: set[Claim] = set()
        # Per (processing folder, file): the last claim of a batch not yet deleted that
        # stopped before the file's end. The next read continues it (``_continue``).
        self._tails: dict[tuple[Path, str], Claim] = {}
        self._housekept: dict[str, float] = {}
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"FileStream({str(self.path)!r}, sync={self.sync!r})"

    # -- writing -----------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The bound clock; file minutes and the claim grace period follow it."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        # The hot path wants epoch seconds: the system clock's are time.time(),
        # which is several times cheaper than now().timestamp().
        self._now: Callable[[], float] = (
            _wall_time if type(clock) is SystemClock else lambda: clock.now().timestamp()
        )

    def append(self, name: str, payload: Mapping[str, Any]) -> None:
        """Write one line for ``payload``; raises ``StorageError`` when the write fails."""
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writer(name)
        lock = writer.lock
        lock.acquire()  # not ``with``: on 3.11 that costs twice as much on this path
        try:
            now = self._now()
            # Per write: one clock call and compares. The vanished-file check
            # (a stat) and the pid backstop (a syscall) run at most once a
            # second of monotonic time; the at-fork hook is what normally
            # resets a forked child. An injected pid is compared on every write.
            if (
                now >= writer.end
                or _monotonic() >= writer.check_at
                or (self._pid_injected and self._pid() != writer.pid)
            ):
                self._refresh(writer, now)
            body = payload if type(payload) is dict else dict(payload)
            line = _dumps({"id": writer.seq + 1, "payload": body}, option=_APPEND_NEWLINE)
            written = -1
            try:
                written = os.write(writer.fd, line)
                if written == len(line):
                    writer.seq += 1
                    if self._fsync:
                        os.fsync(writer.fd)
                    return
            except OSError as exc:
                # Otherwise the next append starts a clean file. After a failed write
                # on a full disk this one is still clean: a new file per failed write
                # would pile up empty files for as long as the disk stays full.
                if written >= 0 or exc.errno not in _DISK_FULL:
                    writer.close()
                raise StorageError(f"file stream could not append to {writer.path}: {exc}") from exc
            # A short write leaves a partial line: abandon the file so that line
            # stays its incomplete last line (quarantined once stale).
            writer.close()
            raise StorageError(f"file stream wrote a partial line to {writer.path}")
        finally:
            lock.release()

    def _writer(self, name: str) -> Writer:
        """The writer of ``name``, made once even when threads race to make it."""
        with self._lock:
            writer = self._writers.get(name)
            if writer is None:
                writer = Writer(StreamDirs.of(self.path, name).logs)
                self._writers[name] = writer
            return writer

    def _refresh(self, writer: Writer, now: float) -> None:
        """The rare path of ``append``: maybe start a new file (see ``Writer.refresh``)."""
        try:
            next_check = _monotonic() + self.VANISHED_CHECK_SECONDS
            writer.refresh(now, self._host, self._pid(), next_check)
        except OSError as exc:
            raise storage_error("open a log file in", exc) from exc

    # -- reading -----------------------------------------------------------

    def read(self, name: str, limit: int) -> StreamBatch:
        """Claim files and return up to ``limit`` rows (at least one if any is ready).

        Files are taken oldest minute first; the last one may be consumed in
        part (the batch remembers where it stopped). A claimed file with no new
        complete line is released at once, and a finished empty one removed, so
        looping ``read`` until an empty batch always terminates. A file that cannot
        be read (permissions, an I/O error) is skipped with a warning naming it and
        stays pending, so it never blocks the files after it.
        """
        dirs = StreamDirs.of(self.path, name)
        now = self._now()
        self._housekeep(name, dirs)
        handle = BatchHandle(dirs)
        entries: list[Entry] = []
        limit = max(limit, 1)
        try:
            files = claimable_files(dirs, now, self.CLAIM_GRACE_SECONDS)
            if files:
                ensure_dir(dirs.processing)
                ensure_dir(dirs.claim_locks)
            for file, in_processing in files:
                if len(entries) >= limit:
                    break
                continued = self._continue(dirs, file)
                claim = continued or claim_file(dirs, file, in_processing)
                if claim is None:
                    continue
                with self._lock:  # so that close() and a fork can drop it
                    self._claims.add(claim)
                handle.claims.append(claim)
                before = len(entries)
                try:
                    read_claim(
                        dirs, claim, limit - before, entries, now, self.STALE_PARTIAL_SECONDS
                    )
                except OSError as exc:
                    if exc.errno not in _UNREADABLE:
                        raise
                    del entries[before:]  # rows read before the error are not ours
                    handle.claims.pop()
                    self._untrack(claim)
                    _logger.warning(
                        "event_meter: cannot read stream file %s (%s); skipped, its rows "
                        "stay pending for a later pass",
                        dirs.processing / file,
                        exc.strerror or exc,
                    )
                    continue
                if len(entries) == before:
                    handle.claims.pop()
                    try:
                        # No rows and no partial tail: a finished file (unless an
                        # earlier batch still holds rows of it).
                        if claim.eof and continued is None:
                            finish_claim(dirs, claim)
                    finally:
                        self._untrack(claim)
                    continue
                with self._lock:
                    if claim.eof:
                        self._tails.pop((dirs.processing, file), None)
                    else:
                        self._tails[(dirs.processing, file)] = claim
        except BaseException as exc:
            self._close_claims(handle)
            if isinstance(exc, OSError):
                raise storage_error("read", exc) from exc
            raise
        fresh = bool(handle.claims) and all(claim.fresh for claim in handle.claims)
        return StreamBatch(name, entries, handle, fresh=fresh)

    def delete(self, batch: StreamBatch) -> None:
        """Remove the batch's rows (finished files go, others keep an offset); idempotent."""
        handle = batch.handle
        if not isinstance(handle, BatchHandle) or handle.done:
            return
        try:
            for claim in handle.claims:
                if claim.fd >= 0:  # a closed claim (fork, close()) is no longer ours
                    finish_claim(handle.dirs, claim)
        except OSError as exc:
            raise storage_error("delete rows from", exc) from exc
        finally:
            self._close_claims(handle)

    def release(self, batch: StreamBatch) -> None:
        """Give the batch's rows back unchanged; idempotent."""
        handle = batch.handle
        if isinstance(handle, BatchHandle) and not handle.done:
            self._close_claims(handle)

    def quarantine(self, batch: StreamBatch, malformed: Sequence[tuple[Entry, str]]) -> None:
        """Copy malformed rows to ``quarantine/``; logs a warning instead of raising."""
        try:
            quarantine_rows(
                StreamDirs.of(self.path, batch.name),
                malformed,
                when=iso_us(self.clock.now()),
                pid=self._pid(),
            )
        except Exception:
            _logger.warning("could not quarantine malformed rows of %r", batch.name, exc_info=True)

    def close(self) -> None:
        """Close every log file and drop every claim this store still holds."""
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
            claims, self._claims = list(self._claims), set()
            self._tails = {}
        for writer in writers:
            with writer.lock:
                writer.close()
        for claim in claims:
            close_claim(claim)

    # -- claims and housekeeping --------------------------------------------

    def _untrack(self, claim: Claim) -> None:
        """Forget and close one claim (dropping its lock unless a continuation holds it)."""
        with self._lock:
            self._claims.discard(claim)
            for key in [key for key, tail in self._tails.items() if tail is claim]:
                del self._tails[key]
        close_claim(claim)

    def _continue(self, dirs: StreamDirs, file: str) -> Claim | None:
        """A claim on the rows after an earlier batch's, when that batch (not yet
        deleted) stopped inside ``file``: it shares the claim lock (a ``dup`` of its
        descriptor, so the lock lasts until both are closed), and the batches are
        deleted in read order, each saving its own end offset."""
        with self._lock:
            tail = self._tails.get((dirs.processing, file))
            if tail is None or tail.fd < 0:
                return None
            claim = Claim(file, os.dup(tail.fd), tail.end, tail.end, tail.end_line, tail.end_line)
            claim.fresh = tail.fresh
            self._claims.add(claim)
        return claim

    def _close_claims(self, handle: BatchHandle) -> None:
        handle.done = True
        for claim in handle.claims:
            self._untrack(claim)

    def _housekeep(self, name: str, dirs: StreamDirs) -> None:
        """Age out quarantine and stale claim locks, at most once an hour per name."""
        due = _monotonic()
        last = self._housekept.get(name)
        if last is None or due - last >= self.HOUSEKEEPING_INTERVAL_SECONDS:
            self._housekept[name] = due
            housekeep(dirs, self.QUARANTINE_RETENTION_SECONDS, self.STALE_LOCK_SECONDS)

    def _after_fork_in_child(self) -> None:
        # The parent's threads may have held these locks at fork time, and its
        # fds and flocks must not be shared: start over with fresh state.
        self._lock = threading.Lock()
        writers, self._writers = self._writers.values(), {}
        for writer in writers:
            writer.close()
        claims, self._claims = self._claims, set()
        self._tails = {}
        for claim in claims:
            close_claim(claim)  # closes only our copy; the parent keeps its lock


_LIVE: weakref.WeakSet[FileStream] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)
