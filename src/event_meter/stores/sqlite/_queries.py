"""The statements of ``SQLiteRollups`` and the rows and parameters they take.

Table names come from a validated prefix and are double-quoted into the text;
every value is a bound parameter. Lists of ids and keys travel as ONE JSON
array parameter unpacked by ``json_each`` (one statement for a 10,000-id batch,
no limit on bound variables).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import orjson

from event_meter._keys import ReportRef, esc
from event_meter._time import GRANULARITIES, bucket_id, datetime_to_ms, parse_bucket_id
from event_meter.stores.base import BatchDelta
from event_meter.stores.sqlite._fields import MERGE_FUNCTION, dump_fields
from event_meter.stores.sqlite._schema import Tables

__all__ = ["Queries", "cleanup_cutoff", "index_params", "json_list", "key_range", "rollup_rows"]

# The earliest and latest bucket starts a bucket id can name (years 0001 to 9999).
_FIRST_MS: Final = datetime_to_ms(datetime(1, 1, 1, tzinfo=UTC))
_LAST_MS: Final = datetime_to_ms(datetime(9999, 12, 31, 23, 59, tzinfo=UTC))


def _decimal(column: str) -> str:
    """SQL: ``column`` is text of a plain decimal integer (``-?[0-9]+``), as SPEC 8 reads it."""
    return (
        f"(({column} GLOB '[0-9]*' OR {column} GLOB '-[0-9]*')"
        f" AND substr({column}, 2) NOT GLOB '*[^0-9]*')"
    )


class Queries:
    """Every statement of one table prefix, composed once."""

    def __init__(self, tables: Tables) -> None:
        rollups, strings, processed = (
            f'"{t}"' for t in (tables.rollups, tables.strings, tables.processed)
        )
        rollup_range = "report = ? AND granularity = ? AND index_key = ?"
        marker_report = "namespace = ? AND event_name = ? AND version = ?"
        ids = "SELECT value FROM json_each(?)"

        # -- rollups
        self.apply_rollups = (
            f"INSERT INTO {rollups} (report, granularity, index_key, bucket, index_params,"
            " bucket_end_ms, key, fields, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (report, granularity, index_key, bucket) DO UPDATE SET"
            f" fields = {MERGE_FUNCTION}(fields, excluded.fields),"
            " updated_at = excluded.updated_at"
        )
        self.read_range = (
            f"SELECT bucket, fields FROM {rollups} WHERE {rollup_range} AND bucket BETWEEN ? AND ?"
        )
        self.scan = (
            f"SELECT bucket, fields FROM {rollups} WHERE {rollup_range} ORDER BY bucket LIMIT ?"
        )
        self.bucket_index_keys = (
            f"SELECT index_key FROM {rollups}"
            " WHERE report = ? AND granularity = ? AND bucket = ? AND index_params = ?"
        )
        self.cleanup_rollups = (
            f"DELETE FROM {rollups} WHERE report = ? AND granularity = ?"
            " AND bucket <= ? AND bucket_end_ms <= ?"
        )
        # -- strings: definitions, state, leases, watermark
        self.read_string = f"SELECT value FROM {strings} WHERE key = ?"
        self.read_strings = f"SELECT key, value FROM {strings} WHERE key IN ({ids})"
        self.string_keys = f"SELECT key FROM {strings} WHERE key >= ? AND key < ? ORDER BY key"
        self.insert_string = (
            f"INSERT INTO {strings} (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self.upsert_string = (
            f"INSERT INTO {strings} (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at"
        )
        # Interval state only moves forward; a stored value that is not a decimal
        # integer counts as absent. (CAST saturates at 64 bits: a huge stored start
        # stays the greatest, a hugely negative one is replaced, as max-merge wants.)
        self.apply_state = (
            f"INSERT INTO {strings} (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at"
            f" WHERE NOT {_decimal('value')}"
            " OR CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)"
        )
        self.cleanup_state = (
            f"DELETE FROM {strings} WHERE key >= ? AND key < ?"
            f" AND (NOT {_decimal('value')} OR CAST(value AS INTEGER) < ?)"
        )
        self.delete_string = f"DELETE FROM {strings} WHERE key = ? AND value = ?"
        # -- processed markers
        self.mark_processed = (
            f"INSERT OR IGNORE INTO {processed}"
            " (namespace, event_name, version, entry_id, created_at)"
            f" SELECT ?, ?, ?, value, ? FROM json_each(?)"
        )
        self.processed_ids = (
            f"SELECT entry_id FROM {processed} WHERE {marker_report} AND entry_id IN ({ids})"
        )
        self.forget = f"DELETE FROM {processed} WHERE {marker_report} AND entry_id IN ({ids})"
        self.cleanup_markers = f"DELETE FROM {processed} WHERE {marker_report} AND created_at < ?"


def json_list(items: list[str]) -> str:
    """One JSON array parameter for ``json_each``."""
    return orjson.dumps(items).decode()


def key_range(prefix: str) -> tuple[str, str]:
    """``(low, high)`` so that ``low <= key < high`` holds for exactly the keys starting
    with ``prefix`` (which ends with ``:``; ``;`` is the next code point)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def rollup_report(ref: ReportRef) -> str:
    """The ``report`` column: every rollup key of ``ref`` starts with it and ``:``."""
    return f"{ref.namespace}:rollup:{ref.report_part}"


def report_key(ref: ReportRef) -> tuple[str, str, int]:
    """``namespace, event_name, version`` of the markers table (``event_name`` = ``esc(name)``)."""
    return ref.namespace, esc(ref.name), ref.version


def index_params(params: tuple[str, ...]) -> str:
    """The ``index_params`` column: escaped names joined by ``|`` (``""`` for the all index)."""
    return "|".join(esc(param) for param in params)


RollupRow = tuple[str, str, str, str, str, int | None, str, str, int]


def rollup_rows(ref: ReportRef, delta: BatchDelta, updated_at: int) -> list[RollupRow]:
    """One upsert row per rollup key of the delta, in primary key order.

    Concurrent applies then take page locks in the same order (SQLite has one
    writer at a time anyway; sorted inserts also touch each b-tree page once).
    """
    report = rollup_report(ref)
    rows: list[RollupRow] = []
    for file, values in delta.rollups.items():
        start = parse_bucket_id(file.bucket_id, file.granularity)
        end = None if start is None else start + GRANULARITIES[file.granularity]
        params = index_params(file.params)
        head = f"{report}:{file.granularity}:{file.bucket_id}:"
        for key, fields in values.items():
            rows.append(
                (
                    report,
                    file.granularity,
                    key,
                    file.bucket_id,
                    params,
                    end,
                    head + key,
                    dump_fields(fields),
                    updated_at,
                )
            )
    rows.sort(key=lambda row: (row[1], row[2], row[3]))
    return rows


def cleanup_cutoff(granularity: str, before_ms: int) -> str | None:
    """The greatest bucket id of ``granularity`` that can end by ``before_ms`` (None: none).

    Bucket ids of one granularity have one length and sort by time, so
    ``bucket <= cutoff`` is an index range; ``bucket_end_ms <= before`` then
    keeps it exact (and leaves out ids that do not parse: their end is NULL).
    """
    size = GRANULARITIES[granularity]
    last_start = min(before_ms - size, _LAST_MS)
    if last_start < _FIRST_MS:
        return None
    return bucket_id(last_start - last_start % size, granularity)
