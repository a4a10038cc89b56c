"""``RedisRollups``: rollups, state, markers and leases in Redis (SPEC 11).

Key shapes are drawn in ``_names`` (every key of one report shares the hash
tag ``{esc(name):vN}``); apply is drawn in ``_apply``. In short:

- **Definition**: ``SET NX`` then ``GET`` in one pipelined round trip, so of
  concurrent creators exactly one wins and everyone gets the stored dict.
- **Apply**: exactly-once per batch id through a journal entry, guarded Lua
  chunks and markers last; ``recover`` replays interrupted applies.
- **Rollups** are HASHes of decimal fields, **state** and **markers** STRINGs
  (started ms; ISO time marked); all three expire ``ttl_ms`` after their last
  write. Stored values that are not plain decimal integers read as absent.
- **Reads**: pipelined ``HGETALL`` / ``MGET`` (one round trip); ``scan_rollups``
  of hour buckets and ``bucket_index_keys`` read the indexes apply keeps (a ZSET
  of hour bucket ids per index key, a SET of index keys per bucket and index)
  instead of scanning the keyspace; minute buckets (which no report lists),
  ``list_reports`` and cleanup use ``SCAN`` with an escaped pattern and parse
  every key found, so it can never over-match.
- **Leases** (report lock ``{ns}:process_lock:{tag}``, cleanup lock
  ``{ns}:process_lock``) come from ``lock.py`` on the lock client.
- **Cleanup** scans the report's keys and deletes in batches of 500.

Every ``RedisError``/``OSError`` leaves a public method as ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef
from event_meter._time import Clock, iso_ms, now_ms
from event_meter.errors import ConfigurationError, StorageError
from event_meter.rollup import clean_fields
from event_meter.stores.base import BatchDelta, Fields, Lease, RollupStore
from event_meter.stores.redis import _apply
from event_meter.stores.redis._cleanup import cleanup_report
from event_meter.stores.redis._client import (
    check_namespace,
    client_sources,
    decimal,
    storage_errors,
    text,
)
from event_meter.stores.redis._commands import mget_keys, read_hashes, scan_keys
from event_meter.stores.redis._names import (
    ReportKeys,
    bucket_id_ok,
    cleanup_lock_key,
    definition_pattern,
    parse_definition_key,
    watermark_key,
)
from event_meter.stores.redis.lock import try_lease

__all__ = ["RedisRollups"]

DEFAULT_TTL_MS: Final = 31 * 86_400_000


class RedisRollups(RollupStore):
    """The Redis rollup store (see the module docstring).

    ``redis`` is a redis-py client (``Redis`` or ``RedisCluster``) or a
    zero-argument factory; ``url`` a ``redis://``, ``rediss://`` or ``unix://``
    URL; ``lock_redis`` an optional separate client or factory for leases;
    ``ttl_ms`` the expiry of rollups, state and markers.
    """

    background_apply = True  # redis-py clients are thread-safe (a connection per call)

    def __init__(
        self,
        redis: Any = None,
        lock_redis: Any = None,
        *,
        url: str | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
    ) -> None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1:
            raise ConfigurationError(f"ttl_ms={ttl_ms!r} is invalid: pass a positive int (ms)")
        self._data, self._lock_client = client_sources(redis, lock_redis, url)
        self.ttl_ms = ttl_ms

    def __repr__(self) -> str:
        return f"RedisRollups(namespace={self.namespace!r})"

    def bind(self, *, namespace: str, clock: Clock) -> None:
        check_namespace(namespace)
        super().bind(namespace=namespace, clock=clock)

    def close(self) -> None:
        """Close the clients this store created (never the ones it was given)."""
        self._data.close()
        self._lock_client.close()

    def keys(self, ref: ReportRef) -> ReportKeys:
        """The Redis key names of one report."""
        return ReportKeys(ref)

    def _client(self) -> Any:
        return self._data.get()

    def _pipe(self) -> Any:
        return self._data.get().pipeline(transaction=False)

    # -- definitions -------------------------------------------------------

    def store_definition(self, ref: ReportRef, definition: Mapping[str, Any]) -> dict[str, Any]:
        """``SET NX`` then ``GET`` in one round trip: the stored definition."""
        key = self.keys(ref).definition()
        with storage_errors("store_definition"):
            pipe = self._pipe()
            pipe.set(key, orjson.dumps(dict(definition)), nx=True)
            pipe.get(key)
            _, stored = pipe.execute()
        return self._definition(key, stored)

    def load_definition(self, ref: ReportRef) -> dict[str, Any] | None:
        key = self.keys(ref).definition()
        with storage_errors("load_definition"):
            stored = self._client().get(key)
        return None if stored is None else self._definition(key, stored)

    @staticmethod
    def _definition(key: str, stored: Any) -> dict[str, Any]:
        try:
            doc = orjson.loads(stored)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise StorageError(f"redis: definition {key!r} is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise StorageError(f"redis: definition {key!r} is not a JSON object")
        return doc

    def list_reports(self, namespace: str) -> list[tuple[str, int]]:
        """``(name, version)`` of every stored definition of ``namespace`` (``SCAN``)."""
        with storage_errors("list_reports"):
            found = {
                parse_definition_key(namespace, key)
                for key in scan_keys(self._client(), definition_pattern(namespace))
            }
        return sorted(item for item in found if item is not None)

    # -- apply and recovery -------------------------------------------------

    def _stamp(self) -> tuple[int, str]:
        now = now_ms(self.clock)
        return now, iso_ms(now)

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Apply ``delta`` exactly once per batch id (journal, guarded chunks, markers).

        Not atomic across its script calls, but when this raises or the process
        dies after the journal entry was written, ``recover`` (or a retry of the
        same delta) finishes the batch without counting any chunk twice.
        """
        if not (delta.rollups or delta.state or delta.entry_ids):
            return
        now, iso = self._stamp()
        encoded = delta.encoded.get("redis")
        with storage_errors("apply"):
            _apply.apply_delta(
                self._client(),
                self.keys(ref),
                delta,
                now,
                iso,
                self.ttl_ms,
                encoded if isinstance(encoded, _apply.Encoded) else None,
            )

    def prepare_apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Encode the journal entry, marker ids and chunks of ``delta`` ahead of ``apply``
        (in the processing thread, while the previous batch's scripts run)."""
        if delta.rollups or delta.state or delta.entry_ids:
            delta.encoded["redis"] = _apply.encode_apply(self.keys(ref), delta, self._stamp()[0])

    def recover(self, ref: ReportRef, running: Collection[str] = ()) -> None:
        """Finish every journaled apply of this report but ``running`` (one ``HGETALL``
        when there is none)."""
        _, iso = self._stamp()
        with storage_errors("recover"):
            _apply.recover_journal(self._client(), self.keys(ref), iso, self.ttl_ms, running)

    # -- markers and state ---------------------------------------------------

    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]:
        names = self.keys(ref).processed_many(entry_ids)
        with storage_errors("processed_ids"):
            values = mget_keys(self._client(), names)
        return {i for i, value in zip(entry_ids, values, strict=True) if value is not None}

    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None:
        """Delete the markers of ``entry_ids`` (idempotent), a script call per 2,000."""
        with storage_errors("forget"):
            _apply.forget_markers(self._client(), self.keys(ref), entry_ids)

    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        wanted = list(dict.fromkeys(keys))
        names = self.keys(ref)
        with storage_errors("read_state"):
            values = mget_keys(
                self._client(), [names.state(param, value) for param, value in wanted]
            )
        out: dict[tuple[str, str], int] = {}
        for key, value in zip(wanted, values, strict=True):
            started = decimal(value)
            if started is not None:
                out[key] = started
        return out

    # -- rollups ---------------------------------------------------------------

    def read_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        bucket_ids: Sequence[str],
    ) -> list[Fields | None]:
        """``HGETALL`` of every bucket in one round trip (a Lua script per 1,000 keys)."""
        if not bucket_ids:
            return []
        keys = self.keys(ref)
        names = [keys.rollup(granularity, bucket_id, index_key) for bucket_id in bucket_ids]
        with storage_errors("read_rollups"):
            found = read_hashes(self._client(), names)
        return [None if fields is None else clean_fields(fields) for fields in found]

    def scan_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> list[tuple[str, Fields]]:
        """The retained buckets of one index key, oldest first: hour buckets from the
        bucket index apply keeps (``{granularity}:{index key}`` ZSET), minute buckets
        (which no report lists) from a ``SCAN``. Indexed buckets whose hash is gone
        (expired or cleaned up) are skipped.
        """
        keys = self.keys(ref)
        with storage_errors("scan_rollups"):
            if granularity == "hour":
                members = self._client().zrange(keys.buckets(granularity, index_key), 0, -1)
                found_ids = (text(member) or "" for member in members)
            else:
                prefix, suffix = keys.rollup_prefix(granularity), f":{index_key}"
                found_ids = (
                    key[len(prefix) : len(key) - len(suffix)]
                    for key in scan_keys(self._client(), keys.pattern(prefix, suffix))
                )
            buckets = sorted({b for b in found_ids if bucket_id_ok(b, granularity)})
            found: list[tuple[str, Fields]] = []
            for start in range(0, len(buckets), 10_000):
                page = buckets[start : start + 10_000]
                values = self.read_rollups(ref, granularity, index, index_key, page)
                found += [(b, f) for b, f in zip(page, values, strict=True) if f is not None]
                if limit is not None and len(found) >= limit:
                    return found[:limit]
        return found

    def bucket_index_keys(
        self, ref: ReportRef, granularity: str, bucket_id: str, params: tuple[str, ...]
    ) -> set[str]:
        """The index keys (``customer_id=42``, ...) of one bucket of the index over sorted
        ``params`` (never the all index): ``SMEMBERS`` of the SET the apply scripts keep."""
        if not params:
            return set()
        key = self.keys(ref).bucket_keys(granularity, bucket_id, params)
        with storage_errors("bucket_index_keys"):
            members = self._client().smembers(key)
        return {text(member) or "" for member in members}

    # -- leases ----------------------------------------------------------------

    def try_report_lock(self, ref: ReportRef, ttl_ms: int) -> Lease | None:
        """The lease ``{ns}:process_lock:{tag}`` (see ``lock.py``), or None while held."""
        key = self.keys(ref).process_lock()
        with storage_errors("try_report_lock"):
            return try_lease(self._lock_client.get(), key, ttl_ms)

    def try_cleanup_lock(self, namespace: str, ttl_ms: int) -> Lease | None:
        """The namespace lease ``{ns}:process_lock``, or None while held."""
        with storage_errors("try_cleanup_lock"):
            return try_lease(self._lock_client.get(), cleanup_lock_key(namespace), ttl_ms)

    # -- cleanup ---------------------------------------------------------------

    def cleanup(self, ref: ReportRef, before_ms: int) -> dict[str, int]:
        """Delete buckets that ended by ``before_ms``, older state and older markers.

        Only rollup keys whose granularity and bucket id parse are deleted;
        state whose value is older or unparseable is deleted atomically (a
        concurrent apply moving it forward wins); markers with an unreadable
        time are kept (they expire with the rollup TTL).
        """
        with storage_errors("cleanup"):
            return cleanup_report(self._client(), self.keys(ref), before_ms)

    def read_watermark(self, namespace: str) -> int | None:
        """The last automatic cleanup run (ms); None when never run or unreadable."""
        with storage_errors("read_watermark"):
            return decimal(self._client().get(watermark_key(namespace)))

    def write_watermark(self, namespace: str, ms: int) -> None:
        with storage_errors("write_watermark"):
            self._client().set(watermark_key(namespace), str(ms))
