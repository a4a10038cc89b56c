"""``RedisStream``: pending events in one Redis stream per event name (SPEC 11).

Keys (no hash tag: each key is used alone)::

    {ns}:stream:{esc(name)}          the stream; one entry per event, field "payload"
    {ns}:stream_lock:{esc(name)}     the per-event read lease (see ``lock.py``)
    {ns}:quarantine:{esc(name)}      malformed rows, newest first (capped list)

- ``append`` is one ``XADD {key} * payload <compact JSON>`` round trip.
- ``read`` returns ``XRANGE`` rows oldest first, at most ``min(limit,
  read_limit)``. Rows are claimed *in this store object* until ``delete`` or
  ``release``, so a second read skips them; across processes the read lease
  (taken by the processor before any read) keeps readers apart. Entry ids are
  the Redis ids; a payload that is not JSON reads as ``Undecodable``.
- ``delete`` is ``XDEL`` of exactly the ids read; ``release`` only drops the
  in-process claim (nothing changed in Redis).
- ``quarantine`` pushes one JSON record per malformed row, ``{"id", "reason",
  "raw", "at"}``, onto the list ``{ns}:quarantine:{esc(name)}`` and trims it to
  the newest 10,000; the list expires 7 days after its last push, like the file
  stream's quarantine. Failing to quarantine logs a warning (rows are counted
  as malformed either way).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from event_meter._keys import esc
from event_meter._time import Clock, iso_us
from event_meter.errors import ConfigurationError
from event_meter.stores.base import Entry, Lease, StreamBatch, StreamStore, Undecodable
from event_meter.stores.redis._client import (
    check_namespace,
    client_sources,
    mapping,
    storage_errors,
    text,
    translate,
)
from event_meter.stores.redis.lock import try_lease

__all__ = ["RedisStream"]

log = logging.getLogger("event_meter")

QUARANTINE_CAP: Final = 10_000
QUARANTINE_TTL_MS: Final = 7 * 86_400_000
DELETE_CHUNK: Final = 500


@dataclass(slots=True)
class _Claim:
    """The handle of one batch: its ids, and each row's raw payload for quarantine."""

    ids: list[str]
    raw: dict[str, bytes] = field(default_factory=dict)


class RedisStream(StreamStore):
    """The Redis stream store; thread-safe and fork-safe (see the module docstring).

    ``redis`` is a redis-py client or a zero-argument factory, ``url`` a
    ``redis://``, ``rediss://`` or ``unix://`` URL (clients are then built on
    first use and closed by ``close``); ``lock_redis`` an optional separate
    client or factory for the read lease; ``read_limit`` caps the rows one read
    returns.
    """

    overlapping_batches = True  # claims are kept per process: a read skips claimed rows

    def __init__(
        self,
        redis: Any = None,
        lock_redis: Any = None,
        *,
        url: str | None = None,
        read_limit: int | None = None,
    ) -> None:
        if read_limit is not None and (
            isinstance(read_limit, bool) or not isinstance(read_limit, int) or read_limit < 1
        ):
            raise ConfigurationError(
                f"read_limit={read_limit!r} is invalid: pass None or a positive int"
            )
        self._data, self._lock_client = client_sources(redis, lock_redis, url)
        self.read_limit = read_limit
        self._keys: dict[str, str] = {}
        self._read_lock = threading.Lock()
        self._claimed: dict[str, set[str]] = {}
        # Per name: the last id read while every row up to it is claimed here or gone,
        # so a read while earlier batches are held starts after them.
        self._after: dict[str, str] = {}
        self._claims_pid = os.getpid()

    def __repr__(self) -> str:
        return f"RedisStream(namespace={self.namespace!r})"

    def bind(self, *, namespace: str, clock: Clock) -> None:
        check_namespace(namespace)
        super().bind(namespace=namespace, clock=clock)
        self._keys = {}

    def close(self) -> None:
        """Close the clients this store created; drop its claims."""
        with self._read_lock:
            self._claimed, self._after = {}, {}
        self._data.close()
        self._lock_client.close()

    def stream_key(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = f"{self.namespace}:stream:{esc(name)}"
        return key

    def quarantine_key(self, name: str) -> str:
        return f"{self.namespace}:quarantine:{esc(name)}"

    # -- writing -------------------------------------------------------------

    def append(self, name: str, payload: Mapping[str, Any]) -> None:
        """One ``XADD``; raises ``StorageError`` when Redis is unreachable."""
        data = orjson.dumps(payload)
        try:  # no context manager here: it would cost a tenth of the whole write path
            self._data.get().xadd(self.stream_key(name), {"payload": data})
        except Exception as exc:
            error = translate(exc, "append")
            if error is exc:
                raise
            raise error from exc

    def pending(self, name: str) -> int:
        """Rows not yet deleted (``XLEN``)."""
        with storage_errors("pending"):
            return int(self._data.get().xlen(self.stream_key(name)))

    # -- reading -------------------------------------------------------------

    def _claims(self, name: str) -> set[str]:
        """This process's claimed ids of ``name`` (a forked child starts with none)."""
        if self._claims_pid != os.getpid():
            self._claimed, self._after, self._claims_pid = {}, {}, os.getpid()
        return self._claimed.setdefault(name, set())

    def read(self, name: str, limit: int) -> StreamBatch:
        """Up to ``min(limit, read_limit)`` unclaimed rows, oldest first, now claimed."""
        count = min(limit, self.read_limit) if self.read_limit is not None else limit
        key = self.stream_key(name)
        with storage_errors("read"), self._read_lock:
            client = self._data.get()
            claimed = self._claims(name)
            after = self._after.get(name) if claimed else None
            entries: list[Entry] = []
            claim = _Claim([])
            start = "-" if after is None else f"({after}"
            skip = len(claimed) if after is None else 0  # claimed rows the range may hold
            while len(entries) < count:
                page_size = count - len(entries) + skip
                page = client.xrange(key, start, "+", count=page_size)
                for row_id, fields in page:
                    entry_id = text(row_id) or ""
                    if entry_id in claimed or entry_id in claim.raw:
                        continue
                    entries.append(self._entry(entry_id, fields, claim))
                    if len(entries) >= count:
                        break
                if len(page) < page_size:
                    break
                start = f"({text(page[-1][0])}"
            claim.ids = [entry.id for entry in entries]
            claimed.update(claim.ids)
            if claim.ids:
                self._after[name] = claim.ids[-1]
        return StreamBatch(name, entries, handle=claim)

    @staticmethod
    def _entry(entry_id: str, fields: Any, claim: _Claim) -> Entry:
        row = {name: text(value) for name, value in mapping(fields).items()}
        found = row.get("payload")
        if found is None:
            claim.raw[entry_id] = orjson.dumps(row)
            return Entry(entry_id, Undecodable(claim.raw[entry_id], "no payload field"))
        raw = found.encode("utf-8", "surrogateescape")
        claim.raw[entry_id] = raw
        try:
            return Entry(entry_id, orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            return Entry(entry_id, Undecodable(raw, f"payload is not JSON: {exc}"))

    def _unclaim(self, batch: StreamBatch, *, deleted: bool) -> list[str]:
        claim = batch.handle
        batch.handle = None
        if not isinstance(claim, _Claim):
            return []
        with self._read_lock:
            self._claims(batch.name).difference_update(claim.ids)
            if not deleted:  # its rows are readable again: the next read starts over
                self._after.pop(batch.name, None)
        return claim.ids

    def delete(self, batch: StreamBatch) -> None:
        """``XDEL`` exactly the rows of ``batch`` (in pipelined chunks of 500)."""
        claim = batch.handle
        ids = claim.ids if isinstance(claim, _Claim) else []
        if ids:
            key = self.stream_key(batch.name)
            with storage_errors("delete"):
                pipe = self._data.get().pipeline(transaction=False)
                for i in range(0, len(ids), DELETE_CHUNK):
                    pipe.xdel(key, *ids[i : i + DELETE_CHUNK])
                pipe.execute()
        self._unclaim(batch, deleted=True)

    def release(self, batch: StreamBatch) -> None:
        """Give the rows back for a later read; nothing changes in Redis."""
        self._unclaim(batch, deleted=False)

    def quarantine(self, batch: StreamBatch, malformed: Sequence[tuple[Entry, str]]) -> None:
        """Keep malformed rows in the capped quarantine list; logs instead of raising."""
        claim = batch.handle
        raw = claim.raw if isinstance(claim, _Claim) else {}
        when = iso_us(self.clock.now())
        records = [
            orjson.dumps(
                {
                    "id": entry.id,
                    "reason": reason,
                    "raw": raw.get(entry.id, b"").decode("utf-8", "replace"),
                    "at": when,
                }
            )
            for entry, reason in malformed
        ]
        if not records:
            return
        key = self.quarantine_key(batch.name)
        try:
            with storage_errors("quarantine"):
                pipe = self._data.get().pipeline(transaction=False)
                pipe.lpush(key, *records)
                pipe.ltrim(key, 0, QUARANTINE_CAP - 1)
                pipe.pexpire(key, QUARANTINE_TTL_MS)
                pipe.execute()
        except Exception:
            log.warning(
                "event_meter: could not quarantine malformed rows of %r", batch.name, exc_info=True
            )

    def try_read_lock(self, name: str, ttl_ms: int) -> Lease | None:
        """The per-event read lease ``{ns}:stream_lock:{esc(name)}``, or None while held."""
        with storage_errors("try_read_lock"):
            return try_lease(
                self._lock_client.get(), f"{self.namespace}:stream_lock:{esc(name)}", ttl_ms
            )
