"""Recording cost: ``start()`` + ``success()`` to the file stream, against a bare append.

Baseline, measured in the same run: build the same payload dict, ``orjson.dumps``
the same line, one ``os.write`` on an ``O_APPEND`` fd. Target: at most 2x.

    python bench/record.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from event_meter import EventMeter
from event_meter._time import iso_us
from event_meter.stores import FileStream, MemoryRollups


def baseline(path: Path, events: int) -> float:
    """Seconds for ``events`` bare appends of the same line shape."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        started = time.perf_counter()
        for i in range(events):
            now = datetime.now(UTC)
            payload = {
                "name": "invoice_delivery",
                "status": "success",
                "started_at": iso_us(now),
                "duration_ms": 0,
                "params": {"customer_id": i, "provider": "postmark"},
            }
            os.write(
                fd,
                orjson.dumps({"id": i + 1, "payload": payload}, option=orjson.OPT_APPEND_NEWLINE),
            )
        return time.perf_counter() - started
    finally:
        os.close(fd)


def event_meter_run(path: Path, events: int) -> float:
    meter = EventMeter(
        stream_storage=FileStream(path, sync="flush"),
        rollup_storage=MemoryRollups(),
        stream_sync="flush",
    )
    start = meter.start
    try:
        started = time.perf_counter()
        for i in range(events):
            start("invoice_delivery", customer_id=i, provider="postmark").success()
        return time.perf_counter() - started
    finally:
        meter.stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base_times: list[float] = []
    ours_times: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.repeat):  # interleaved, best of R: least noise
            base_times.append(baseline(Path(folder) / f"baseline-{run}.jsonl", args.events))
            ours_times.append(event_meter_run(Path(folder) / f"meter-{run}", args.events))
    base_us = min(base_times) / args.events * 1e6
    ours_us = min(ours_times) / args.events * 1e6
    print(f"events per run:          {args.events:,} (best of {args.repeat})")
    print(f"baseline (dict+dumps+write): {base_us:6.2f} us/event")
    print(f"event-meter start+success:   {ours_us:6.2f} us/event")
    print(f"ratio:                       {ours_us / base_us:6.2f}x  (target <= 2.00x)")


if __name__ == "__main__":
    main()
