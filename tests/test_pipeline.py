"""The overlapped pipeline: one batch's apply runs while the next batch is read and
aggregated (``event_meter._batches``), and nothing changes in the results.

The stores here wait for each other with bounded waits on conditions (never
sleeps): an apply that must overlap the next read blocks until that read
happened, which can only succeed when the pipeline really overlaps them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import pytest

from event_meter import EventMeter, Report
from event_meter import _batches as batches
from event_meter._keys import ReportRef
from event_meter.stores.base import BatchDelta, StreamBatch
from event_meter.stores.memory import MemoryRollups, MemoryStream
from support import T0, FakeClock

NAME = "invoice_delivery"
WAIT_S = 10.0
REPORT = (
    Report(NAME)
    .index_by("provider")
    .index_by("customer_id")
    .measure_interval_by("customer_id", group_by="provider")
)


class Watched:
    """Counts of what the stores did, and a condition to wait for them."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.reads = 0
        self.drained = False
        self.state_reads = 0
        self.events: list[tuple[str, str]] = []  # (what, thread name)

    def note(self, what: str, **counts: int) -> None:
        with self.changed:
            self.events.append((what, threading.current_thread().name))
            for name, step in counts.items():
                setattr(self, name, getattr(self, name) + step)
            self.changed.notify_all()

    def wait(self, condition: Callable[[], bool]) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(condition, WAIT_S))


class WatchedStream(MemoryStream):
    def __init__(self, watched: Watched) -> None:
        super().__init__()
        self.watched = watched

    def read(self, name: str, limit: int) -> StreamBatch:
        batch = super().read(name, limit)
        if not batch.entries:
            self.watched.drained = True
        self.watched.note("read", reads=1)
        return batch

    def delete(self, batch: StreamBatch) -> None:
        super().delete(batch)
        self.watched.note("delete")


class WaitingRollups(MemoryRollups):
    """Apply number n waits until ``until(n)`` holds (bounded); notes whether it did."""

    def __init__(self, watched: Watched, until: Any) -> None:
        super().__init__()
        self.watched = watched
        self.until = until
        self.applies = 0
        self.overlapped: list[bool] = []

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        self.applies += 1
        number = self.applies
        self.overlapped.append(self.watched.wait(lambda: self.until(number)))
        super().apply(ref, delta)
        self.watched.note("apply")

    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        found = super().read_state(ref, keys)
        self.watched.note("read_state", state_reads=1)
        return found


def rows(count: int) -> list[Mapping[str, Any]]:
    """Events 7 s apart over six customers and two providers, in stream order."""
    return [
        {
            "name": NAME,
            "status": ("success", "failure", "skipped")[i % 3],
            "started_at": (T0 + timedelta(seconds=7 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "duration_ms": 3 * i,
            "params": {"customer_id": i % 6, "provider": "p" if i % 4 else "q"},
        }
        for i in range(count)
    ]


def meter_of(stream: MemoryStream, rollups: MemoryRollups, clock: FakeClock) -> EventMeter:
    return EventMeter(stream_storage=stream, rollup_storage=rollups, clock=clock)


def fill(meter: EventMeter, count: int, clock: FakeClock) -> None:
    for row in rows(count):
        meter.stream.append(NAME, row)
    clock.set(T0 + timedelta(hours=2))


def views(meter: EventMeter) -> list[Any]:
    """Every summary and series of the report's index values, over the whole window."""
    start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=2)
    found: list[Any] = []
    for by in (None, {"provider": "p"}, {"provider": "q"}, *({"customer_id": c} for c in range(6))):
        found.append(meter.summary(REPORT, start=start, end=end, by=by))
        found.append(meter.series(REPORT, start=start, end=end, by=by, every="hour"))
    return found


def reference_views(count: int, clock: FakeClock) -> list[Any]:
    """The same events in one batch, no overlap possible."""
    meter = meter_of(MemoryStream(), MemoryRollups(), clock)
    fill(meter, count, clock)
    assert meter.process_pending(REPORT, batch_size=10 * count).processed == count
    return views(meter)


def test_each_apply_runs_in_the_worker_while_the_next_batch_is_read(clock: FakeClock) -> None:
    watched = Watched()
    rollups = WaitingRollups(watched, lambda n: watched.reads >= n + 1)
    meter = meter_of(WatchedStream(watched), rollups, clock)
    fill(meter, 40, clock)
    progress: list[int] = []
    result = meter.process_pending(
        REPORT, batch_size=10, progress=lambda r: progress.append(r.processed)
    )
    assert (result.processed, result.complete) == (40, True)
    assert progress == [10, 20, 30, 40]
    assert rollups.overlapped == [True] * 4
    applied_in = {thread for what, thread in watched.events if what == "apply"}
    assert len(applied_in) == 1
    assert applied_in.pop().startswith("event-meter-apply")
    assert views(meter) == reference_views(40, clock)


def test_a_store_without_background_apply_is_applied_in_order_in_this_thread(
    clock: FakeClock,
) -> None:
    class InThisThread(WaitingRollups):
        background_apply = False

    watched = Watched()
    rollups = InThisThread(watched, lambda n: True)
    meter = meter_of(WatchedStream(watched), rollups, clock)
    fill(meter, 25, clock)
    assert meter.process_pending(REPORT, batch_size=10).processed == 25
    steps = [what for what, _ in watched.events if what != "read_state"]
    assert steps == ["read", "apply", "delete"] * 3 + ["read"]
    assert {thread for _, thread in watched.events} == {threading.current_thread().name}


def test_interval_state_read_while_the_previous_apply_runs_includes_what_it_writes(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each apply is held until the next batch has read its interval state from the
    store, so that read misses what the held apply writes: the pipeline must fold the
    in-flight state in. (A state cache of no keys makes every batch read the store.)"""
    monkeypatch.setattr(batches, "_STATE_CACHE_LIMIT", 0)
    watched = Watched()
    rollups = WaitingRollups(watched, lambda n: watched.state_reads >= n + 1 or watched.drained)
    meter = meter_of(WatchedStream(watched), rollups, clock)
    fill(meter, 60, clock)
    assert meter.process_pending(REPORT, batch_size=7).processed == 60
    assert rollups.overlapped == [True] * 9
    assert watched.state_reads == 9
    assert views(meter) == reference_views(60, clock)


def test_a_failed_apply_gives_back_its_batch_and_the_one_read_after_it(
    clock: FakeClock,
) -> None:
    class FailsSecond(WaitingRollups):
        def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
            if self.applies == 1:
                self.applies += 1
                assert self.watched.wait(lambda: self.watched.reads >= 3)
                raise OSError("injected: the second apply fails")
            super().apply(ref, delta)

    watched = Watched()
    stream = WatchedStream(watched)
    meter = meter_of(stream, FailsSecond(watched, lambda n: True), clock)
    fill(meter, 30, clock)
    with pytest.raises(Exception, match="injected"):
        meter.process_pending(REPORT, batch_size=10)
    assert stream.pending(NAME) == 20  # the first batch deleted, the others given back
    assert meter.process_pending(REPORT, batch_size=10).processed == 20
    assert views(meter) == reference_views(30, clock)


def test_passes_leave_no_worker_threads_behind(clock: FakeClock) -> None:
    meter = meter_of(MemoryStream(), MemoryRollups(), clock)
    before = threading.active_count()
    for _ in range(50):
        fill(meter, 12, clock)
        assert meter.process_pending(REPORT, batch_size=5).processed == 12
    assert threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("event-meter-apply")]
