"""Table names of one ``table_prefix`` and the DDL of the SQLite rollup store.

The three tables mirror the PostgreSQL store's (SPEC 11): ``{p}_rollups``,
``{p}_strings`` and ``{p}_processed_entries``, with the same ``key`` format
and the same meaning of each shared column. Times are integer milliseconds.

- ``{p}_rollups`` is ``WITHOUT ROWID`` with the primary key
  ``(report, granularity, index_key, bucket)``: one index key's buckets of a
  report are one contiguous range of the table itself, so reads, scans and
  summaries never leave it. ``key`` (the logical key of SPEC 6) is kept for
  people querying the file; nothing looks rows up by it. The one secondary
  index, ``(report, granularity, bucket, index_params)``, serves
  ``bucket_index_keys`` (covering: it holds the primary key columns) and
  cleanup (bucket ids of one granularity sort by time).
- ``{p}_strings`` holds definitions, interval state, leases and the watermark.
- ``{p}_processed_entries`` holds markers only between an apply and the delete
  of its rows (then they are forgotten), so cleanup walks the report's range of
  the primary key without an index on ``created_at``; every marker write would
  pay for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from event_meter.errors import ConfigurationError

__all__ = ["DEFAULT_TABLE_PREFIX", "Tables", "validate_table_prefix"]

DEFAULT_TABLE_PREFIX: Final = "event_meter"
_PREFIX: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_DDL: Final = """
CREATE TABLE IF NOT EXISTS "{rollups}" (
  report TEXT NOT NULL,
  granularity TEXT NOT NULL,
  index_key TEXT NOT NULL,
  bucket TEXT NOT NULL,
  index_params TEXT NOT NULL,
  bucket_end_ms INTEGER,
  key TEXT NOT NULL,
  fields TEXT NOT NULL DEFAULT '{{}}',
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (report, granularity, index_key, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS "{rollups_bucket_idx}"
  ON "{rollups}" (report, granularity, bucket, index_params);
CREATE TABLE IF NOT EXISTS "{strings}" (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "{processed}" (
  namespace TEXT NOT NULL,
  event_name TEXT NOT NULL,
  version INTEGER NOT NULL,
  entry_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, event_name, version, entry_id)
) WITHOUT ROWID;
"""


def validate_table_prefix(table_prefix: Any) -> str:
    """``table_prefix`` if it is a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``)."""
    if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
        raise ConfigurationError(
            f"table_prefix={table_prefix!r} is invalid: it must match [A-Za-z_][A-Za-z0-9_]*"
        )
    return table_prefix


@dataclass(frozen=True, slots=True)
class Tables:
    """The table and index names of one validated ``table_prefix``.

    Names are plain identifiers, so double-quoting them into statement text is
    safe; every value still travels as a bound parameter.
    """

    prefix: str

    @classmethod
    def of(cls, table_prefix: Any) -> Tables:
        return cls(validate_table_prefix(table_prefix))

    @property
    def rollups(self) -> str:
        return f"{self.prefix}_rollups"

    @property
    def strings(self) -> str:
        return f"{self.prefix}_strings"

    @property
    def processed(self) -> str:
        return f"{self.prefix}_processed_entries"

    def ddl(self) -> list[str]:
        """The idempotent ``CREATE ... IF NOT EXISTS`` statements, one per item."""
        text = _DDL.format(
            rollups=self.rollups,
            rollups_bucket_idx=f"{self.prefix}_rollups_bucket_idx",
            strings=self.strings,
            processed=self.processed,
        )
        return [part.strip() for part in text.split(";") if part.strip()]
