"""The read side of the file stream: claim files, read their lines, finish claims.

A claim is a non-blocking ``flock`` on ``claim_locks/<file>.lock`` plus the
file's place in ``processing/``. Every step that moves or removes a data file
or its ``.offset`` happens while holding that file's claim lock, so whoever
holds the lock sees a consistent file and offset. The kernel drops the lock
when its holder dies, which is what makes a crashed processor's claims
re-takeable.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

import orjson

from event_meter.errors import StorageError
from event_meter.stores.base import Entry, Undecodable
from event_meter.stores.file._fs import atomic_write, fsync_dir, read_json, try_flock
from event_meter.stores.file._stream_layout import StreamDirs, is_data_file, minute_start

__all__ = [
    "INCOMPLETE_LINE",
    "BatchHandle",
    "Claim",
    "claim_file",
    "claimable_files",
    "close_claim",
    "decode_line",
    "finish_claim",
    "read_claim",
    "storage_error",
]

INCOMPLETE_LINE: Final = "incomplete last line"
_new_tuple = tuple.__new__  # builds an ``Entry`` without its Python-level __new__


@dataclass(eq=False, slots=True)
class Claim:
    """One claimed data file and the rows of it that one batch holds.

    Rows are the bytes ``[start, end)`` = lines ``start_line + 1 .. end_line``;
    ``eof`` is True when ``end`` reached the end of the file at read time.
    ``fd`` holds the claim ``flock``; -1 once closed (closing drops the lock).
    ``fresh``: this claim moved the file out of ``logs/``, so no processor read
    any of its rows before.
    """

    file: str
    fd: int
    start: int = 0
    end: int = 0
    start_line: int = 0
    end_line: int = 0
    eof: bool = False
    fresh: bool = False


@dataclass(eq=False, slots=True)
class BatchHandle:
    """What a ``StreamBatch`` of the file stream holds: its folders and claims."""

    dirs: StreamDirs
    claims: list[Claim] = field(default_factory=list)
    done: bool = False


def _list(folder: os.PathLike[str]) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def claimable_files(dirs: StreamDirs, now: float, grace: float) -> list[tuple[str, bool]]:
    """``(file, already in processing/)`` of every claim candidate, oldest minute first.

    Files in ``processing/`` always qualify (their claim lock decides); files in
    ``logs/`` once their minute ended ``grace`` seconds ago, or when the name has
    no parseable minute.
    """
    found = {name: True for name in _list(dirs.processing) if is_data_file(name)}
    for name in _list(dirs.logs):
        if not is_data_file(name) or name in found:
            continue
        start = minute_start(name)
        if start is None or now >= start + 60 + grace:
            found[name] = False
    return sorted(found.items())


def claim_file(dirs: StreamDirs, file: str, in_processing: bool) -> Claim | None:
    """Take the claim lock of ``file`` and move it to ``processing/``; None if not ours.

    After the lock is taken the file is looked up again: another processor may
    have finished (removed) it between our listing and our lock.
    """
    fd = try_flock(dirs.lock_path(file))
    if fd is None:
        return None
    try:
        target = dirs.processing / file
        moved = False
        if not in_processing:
            with contextlib.suppress(FileNotFoundError):  # already moved or finished
                os.rename(dirs.logs / file, target)
                moved = True
        if not target.exists():
            os.close(fd)
            return None
        claim = Claim(file, fd, fresh=moved)
        claim.start = claim.end = saved_offset(dirs, file, claim)
    except BaseException:
        os.close(fd)
        raise
    return claim


def saved_offset(dirs: StreamDirs, file: str, claim: Claim | None = None) -> int:
    """Where the rows of ``file`` not yet deleted start (0 without an ``.offset``); the
    line number goes to ``claim`` when given. A corrupt offset stops loudly: reading
    from 0 instead would count deleted rows again."""
    offset_path = dirs.offset_path(file)
    try:
        progress = read_json(offset_path)
        if progress is None:
            return 0
        if not isinstance(progress, dict):
            raise TypeError(f"expected an object, got {progress!r}")
        offset = int(progress["offset"])
        if claim is not None:
            claim.start_line = claim.end_line = int(progress["line"])
        return offset
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"file stream offset {offset_path} is corrupt: {exc!r}") from exc


def decode_line(raw: bytes) -> Any:
    """The ``payload`` of one line (without its newline), or an ``Undecodable``."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Undecodable(raw, f"not JSON: {exc}")
    if type(record) is not dict:
        return Undecodable(raw, "not a JSON object")
    if "payload" not in record:
        return Undecodable(raw, "no payload key")
    return record["payload"]


def _is_stale(file: str, path: os.PathLike[str], now: float, stale_after: float) -> bool:
    start = minute_start(file)
    if start is not None:
        return now >= start + 60 + stale_after
    # No minute in the name: judge by the last write, which is real time.
    return time.time() >= os.stat(path).st_mtime + stale_after


def read_claim(
    dirs: StreamDirs, claim: Claim, limit: int, entries: list[Entry], now: float, stale: float
) -> None:
    """Append up to ``limit`` rows of ``claim`` to ``entries`` and advance its end.

    An incomplete last line stops the read, unless the file's minute ended more
    than ``stale`` seconds ago: then it becomes an ``Undecodable`` row so the file
    can be finished.
    """
    file = claim.file
    path = dirs.processing / file
    pos, line_no = claim.end, claim.end_line
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    append = entries.append
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        stream.seek(pos)
        for raw in islice(stream, max(limit, 0)):
            if raw[-1] != 0x0A:  # b"\n"
                if not _is_stale(file, path, now, stale):
                    break
                payload: Any = Undecodable(raw, INCOMPLETE_LINE)
            else:
                # ``decode_line`` inlined for the common well-formed line: the
                # newline is JSON whitespace, so there is no need to slice it off.
                try:
                    record = loads(raw)
                except decode_error:
                    record = None
                if type(record) is dict and "payload" in record:
                    payload = record["payload"]
                else:
                    payload = decode_line(raw[:-1])  # the reason, worded as always
            pos += len(raw)
            line_no += 1
            append(_new_tuple(Entry, (f"{file}:{line_no}", payload)))
    claim.end, claim.end_line = pos, line_no
    claim.eof = pos >= size


def finish_claim(dirs: StreamDirs, claim: Claim) -> None:
    """Delete what ``claim`` read: remove the file if it is done, else save the offset.

    The size is checked again first: a line appended after the read (a writer
    whose clock lags by more than the grace period) keeps the file alive.
    The data file goes before its ``.offset``, so a crash between the two leaves
    only a harmless orphan offset, never a file that would be read again from 0.
    """
    path = dirs.processing / claim.file
    offset = dirs.offset_path(claim.file)
    if claim.start and saved_offset(dirs, claim.file) != claim.start:
        # A batch read after others of this file, deleted while rows before it are
        # still pending (given back, or held): neither removing the file nor saving
        # this end may drop them. The rows stay; the caller keeps their markers.
        raise StorageError(
            f"file stream: rows of {path} before line {claim.start_line + 1} are still "
            "pending; delete or release the batches read before this one first"
        )
    if claim.eof:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = claim.end
        if size <= claim.end:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(offset)
            # Durable before the caller forgets the rows' processed markers.
            fsync_dir(dirs.processing)
            return
    if claim.end > claim.start:
        # Always fsynced: a lost offset would make deleted rows readable again.
        atomic_write(offset, orjson.dumps({"offset": claim.end, "line": claim.end_line}))


def close_claim(claim: Claim) -> None:
    """Drop the claim lock; harmless when already closed."""
    fd, claim.fd = claim.fd, -1
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def storage_error(action: str, exc: OSError) -> StorageError:
    """The ``StorageError`` for a failed file operation, naming the path."""
    where = exc.filename if exc.filename is not None else "the file stream"
    return StorageError(f"file stream could not {action} {where}: {exc.strerror or exc}")
