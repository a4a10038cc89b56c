"""The statements of ``PostgresRollups``, composed once per table prefix.

Short statements are composed here, long ones are ``sql/*.sql`` resources;
table names are ``sql.Identifier`` s, every value is a bound parameter. Batch
sized values (entry ids, rollup rows, state) travel as ONE JSON text each and
are split on the server (``json_array_elements_text`` and friends): building
a psycopg array costs Python work per element, ``orjson.dumps`` does not. The
rows and parameters themselves are built in ``_rows``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef, esc
from event_meter.rollup import clean_fields
from event_meter.stores.postgres._driver import import_psycopg, statement
from event_meter.stores.postgres.schema import Tables

__all__ = ["Queries"]

_DECIMAL: Final = re.compile(r"-?[0-9]+\Z")
_LIKE_SPECIAL: Final = re.compile(r"([\\%_])")
# One index key's rows of a report: the (series, bucket) index, and the key test
# that guards against a collision of the 64-bit series hash.
_SERIES: Final = "series = %(series)s AND key = %(head)s || bucket || %(tail)s"
# One stored value of ``sql/summarize.sql`` as a number: the exact test of SPEC 8
# (a regex per value, 0.3 us each: a third of a summary), and the cast that is
# exact whenever it neither fails nor leaves a fraction in a total.
_EXACT_VALUE: Final = "CASE WHEN f ->> name ~ '^-?[0-9]+$' THEN (f ->> name)::numeric END"
_FAST_VALUE: Final = "(f -> name)::numeric"


class Queries:
    """Every statement of one table prefix, composed once."""

    def __init__(self, tables: Tables) -> None:
        names = tables.names
        self.apply_rollups = statement("apply_rollups", names)
        self.apply_state = statement("apply_state", names)
        self.mark_processed = statement("mark_processed", names)
        self.summarize = statement("summarize", names, {"value": _FAST_VALUE})
        self.summarize_exact = statement("summarize", names, {"value": _EXACT_VALUE})

        def sql(text: str) -> Any:
            from psycopg import sql as psql

            identifiers = {key: psql.Identifier(value) for key, value in names.items()}
            return psql.SQL(text).format(**identifiers)

        self.copy_markers = sql(
            "COPY {processed} (namespace, event_name, version, entry_id, created_at) FROM STDIN"
        )
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
        ids = "json_array_elements_text(%s::json) AS u(entry_id)"
        self.processed_ids = sql(
            f"SELECT p.entry_id FROM {ids} JOIN {{processed}} AS p ON {marker}"
        )
        self.forget = sql(f"DELETE FROM {{processed}} AS p USING {ids} WHERE {marker}")
        self.read_range = sql(
            f"SELECT bucket, fields::text FROM {{rollups}} WHERE {_SERIES}"
            " AND bucket BETWEEN %(first)s AND %(last)s"
        )
        self.scan = sql(
            f"SELECT bucket, fields::text FROM {{rollups}} WHERE {_SERIES}"
            " ORDER BY bucket LIMIT %(limit)s"
        )
        # Key ranges of the primary key (bytewise, COLLATE "C").
        self.bucket_keys = sql("SELECT key FROM {rollups} WHERE key >= %s AND key < %s")
        self.cleanup_rollups = sql(
            "DELETE FROM {rollups} WHERE ((key >= %s AND key < %s) OR (key >= %s AND key < %s))"
            " AND bucket_end_ms <= %s"
        )
        self.cleanup_state = sql(
            "DELETE FROM {strings} WHERE key LIKE %s AND"
            " CASE WHEN value ~ '^-?[0-9]+$' THEN value::numeric < %s ELSE true END"
        )
        self.cleanup_markers = sql(f"DELETE FROM {{processed}} WHERE {report} AND created_at < %s")


def summarize(conn: Any, queries: Queries, params: dict[str, Any]) -> tuple[int, str | None]:
    """``(bucket count, merged fields text)`` of one index key: the fast form of
    ``sql/summarize.sql``, or the exact one when a stored value is not a number or
    a total has a fraction (a corrupt value was summed)."""
    data_error = import_psycopg().errors.DataError
    try:
        if conn.autocommit:
            row = conn.execute(queries.summarize, params).fetchone()
        else:  # a transaction (or a savepoint) that a failed statement may abort
            with conn.transaction():
                row = conn.execute(queries.summarize, params).fetchone()
    except data_error:
        row = None
    if row is None or row[2]:
        row = conn.execute(queries.summarize_exact, params).fetchone()
    return int(row[0]), row[1]


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


def report_key(ref: ReportRef) -> list[Any]:
    """``namespace, event_name, version`` of the markers table (``event_name`` = ``esc(name)``)."""
    return [ref.namespace, esc(ref.name), ref.version]


def report_params(ref: ReportRef) -> dict[str, Any]:
    return {"namespace": ref.namespace, "event_name": esc(ref.name), "version": ref.version}
