"""Percentiles on every rollup backend: 1,000,000 random durations in 60 minute buckets.

The durations are aggregated once into per-batch deltas (the processor's own
aggregator), the deltas are applied to each backend by four threads at once, and
the percentiles read back over the 60 minutes (minute buckets merged) and over
the hour must be within 1% of the exact nearest-rank values of the raw samples.
The stored histogram must equal one computed apart from the library.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cache

from event_meter._aggregate import Aggregator
from event_meter._keys import ReportRef
from event_meter._payload import PendingEvent
from event_meter._time import MINUTE_MS, bucket_id, datetime_to_ms
from event_meter.processor import batch_id_of
from event_meter.report import Report
from event_meter.rollup import merge_all, render_summary
from event_meter.stores.base import BatchDelta, RollupStore
from expect import histogram, percentiles

EVENTS = 1_000_000
HOUR = datetime_to_ms(datetime(2026, 5, 6, 10, tzinfo=UTC))
BATCHES = 20
NAME = "checkout"


@cache
def workload() -> tuple[list[int], list[BatchDelta]]:
    """Seeded durations (a log-normal body, a slow tail, some zeros) and their deltas."""
    rng = random.Random(20261128)
    durations: list[int] = []
    for n in range(EVENTS):
        pick = n % 50
        if pick == 0:
            durations.append(0)
        elif pick < 4:
            durations.append(rng.randrange(5_000, 120_000))  # the slow tail
        else:
            durations.append(int(rng.lognormvariate(4.5, 1.2)))
    aggregator = Aggregator(Report(NAME))
    size = EVENTS // BATCHES
    deltas: list[BatchDelta] = []
    for first in range(0, EVENTS, size):
        events = [
            # Event n starts in minute n % 60, so every batch touches every minute.
            PendingEvent(NAME, 0, HOUR + (n % 60) * MINUTE_MS + n % 977, durations[n], {})
            for n in range(first, first + size)
        ]
        ids = [f"batch:{first}"]  # markers are not what this test is about
        deltas.append(aggregator.build(events, {}, batch_id_of(ids), ids))
    return durations, deltas


def test_percentiles_of_a_million_durations_are_within_one_percent(
    rollup_store: RollupStore,
) -> None:
    ref = ReportRef(rollup_store.namespace, NAME, 1)
    durations, deltas = workload()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda delta: rollup_store.apply(ref, delta), deltas))
    exact = percentiles("duration_ms", durations)

    minutes = [bucket_id(HOUR + m * MINUTE_MS, "minute") for m in range(60)]
    found = rollup_store.read_rollups(ref, "minute", (), "all", minutes)
    assert all(fields is not None for fields in found)
    merged = render_summary(merge_all(found), 3600)  # 60 minute buckets merged
    assert merged["duration_ms_count"] == EVENTS
    assert merged == {**merged, **exact}

    buckets, fields = rollup_store.summarize(ref, "hour", (), "all", None)
    assert buckets == 1
    hour = render_summary(fields, None)
    assert hour == {**hour, **exact}
    assert {k: v for k, v in fields.items() if "_h" in k} == histogram("duration_ms", durations)

    (first,) = rollup_store.read_rollups(ref, "minute", (), "all", minutes[:1])
    assert first is not None
    assert {k: v for k, v in first.items() if "_h" in k} == histogram(
        "duration_ms", durations[::60]
    )


def test_histograms_add_when_the_same_bucket_is_applied_again(
    rollup_store: RollupStore,
) -> None:
    ref = ReportRef(rollup_store.namespace, NAME, 1)
    aggregator = Aggregator(Report(NAME))
    start = HOUR
    one = [PendingEvent(NAME, 0, start, d, {}) for d in (3, 3, 250)]
    two = [PendingEvent(NAME, 0, start, d, {}) for d in (3, 90_000)]
    for n, events in enumerate((one, two)):
        ids = [f"x{n}:{i}" for i in range(len(events))]
        rollup_store.apply(ref, aggregator.build(events, {}, batch_id_of(ids), ids))
    (minute,) = rollup_store.read_rollups(ref, "minute", (), "all", [bucket_id(start, "minute")])
    assert minute is not None
    assert {k: v for k, v in minute.items() if "_h" in k} == histogram(
        "duration_ms", [3, 3, 250, 3, 90_000]
    )
    rendered = render_summary(minute, 60)
    assert rendered["duration_ms_p50"] == 3.0  # a bucket below 50 ms holds one integer
    assert rendered["duration_ms_p99"] == 90_000.0  # clamped to the exact max
