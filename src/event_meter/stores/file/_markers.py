"""Processed-entry markers, one file per stream file: ``processed/<folder(group)>.json``.

A marker file is ``{"group": ..., "created_ms": ..., "ids": [...], "marked_ms":
{id: ms}}`` (``marked_ms`` says when each id was marked, so cleanup keeps the
younger ids of a group; ids without one date from ``created_ms``). The group
of an entry id is what it shares with the other rows of its stream file:

- ``<stream file name>:<seq>`` (file stream) -> ``stream:<stream file name>``;
- ``<ms>-<seq>`` (Redis stream) -> ``minute:<ms // 60000>``;
- anything else -> ``hash:<first 2 hex of SHA-256>``.

So testing a batch reads one or a few files, and forgetting the rows of a
deleted stream file unlinks its marker file. Writes are read-modify-write
under the stripe lock and atomic; marking and forgetting are idempotent.
A corrupt marker file raises ``CorruptFileError``: treating it as empty could
count rows twice, so it is left for an operator (the error names the path).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from event_meter.stores.file._layout import CorruptFileError, ReportLayout, load_json, write_json

__all__ = ["cleanup_markers", "forget", "mark", "marker_group", "processed_ids"]


def marker_group(entry_id: str) -> str:
    """The marker group of an entry id (see the module docstring)."""
    head, sep, _ = entry_id.rpartition(":")
    if sep:
        return f"stream:{head}"
    ms, dash, seq = entry_id.partition("-")
    if dash and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit():
        return f"minute:{int(ms) // 60_000}"
    return f"hash:{hashlib.sha256(entry_id.encode('utf-8', 'surrogatepass')).hexdigest()[:2]}"


def _by_group(entry_ids: Iterable[str]) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for entry_id in entry_ids:
        groups[marker_group(entry_id)].add(entry_id)
    return groups


def _load(layout: ReportLayout, rel: str) -> dict[str, Any] | None:
    path = layout.base / rel
    doc = load_json(path)
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list):
        raise CorruptFileError(path, "not a processed-marker file")
    return doc


def processed_ids(layout: ReportLayout, entry_ids: Iterable[str]) -> set[str]:
    """The ids among ``entry_ids`` that are marked; reads only their groups' files."""
    done: set[str] = set()
    for group, wanted in _by_group(entry_ids).items():
        doc = _load(layout, ReportLayout.marker_rel(group))
        if doc is not None:
            done |= wanted.intersection(doc["ids"])
    return done


def mark(layout: ReportLayout, entry_ids: Iterable[str], now_ms: int) -> None:
    """Mark ``entry_ids`` processed (idempotent; a file already holding them is not rewritten)."""
    for group, ids in _by_group(entry_ids).items():
        rel = ReportLayout.marker_rel(group)
        with layout.locked(rel) as path:
            doc = _load(layout, rel) or {"group": group, "created_ms": now_ms, "ids": []}
            known = set(doc["ids"])
            if ids <= known:
                continue
            # Rows of one group are marked at different times (bounded batches), and
            # cleanup must never drop a marker younger than ``before``: keep each id's time.
            times = _marked_times(doc)
            times.update(dict.fromkeys(ids - known, now_ms))
            _set_ids(doc, known | ids, times)
            write_json(path, doc)


def forget(layout: ReportLayout, entry_ids: Iterable[str]) -> None:
    """Remove the markers of ``entry_ids``; a file left empty is unlinked (idempotent)."""
    for group, ids in _by_group(entry_ids).items():
        rel = ReportLayout.marker_rel(group)
        with layout.locked(rel) as path:
            doc = _load(layout, rel)
            if doc is None:
                continue
            known = set(doc["ids"])
            left = known - ids
            if left == known:
                continue
            if left:
                _set_ids(doc, left, _marked_times(doc))
                write_json(path, doc)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def cleanup_markers(layout: ReportLayout, before_ms: int) -> int:
    """Delete markers made before ``before_ms`` (files left empty go); the number deleted."""
    deleted = 0
    try:
        names = sorted(n for n in os.listdir(layout.base / "processed") if n.endswith(".json"))
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith("."):
            continue
        rel = f"processed/{name}"
        with layout.locked(rel) as path:
            doc = _load(layout, rel)
            if doc is None:
                continue
            times = _marked_times(doc)
            old = {i for i, ms in times.items() if ms is None or ms < before_ms}
            if not old:
                continue
            deleted += len(old)
            left = set(times) - old
            if left:
                _set_ids(doc, left, times)
                write_json(path, doc)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    return deleted


def _marked_times(doc: dict[str, Any]) -> dict[str, int | None]:
    """When each id was marked: its own ``marked_ms`` entry, else the file's ``created_ms``.

    None (unknown) for a file without usable times; cleanup treats those as old.
    """
    created = doc.get("created_ms")
    fallback = created if type(created) is int else None
    own = doc.get("marked_ms")
    own = own if isinstance(own, dict) else {}
    times: dict[str, int | None] = {}
    for entry_id in doc["ids"]:
        ms = own.get(entry_id)
        times[entry_id] = ms if type(ms) is int else fallback
    return times


def _set_ids(doc: dict[str, Any], ids: set[str], times: dict[str, int | None]) -> None:
    doc["ids"] = sorted(ids)
    doc["marked_ms"] = {i: times[i] for i in doc["ids"] if times.get(i) is not None}
