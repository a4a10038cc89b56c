"""In-process reference backend for both roles (``memory://``).

Every operation holds one lock, so ``apply`` is atomic and the whole contract
holds trivially; the other backends are tested against the same suite.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from event_meter._keys import ReportRef
from event_meter._time import GRANULARITIES, now_ms, parse_bucket_id
from event_meter.errors import LockLostError
from event_meter.rollup import clean_fields, merge_fields
from event_meter.stores.base import (
    BatchDelta,
    Entry,
    Fields,
    Lease,
    RollupStore,
    StreamBatch,
    StreamStore,
)

__all__ = ["MemoryRollups", "MemoryStream"]


class MemoryStream(StreamStore):
    """Pending rows in a list per event name; a batch claims rows until delete/release."""

    overlapping_batches = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, bytes]] = {}
        self._claimed: set[str] = set()
        self._seq = itertools.count(1)

    def append(self, name: str, payload: Mapping[str, Any]) -> None:
        data = orjson.dumps(payload)
        with self._lock:
            self._rows.setdefault(name, {})[f"{next(self._seq):020d}-0"] = data

    def read(self, name: str, limit: int) -> StreamBatch:
        entries: list[Entry] = []
        with self._lock:
            for entry_id, data in self._rows.get(name, {}).items():
                if entry_id in self._claimed:
                    continue
                self._claimed.add(entry_id)
                entries.append(Entry(entry_id, orjson.loads(data)))
                if len(entries) >= limit:
                    break
        return StreamBatch(name, entries, handle=[e.id for e in entries])

    def delete(self, batch: StreamBatch) -> None:
        with self._lock:
            rows = self._rows.get(batch.name, {})
            for entry_id in batch.handle or ():
                rows.pop(entry_id, None)
                self._claimed.discard(entry_id)
        batch.handle = None

    def release(self, batch: StreamBatch) -> None:
        with self._lock:
            self._claimed.difference_update(batch.handle or ())
        batch.handle = None

    def pending(self, name: str) -> int:
        """Rows not yet deleted (claimed or not)."""
        with self._lock:
            return len(self._rows.get(name, {}))


class _MemoryLease:
    __slots__ = ("_key", "_locks", "_token")

    def __init__(self, locks: dict[str, object], key: str) -> None:
        self._locks = locks
        self._key = key
        self._token = object()
        locks[key] = self._token

    def check(self) -> None:
        if self._locks.get(self._key) is not self._token:
            raise LockLostError(f"lock {self._key!r} is no longer held")

    def release(self) -> None:
        if self._locks.get(self._key) is self._token:
            del self._locks[self._key]


class MemoryRollups(RollupStore):
    """Rollups, state, markers and leases in dicts under one lock."""

    background_apply = True

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._definitions: dict[ReportRef, dict[str, Any]] = {}
        self._rollups: dict[
            ReportRef, dict[tuple[str, tuple[str, ...], str], dict[str, Fields]]
        ] = {}
        self._state: dict[ReportRef, dict[tuple[str, str], int]] = {}
        self._markers: dict[ReportRef, dict[str, int]] = {}
        self._leases: dict[str, object] = {}
        self._watermarks: dict[str, int] = {}

    def store_definition(self, ref: ReportRef, definition: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            return dict(self._definitions.setdefault(ref, dict(definition)))

    def load_definition(self, ref: ReportRef) -> dict[str, Any] | None:
        with self._lock:
            found = self._definitions.get(ref)
            return dict(found) if found is not None else None

    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]:
        with self._lock:
            markers = self._markers.get(ref, {})
            return {i for i in entry_ids if i in markers}

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        created = now_ms(self.clock)
        with self._lock:
            rollups = self._rollups.setdefault(ref, {})
            for (granularity, bucket_id, index), values in delta.rollups.items():
                bucket = rollups.setdefault((granularity, index, bucket_id), {})
                for key, fields in values.items():
                    merge_fields(bucket.setdefault(key, {}), fields)
            state = self._state.setdefault(ref, {})
            for state_key, started in delta.state.items():
                if started > state.get(state_key, started - 1):
                    state[state_key] = started
            markers = self._markers.setdefault(ref, {})
            for entry_id in delta.entry_ids:
                markers.setdefault(entry_id, created)

    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None:
        with self._lock:
            markers = self._markers.get(ref, {})
            for entry_id in entry_ids:
                markers.pop(entry_id, None)

    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        with self._lock:
            state = self._state.get(ref, {})
            return {k: state[k] for k in keys if k in state}

    def read_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        bucket_ids: Sequence[str],
    ) -> list[Fields | None]:
        with self._lock:
            rollups = self._rollups.get(ref, {})
            out: list[Fields | None] = []
            for bucket_id in bucket_ids:
                fields = rollups.get((granularity, index, bucket_id), {}).get(index_key)
                out.append(clean_fields(fields) if fields is not None else None)
            return out

    def bucket_index_keys(
        self, ref: ReportRef, granularity: str, bucket_id: str, params: tuple[str, ...]
    ) -> set[str]:
        with self._lock:
            return set(self._rollups.get(ref, {}).get((granularity, params, bucket_id), {}))

    def scan_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> list[tuple[str, Fields]]:
        with self._lock:
            found = sorted(
                (bucket_id, clean_fields(values[index_key]))
                for (g, i, bucket_id), values in self._rollups.get(ref, {}).items()
                if g == granularity and i == index and index_key in values
            )
        return found if limit is None else found[:limit]

    def list_reports(self, namespace: str) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(
                (r.name, r.version) for r in self._definitions if r.namespace == namespace
            )

    def _try_lock(self, key: str) -> Lease | None:
        with self._lock:
            if key in self._leases:
                return None
            return _MemoryLease(self._leases, key)

    def try_report_lock(self, ref: ReportRef, ttl_ms: int) -> Lease | None:
        return self._try_lock(ref.process_lock_key())

    def try_cleanup_lock(self, namespace: str, ttl_ms: int) -> Lease | None:
        return self._try_lock(f"{namespace}:process_lock")

    def cleanup(self, ref: ReportRef, before_ms: int) -> dict[str, int]:
        counts = {
            "rollup_keys_deleted": 0,
            "interval_state_keys_deleted": 0,
            "processed_entries_deleted": 0,
        }
        with self._lock:
            rollups = self._rollups.get(ref, {})
            for address in list(rollups):
                granularity, _, bucket_id = address
                start = parse_bucket_id(bucket_id, granularity)
                if start is not None and start + GRANULARITIES[granularity] <= before_ms:
                    counts["rollup_keys_deleted"] += len(rollups.pop(address))
            state = self._state.get(ref, {})
            for key in [k for k, v in state.items() if v < before_ms]:
                del state[key]
                counts["interval_state_keys_deleted"] += 1
            markers = self._markers.get(ref, {})
            for entry_id in [i for i, created in markers.items() if created < before_ms]:
                del markers[entry_id]
                counts["processed_entries_deleted"] += 1
        return counts

    def read_watermark(self, namespace: str) -> int | None:
        with self._lock:
            return self._watermarks.get(namespace)

    def write_watermark(self, namespace: str, ms: int) -> None:
        with self._lock:
            self._watermarks[namespace] = ms
