"""One processing pass: claim, skip applied, aggregate, apply, delete (SPEC section 9).

The algorithm lives here and in ``_batches`` once; stores supply the
primitives of ``event_meter.stores.base``. Why it is exact under crashes:

- rows are claimed, so no two live processors hold the same row;
- ``apply`` marks every entry id of the batch processed in the same
  (atomic or journaled) apply, so a retry of a row that was applied skips it;
- ``recover`` runs again after each read, before the markers are tested: rows
  released by a processor that failed inside a journaled apply are marked by
  the replay of its journal before anyone can count them in another batch;
- rows are deleted only after ``apply`` returned, and markers are forgotten
  only after the delete succeeded, so a crash between any two steps leaves
  either unapplied rows (applied by the retry) or marked rows (skipped).

When both stores allow it, the apply of one batch overlaps the read and
aggregation of the next (``_pipeline`` says why that keeps the above).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from event_meter._batches import BatchSteps, batch_id_of
from event_meter._keys import ReportRef
from event_meter._pipeline import Pipeline
from event_meter.errors import DefinitionChangedError
from event_meter.report import Report
from event_meter.stores.base import Lease, RollupStore, StreamStore

__all__ = ["DEFAULT_BATCH_SIZE", "ProcessResult", "batch_id_of", "process_report"]

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
        steps = BatchSteps(stream, rollups, ref, report, leases, result, progress)
        overlap = stream.overlapping_batches and rollups.background_apply
        with Pipeline(steps, overlap=overlap) as pipeline:
            while True:
                batch = stream.read(report.name, batch_size)
                if not batch.entries:
                    stream.release(batch)
                    pipeline.drain()
                    break
                if not pipeline.push(batch):
                    break
    finally:
        for lease in reversed(leases):
            lease.release()
    return result
