"""One processing pass: claim, skip applied, aggregate, apply, delete (SPEC section 9).

The algorithm lives here once; stores supply the primitives of
``event_meter.stores.base``. Why it is exact under crashes:

- rows are claimed, so no two live processors hold the same row;
- ``apply`` marks every entry id of the batch processed in the same
  (atomic or journaled) apply, so a retry of a row that was applied skips it;
- ``recover`` runs again after each read, before the markers are tested: rows
  released by a processor that failed inside a journaled apply are marked by
  the replay of its journal before anyone can count them in another batch;
- rows are deleted only after ``apply`` returned, and markers are forgotten
  only after the delete succeeded, so a crash between any two steps leaves
  either unapplied rows (applied by the retry) or marked rows (skipped).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from event_meter._aggregate import Aggregator
from event_meter._guard import CardinalityGuard
from event_meter._keys import ReportRef
from event_meter._payload import PendingEvent, load_payload
from event_meter.errors import DefinitionChangedError
from event_meter.report import Report
from event_meter.stores.base import (
    Entry,
    Lease,
    RollupStore,
    StreamBatch,
    StreamStore,
    Undecodable,
)

__all__ = ["DEFAULT_BATCH_SIZE", "ProcessResult", "process_report"]

logger = logging.getLogger("event_meter")
DEFAULT_BATCH_SIZE = 10_000


@dataclass(slots=True)
class ProcessResult:
    """What one ``process_pending`` call did."""

    event_name: str
    version: int
    processed: int = 0
    skipped_already_processed: int = 0
    malformed: int = 0
    complete: bool = True
    locked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_id_of(entry_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(entry_ids)).encode("utf-8", "surrogatepass")).hexdigest()


def check_definition(rollups: RollupStore, ref: ReportRef, report: Report) -> None:
    """Store the definition on first use; refuse a changed one before any read."""
    wanted = report.definition()
    stored = rollups.store_definition(ref, wanted)
    if stored.get("fingerprint") != wanted["fingerprint"]:
        raise DefinitionChangedError(
            f"{report.name} v{report.version} changed; bump version "
            f"(stored fingerprint {stored.get('fingerprint')}, new {wanted['fingerprint']})"
        )


def process_report(
    stream: StreamStore,
    rollups: RollupStore,
    report: Report,
    namespace: str,
    *,
    lock_ttl_ms: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[ProcessResult], None] | None = None,
) -> ProcessResult:
    """Process every pending row of ``report.name`` into ``rollups``."""
    ref = ReportRef(namespace, report.name, report.version)
    result = ProcessResult(report.name, report.version)
    stream_lease = stream.try_read_lock(report.name, lock_ttl_ms)
    if stream_lease is None:
        result.locked = True
        return result
    leases: list[Lease] = [stream_lease]
    try:
        # Interval state and the cardinality guard's admitted values need one
        # processor at a time; plain counts merge safely in parallel.
        if report.intervals or report.max_values_per_index is not None:
            report_lease = rollups.try_report_lock(ref, lock_ttl_ms)
            if report_lease is None:
                result.locked = True
                return result
            leases.append(report_lease)
        check_definition(rollups, ref, report)
        rollups.recover(ref)
        aggregator = Aggregator(report)
        limit = report.max_values_per_index
        guard = None if limit is None else CardinalityGuard(report, limit, rollups, ref)
        while True:
            batch = stream.read(report.name, batch_size)
            if not batch.entries:
                stream.release(batch)
                break
            if not _one_batch(stream, rollups, ref, aggregator, guard, batch, leases, result):
                break
            if progress is not None:
                progress(result)
    finally:
        for lease in reversed(leases):
            lease.release()
    return result


def _check(leases: list[Lease]) -> None:
    for lease in leases:
        lease.check()


def _validate(
    entries: list[Entry], name: str
) -> tuple[list[PendingEvent], list[tuple[Entry, str]]]:
    """Rows as events in stream order, and the malformed rows with why (hot path)."""
    events: list[PendingEvent] = []
    malformed: list[tuple[Entry, str]] = []
    append = events.append
    load = load_payload
    for entry in entries:
        payload = entry[1]
        if type(payload) is not dict and isinstance(payload, Undecodable):
            malformed.append((entry, payload.reason))
            continue
        loaded = load(payload)
        if type(loaded) is str:
            malformed.append((entry, loaded))
        elif loaded[0] != name:
            malformed.append((entry, f"name {loaded[0]!r} is not {name!r}"))
        else:
            append(loaded)  # type: ignore[arg-type]
    return events, malformed


def _one_batch(
    stream: StreamStore,
    rollups: RollupStore,
    ref: ReportRef,
    aggregator: Aggregator,
    guard: CardinalityGuard | None,
    batch: StreamBatch,
    leases: list[Lease],
    result: ProcessResult,
) -> bool:
    """Apply one claimed batch; False when its rows could not be deleted."""
    read_ids = [entry[0] for entry in batch.entries]
    try:
        fresh = dict(zip(read_ids, batch.entries, strict=True))
        if len(fresh) < len(read_ids):  # repeated within the read: the first one counts
            fresh = {}
            for entry in batch.entries:
                fresh.setdefault(entry[0], entry)
            result.skipped_already_processed += len(read_ids) - len(fresh)
        # Finish half-done applies again now that these rows are ours: a processor
        # that failed inside an apply after our first ``recover`` released rows its
        # journal covers, and we may have read them in a different batch (another
        # batch id, so the per-file guard would not catch it). Replaying the journal
        # marks them, so they are skipped below instead of counted twice.
        rollups.recover(ref)
        done = rollups.processed_ids(ref, list(fresh))
        result.skipped_already_processed += len(done)
        todo = (
            list(fresh.values())
            if not done
            else [entry for entry_id, entry in fresh.items() if entry_id not in done]
        )
        events, malformed = _validate(todo, ref.name)
        if todo:
            entry_ids = [entry[0] for entry in todo]
            rows = aggregator.rows_of(events)
            overflow = None
            if guard is not None:
                rows, overflow = guard.rewrite(events, rows)
            state: dict[tuple[str, str], int] = {}
            if aggregator.interval_params and events:
                state = rollups.read_state(ref, aggregator.state_keys(rows))
            delta = aggregator.build(
                events, state, batch_id_of(entry_ids), entry_ids, rows, overflow
            )
            _check(leases)
            rollups.apply(ref, delta)
        if malformed:
            stream.quarantine(batch, malformed)
    except BaseException:
        stream.release(batch)
        raise
    result.processed += len(todo)
    result.malformed += len(malformed)
    try:
        _check(leases)  # rows are applied and marked: a lost lease only stops us here
    except BaseException:
        stream.release(batch)
        raise
    try:
        stream.delete(batch)
    except Exception:
        logger.warning(
            "event_meter: could not delete %d processed rows of %r; a later pass deletes them",
            len(read_ids),
            ref.name,
            exc_info=True,
        )
        result.complete = False
        stream.release(batch)
        return False
    try:
        rollups.forget(ref, read_ids)
    except Exception:
        logger.warning(
            "event_meter: could not forget processed markers of %r; cleanup removes them",
            ref.name,
            exc_info=True,
        )
    return True
