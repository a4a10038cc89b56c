"""Per-bucket rollup files: guarded merge, reads, scan and cleanup.

A rollup file ``rollups/<index>/<granularity>/<YYYYMMDD>/<bucket id>.json`` is::

    {"rollups": {<index key>: {<field>: int, ...}, ...},
     "applied": {<batch id>: <applied at ms>, ...}}

Index keys live one level down, under ``"rollups"``, so no index key can ever
collide with the metadata (SPEC 16.7: only ``applied`` is metadata, and it is
kept apart by nesting rather than by a reserved key name).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from event_meter._time import GRANULARITIES, parse_bucket_id
from event_meter.rollup import clean_fields, merge_fields
from event_meter.stores.base import Fields
from event_meter.stores.file._layout import (
    CorruptFileError,
    ReportLayout,
    load_json,
    log,
    set_aside,
    write_json,
)

__all__ = [
    "cleanup_rollups",
    "merge_rollups",
    "read_rollup_keys",
    "scan_rollups",
    "update_guarded",
]

_DAY_MS: Final = 24 * 3_600_000


def update_guarded(
    layout: ReportLayout,
    rel: str,
    section: str,
    batch_id: str,
    now_ms: int,
    merge: Callable[[dict[str, Any]], None],
    unsynced_dirs: set[Path] | None = None,
) -> bool:
    """Merge one batch into the data file ``rel`` at most once; True when it changed.

    Under the stripe lock: read; skip when ``batch_id`` is in ``applied`` (a
    replay or a concurrent replayer did this file) or when the batch's journal is
    gone (someone finished the whole batch: a journal is unlinked only after
    every file of its batch recorded it). Otherwise ``merge`` the ``section``
    dict, record the batch id and write atomically.

    Because of that second check a record is needed only while its journal
    exists, so records of finished batches are pruned on every write; the map
    holds in-flight batches plus the last writer, and files stay small to scan.
    With ``unsynced_dirs`` the folder fsync is left to the caller: the folder is
    added to the set, to be fsynced once for all files of the batch.
    """
    with layout.locked(rel) as path:
        try:
            doc = load_json(path)
        except CorruptFileError:
            set_aside(path, now_ms)
            doc = None
        if doc is not None and not (isinstance(doc, dict) and isinstance(doc.get(section), dict)):
            set_aside(path, now_ms)
            doc = None
        data: dict[str, Any] = doc[section] if doc is not None else {}
        raw_applied = doc.get("applied") if doc is not None else None
        applied: dict[str, Any] = raw_applied if isinstance(raw_applied, dict) else {}
        if batch_id in applied or not layout.journal(batch_id).exists():
            return False
        merge(data)
        for old in list(applied):
            if not layout.journal(old).exists():
                del applied[old]
        applied[batch_id] = now_ms
        write_json(path, {section: data, "applied": applied}, sync_dir=unsynced_dirs is None)
        if unsynced_dirs is not None:
            unsynced_dirs.add(path.parent)
        return True


def merge_rollups(delta: Mapping[str, Fields]) -> Callable[[dict[str, Any]], None]:
    """A merge of index key -> field deltas by the laws; corrupt stored numbers are dropped."""

    def merge(stored: dict[str, Any]) -> None:
        for key, fields in delta.items():
            current = stored.get(key)
            if current is None:
                stored[key] = dict(fields)  # what merging into {} gives, without the laws
                continue
            merged = clean_fields(current) if isinstance(current, dict) else {}
            stored[key] = merge_fields(merged, fields)

    return merge


def _read_rollups_map(path: str) -> dict[str, Any] | None:
    """The ``rollups`` dict of one file; None when missing; {} (with a warning) when corrupt."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    rollups = doc.get("rollups") if isinstance(doc, dict) else None
    if not isinstance(rollups, dict):
        # A broken file must not take reports down; its next write sets it aside.
        log.warning("event_meter: ignoring corrupt rollup file %s", path)
        return {}
    return rollups


def read_rollup_keys(
    layout: ReportLayout,
    granularity: str,
    index: tuple[str, ...],
    index_key: str,
    bucket_ids: list[str] | tuple[str, ...],
) -> list[Fields | None]:
    """One ``clean_fields`` dict (or None) per bucket id; reads only this index's files."""
    out: list[Fields | None] = []
    base = str(layout.base)
    for bucket in bucket_ids:
        try:
            rel = layout.rollup_rel(granularity, bucket, index)
        except ValueError:
            out.append(None)
            continue
        rollups = _read_rollups_map(os.path.join(base, rel))
        fields = rollups.get(index_key) if rollups else None
        out.append(clean_fields(fields) if isinstance(fields, dict) else None)
    return out


def bucket_index_keys(
    layout: ReportLayout, granularity: str, bucket_id: str, index: tuple[str, ...]
) -> set[str]:
    """The index keys held by one bucket file of ``index`` (its metadata left out)."""
    try:
        rel = layout.rollup_rel(granularity, bucket_id, index)
    except ValueError:
        return set()
    rollups = _read_rollups_map(os.path.join(str(layout.base), rel))
    return set(rollups) if rollups else set()


def _sorted_names(folder: str, want_dirs: bool) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            if want_dirs:
                return sorted(e.name for e in entries if e.is_dir())
            return sorted(e.name for e in entries if e.name.endswith(".json"))
    except FileNotFoundError:
        return []


def scan_rollups(
    layout: ReportLayout,
    granularity: str,
    index: tuple[str, ...],
    index_key: str,
    limit: int | None,
) -> list[tuple[str, Fields]]:
    """Every ``(bucket id, fields)`` holding ``index_key``, oldest first, at most ``limit``.

    Day folders and bucket ids are fixed-width digits, so name order is time
    order; each file costs one open, read and ``orjson.loads``.
    """
    out: list[tuple[str, Fields]] = []
    if limit is not None and limit <= 0:
        return out
    root = str(layout.granularity_dir(granularity, index))
    for day in _sorted_names(root, want_dirs=True):
        folder = os.path.join(root, day)
        for name in _sorted_names(folder, want_dirs=False):
            bucket = name[:-5]
            if name.startswith(".") or parse_bucket_id(bucket, granularity) is None:
                continue
            rollups = _read_rollups_map(os.path.join(folder, name))
            fields = rollups.get(index_key) if rollups else None
            if isinstance(fields, dict):
                out.append((bucket, clean_fields(fields)))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _delete_bucket(layout: ReportLayout, rel: str) -> int:
    """Unlink one bucket file under its lock; the number of index keys it held."""
    with layout.locked(rel) as path:
        rollups = _read_rollups_map(str(path))
        if rollups is None:
            return 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return len(rollups)


def cleanup_rollups(layout: ReportLayout, before_ms: int) -> int:
    """Delete bucket files whose bucket ends at or before ``before_ms``; keys deleted.

    Day folders whose first bucket ends after ``before_ms`` are skipped unread,
    and folders of days that ended by then are emptied and removed, so the cost
    follows what is deleted. Files whose name is not a bucket id are left alone.
    """
    deleted = 0
    rollups_root = layout.base / "rollups"
    for index_dir in _sorted_names(str(rollups_root), want_dirs=True):
        for granularity, size in GRANULARITIES.items():
            gran_dir = rollups_root / index_dir / granularity
            for day in _sorted_names(str(gran_dir), want_dirs=True):
                day_start = parse_bucket_id(day + "00", "hour")
                if day_start is None or day_start + size > before_ms:
                    continue
                whole_day = day_start + _DAY_MS <= before_ms
                for name in _sorted_names(str(gran_dir / day), want_dirs=False):
                    start = parse_bucket_id(name[:-5], granularity)
                    if start is None or start + size > before_ms:
                        continue
                    rel = f"rollups/{index_dir}/{granularity}/{day}/{name}"
                    deleted += _delete_bucket(layout, rel)
                if whole_day:
                    _remove_day_folder(gran_dir / day)
    return deleted


def _remove_day_folder(folder: Path) -> None:
    """Drop set-aside corrupt copies, then the folder if nothing else is left in it."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if ".json.corrupt-" in entry.name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    with contextlib.suppress(OSError):  # not empty (a late write or a foreign file)
        os.rmdir(folder)
