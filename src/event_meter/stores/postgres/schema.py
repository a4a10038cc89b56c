"""Table names, the DDL of SPEC section 11, and ``install``.

The three tables of the SPEC keep their columns and ``key`` format; the
rollups table adds ``series`` (a 64-bit hash of the key without its bucket),
``bucket`` and ``bucket_end_ms``, written once on insert, with one narrow index
on ``(series, bucket)``: a report's buckets of one index key are one contiguous
btree range (reads, scans, summaries). Cleanup and the index keys of a bucket
are ranges of ``key`` itself (``COLLATE "C"``: bytewise, like
``text_pattern_ops``). Every index costs WAL and CPU on each inserted rollup:
these three (the narrowest set that serves every query) took about 10% less
server CPU and WAL per rollup upsert than the five wide indexes before them. The rollups table has
``fillfactor = 70`` so the upsert of a hot bucket is a HOT update (no index
writes: only ``fields`` and ``updated_at`` change). See ``sql/schema.sql``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from event_meter.errors import ConfigurationError
from event_meter.stores.postgres._driver import statement, statement_text, storage_errors

__all__ = ["DEFAULT_TABLE_PREFIX", "Tables", "install", "schema_sql", "validate_table_prefix"]

DEFAULT_TABLE_PREFIX: Final = "event_meter"
_PREFIX: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER: Final = 63  # PostgreSQL cuts longer names (NAMEDATALEN - 1)
_SUFFIXES: Final = {
    "rollups": "_rollups",
    "strings": "_strings",
    "processed": "_processed_entries",
    "processed_created_at_idx": "_processed_created_at_idx",
    "rollups_key_prefix_idx": "_rollups_key_prefix_idx",
    "strings_key_prefix_idx": "_strings_key_prefix_idx",
    "rollups_series_idx": "_rollups_series_idx",
}
# The primary key constraint PostgreSQL names itself is the longest name.
_LONGEST: Final = max(len("_processed_entries_pkey"), *(len(s) for s in _SUFFIXES.values()))
MAX_TABLE_PREFIX_LENGTH: Final = _MAX_IDENTIFIER - _LONGEST


def validate_table_prefix(table_prefix: Any) -> str:
    """``table_prefix`` if it is a plain identifier short enough for every derived name."""
    if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
        raise ConfigurationError(
            f"table_prefix={table_prefix!r} is invalid: it must match [A-Za-z_][A-Za-z0-9_]*"
        )
    if len(table_prefix) > MAX_TABLE_PREFIX_LENGTH:
        raise ConfigurationError(
            f"table_prefix={table_prefix!r} is invalid: at most {MAX_TABLE_PREFIX_LENGTH} "
            "characters, so every table and index name fits PostgreSQL's 63"
        )
    return table_prefix


@dataclass(frozen=True, slots=True)
class Tables:
    """The table and index names of one ``table_prefix``."""

    prefix: str

    @classmethod
    def of(cls, table_prefix: Any) -> Tables:
        return cls(validate_table_prefix(table_prefix))

    @property
    def names(self) -> dict[str, str]:
        """Placeholder -> name, for the ``sql/*.sql`` resources."""
        names = {key: self.prefix + suffix for key, suffix in _SUFFIXES.items()}
        return names

    def table(self, role: str) -> str:
        return self.prefix + _SUFFIXES[role]

    def install_lock_id(self) -> int:
        """The advisory lock id that serialises installs of this prefix (signed 64 bit)."""
        digest = hashlib.sha256(f"event_meter:install:{self.prefix}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def schema_sql(table_prefix: str = DEFAULT_TABLE_PREFIX) -> str:
    """The DDL (idempotent ``CREATE ... IF NOT EXISTS``) of the tables of ``table_prefix``."""
    tables = Tables.of(table_prefix)
    return statement_text("schema", tables.names)


def install_with(source: Any, tables: Tables, *, force: bool = False) -> None:
    """Run the DDL through a ``ConnectionSource`` (unless ``force`` is False and all
    three tables exist).

    Concurrent installers are serialised by a transaction-level advisory lock,
    because concurrent ``CREATE TABLE IF NOT EXISTS`` of one table can fail.
    """
    quoted = [f'"{tables.table(role)}"' for role in ("rollups", "strings", "processed")]
    with storage_errors("install"):
        if not force:
            with source.borrow() as conn:
                row = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
                    " AND to_regclass(%s) IS NOT NULL",
                    quoted,
                ).fetchone()
            if row is not None and row[0]:
                return
        with source.transaction(nested=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [tables.install_lock_id()])
            conn.execute(statement("schema", tables.names))


def install(target: Any, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
    """Create the tables and indexes of ``table_prefix`` (idempotent).

    ``target`` is a ``postgresql://`` URL or anything ``PostgresRollups``
    accepts: a psycopg connection, a ``psycopg_pool.ConnectionPool`` or a
    SQLAlchemy ``Engine``. Connections opened for a URL are closed again.
    """
    from event_meter.stores.postgres.adapters import source_for

    tables = Tables.of(table_prefix)
    source = source_for(target)
    try:
        install_with(source, tables, force=True)
    finally:
        source.close()
