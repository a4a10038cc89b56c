"""The ``file->postgres`` pairing of the crash suite: ``FileStream`` feeding ``PostgresRollups``.

Every process of a storage place opens its own ``PostgresRollups`` on the
session's PostgreSQL server (``pg_server``), under one random table prefix per
storage place; the tables are dropped after the test (``crash/conftest.py``).

A SIGKILLed processor cannot release its lease: its row in ``{p}_strings``
stays until it expires on the server's clock. So the pairing runs with a short
``lock_ttl`` (``POSTGRES_LOCK_TTL_MS``) and, after killed processes, ``settle`` polls
under a bounded deadline until no live lease is left; the next processor then
takes the expired row over through the real take-over path of
``sql/lease_take.sql`` (nothing is deleted by hand).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file.stream import FileStream
from event_meter.stores.postgres import PostgresRollups

__all__ = ["POSTGRES_LOCK_TTL_MS", "open_file_postgres", "settle_postgres"]

# Long enough that a refresh every ttl/2 (one round trip on the lock connection) is
# never late on a busy two-core runner, short enough that waiting out a killed
# processor's lease costs little.
POSTGRES_LOCK_TTL_MS: Final = 1_000
SETTLE_TIMEOUT_S: Final = 15.0


def _prefix(shared: dict[str, Any]) -> str:
    """The storage place's table prefix, made by the first process (the test's own)."""
    if "table_prefix" not in shared:
        import pg_server

        shared["table_prefix"] = pg_server.new_table_prefix()
    prefix: str = shared["table_prefix"]
    return prefix


def open_file_postgres(root: Path, shared: dict[str, Any]) -> tuple[StreamStore, RollupStore]:
    import pg_server

    dsn = pg_server.session_server().dsn
    return FileStream(root), PostgresRollups(url=dsn, table_prefix=_prefix(shared))


def live_leases(conn: Any, prefix: str) -> int:
    """Lease rows of ``prefix`` whose expiry (server clock, ms) has not passed."""
    from psycopg import sql

    table = f"{prefix}_strings"
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{table}"']).fetchone()
    if not exists[0]:
        return 0
    query = sql.SQL(
        "SELECT count(*) FROM {} WHERE key LIKE '%%process\\_lock%%'"
        " AND split_part(value, ':', 1) ~ '^[0-9]{{1,18}}$'"
        " AND split_part(value, ':', 1)::bigint"
        " > floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    ).format(sql.Identifier(table))
    return int(conn.execute(query).fetchone()[0])


def settle_postgres(shared: dict[str, Any]) -> None:
    """Wait (bounded) until the leases of killed processors have expired."""
    if "table_prefix" not in shared:
        return
    import pg_server

    with pg_server.session_server().connect() as conn:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while live_leases(conn, shared["table_prefix"]):
            if time.monotonic() > deadline:
                raise AssertionError(f"a lease outlived its {POSTGRES_LOCK_TTL_MS} ms ttl")
            time.sleep(0.05)  # polling the server's clock, not waiting for time to pass
