"""Processing throughput into PostgreSQL: ``process_pending`` of a FileStream backlog.

The backlog is recorded by ``bench/process.py``'s record child (the public API,
a fake clock through 60 minutes, 1,000 customers, 5 providers, 3 queues); then
a fresh child times ``process_pending`` of the SPEC section 1 report from
``FileStream`` into ``PostgresRollups`` (default batch of 10,000 rows: one
transaction per batch: ``INSERT ... SELECT ... ON CONFLICT`` of the rollups
bound as one jsonb parameter, the state upsert, a COPY of the markers). Each
apply runs in the processor's worker thread while the next batch is read and
aggregated, so "of which apply" is worker time that overlaps the rest.

Baseline, measured in the same run on the same server: the very rollup rows of
every batch (captured from our applies) upserted into a second table prefix by
``cursor.executemany`` of a one-row ``INSERT ... ON CONFLICT DO UPDATE`` with
the same merge expression, one transaction per batch. Both tables are compared
row by row afterwards. Target: at least 80,000 events/s.

The benchmark starts its own PostgreSQL (``bench/_pg.py``) with the durability
defaults (fsync and synchronous_commit on) in a temp dir.

    python bench/postgres_process.py [--events 200000] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _common import peak_rss_mib, print_apply_figures, run_child, timed_process
from _pg import BenchPostgres
from event_meter._keys import ReportRef
from event_meter.stores.base import BatchDelta
from event_meter.stores.postgres import PostgresRollups, _rows, install

MINUTES = 60
TARGET_EVENTS_PER_SECOND = 80_000
HERE = Path(__file__).resolve().parent

# The merge of sql/apply_rollups.sql, for one row given as parameters.
BASELINE_UPSERT = """
INSERT INTO {rollups} AS r (key, fields, series, bucket, bucket_end_ms, updated_at)
VALUES (%s, %s::jsonb, %s, %s, %s, now())
ON CONFLICT (key) DO UPDATE SET
  fields = r.fields || coalesce((
    SELECT jsonb_object_agg(d.name, CASE
      WHEN coalesce(r.fields ->> d.name, '') !~ '^-?[0-9]+$' THEN d.value::numeric
      WHEN right(d.name, 4) = '_min' THEN least((r.fields ->> d.name)::numeric, d.value::numeric)
      WHEN right(d.name, 4) = '_max' THEN greatest((r.fields ->> d.name)::numeric, d.value::numeric)
      ELSE (r.fields ->> d.name)::numeric + d.value::numeric
    END)
    FROM jsonb_each_text(EXCLUDED.fields) AS d(name, value)
  ), '{{}}'::jsonb),
  updated_at = now()
"""


def one_row_params(ref: ReportRef, delta: BatchDelta) -> list[tuple[Any, ...]]:
    """The rows of one batch as the parameters of ``BASELINE_UPSERT``."""
    rows = orjson.loads(_rows.rollup_rows(ref, delta))
    return [(key, orjson.dumps(fields).decode(), *rest) for key, fields, *rest in rows]


def baseline(dsn: str, ref: ReportRef, deltas: list[BatchDelta]) -> float:
    """Seconds to upsert the rollup rows of ``deltas`` with ``executemany`` (prefix ``base``)."""
    import psycopg
    from psycopg import sql

    install(dsn, table_prefix="base")
    query = sql.SQL(BASELINE_UPSERT).format(rollups=sql.Identifier("base_rollups"))
    batches = [sorted(one_row_params(ref, delta)) for delta in deltas]
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for rows in batches:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(query, rows)
        return time.perf_counter() - started


def same_rollups(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        ours = conn.execute("SELECT key, fields FROM bench_rollups ORDER BY key").fetchall()
        base = conn.execute("SELECT key, fields FROM base_rollups ORDER BY key").fetchall()
    return ours == base and len(ours) > 0


def process(folder: Path, events: int, dsn: str) -> dict[str, Any]:
    """Child: the timed ``process_pending``, then the ``executemany`` baseline."""
    store = PostgresRollups(url=dsn, table_prefix="bench")
    install(dsn, table_prefix="bench")
    timed = timed_process(folder, store, events, MINUTES)
    base_s = baseline(dsn, timed.ref, timed.deltas)
    if not same_rollups(dsn):
        raise RuntimeError("the baseline and process_pending stored different rollups")
    return {
        "process_s": timed.process_s,
        "apply_s": timed.apply_s,
        "baseline_s": base_s,
        "batches": len(timed.deltas),
        "rows": timed.rows,
        "rss_mib": peak_rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tmp", default=None, help="parent folder of the stream files")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        folder, events, dsn = args.child
        print(json.dumps(process(Path(folder), int(events), dsn)))
        return
    events = args.events
    with (
        BenchPostgres() as server,
        tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as folder,
    ):
        run_child(str(HERE / "process.py"), ["record", folder, str(events)])
        done = run_child(os.path.abspath(__file__), [folder, str(events), server.dsn])
    print(
        f"FileStream -> PostgresRollups (own server, fsync on): {events:,} events, "
        f"{done['batches']} batches, {done['rows']:,} rollup rows upserted"
    )
    print_apply_figures(done, events, "PostgresRollups", TARGET_EVENTS_PER_SECOND)
    print(f"  process child peak RSS: {done['rss_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
