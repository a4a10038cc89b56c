"""Helpers shared by the benchmark scripts: a fake clock, the report, child runs, RSS."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from event_meter.stores import FileStream
from event_meter.stores.base import BatchDelta, RollupStore

__all__ = [
    "T0",
    "FakeClock",
    "TimedPass",
    "invoice_report",
    "peak_rss_mib",
    "run_child",
    "timed_process",
]

T0 = datetime(2026, 5, 6, 9, 0, 0, tzinfo=UTC)


class FakeClock:
    """A UTC clock that moves only when told to (``current`` is public)."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def invoice_report() -> Report:
    """The report of SPEC section 1."""
    return (
        Report("invoice_delivery")
        .index_by("customer_id")
        .index_by("provider")
        .index_by("provider", "queue")
        .measure_interval_by("customer_id", group_by="provider")
    )


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --child ...`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, script, "--child", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class TimedPass:
    """What ``timed_process`` measured: whole pass, time inside ``apply``, and every delta."""

    process_s: float
    ref: ReportRef
    summary_s: float
    apply_s: float = 0.0
    deltas: list[BatchDelta] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(values) for delta in self.deltas for values in delta.rollups.values())


def timed_process(folder: Path, store: RollupStore, events: int, minutes: int) -> TimedPass:
    """Time ``process_pending`` of the FileStream backlog in ``folder`` into ``store``.

    ``apply`` is wrapped to time it and keep each delta (for a baseline that writes
    the same rollups); the result and the summary total are checked.
    """
    clock = FakeClock(T0)
    clock.advance(minutes=minutes + 1, seconds=11)  # past the last minute and the grace
    meter = EventMeter(stream_storage=FileStream(folder), rollup_storage=store, clock=clock)
    report = invoice_report()
    deltas: list[BatchDelta] = []
    apply_s = [0.0]
    real_apply = store.apply

    def apply(ref: ReportRef, delta: BatchDelta) -> None:
        started = time.perf_counter()
        real_apply(ref, delta)
        apply_s[0] += time.perf_counter() - started
        deltas.append(delta)

    store.apply = apply  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        result = meter.process_pending(report)
        seconds = time.perf_counter() - started
        if result.processed != events or result.malformed or not result.complete:
            raise RuntimeError(f"unexpected result {result.to_dict()}")
        summary_started = time.perf_counter()
        total = meter.summary(report)["count"]
        summary_s = time.perf_counter() - summary_started
        if total != events:
            raise RuntimeError(f"summary counts {total}, expected {events}")
        ref = ReportRef(meter.config.namespace, report.name, report.version)
    finally:
        meter.close()
    return TimedPass(seconds, ref, summary_s, apply_s[0], deltas)


def print_apply_figures(done: dict[str, Any], events: int, store: str, target: int) -> None:
    """The figures of one timed pass against its ``executemany`` baseline (``done``:
    ``process_s``, ``apply_s``, ``baseline_s``, ``rows``), as the SQL benches print them."""
    print(
        f"  process_pending:                 {done['process_s']:7.3f} s"
        f"  {events / done['process_s']:>10,.0f} events/s  (target >= {target:,})"
    )
    print(
        f"    of which {store}.apply: {done['apply_s']:6.3f} s"
        f"  {done['rows'] / done['apply_s']:>10,.0f} rows/s (rollups + state + markers)"
    )
    print(
        f"  baseline (executemany upsert of the same rollup rows): {done['baseline_s']:7.3f} s"
        f"  {done['rows'] / done['baseline_s']:>10,.0f} rows/s"
    )
    print(f"  ratio apply / baseline:           {done['apply_s'] / done['baseline_s']:6.2f}x")
    print(f"  ratio process_pending / baseline: {done['process_s'] / done['baseline_s']:6.2f}x")
