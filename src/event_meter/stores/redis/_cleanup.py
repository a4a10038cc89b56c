"""What ``RedisRollups.cleanup`` deletes, found with ``SCAN`` over one report's keys.

Cost grows with the report's retained keys (the scan is narrowed to the
report's hash-tagged prefix), and deletes go in batches of 500. Deleted
buckets leave their bucket index and their bucket's member SET too (``ZREM``,
``SREM``; an emptied index or SET is gone).
"""

from __future__ import annotations

from typing import Any, Final

from event_meter._time import GRANULARITIES, parse_bucket_id, parse_time
from event_meter.stores.redis._client import text
from event_meter.stores.redis._commands import BATCH, delete_keys, mget_keys, scan_keys
from event_meter.stores.redis._names import ReportKeys
from event_meter.stores.redis._scripts import LuaScript, run_pipeline

__all__ = ["cleanup_report"]

_CLEANUP_STATE: Final = LuaScript("cleanup_state")


def cleanup_report(client: Any, keys: ReportKeys, before_ms: int) -> dict[str, int]:
    """Delete what ended by ``before_ms``; the counts of SPEC 12."""
    old = old_rollups(client, keys, before_ms)
    deleted = delete_keys(client, old)
    unindex(client, keys, old)
    return {
        "rollup_keys_deleted": deleted,
        "interval_state_keys_deleted": cleanup_state(client, keys, before_ms),
        "processed_entries_deleted": delete_keys(client, old_markers(client, keys, before_ms)),
    }


def old_rollups(client: Any, keys: ReportKeys, before_ms: int) -> list[str]:
    """Rollup keys that parse and whose bucket ended at or before ``before_ms``."""
    prefix = keys.rollup_prefix()
    old: list[str] = []
    for key in scan_keys(client, keys.pattern(prefix)):
        if not key.startswith(prefix):
            continue
        granularity, _, rest = key[len(prefix) :].partition(":")
        bucket_id, sep, index_key = rest.partition(":")
        size = GRANULARITIES.get(granularity)
        if size is None or not sep or not index_key or ":" in index_key:
            continue  # not a key this store writes (index keys never hold ":")
        start = parse_bucket_id(bucket_id, granularity)
        if start is not None and start + size <= before_ms:
            old.append(key)
    return old


def unindex(client: Any, keys: ReportKeys, rollup_keys: list[str]) -> None:
    """Remove deleted rollup keys from their bucket index (``ZREM``, hour buckets: the
    only ones indexed) and their bucket's member SET (``SREM``), pipelined; an emptied
    ZSET or SET is gone."""
    prefix = keys.rollup_prefix()
    gone: dict[str, list[str]] = {}
    members: dict[str, list[str]] = {}
    for key in rollup_keys:
        granularity, _, rest = key[len(prefix) :].partition(":")
        bucket_id, _, index_key = rest.partition(":")
        if granularity == "hour":
            gone.setdefault(keys.buckets(granularity, index_key), []).append(bucket_id)
        held_by = keys.bucket_keys_of(granularity, bucket_id, index_key)
        if held_by is not None:
            members.setdefault(held_by, []).append(index_key)
    if gone or members:
        pipe = client.pipeline(transaction=False)
        for index, bucket_ids in gone.items():
            for i in range(0, len(bucket_ids), BATCH):
                pipe.zrem(index, *bucket_ids[i : i + BATCH])
        for held_by, index_keys in members.items():
            for i in range(0, len(index_keys), BATCH):
                pipe.srem(held_by, *index_keys[i : i + BATCH])
        pipe.execute()


def cleanup_state(client: Any, keys: ReportKeys, before_ms: int) -> int:
    """Delete state older than ``before_ms`` or unparseable, checked atomically per key."""
    found = list(scan_keys(client, keys.pattern(keys.state_prefix())))
    calls = [
        (_CLEANUP_STATE, found[i : i + BATCH], [before_ms]) for i in range(0, len(found), BATCH)
    ]
    return sum(int(n) for n in run_pipeline(client, calls)) if calls else 0


def marker_ms(value: Any) -> int | None:
    """The time a marker was written (ISO text), None when unreadable."""
    try:
        return parse_time(text(value), "marker")
    except (TypeError, ValueError):
        return None


def old_markers(client: Any, keys: ReportKeys, before_ms: int) -> list[str]:
    """Markers written before ``before_ms``; unreadable ones are kept (they expire)."""
    found = list(scan_keys(client, keys.pattern(keys.processed_prefix())))
    old: list[str] = []
    for key, value in zip(found, mget_keys(client, found), strict=True):
        marked = marker_ms(value)
        if marked is not None and marked < before_ms:
            old.append(key)
    return old
