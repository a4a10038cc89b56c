"""Report cost on FileRollups: ``summary`` over a one-hour window and over every retained hour.

The data is built through the public API with a fake clock: ``--hours`` hours
(default 10,000) with two events each, plus one event in every minute of the
last hour, processed by ``process_pending`` as the clock moves on. Then, best
of ``--repeat`` runs each:

- window: ``summary(start=, end=)`` over the last hour (60 minute buckets);
- retained: ``summary()`` with no window over every hour bucket of one index
  value (``summary_key_limit=None``).

Baseline, measured in the same run: open, read and ``orjson.loads`` the same
rollup files directly. Targets: window under 10 ms, retained under 1 s.

The data lives under ``--tmp`` (default ``/dev/shm`` when present): building
10,000 hours writes some 50,000 fsynced files, which takes minutes on a disk
and is not what is measured; the timed reads come from the page cache either way.

    python bench/report.py [--hours N] [--repeat R] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from _common import T0, FakeClock
from event_meter import EventMeter, Report
from event_meter.stores import FileRollups, FileStream

REPORT = Report("invoice_delivery").index_by("provider")
BY = {"provider": "postmark"}
PROCESS_EVERY_HOURS = 500
WINDOW_TARGET_MS = 10.0
RETAINED_TARGET_MS = 1_000.0
DEFAULT_TMP = "/dev/shm" if os.path.isdir("/dev/shm") else None


def build(folder: Path, hours: int) -> tuple[EventMeter, datetime, int]:
    """Record and process the data; the meter, the start of the last hour, the event count."""
    clock = FakeClock(T0)
    meter = EventMeter(
        stream_storage=FileStream(folder),
        rollup_storage=FileRollups(folder),
        clock=clock,
        summary_key_limit=None,
    )
    events = 0
    for hour in range(hours):
        hour_start = T0 + timedelta(hours=hour)
        seconds = (1_800, 1_820) if hour < hours - 1 else tuple(range(0, 3_600, 60))
        for second in seconds:
            clock.current = hour_start + timedelta(seconds=second)
            event = meter.start("invoice_delivery", provider="postmark", customer_id=hour % 97)
            written = event.failure("bounced") if events % 10 == 3 else event.success()
            if not written:
                raise RuntimeError(f"recording failed: {written.error!r}")
            events += 1
        if hour % PROCESS_EVERY_HOURS == PROCESS_EVERY_HOURS - 1:
            meter.process_pending(REPORT)  # a periodic processor, as in production
    clock.current = T0 + timedelta(hours=hours, minutes=1, seconds=11)
    result = meter.process_pending(REPORT)
    if not result.complete or result.malformed:
        raise RuntimeError(f"unexpected result {result.to_dict()}")
    return meter, T0 + timedelta(hours=hours - 1), events


def best_ms(run: Callable[[], Any], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) * 1_000


def read_files(paths: list[Path]) -> None:
    """The baseline: open, read and decode each file."""
    loads = orjson.loads
    for path in paths:
        with open(path, "rb") as fh:
            loads(fh.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tmp", default=DEFAULT_TMP, help="parent folder of the data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as folder:
        started = time.perf_counter()
        meter, last_hour, events = build(Path(folder), args.hours)
        build_s = time.perf_counter() - started
        index_dir = next(Path(folder).glob("rollups/*/*/v1/rollups/provider-*"))
        hour_files = sorted(index_dir.glob("hour/*/*.json"))
        minute_files = sorted(index_dir.glob(f"minute/*/{last_hour:%Y%m%d%H}??.json"))
        if len(hour_files) != args.hours or len(minute_files) != 60:
            raise RuntimeError(f"found {len(hour_files)} hour, {len(minute_files)} minute files")

        def window() -> dict[str, Any]:
            return meter.summary(REPORT, start=last_hour, end=last_hour + timedelta(hours=1), by=BY)

        def retained() -> dict[str, Any]:
            return meter.summary(REPORT, by=BY)

        if window()["count"] != 60 or retained()["count"] != events:
            raise RuntimeError("summary counts do not match what was recorded")
        window_repeat = max(args.repeat, 20)
        base_window = best_ms(lambda: read_files(minute_files), window_repeat)
        ours_window = best_ms(window, window_repeat)
        base_retained = best_ms(lambda: read_files(hour_files), args.repeat)
        ours_retained = best_ms(retained, args.repeat)
        meter.close()
    print(
        f"data: {events:,} events over {args.hours:,} hours, built in {build_s:.1f} s "
        f"under {args.tmp or tempfile.gettempdir()}"
    )
    print(f"window summary (60 minute files, best of {window_repeat}):")
    print(f"  baseline (open+read+orjson.loads): {base_window:9.3f} ms")
    print(
        f"  summary(start=, end=):             {ours_window:9.3f} ms  "
        f"(target < {WINDOW_TARGET_MS:g} ms)"
    )
    print(f"  ratio:                             {ours_window / base_window:9.2f}x")
    print(f"retained summary ({len(hour_files):,} hour files, best of {args.repeat}):")
    print(f"  baseline (open+read+orjson.loads): {base_retained:9.3f} ms")
    print(
        f"  summary() with no window:          {ours_retained:9.3f} ms  "
        f"(target < {RETAINED_TARGET_MS:g} ms)"
    )
    print(f"  ratio:                             {ours_retained / base_retained:9.2f}x")


if __name__ == "__main__":
    main()
