"""The two storage roles and what every backend promises (SPEC section 11).

A **stream store** keeps pending event payloads until a processor has folded
them into rollups. A **rollup store** keeps report definitions, minute and hour
rollups, interval state, processed-entry markers, leases and the cleanup
watermark.

The processing algorithm (``event_meter.processor``) lives once and uses only
the primitives below; a backend supplies them and states, in its docstrings,
how it makes them atomic or idempotent. The guarantee they add up to: a crash
or error anywhere, followed by any number of retries by any number of
processors, ends with exact rollups.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from event_meter._keys import ReportRef
from event_meter._time import Clock, SystemClock
from event_meter.errors import ConfigurationError
from event_meter.rollup import merge_all

__all__ = [
    "NULL_LEASE",
    "BatchDelta",
    "Entry",
    "Fields",
    "Lease",
    "RollupFile",
    "RollupStore",
    "StreamBatch",
    "StreamStore",
    "Undecodable",
]

Fields = dict[str, int]
"""Stored rollup fields of one rollup key (``count``, ``duration_ms_sum``, ...)."""


class RollupFile(NamedTuple):
    """Where a group of rollups lives: granularity, bucket id and index params.

    ``params`` is the sorted tuple of the index's param names (``()`` for the
    all index). (Not called ``index``: that would shadow ``tuple.index``.)
    """

    granularity: str
    bucket_id: str
    params: tuple[str, ...]


class Undecodable(NamedTuple):
    """A stream row that is not even a JSON value: its raw bytes and why."""

    raw: bytes
    reason: str


class Entry(NamedTuple):
    """One pending stream row: its stable id and its decoded JSON payload.

    ``payload`` is whatever JSON value the row held (a dict when it is well
    formed) or an ``Undecodable`` when the row could not be decoded at all.
    """

    id: str
    payload: Any


@dataclass(slots=True)
class StreamBatch:
    """Rows read by one ``StreamStore.read`` call and claimed until delete or release.

    ``handle`` is the backend's own claim state; the processor never looks in it.
    ``fresh``: no processor can have read any of these rows before (so none is
    marked processed or covered by a journal): the processor skips ``recover``
    and ``processed_ids`` for them. A store that cannot tell leaves it False.
    """

    name: str
    entries: list[Entry]
    handle: Any = None
    fresh: bool = False


@dataclass(slots=True)
class BatchDelta:
    """Everything one batch changes in a rollup store.

    - ``rollups``: per file, index key -> field deltas (sums add, ``*_min`` and
      ``*_max`` merge by min/max).
    - ``state``: ``(param, value text)`` -> started ms, merged by max.
    - ``entry_ids``: ids to mark processed in the same apply.
    - ``batch_id``: SHA-256 hex of the sorted entry ids; backends that cannot
      apply atomically record it wherever they wrote, so a retry of the same
      delta applies only what is missing.
    - ``encoded``: what a store's ``prepare_apply`` computed ahead of ``apply``
      (keyed by store; never compared).
    """

    batch_id: str
    entry_ids: list[str]
    rollups: dict[RollupFile, dict[str, Fields]] = field(default_factory=dict)
    state: dict[tuple[str, str], int] = field(default_factory=dict)
    encoded: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Lease(Protocol):
    """A held lock. ``check`` raises ``LockLostError`` once it is no longer held."""

    def check(self) -> None: ...

    def release(self) -> None: ...


class _NullLease:
    """The lease of a store that needs no lock for this purpose."""

    __slots__ = ()

    def check(self) -> None:
        return None

    def release(self) -> None:
        return None


NULL_LEASE: Lease = _NullLease()


class _Bindable:
    """Stores take namespace and clock from the ``EventMeter`` they are given to."""

    namespace: str = "event_meter:v1"
    clock: Clock = SystemClock()

    def bind(self, *, namespace: str, clock: Clock) -> None:
        """Called by ``EventMeter``; a store belongs to one meter at a time."""
        self.namespace = namespace
        self.clock = clock

    def close(self) -> None:
        """Release what the store opened itself (never clients it was given)."""
        return


class StreamStore(_Bindable, ABC):
    """Pending events, oldest first, per event name.

    Contract:
    - ``append`` writes one payload durably enough for the store's sync mode or
      raises; it is thread-safe and fork-safe and never interleaves rows.
    - ``read`` returns at most ``limit`` rows (a file-based store may return the
      rows of whole files up to ``limit``), in stream order, that no other live
      processor holds; the rows stay claimed by this batch until ``delete`` or
      ``release``. A crashed processor's claims become readable again.
    - ``delete`` removes exactly the rows of the batch. ``release`` gives them
      back unchanged for a later read.
    - ``quarantine`` keeps a copy of malformed rows (with why) for inspection;
      it never blocks the queue and the rows are deleted with the batch.
    - ``try_read_lock`` returns ``NULL_LEASE`` when the store needs no read lock,
      ``None`` when another processor holds it.
    - ``overlapping_batches``: True when ``read`` may be called again while
      earlier batches of the same name are still claimed, returning the rows
      after theirs in stream order. Rows given back by ``release`` come back at
      the latest once the batches read around them are done too (a file stream
      holds one claim per file). False makes the processor read, apply and
      delete one batch at a time.
    """

    overlapping_batches: bool = False

    @abstractmethod
    def append(self, name: str, payload: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def read(self, name: str, limit: int) -> StreamBatch: ...

    @abstractmethod
    def delete(self, batch: StreamBatch) -> None: ...

    @abstractmethod
    def release(self, batch: StreamBatch) -> None: ...

    def quarantine(self, batch: StreamBatch, malformed: Sequence[tuple[Entry, str]]) -> None:
        """Keep malformed rows aside; the default drops them (they are counted anyway)."""
        return

    def try_read_lock(self, name: str, ttl_ms: int) -> Lease | None:
        return NULL_LEASE


class RollupStore(_Bindable, ABC):
    """Report definitions, rollups, interval state, markers, leases, cleanup.

    Contract:
    - ``store_definition`` stores ``definition`` if none is stored, atomically,
      and returns the stored one (which the caller compares).
    - ``apply`` is exactly-once per ``delta.batch_id``: either atomic, or it
      records enough (journal, batch ids) that ``recover`` or a retry of the
      same entries can finish it without counting anything twice. After a
      successful ``apply`` every ``delta.entry_ids`` id is reported by
      ``processed_ids``.
    - ``recover`` finishes applies that a crashed or failed processor left half
      done. The processor calls it under its locks before the first read and
      again after each read (before ``processed_ids``): rows it now holds may
      have been half applied by a processor that let them go. It must be safe
      to run concurrently with another ``recover`` or ``apply`` of the same batch.
    - ``read_rollups`` returns one ``Fields`` (or None) per requested bucket id;
      stored numbers that are not plain decimal integers are left out.
    - ``scan_rollups`` returns every retained ``(bucket id, Fields)`` of one index
      key, oldest first, at most ``limit`` (None: no cap).
    - ``try_report_lock`` / ``try_cleanup_lock`` return a lease or None when
      another holder has it.
    - ``background_apply``: True when ``apply`` may run in another thread while
      the processor calls ``recover(ref, running=...)``, ``processed_ids``,
      ``read_state`` and ``bucket_index_keys`` of the same report (so one batch's
      apply overlaps the aggregation of the next).
    - ``cleanup`` deletes what ended at or before ``before_ms`` and returns the
      counts ``rollup_keys_deleted``, ``interval_state_keys_deleted``,
      ``processed_entries_deleted``.
    """

    background_apply: bool = False

    @abstractmethod
    def store_definition(self, ref: ReportRef, definition: Mapping[str, Any]) -> dict[str, Any]: ...

    @abstractmethod
    def load_definition(self, ref: ReportRef) -> dict[str, Any] | None: ...

    def recover(self, ref: ReportRef, running: Collection[str] = ()) -> None:
        """Finish interrupted applies; stores whose apply is atomic need nothing.

        ``running``: batch ids whose apply this process is running right now in
        another thread (``background_apply``): left to that apply.
        """
        return

    @abstractmethod
    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]: ...

    def prepare_apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Called in the processing thread once ``delta`` is built, before ``apply``
        (which may run in a worker thread): a store may encode what ``apply`` will send
        into ``delta.encoded`` here, beside the server's work on the batch before."""
        return

    @abstractmethod
    def apply(self, ref: ReportRef, delta: BatchDelta) -> None: ...

    @abstractmethod
    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]: ...

    @abstractmethod
    def read_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        bucket_ids: Sequence[str],
    ) -> list[Fields | None]: ...

    @abstractmethod
    def scan_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> list[tuple[str, Fields]]: ...

    def summarize(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> tuple[int, Fields]:
        """How many buckets ``scan_rollups`` returns, and their fields merged by the laws.

        The default merges what ``scan_rollups`` returns; a store may compute the
        same in one server-side aggregate (the contract suite checks they agree).
        """
        found = self.scan_rollups(ref, granularity, index, index_key, limit)
        return len(found), merge_all(fields for _, fields in found)

    def bucket_index_keys(
        self, ref: ReportRef, granularity: str, bucket_id: str, params: tuple[str, ...]
    ) -> set[str]:
        """The index keys stored in one bucket of the index over ``params`` (never ``()``).

        The cardinality guard (``Report(max_values_per_index=N)``) reads it once per
        hour bucket and index it touches. A store that cannot list them says so.
        """
        raise ConfigurationError(
            f"{type(self).__name__} cannot list the index values of a bucket, so it cannot "
            "process reports with max_values_per_index; use another rollup store or drop "
            "the option"
        )

    @abstractmethod
    def list_reports(self, namespace: str) -> list[tuple[str, int]]: ...

    @abstractmethod
    def try_report_lock(self, ref: ReportRef, ttl_ms: int) -> Lease | None: ...

    @abstractmethod
    def try_cleanup_lock(self, namespace: str, ttl_ms: int) -> Lease | None: ...

    @abstractmethod
    def cleanup(self, ref: ReportRef, before_ms: int) -> dict[str, int]: ...

    @abstractmethod
    def read_watermark(self, namespace: str) -> int | None: ...

    @abstractmethod
    def write_watermark(self, namespace: str, ms: int) -> None: ...
