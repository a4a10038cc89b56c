"""Report and cleanup cost on PostgresRollups.

1. ``summary()`` with no window over every retained hour bucket of one index
   value: ``--hours`` hours (default 10,000) with two events each, recorded
   through the public API with a fake clock and processed by ``process_pending``
   as the clock moves on; best of ``--repeat``. Baseline, same run: the same
   rows fetched by one plain ``SELECT bucket, fields`` through psycopg.
   Target: under 50 ms.
2. ``cleanup_history`` of ``--days`` days (default 10,20,30) of minute buckets:
   one event per minute (two index keys: all, provider), processed, then
   cleaned with ``before`` after the last bucket; each size in its own table
   prefix. Baseline, same run: a plain ``DELETE`` of the report's key range
   (the same rows), rolled back, just before. Cleanup cost should grow linearly with
   what it deletes.

The benchmark starts its own PostgreSQL (``bench/_pg.py``) with the durability
defaults in a temp dir.

    python bench/postgres_report.py [--hours N] [--days 10,20,30] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from _common import T0, FakeClock
from _pg import BenchPostgres
from event_meter import EventMeter, Report
from event_meter.stores import MemoryStream
from event_meter.stores.postgres import PostgresRollups
from event_meter.stores.postgres._rows import series_of

REPORT = Report("invoice_delivery").index_by("provider")
BY = {"provider": "postmark"}
PROCESS_EVERY = 500
SUMMARY_TARGET_MS = 50.0


def meter_for(dsn: str, prefix: str, clock: FakeClock) -> EventMeter:
    return EventMeter(
        stream_storage=MemoryStream(),
        rollup_storage=PostgresRollups(url=dsn, table_prefix=prefix),
        clock=clock,
        summary_key_limit=None,
    )


def record(meter: EventMeter, clock: FakeClock, steps: int, step: timedelta, per_step: int) -> int:
    """``per_step`` events in each of ``steps`` steps, processed every ``PROCESS_EVERY`` steps."""
    events = 0
    for n in range(steps):
        for second in range(per_step):
            clock.current = T0 + step * n + timedelta(seconds=20 * second)
            event = meter.start("invoice_delivery", provider="postmark", customer_id=n % 97)
            written = event.failure("bounced") if events % 10 == 3 else event.success()
            if not written:
                raise RuntimeError(f"recording failed: {written.error!r}")
            events += 1
        if n % PROCESS_EVERY == PROCESS_EVERY - 1:
            meter.process_pending(REPORT)
    clock.current = T0 + step * steps + timedelta(minutes=1)
    result = meter.process_pending(REPORT)
    if not result.complete or result.malformed:
        raise RuntimeError(f"unexpected result {result.to_dict()}")
    return events


def best_ms(run: Callable[[], Any], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) * 1_000


def retained_summary(dsn: str, hours: int, repeat: int) -> None:
    clock = FakeClock(T0)
    meter = meter_for(dsn, "report", clock)
    started = time.perf_counter()
    events = record(meter, clock, hours, timedelta(hours=1), 2)
    build_s = time.perf_counter() - started
    if meter.summary(REPORT, by=BY)["count"] != events:
        raise RuntimeError("the summary does not count what was recorded")
    report = f"{meter.config.namespace}:rollup:invoice_delivery:v1"
    series = series_of(report, "hour", "provider=postmark")
    with psycopg.connect(dsn, autocommit=True) as conn:

        def baseline() -> None:
            rows = conn.execute(
                "SELECT bucket, fields FROM report_rollups WHERE series = %s ORDER BY bucket",
                [series],
            ).fetchall()
            if len(rows) != hours:
                raise RuntimeError(f"{len(rows)} hour rows, expected {hours}")

        base_ms = best_ms(baseline, repeat)
        ours_ms = best_ms(lambda: meter.summary(REPORT, by=BY), repeat)
    meter.close()
    print(f"retained summary: {hours:,} hour buckets of provider=postmark ({events:,} events, ")
    print(f"  built and processed in {build_s:.1f} s); best of {repeat}")
    print(f"  baseline (one SELECT bucket, fields through psycopg): {base_ms:8.2f} ms")
    print(
        f"  summary() with no window:                             {ours_ms:8.2f} ms"
        f"  (target < {SUMMARY_TARGET_MS:g} ms)"
    )
    print(f"  ratio:                                                {ours_ms / base_ms:8.2f}x")


def cleanup(dsn: str, days: int) -> tuple[int, float, float]:
    """Rows deleted, baseline seconds, cleanup seconds for ``days`` days of minutes."""
    clock = FakeClock(T0)
    prefix = f"cleanup{days}"
    meter = meter_for(dsn, prefix, clock)
    record(meter, clock, days * 1_440, timedelta(minutes=1), 1)
    before = T0 + timedelta(days=days, hours=1)
    report = f"{meter.config.namespace}:rollup:invoice_delivery:v1"
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        query = sql.SQL("DELETE FROM {} WHERE key >= %s AND key < %s").format(
            sql.Identifier(f"{prefix}_rollups")
        )
        deleted = conn.execute(query, [f"{report}:", f"{report};"]).rowcount
        base_s = time.perf_counter() - started
        conn.rollback()
    started = time.perf_counter()
    counts = meter.cleanup_history(before=before)
    ours_s = time.perf_counter() - started
    if counts["rollup_keys_deleted"] != deleted:
        raise RuntimeError(f"cleanup deleted {counts}, the baseline {deleted}")
    meter.close()
    return deleted, base_s, ours_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10_000)
    parser.add_argument("--days", default="10,20,30")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with BenchPostgres() as server:
        retained_summary(server.dsn, args.hours, args.repeat)
        print("cleanup_history of minute buckets (one event per minute; all + provider keys):")
        print("  days  rollup rows  baseline DELETE  cleanup_history  ratio  ms per 1,000 rows")
        for days in (int(d) for d in args.days.split(",")):
            deleted, base_s, ours_s = cleanup(server.dsn, days)
            print(
                f"  {days:4d}  {deleted:11,d}  {base_s:13.3f} s  {ours_s:13.3f} s"
                f"  {ours_s / base_s:5.2f}  {ours_s * 1e6 / deleted:10.2f}"
            )


if __name__ == "__main__":
    main()
