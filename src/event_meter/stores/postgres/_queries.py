"""The statements of ``PostgresRollups`` and the rows and parameters they take.

Short statements are composed here, long ones are ``sql/*.sql`` resources;
table names are ``sql.Identifier`` s, every value is a bound parameter. Arrays
of ids and keys are bound in binary (``%b``): psycopg's text format quotes each
element in Python, ten times slower for a 10,000-id batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef, esc
from event_meter._time import GRANULARITIES, parse_bucket_id
from event_meter.rollup import FIELDS, clean_fields
from event_meter.stores.base import BatchDelta
from event_meter.stores.postgres._driver import statement
from event_meter.stores.postgres.schema import Tables

__all__ = ["Queries"]

_DECIMAL: Final = re.compile(r"-?[0-9]+\Z")
_LIKE_SPECIAL: Final = re.compile(r"([\\%_])")
_STAGED_COLUMNS: Final = "key, fields, report, granularity, index_key, bucket, bucket_end_ms"

RollupRow = tuple[str, str, str, str, str, str, int | None]


class Queries:
    """Every statement of one table prefix, composed once."""

    def __init__(self, tables: Tables) -> None:
        names = tables.names
        self.apply_rollups = statement("apply_rollups", names)
        self.apply_state = statement("apply_state", names)
        self.mark_processed = statement("mark_processed", names)

        def sql(text: str) -> Any:
            from psycopg import sql as psql

            identifiers = {key: psql.Identifier(value) for key, value in names.items()}
            return psql.SQL(text).format(**identifiers)

        self.create_staged = sql(
            "CREATE TEMPORARY TABLE {staged} (key text, fields jsonb, report text,"
            " granularity text, index_key text, bucket text, bucket_end_ms bigint)"
            " ON COMMIT DROP"
        )
        self.copy_staged = sql(f"COPY {{staged}} ({_STAGED_COLUMNS}) FROM STDIN")
        self.read_string = sql("SELECT value FROM {strings} WHERE key = %s")
        self.read_strings = sql("SELECT key, value FROM {strings} WHERE key = ANY(%b)")
        self.string_keys = sql("SELECT key FROM {strings} WHERE key LIKE %s ORDER BY key")
        self.insert_string = sql(
            "INSERT INTO {strings} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO NOTHING RETURNING value"
        )
        self.upsert_string = sql(
            "INSERT INTO {strings} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        )
        report = "namespace = %s AND event_name = %s AND version = %s"
        # The batch's ids drive a join (a hash join in practice), never ``= ANY(%s)``:
        # the markers table is mostly empty between batches, so its statistics say
        # "one row", and under that estimate (and under the generic plan psycopg's
        # prepared statements get) ``= ANY`` became a filter walking the whole array
        # for every stored marker: quadratic, 0.5 s per 10,000-row batch.
        marker = (
            "p.namespace = %s AND p.event_name = %s AND p.version = %s AND p.entry_id = u.entry_id"
        )
        self.processed_ids = sql(
            "SELECT p.entry_id FROM unnest(%b::text[]) AS u(entry_id)"
            f" JOIN {{processed}} AS p ON {marker}"
        )
        self.forget = sql(
            f"DELETE FROM {{processed}} AS p USING unnest(%b::text[]) AS u(entry_id) WHERE {marker}"
        )
        rollup_range = "report = %s AND granularity = %s AND index_key = %s"
        self.read_range = sql(
            f"SELECT bucket, fields::text FROM {{rollups}} WHERE {rollup_range}"
            " AND bucket BETWEEN %s AND %s"
        )
        self.scan = sql(
            f"SELECT bucket, fields::text FROM {{rollups}} WHERE {rollup_range}"
            " ORDER BY bucket LIMIT %s"
        )
        # The merge laws of SPEC 8 in one aggregate; a stored value that is not a
        # plain decimal integer is absent, as ``clean_fields`` decides in Python.
        laws = ", ".join(
            f"{'min' if name.endswith('_min') else 'max' if name.endswith('_max') else 'sum'}"
            f"(CASE WHEN f->>'{name}' ~ '^-?[0-9]+$' THEN (f->>'{name}')::numeric END)"
            for name in FIELDS
        )
        self.summarize = sql(
            f"SELECT count(*), {laws} FROM (SELECT fields AS f FROM {{rollups}}"
            f" WHERE {rollup_range} ORDER BY bucket LIMIT %s) AS scanned"
        )
        self.cleanup_rollups = sql(
            "DELETE FROM {rollups} WHERE report = %s AND bucket_end_ms <= %s"
        )
        self.cleanup_state = sql(
            "DELETE FROM {strings} WHERE key LIKE %s AND"
            " CASE WHEN value ~ '^-?[0-9]+$' THEN value::numeric < %s ELSE true END"
        )
        self.cleanup_markers = sql(f"DELETE FROM {{processed}} WHERE {report} AND created_at < %s")


def load_fields(text: str) -> dict[str, int]:
    """Stored jsonb ``fields`` text -> clean fields (corrupt values absent, big ints exact)."""
    raw = orjson.loads(text)
    if not isinstance(raw, dict):
        return {}
    if any(type(value) is float for value in raw.values()):
        raw = json.loads(text)  # orjson reads integers beyond 64 bits as floats
    return clean_fields(raw)


def is_decimal(value: Any) -> bool:
    return isinstance(value, str) and _DECIMAL.match(value) is not None


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching every string that starts with ``prefix`` literally."""
    return _LIKE_SPECIAL.sub(r"\\\1", prefix) + "%"


def rollup_report(ref: ReportRef) -> str:
    """The ``report`` column: every rollup key of ``ref`` starts with it and ``:``."""
    return f"{ref.namespace}:rollup:{ref.report_part}"


def report_key(ref: ReportRef) -> list[Any]:
    """``namespace, event_name, version`` of the markers table (``event_name`` = ``esc(name)``)."""
    return [ref.namespace, esc(ref.name), ref.version]


def report_params(ref: ReportRef) -> dict[str, Any]:
    return {"namespace": ref.namespace, "event_name": esc(ref.name), "version": ref.version}


def rollup_rows(ref: ReportRef, delta: BatchDelta) -> Iterator[RollupRow]:
    """One staged row per rollup key of the delta."""
    report = rollup_report(ref)
    for file, values in delta.rollups.items():
        start = parse_bucket_id(file.bucket_id, file.granularity)
        end = None if start is None else start + GRANULARITIES[file.granularity]
        head = f"{report}:{file.granularity}:{file.bucket_id}:"
        for index_key, fields in values.items():
            yield (
                head + index_key,
                orjson.dumps(fields).decode(),
                report,
                file.granularity,
                index_key,
                file.bucket_id,
                end,
            )


def stage_rollups(conn: Any, queries: Queries, rows: Iterator[RollupRow]) -> None:
    """COPY the rows into the transaction's temporary table."""
    conn.execute(queries.create_staged)
    with conn.cursor() as cursor, cursor.copy(queries.copy_staged) as copy:
        for row in rows:
            copy.write_row(row)
