"""Report cost on RedisRollups: ``summary`` over every retained hour bucket (10,000 by default).

The data is built through the public API with a fake clock, as in
``bench/report.py``: ``--hours`` hours with two events each, recorded into a
FileStream and processed into ``RedisRollups`` as the clock moves on. Then,
best of ``--repeat`` runs, ``summary(by={"provider": "postmark"})`` with no
window reads every hour bucket of that index value (``summary_key_limit=None``):
one ``ZRANGE`` of the report's bucket index for that granularity and index key
(kept by apply), then the hashes (one Lua ``HGETALL`` script per 1,000 keys).

Baseline, measured in the same run: a bare redis-py client fetching the same
hashes, their key names known in advance (one pipelined ``HGETALL`` per key).
Both are measured again after ``DEBUG POPULATE`` adds ``--noise`` (300,000)
unrelated keys to the database, which a ``SCAN`` must walk past.
Target: under 300 ms (hiredis). The script starts its own ``redis-server``.

    python bench/redis_report.py [--hours N] [--noise K] [--repeat R]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from _common import T0, FakeClock
from _servers import BenchRedis
from event_meter import EventMeter, Report
from event_meter.stores import FileStream
from event_meter.stores.redis.rollups import RedisRollups

REPORT = Report("invoice_delivery").index_by("provider")
BY = {"provider": "postmark"}
NAMESPACE = "bench:report"
PROCESS_EVERY_HOURS = 500
TARGET_MS = 300.0


def build(folder: Path, url: str, hours: int) -> tuple[EventMeter, int]:
    """Record and process ``hours`` hours of two events each; the meter and event count."""
    clock = FakeClock(T0)
    meter = EventMeter(
        namespace=NAMESPACE,
        stream_storage=FileStream(folder),
        rollup_storage=RedisRollups(url=url),
        clock=clock,
        summary_key_limit=None,
    )
    events = 0
    for hour in range(hours):
        for second in (1_800, 1_820):
            clock.current = T0 + timedelta(hours=hour, seconds=second)
            event = meter.start("invoice_delivery", provider="postmark", customer_id=hour % 97)
            written = event.failure("bounced") if events % 10 == 3 else event.success()
            if not written:
                raise RuntimeError(f"recording failed: {written.error!r}")
            events += 1
        if hour % PROCESS_EVERY_HOURS == PROCESS_EVERY_HOURS - 1:
            meter.process_pending(REPORT)
    clock.current = T0 + timedelta(hours=hours, minutes=1, seconds=11)
    result = meter.process_pending(REPORT)
    if not result.complete or result.malformed:
        raise RuntimeError(f"unexpected result {result.to_dict()}")
    return meter, events


def best_ms(run: Callable[[], Any], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) * 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10_000)
    parser.add_argument("--noise", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with (
        BenchRedis() as server,
        tempfile.TemporaryDirectory(prefix="event-meter-bench-") as folder,
    ):
        started = time.perf_counter()
        meter, events = build(Path(folder), server.url, args.hours)
        build_s = time.perf_counter() - started
        client = redis.Redis.from_url(server.url)
        hour_keys = sorted(
            client.scan_iter(match=f"{NAMESPACE}:rollup:*:hour:*:provider=postmark", count=10_000)
        )
        if len(hour_keys) != args.hours:
            raise RuntimeError(f"found {len(hour_keys)} hour keys, expected {args.hours}")

        def ours() -> None:
            if meter.summary(REPORT, by=BY)["count"] != events:
                raise RuntimeError("the summary does not count every event")

        def baseline() -> None:
            pipe = client.pipeline(transaction=False)
            for key in hour_keys:
                pipe.hgetall(key)
            pipe.execute()

        rows: list[tuple[str, int, float, float]] = []
        for label in ("report keys only", f"+{args.noise:,} unrelated keys"):
            if rows:
                client.execute_command("DEBUG", "POPULATE", args.noise, "unrelated")  # type: ignore[no-untyped-call]
            dbsize = int(client.dbsize())
            rows.append((label, dbsize, best_ms(baseline, args.repeat), best_ms(ours, args.repeat)))
        meter.close()
        client.close()
    print(f"data: {events:,} events over {args.hours:,} hours, built in {build_s:.1f} s")
    print(f"summary() with no window over {args.hours:,} hour buckets, best of {args.repeat}:")
    for label, dbsize, base_ms, ours_ms in rows:
        print(f"  {label} (dbsize {dbsize:,}):")
        print(f"    baseline (pipelined HGETALL of known keys): {base_ms:8.1f} ms")
        print(
            f"    summary():                                  {ours_ms:8.1f} ms  "
            f"(target < {TARGET_MS:g} ms)"
        )
        print(f"    ratio:                                      {ours_ms / base_ms:8.2f}x")


if __name__ == "__main__":
    main()
