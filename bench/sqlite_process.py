"""Processing throughput into SQLite: ``process_pending`` of a FileStream backlog.

The backlog is recorded by ``bench/process.py``'s record child (the public API,
a fake clock through 60 minutes, 1,000 customers, 5 providers, 3 queues); then
a fresh child times ``process_pending`` of the SPEC section 1 report from
``FileStream`` into ``SQLiteRollups`` (default batch of 10,000 rows: one
``BEGIN IMMEDIATE`` transaction per batch, WAL, ``synchronous=FULL``).

Baseline, measured in the same run on the same database file: the very rollup
rows of every batch (captured from our applies) upserted into a second table
prefix by ``executemany`` of the store's own one-row upsert (the same merge
function), one ``BEGIN IMMEDIATE`` transaction per batch, on a connection with
the same settings. Both tables are compared row by row afterwards. Target: at
least 80,000 events/s (the PostgreSQL and Redis processing target).

``--normal`` processes a copy of the same backlog a second time with
``synchronous=NORMAL``, to show what fsyncing every commit costs.

    python bench/sqlite_process.py [--events 200000] [--tmp DIR] [--normal]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import peak_rss_mib, print_apply_figures, run_child, timed_process
from event_meter._keys import ReportRef
from event_meter.stores.base import BatchDelta
from event_meter.stores.sqlite import SQLiteRollups, _connections
from event_meter.stores.sqlite import _queries as q
from event_meter.stores.sqlite._fields import MERGE_FUNCTION, merge_json
from event_meter.stores.sqlite._schema import Tables

MINUTES = 60
TARGET_EVENTS_PER_SECOND = 80_000
HERE = Path(__file__).resolve().parent


def connect(database: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None, timeout=10)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.create_function(MERGE_FUNCTION, 2, merge_json, deterministic=True)
    return conn


def baseline(database: Path, ref: ReportRef, deltas: list[BatchDelta], synchronous: str) -> float:
    """Seconds to upsert the rollup rows of ``deltas`` with ``executemany`` (prefix ``base``)."""
    tables = Tables.of("base")
    query = q.Queries(tables).apply_rollups
    batches = [q.rollup_rows(ref, delta, 0) for delta in deltas]
    conn = connect(database, synchronous)
    try:
        for statement in tables.ddl():
            conn.execute(statement)
        started = time.perf_counter()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(query, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def same_rollups(database: Path) -> bool:
    conn = sqlite3.connect(database)
    try:
        ours = conn.execute("SELECT key, fields FROM bench_rollups ORDER BY key").fetchall()
        base = conn.execute("SELECT key, fields FROM base_rollups ORDER BY key").fetchall()
    finally:
        conn.close()
    return ours == base and len(ours) > 0


def process(folder: Path, events: int, database: Path, synchronous: str) -> dict[str, Any]:
    """Child: the timed ``process_pending``, then the ``executemany`` baseline."""
    _connections.SYNCHRONOUS = synchronous  # type: ignore[misc]  # FULL unless --normal
    store = SQLiteRollups(database, table_prefix="bench")
    timed = timed_process(folder, store, events, MINUTES)
    base_s = baseline(database, timed.ref, timed.deltas, synchronous)
    if not same_rollups(database):
        raise RuntimeError("the baseline and process_pending stored different rollups")
    return {
        "process_s": timed.process_s,
        "apply_s": timed.apply_s,
        "baseline_s": base_s,
        "summary_s": timed.summary_s,
        "batches": len(timed.deltas),
        "rows": timed.rows,
        "rss_mib": peak_rss_mib(),
        "database_mib": database.stat().st_size / 2**20,
    }


def report(events: int, done: dict[str, Any], synchronous: str) -> None:
    print(
        f"FileStream -> SQLiteRollups (WAL, synchronous={synchronous}): {events:,} events, "
        f"{done['batches']} batches, {done['rows']:,} rollup rows upserted"
    )
    print_apply_figures(done, events, "SQLiteRollups", TARGET_EVENTS_PER_SECOND)
    print(f"  summary() over every hour bucket: {done['summary_s'] * 1000:6.1f} ms")
    print(
        f"  process child peak RSS: {done['rss_mib']:.1f} MiB; "
        f"database file {done['database_mib']:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tmp", default=None, help="parent folder of the stream and database")
    parser.add_argument("--normal", action="store_true", help="also run synchronous=NORMAL")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        folder, events, database, synchronous = args.child
        print(json.dumps(process(Path(folder), int(events), Path(database), synchronous)))
        return
    events = args.events
    modes = ["FULL", "NORMAL"] if args.normal else ["FULL"]
    with tempfile.TemporaryDirectory(prefix="event-meter-bench-", dir=args.tmp) as root:
        recorded = os.path.join(root, "recorded")
        run_child(str(HERE / "process.py"), ["record", recorded, str(events)])
        for mode in modes:
            folder = os.path.join(root, f"stream-{mode}")
            shutil.copytree(recorded, folder)
            database = os.path.join(root, f"rollups-{mode}.db")
            done = run_child(os.path.abspath(__file__), [folder, str(events), database, mode])
            report(events, done, mode)


if __name__ == "__main__":
    main()
