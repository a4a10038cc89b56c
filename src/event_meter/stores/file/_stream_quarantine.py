"""Quarantine copies of malformed rows, and the hourly housekeeping of a stream folder."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Final

import orjson

from event_meter.stores.base import Entry, Undecodable
from event_meter.stores.file._fs import (
    atomic_write,
    ensure_dir,
    remove_stale_temp_files,
    try_flock,
)
from event_meter.stores.file._stream_claims import INCOMPLETE_LINE
from event_meter.stores.file._stream_layout import LOCK_SUFFIX, StreamDirs

__all__ = [
    "housekeep",
    "quarantine_rows",
    "remove_expired_quarantine",
    "remove_stale_claim_locks",
]

_logger = logging.getLogger("event_meter")

_APPEND_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _record(entry: Entry, reason: str, line: int | None) -> dict[str, Any]:
    record: dict[str, Any] = {"line": line, "id": entry.id, "reason": reason}
    if isinstance(entry.payload, Undecodable):
        record["raw"] = entry.payload.raw.decode("utf-8", "replace")
    else:
        record["payload"] = entry.payload
    return record


def _writer_of(file: str) -> tuple[str | None, int | None]:
    """Host and pid from ``YYYYMMDDHHMM-<host>-<pid>-<hex>.jsonl``; None when absent."""
    parts = file.rsplit(".", 1)[0].split("-")
    if len(parts) == 4 and parts[2].isdigit():
        return parts[1], int(parts[2])
    return None, None


def quarantine_rows(
    dirs: StreamDirs, malformed: Sequence[tuple[Entry, str]], *, when: str, pid: int
) -> None:
    """Append each row to ``quarantine/<file>.malformed.jsonl`` and (re)write its meta.

    Rows are appended, so a file consumed over several batches collects all of
    its bad lines; a retried batch may add a row twice (it is only a copy).
    """
    by_file: dict[str, list[dict[str, Any]]] = {}
    incomplete: set[str] = set()
    for entry, reason in malformed:
        file, _, line = entry.id.rpartition(":")
        by_file.setdefault(file, []).append(
            _record(entry, reason, int(line) if line.isdigit() else None)
        )
        payload = entry.payload
        if isinstance(payload, Undecodable) and payload.reason == INCOMPLETE_LINE:
            incomplete.add(file)
    if not by_file:
        return
    ensure_dir(dirs.quarantine)
    for file, records in by_file.items():
        data = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
        fd = os.open(dirs.quarantine / f"{file}.malformed.jsonl", _APPEND_FLAGS, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        host, writer_pid = _writer_of(file)
        meta = {
            "reason": INCOMPLETE_LINE if file in incomplete else "malformed lines",
            "original_name": file,
            "time": when,
            "pid": pid,
            "writer_host": host,
            "writer_pid": writer_pid,
            "rows": len(records),
        }
        atomic_write(dirs.quarantine / f"{file}.meta.json", orjson.dumps(meta), fsync=False)


def remove_expired_quarantine(dirs: StreamDirs, max_age: float, now: float) -> int:
    """Remove quarantine files last written more than ``max_age`` seconds before ``now``."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(dirs.quarantine) as found:
        for item in found:
            with contextlib.suppress(FileNotFoundError):
                if item.is_file() and now - item.stat().st_mtime > max_age:
                    os.unlink(item.path)
                    removed += 1
    return removed


def remove_stale_claim_locks(dirs: StreamDirs, max_age: float, now: float) -> int:
    """Remove claim lock files (and orphan offsets) of data files that are gone.

    Safe because a data file name is never used again once the file is gone
    (names carry random hex, files only move logs -> processing -> removed), and
    the check happens while holding the lock, under which nobody moves files.
    Only lock files older than ``max_age`` are looked at, to keep churn low.
    """
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(dirs.claim_locks) as found:
        for item in found:
            if not item.name.endswith(LOCK_SUFFIX):
                continue
            file = item.name[: -len(LOCK_SUFFIX)]
            try:
                if now - item.stat().st_mtime <= max_age:
                    continue
            except FileNotFoundError:
                continue
            if (dirs.processing / file).exists() or (dirs.logs / file).exists():
                continue
            fd = try_flock(dirs.lock_path(file))
            if fd is None:
                continue
            try:
                if not (dirs.processing / file).exists() and not (dirs.logs / file).exists():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(dirs.offset_path(file))
                    os.unlink(item.path)
                    removed += 1
            finally:
                os.close(fd)
    return removed


def housekeep(dirs: StreamDirs, quarantine_age: float, lock_age: float) -> None:
    """Age out quarantine files and stale claim locks; logs instead of raising.

    Ages are compared with real time, because mtimes are real time.
    """
    now = time.time()
    try:
        remove_expired_quarantine(dirs, quarantine_age, now)
        remove_stale_claim_locks(dirs, lock_age, now)
        for folder in (dirs.processing, dirs.quarantine):
            remove_stale_temp_files(folder, lock_age)
    except OSError:
        _logger.warning("file stream housekeeping failed in %s", dirs.logs.parent, exc_info=True)
