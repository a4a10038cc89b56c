"""The cardinality guard: at most N values per index and hour bucket (``max_values_per_index``).

Before a batch is aggregated, every event's index keys are checked against the
values each index already holds in the event's hour bucket. A value the bucket
holds, or one that still fits under the limit, keeps its key; any further value
is replaced by the index's overflow key (every param ``__other__``), and the
event counts once in the all index's ``overflow_count`` of its minute and hour.
The minute buckets follow their hour's decision, so a minute never holds more
values than its hour, and the minute and hour views of a value agree.

Cost model: with the guard on, each (index, hour bucket) the processor touches
costs one ``bucket_index_keys`` read per ``process_pending`` call, then one set
lookup per event and guarded index; a guarded index stores at most
``N + 1`` rollups per bucket (the overflow value included), so its storage is
bounded by ``(N + 1) x buckets`` whatever the number of distinct values. The
all index is untouched and exact.

Exactness of the bound needs a single admitting processor: the processor takes
the report lock for guarded reports, as it does for interval rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from event_meter._aggregate import Row
from event_meter._keys import ReportRef, index_key
from event_meter._payload import PendingEvent
from event_meter._time import HOUR_MS, MINUTE_MS, bucket_id
from event_meter.report import Report
from event_meter.stores.base import RollupStore

__all__ = ["OVERFLOW_VALUE", "CardinalityGuard"]

OVERFLOW_VALUE: Final = "__other__"


class CardinalityGuard:
    """Rewrites the rows of one ``process_pending`` call's batches; keeps what it admitted."""

    def __init__(self, report: Report, limit: int, rollups: RollupStore, ref: ReportRef) -> None:
        self.limit = limit
        self.indexes = report.indexes
        self.rollups = rollups
        self.ref = ref
        self.overflow_keys = [
            index_key(index, dict.fromkeys(index, OVERFLOW_VALUE)) for index in self.indexes
        ]
        self._admitted: dict[tuple[int, int], set[str]] = {}

    def _held(self, position: int, hour: int) -> set[str]:
        found = self._admitted.get((position, hour))
        if found is None:
            stored = self.rollups.bucket_index_keys(
                self.ref, "hour", bucket_id(hour, "hour"), self.indexes[position]
            )
            stored.discard(self.overflow_keys[position])
            found = self._admitted[(position, hour)] = stored
        return found

    def rewrite(
        self, events: Sequence[PendingEvent], rows: Sequence[Row]
    ) -> tuple[list[Row], dict[int, int]]:
        """Rows with overflowing values replaced, and minute start ms -> overflowed events."""
        out: list[Row] = []
        overflow: dict[int, int] = {}
        positions = range(1, len(self.indexes))
        limit = self.limit
        for event, row in zip(events, rows, strict=True):
            keys = row[0]
            started = event[2]
            hour = started - started % HOUR_MS
            changed: list[str | None] | None = None
            for position in positions:
                key = keys[position]
                if key is None:
                    continue
                held = self._held(position, hour)
                if key in held:
                    continue
                if len(held) < limit:
                    held.add(key)
                    continue
                if changed is None:
                    changed = list(keys)
                changed[position] = self.overflow_keys[position]
            if changed is None:
                out.append(row)
                continue
            minute = started - started % MINUTE_MS
            overflow[minute] = overflow.get(minute, 0) + 1
            new_keys = tuple(changed)
            out.append((new_keys, row[1], new_keys[1:]))
        return out, overflow
