"""Processing throughput into Redis: ``process_pending`` of a FileStream backlog into RedisRollups.

The backlog is recorded through the public API exactly as in ``bench/process.py``
(its ``record``: 60 fake-clock minutes, 1,000 customers, 5 providers, 3 queues,
varied durations, a few failures and skips); then only ``process_pending`` of
the SPEC section 1 report (three indexes and an interval rule) into
``RedisRollups`` is timed.

Baseline, measured in the same run on the same server: the rollups that
processing produced, read back and written again into a fresh namespace with one
pipelined ``HINCRBY`` per field (pipelines of 10,000 commands). That is the
cheapest way to put the same numbers into Redis, without parsing, aggregating,
merge laws, markers or the journal. Target: at least 80,000 events/s.
The script starts its own ``redis-server``.

``--floor`` also times ``process_pending`` of a copy of the same backlog into a
rollup store that writes nothing (reading, validating and aggregating only): the
share of the time that is not the Redis store's.

    python bench/redis_process.py [--events N] [--tmp DIR] [--floor]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from _common import T0, FakeClock, invoice_report
from _servers import BenchRedis
from event_meter import EventMeter
from event_meter.stores import FileStream
from event_meter.stores.base import RollupStore
from event_meter.stores.memory import MemoryRollups
from event_meter.stores.redis.rollups import RedisRollups
from process import MINUTES, record

NAMESPACE = "bench:process"
TARGET_EVENTS_PER_SECOND = 80_000
PIPELINE = 10_000


class NoWrites(MemoryRollups):
    """A rollup store that stores nothing: what processing costs without a store."""

    def processed_ids(self, ref: Any, entry_ids: Any) -> set[str]:
        return set()

    def apply(self, ref: Any, delta: Any) -> None:
        return None

    def forget(self, ref: Any, entry_ids: Any) -> None:
        return None


def process(folder: Path, rollups: RollupStore, events: int) -> float:
    """Seconds for ``process_pending`` of the whole backlog; checks the totals."""
    clock = FakeClock(T0)
    clock.advance(minutes=MINUTES + 1, seconds=11)  # past the last minute and the grace
    meter = EventMeter(
        namespace=NAMESPACE, stream_storage=FileStream(folder), rollup_storage=rollups, clock=clock
    )
    report = invoice_report()
    try:
        started = time.perf_counter()
        result = meter.process_pending(report)
        seconds = time.perf_counter() - started
        if result.processed != events or result.malformed or not result.complete:
            raise RuntimeError(f"unexpected result {result.to_dict()}")
        if not isinstance(rollups, NoWrites) and meter.summary(report)["count"] != events:
            raise RuntimeError("the summary does not count every event")
        return seconds
    finally:
        meter.close()


def rollup_fields(client: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """Every rollup hash processing wrote, as ``(key, fields)``."""
    keys = [k.decode() for k in client.scan_iter(match=f"{NAMESPACE}:rollup:*", count=10_000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return list(zip(keys, pipe.execute(), strict=True))


def baseline(client: Any, rollups: list[tuple[str, dict[bytes, bytes]]]) -> tuple[float, int]:
    """Seconds and command count for one pipelined ``HINCRBY`` per field of ``rollups``."""
    commands = 0
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for key, fields in rollups:
        target = "bench:baseline" + key[len(NAMESPACE) :]
        for field, value in fields.items():
            pipe.hincrby(target, field, int(value))
            commands += 1
            if commands % PIPELINE == 0:
                pipe.execute()
    pipe.execute()
    return time.perf_counter() - started, commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tmp", default=None, help="parent folder of the stream files")
    parser.add_argument(
        "--floor", action="store_true", help="also time a store that writes nothing"
    )
    args = parser.parse_args()
    with (
        BenchRedis() as server,
        tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as folder,
    ):
        recorded = record(Path(folder), args.events)
        floor_s = None
        if args.floor:
            copy = Path(folder) / "copy"
            shutil.copytree(Path(folder), copy, ignore=shutil.ignore_patterns("copy"))
            floor_s = process(copy, NoWrites(), args.events)
        process_s = process(Path(folder), RedisRollups(url=server.url), args.events)
        client = redis.Redis.from_url(server.url)
        rollups = rollup_fields(client)
        base_s, commands = baseline(client, rollups)
        info = client.info("memory")["used_memory_human"]
        client.close()
    rate = args.events / process_s
    print(
        f"FileStream -> RedisRollups; {args.events:,} events recorded in "
        f"{recorded['record_s']:.1f} s over {MINUTES} fake-clock minutes (timedelta step "
        f"{timedelta(minutes=MINUTES) / args.events})"
    )
    print(f"rollups: {len(rollups):,} hashes, {commands:,} fields; server memory {info}")
    print(
        f"baseline (pipelined HINCRBY per field): {base_s:8.3f} s  "
        f"({args.events / base_s:>10,.0f} events/s equivalent)"
    )
    print(
        f"process_pending:                        {process_s:8.3f} s  "
        f"({rate:>10,.0f} events/s, target >= {TARGET_EVENTS_PER_SECOND:,})"
    )
    print(f"ratio (process time / baseline time):   {process_s / base_s:8.2f}x")
    if floor_s is not None:
        print(
            f"process_pending, no-op rollup store:    {floor_s:8.3f} s  "
            f"({args.events / floor_s:>10,.0f} events/s: reading, validating, aggregating)"
        )


if __name__ == "__main__":
    main()
