"""Processing throughput: ``process_pending`` of a FileStream backlog into FileRollups.

Events are recorded through the public API (``start(...).success()``) with a
fake clock moving through 60 minutes (1,000 customers, 5 providers, 3 queues,
varied durations, a few failures and skips); then the clock moves past the
claim grace and only ``process_pending`` of the SPEC section 1 report is timed.

Baseline, measured in the same run on the same files just before processing:
open each JSONL stream file, read its lines, ``orjson.loads`` each one.
Target: at least 100,000 events/s on one core.

Each size is recorded in one fresh child process and processed in another, so
the peak RSS of processing is its own and can be compared across sizes: it
must not grow with the backlog (processing reads in bounded batches).

The data lives under ``--tmp`` (default: the system temp folder). FileRollups
fsyncs every file it rewrites; ``--tmp /dev/shm`` (tmpfs, where fsync is free)
shows how much of the time that is.

    python bench/process.py [--sizes 200000,1000000] [--quick] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from _common import T0, FakeClock, invoice_report, peak_rss_mib, run_child
from event_meter import EventMeter
from event_meter.stores import FileRollups, FileStream

NAME = "invoice_delivery"
MINUTES = 60
CUSTOMERS = 1_000
PROVIDERS = ("postmark", "sendgrid", "mailgun", "ses", "smtp")
QUEUES = ("default", "bulk", "priority")
TARGET_EVENTS_PER_SECOND = 100_000


class FakePerfCounter:
    """Stands in for ``time.perf_counter_ns`` so recorded durations vary without sleeping."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def meter_for(folder: Path, clock: FakeClock) -> EventMeter:
    return EventMeter(
        stream_storage=FileStream(folder), rollup_storage=FileRollups(folder), clock=clock
    )


def record(folder: Path, events: int) -> dict[str, Any]:
    """Child: record ``events`` events spread over ``MINUTES`` minutes of the fake clock."""
    clock = FakeClock()
    meter = meter_for(folder, clock)
    perf = FakePerfCounter()
    patch = mock.patch("time.perf_counter_ns", perf)  # this child only: varied durations
    patch.start()
    step_us = MINUTES * 60_000_000 // events
    start = meter.start
    started = time.perf_counter()
    for i in range(events):
        clock.current = T0 + timedelta(microseconds=step_us * i)
        perf.ns = i * 1_000_000
        event = start(
            NAME,
            customer_id=i % CUSTOMERS,
            provider=PROVIDERS[i % 5],
            queue=QUEUES[i % 3],
        )
        perf.ns += (5 + (i * 7919) % 1_500) * 1_000_000  # 5 .. 1,504 ms
        if i % 500 == 7:
            written = event.failure(TimeoutError("provider timed out"))
        elif i % 700 == 3:
            written = event.skip("opted out")
        else:
            written = event.success()
        if not written:
            raise RuntimeError(f"recording failed: {written.error!r}")
    seconds = time.perf_counter() - started
    patch.stop()
    meter.close()
    return {"record_s": seconds, "rss_mib": peak_rss_mib()}


def stream_files(folder: Path) -> list[Path]:
    return sorted((folder / "streams").glob("*/logs/*.jsonl"))


def baseline(files: list[Path]) -> tuple[float, int]:
    """Seconds and lines for reading and decoding every line of ``files``."""
    loads = orjson.loads
    lines = 0
    started = time.perf_counter()
    for path in files:
        with open(path, "rb") as fh:
            for line in fh:
                loads(line)
                lines += 1
    return time.perf_counter() - started, lines


def process(folder: Path, events: int) -> dict[str, Any]:
    """Child: the baseline, then the timed ``process_pending`` of the whole backlog."""
    rss_start = peak_rss_mib()
    base_s, lines = baseline(stream_files(folder))
    if lines != events:
        raise RuntimeError(f"expected {events} stream lines, found {lines}")
    clock = FakeClock(T0)
    clock.advance(minutes=MINUTES + 1, seconds=11)  # past the last minute and the grace
    meter = meter_for(folder, clock)
    report = invoice_report()
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    result = meter.process_pending(report)
    seconds = time.perf_counter() - started
    rss_after = peak_rss_mib()
    if result.processed != events or result.malformed or not result.complete:
        raise RuntimeError(f"unexpected result {result.to_dict()}")
    total = meter.summary(report)["count"]
    if total != events:
        raise RuntimeError(f"summary counts {total}, expected {events}")
    meter.close()
    return {
        "baseline_s": base_s,
        "process_s": seconds,
        "rss_start_mib": rss_start,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
    }


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("record", "process"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("events", type=int)
    args = parser.parse_args(argv)
    run = record if args.phase == "record" else process
    print(json.dumps(run(args.folder, args.events)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1000000", help="comma-separated event counts")
    parser.add_argument("--quick", action="store_true", help="one small size (20,000)")
    parser.add_argument("--tmp", default=None, help="parent folder of the data")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    script = os.path.abspath(__file__)
    print(
        f"FileStream -> FileRollups; {CUSTOMERS:,} customers, {len(PROVIDERS)} providers, "
        f"{len(QUEUES)} queues over {MINUTES} fake-clock minutes"
    )
    print(
        "one child process records, a fresh one runs the baseline and process_pending; "
        f"data under {args.tmp or tempfile.gettempdir()}"
    )
    for events in sizes:
        with tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as folder:
            recorded = run_child(script, ["record", folder, str(events)])
            done = run_child(script, ["process", folder, str(events)])
        base_rate = events / done["baseline_s"]
        ours_rate = events / done["process_s"]
        print(f"\nevents: {events:,}")
        print(
            f"  record child:  {events / recorded['record_s']:>10,.0f} events/s  "
            f"peak RSS {recorded['rss_mib']:7.1f} MiB"
        )
        print(f"  baseline (open+readline+orjson.loads): {base_rate:>10,.0f} events/s")
        print(
            f"  process_pending:                       {ours_rate:>10,.0f} events/s  "
            f"(target >= {TARGET_EVENTS_PER_SECOND:,})"
        )
        ratio = done["process_s"] / done["baseline_s"]
        print(f"  ratio (process time / baseline time):  {ratio:8.2f}x")
        print(
            f"  process child peak RSS: {done['rss_start_mib']:.1f} MiB at start, "
            f"{done['rss_before_mib']:.1f} MiB before processing, "
            f"{done['rss_after_mib']:.1f} MiB after processing"
        )


if __name__ == "__main__":
    main()
