"""What the percentile histograms cost processing: the same backlog with and without them.

One backlog of ``bench/process.py`` (recorded through the public API: 60
fake-clock minutes, 1,000 customers, durations of 5 to 1,504 ms) is copied,
and ``process_pending`` of the SPEC section 1 report runs on each copy into
FileRollups, alternately with the default report (duration and interval
histograms kept) and with ``percentiles=False`` (the same-run baseline).
Reported: the median seconds of each over ``--repeat`` rounds, the ratio, and
the size of the rollup files each wrote. Target: under 1.25x.

    python bench/percentiles.py [--events N] [--repeat R] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import T0, FakeClock, invoice_report
from event_meter import Report
from process import MINUTES, meter_for, record

TARGET_RATIO = 1.25


def without_percentiles() -> Report:
    return Report.from_definition({**invoice_report().canonical(), "percentiles": False})


def run(backlog: Path, work: Path, report: Report, events: int) -> tuple[float, int]:
    """Seconds of ``process_pending`` on a fresh copy of ``backlog``, and rollup bytes."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(backlog, work)
    clock = FakeClock(T0)
    clock.advance(minutes=MINUTES + 1, seconds=11)
    meter = meter_for(work, clock)
    try:
        started = time.perf_counter()
        result = meter.process_pending(report)
        seconds = time.perf_counter() - started
        if result.processed != events or not result.complete:
            raise RuntimeError(f"unexpected result {result.to_dict()}")
    finally:
        meter.close()
    size = sum(p.stat().st_size for p in (work / "rollups").rglob("*.json"))
    return seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", default=None, help="parent folder of the data")
    args = parser.parse_args()
    reports = {"with": invoice_report(), "without": without_percentiles()}
    times: dict[str, list[float]] = {"with": [], "without": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as tmp:
        backlog = Path(tmp) / "backlog"
        record(backlog, args.events)
        for round_ in range(args.repeat):
            order = ("with", "without") if round_ % 2 == 0 else ("without", "with")
            for kind in order:
                seconds, sizes[kind] = run(backlog, Path(tmp) / "work", reports[kind], args.events)
                times[kind].append(seconds)
    base = statistics.median(times["without"])
    with_ = statistics.median(times["with"])
    print(f"{args.events:,} events FileStream -> FileRollups, median of {args.repeat} rounds")
    print(
        f"percentiles=False (baseline): {base:7.3f} s  ({args.events / base:>9,.0f} events/s)"
        f"  rollup files {sizes['without'] / 1e6:6.1f} MB"
    )
    print(
        f"with histograms (default):    {with_:7.3f} s  ({args.events / with_:>9,.0f} events/s)"
        f"  rollup files {sizes['with'] / 1e6:6.1f} MB"
    )
    print(f"ratio: {with_ / base:.3f}x (target < {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
