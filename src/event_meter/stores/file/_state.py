"""Interval state shards: ``state/<folder(param)>/<shard>.json``.

The shard is the first hex digit of SHA-256 of the value text, so a param has at
most 16 small files however many values it sees. A shard file is::

    {"values": {<value text>: <started ms>, ...}, "applied": {<batch id>: <ms>, ...}}

Values merge by max (state only moves forward), which is idempotent on its own;
the ``applied`` record is kept anyway so every file a batch touched says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from event_meter.stores.file._layout import (
    CorruptFileError,
    ReportLayout,
    load_json,
    log,
    set_aside,
    write_json,
)

__all__ = ["cleanup_state", "group_by_shard", "merge_state", "read_state"]

StateKey = tuple[str, str]


def _shard(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[0]


def group_by_shard(keys: Iterable[StateKey]) -> dict[str, list[StateKey]]:
    """Shard file (relative path) -> the ``(param, value)`` keys that live in it."""
    groups: dict[str, list[StateKey]] = defaultdict(list)
    for param, value in keys:
        groups[ReportLayout.state_rel(param, _shard(value))].append((param, value))
    return groups


def merge_state(items: Mapping[StateKey, int]) -> Callable[[dict[str, Any]], None]:
    """A max-merge of ``value -> ms`` (a stored non-integer counts as absent)."""

    def merge(values: dict[str, Any]) -> None:
        for (_, value), ms in items.items():
            current = values.get(value)
            if type(current) is not int or ms > current:
                values[value] = ms

    return merge


def _values(layout: ReportLayout, rel: str) -> dict[str, Any]:
    path = layout.base / rel
    try:
        doc = load_json(path)
    except CorruptFileError:
        doc = {}
    if doc is None:
        return {}
    values = doc.get("values") if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        log.warning("event_meter: ignoring corrupt interval state file %s", path)
        return {}
    return values


def read_state(layout: ReportLayout, keys: Iterable[StateKey]) -> dict[StateKey, int]:
    """The known started ms of ``keys``; reads only the shards they live in."""
    out: dict[StateKey, int] = {}
    for rel, wanted in group_by_shard(keys).items():
        values = _values(layout, rel)
        for key in wanted:
            ms = values.get(key[1])
            if type(ms) is int:
                out[key] = ms
    return out


def cleanup_state(layout: ReportLayout, before_ms: int, now_ms: int) -> int:
    """Drop values older than ``before_ms`` (or not integers); the number dropped.

    Shards are few (16 per param), so all are visited. An emptied shard is
    unlinked: its ``applied`` record is not needed since max-merge is idempotent.
    """
    deleted = 0
    state_root = layout.base / "state"
    try:
        params = sorted(os.listdir(state_root))
    except FileNotFoundError:
        return 0
    for param in params:
        try:
            shards = sorted(n for n in os.listdir(state_root / param) if n.endswith(".json"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in shards:
            deleted += _cleanup_shard(layout, f"state/{param}/{name}", before_ms, now_ms)
    return deleted


def _cleanup_shard(layout: ReportLayout, rel: str, before_ms: int, now_ms: int) -> int:
    with layout.locked(rel) as path:
        try:
            doc = load_json(path)
        except CorruptFileError:
            set_aside(path, now_ms)
            return 0
        values = doc.get("values") if isinstance(doc, dict) else None
        if not isinstance(values, dict):
            return 0
        old = [v for v, ms in values.items() if type(ms) is not int or ms < before_ms]
        if not old:
            return 0
        for value in old:
            del values[value]
        if values:
            write_json(path, {"values": values, "applied": doc.get("applied", {})})
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return len(old)
