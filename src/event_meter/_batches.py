"""The steps of one batch (SPEC section 9, steps 5-9).

``BatchSteps.prepare`` turns a claimed batch into a ``Prepared`` delta (skip
what is marked processed, validate, aggregate); ``apply`` writes it; ``settle``
counts it and deletes its rows; ``forget`` drops their markers.
``event_meter._pipeline`` runs them, overlapping one batch's apply with the next
batch's ``prepare`` when the stores allow it; ``prepare`` takes the batch in
flight (``running``) into account:

- ``recover`` leaves that batch's journal entry alone (it is being applied; if
  that fails, the entry stays for a later ``recover``);
- interval state that it will write is folded into what is read from the store
  (state only moves forward, so ``max`` of the stored and the in-flight value is
  what the store holds once it lands).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from event_meter._aggregate import Aggregator
from event_meter._guard import CardinalityGuard
from event_meter._keys import ReportRef
from event_meter._payload import PendingEvent, load_payload
from event_meter.report import Report
from event_meter.stores.base import (
    BatchDelta,
    Entry,
    Lease,
    RollupStore,
    StreamBatch,
    StreamStore,
    Undecodable,
)

if TYPE_CHECKING:
    from event_meter.processor import ProcessResult

__all__ = ["BatchSteps", "Prepared", "batch_id_of"]

logger = logging.getLogger("event_meter")
_STATE_CACHE_LIMIT = 100_000


def batch_id_of(entry_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(entry_ids)).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Prepared:
    """One claimed batch, ready to apply. ``delta`` is None when nothing is new."""

    batch: StreamBatch
    read_ids: list[str]
    applied: int
    malformed: list[tuple[Entry, str]]
    delta: BatchDelta | None
    future: Future[None] | None = field(default=None)


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


class BatchSteps:
    """Prepare, apply and settle batches of one ``process_pending`` call."""

    def __init__(
        self,
        stream: StreamStore,
        rollups: RollupStore,
        ref: ReportRef,
        report: Report,
        leases: list[Lease],
        result: ProcessResult,
        progress: Callable[[ProcessResult], None] | None,
    ) -> None:
        self.stream = stream
        self.rollups = rollups
        self.ref = ref
        self.leases = leases
        self.result = result
        self.progress = progress
        self.aggregator = Aggregator(report)
        limit = report.max_values_per_index
        self.guard = None if limit is None else CardinalityGuard(report, limit, rollups, ref)
        # Interval state as this pass left it: read from the store once per key, then
        # moved forward by ``build``. Exact because interval reports are processed under
        # the report lock (nobody else writes their state while we hold it).
        self._state: dict[tuple[str, str], int] = {}
        self._state_read: set[tuple[str, str]] = set()

    def _load_state(self, wanted: set[tuple[str, str]], running: Prepared | None) -> None:
        """Read the state keys this pass has not read yet into ``_state``."""
        if len(self._state_read) > _STATE_CACHE_LIMIT:
            self._state.clear()  # bounded: forget, read again what is needed
            self._state_read.clear()
        missing = wanted - self._state_read
        if not missing:
            return
        stored = self.rollups.read_state(self.ref, missing)
        if running is not None and running.delta is not None:
            _fold_in_flight(stored, missing, running.delta.state)
        self._state.update(stored)
        self._state_read.update(missing)

    def check_leases(self) -> None:
        for lease in self.leases:
            lease.check()

    def prepare(self, batch: StreamBatch, running: Prepared | None = None) -> Prepared:
        """Skip marked and repeated rows, validate and aggregate the rest.

        ``running``: the batch whose apply is in flight, if any.
        """
        rollups, ref, result = self.rollups, self.ref, self.result
        read_ids = [entry[0] for entry in batch.entries]
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
        # marks them, so they are skipped below instead of counted twice. Rows no
        # processor read before (``fresh``) can be neither marked nor journaled.
        done: set[str] = set()
        if not batch.fresh:
            if running is None or running.delta is None:
                rollups.recover(ref)
            else:
                rollups.recover(ref, running=(running.delta.batch_id,))
            done = rollups.processed_ids(ref, list(fresh))
        result.skipped_already_processed += len(done)
        todo = (
            list(fresh.values())
            if not done
            else [entry for entry_id, entry in fresh.items() if entry_id not in done]
        )
        events, malformed = _validate(todo, ref.name)
        if not todo:
            return Prepared(batch, read_ids, 0, malformed, None)
        aggregator = self.aggregator
        entry_ids = [entry[0] for entry in todo]
        rows = aggregator.rows_of(events)
        overflow = None
        if self.guard is not None:
            rows, overflow = self.guard.rewrite(events, rows)
        state = self._state
        if aggregator.interval_params and events:
            self._load_state(aggregator.state_keys(rows), running)
        delta = aggregator.build(events, state, batch_id_of(entry_ids), entry_ids, rows, overflow)
        rollups.prepare_apply(ref, delta)
        return Prepared(batch, read_ids, len(todo), malformed, delta)

    def apply(self, prepared: Prepared) -> None:
        if prepared.delta is not None:
            self.rollups.apply(self.ref, prepared.delta)

    def settle(self, prepared: Prepared) -> bool:
        """Count an applied batch and delete its rows.

        False when the rows could not be deleted (they were released instead).
        """
        stream, batch, result = self.stream, prepared.batch, self.result
        try:
            if prepared.malformed:
                stream.quarantine(batch, prepared.malformed)
            result.processed += prepared.applied
            result.malformed += len(prepared.malformed)
            self.check_leases()  # rows are applied and marked: a lost lease only stops us here
        except BaseException:
            stream.release(batch)
            raise
        try:
            stream.delete(batch)
        except Exception:
            logger.warning(
                "event_meter: could not delete %d processed rows of %r; a later pass deletes them",
                len(prepared.read_ids),
                self.ref.name,
                exc_info=True,
            )
            result.complete = False
            stream.release(batch)
            return False
        if self.progress is not None:
            self.progress(result)
        return True

    def forget(self, prepared: Prepared) -> None:
        """Forget the markers of a deleted batch (a failure only leaves them to cleanup)."""
        try:
            self.rollups.forget(self.ref, prepared.read_ids)
        except Exception:
            logger.warning(
                "event_meter: could not forget processed markers of %r; cleanup removes them",
                self.ref.name,
                exc_info=True,
            )


def _fold_in_flight(
    state: dict[tuple[str, str], int],
    wanted: set[tuple[str, str]],
    in_flight: dict[tuple[str, str], int],
) -> None:
    """What the store will hold once the in-flight apply lands: the max of both."""
    for key in wanted.intersection(in_flight):
        started = in_flight[key]
        stored = state.get(key)
        if stored is None or started > stored:
            state[key] = started
