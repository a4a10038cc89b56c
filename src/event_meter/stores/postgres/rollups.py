"""``PostgresRollups``: the rollup store in three PostgreSQL tables (SPEC 11).

How the contract is kept:

- **Apply** is ONE transaction on one pinned connection: the rollup deltas are
  COPYed into a temporary table (``ON COMMIT DROP``) and merged by one
  ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE`` whose SET applies the
  merge laws to the jsonb ``fields`` in SQL; interval state is upserted with
  ``GREATEST``; markers are inserted ``ON CONFLICT DO NOTHING``. Either all of
  it commits or none of it, so no journal is needed and ``recover`` has
  nothing to do. Rows are written in key order, so concurrent applies lock rows
  in the same order.
- **Corrupt numbers**: a stored field or state value that is not a plain
  decimal integer counts as absent, both when merging (in SQL) and when reading
  (``clean_fields``).
- **Markers** carry ``created_at`` from the meter's bound clock (not the
  server's ``now()``), so cleanup's "older than before" follows the same clock
  as every other backend. Their ``event_name`` column holds ``esc(name)``, the
  name as it appears in every logical key (PostgreSQL text cannot hold NUL).
- **Leases** are rows in ``{p}_strings`` on a separate lock connection
  (``lock.py``), opened on first use and closed with the store.
- **Schema**: created on first use when missing (``CREATE ... IF NOT EXISTS``
  under an advisory lock), unless ``install_schema=False`` (Django and Alembic
  users create the tables with their migrations).

Every value travels as a bound parameter; identifiers are ``sql.Identifier``.
Driver errors leave a public method as ``StorageError`` (``_driver.storage_errors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote_plus

import orjson

from event_meter._keys import ReportRef, cleanup_lock_key, watermark_key
from event_meter._time import ms_to_datetime, now_ms
from event_meter.errors import ConfigurationError, StorageError
from event_meter.rollup import FIELDS
from event_meter.stores.base import BatchDelta, Fields, Lease, RollupStore
from event_meter.stores.postgres import _queries as q
from event_meter.stores.postgres._driver import storage_errors
from event_meter.stores.postgres.adapters import choose_source, split_url
from event_meter.stores.postgres.lock import LeaseConnection, try_lease
from event_meter.stores.postgres.schema import DEFAULT_TABLE_PREFIX, Tables, install_with

__all__ = ["PostgresRollups"]

_COUNTS = ("rollup_keys_deleted", "interval_state_keys_deleted", "processed_entries_deleted")


class PostgresRollups(RollupStore):
    """Rollups, state, markers, leases and the watermark in PostgreSQL; see the module doc.

    Give exactly one of ``connection`` (a psycopg 3 ``Connection``, used as is,
    never closed), ``pool`` (a ``psycopg_pool.ConnectionPool``), ``engine`` (a
    SQLAlchemy ``Engine`` on ``postgresql+psycopg``), ``url``
    (``postgresql://...?table_prefix=NAME``; the store opens and closes its own
    connections) or ``database`` (a Django database alias). ``lock_connection``
    (a psycopg connection, not closed) replaces the lease connection the store
    would otherwise open itself.
    """

    def __init__(
        self,
        connection: Any = None,
        *,
        pool: Any = None,
        engine: Any = None,
        url: str | None = None,
        database: str | None = None,
        lock_connection: Any = None,
        table_prefix: str | None = None,
        install_schema: bool = True,
    ) -> None:
        if url is not None:
            url, url_prefix = split_url(url)
            if table_prefix is None:
                table_prefix = url_prefix
        self.tables = Tables.of(DEFAULT_TABLE_PREFIX if table_prefix is None else table_prefix)
        self._source = choose_source(connection, pool, engine, url, database)
        self._leases = LeaseConnection(self._source.connect_dedicated, self.tables, lock_connection)
        self._install_schema = install_schema
        self._schema_ready = False
        self._q = q.Queries(self.tables)

    def __repr__(self) -> str:
        source = type(self._source).__name__
        return f"PostgresRollups({source}, table_prefix={self.tables.prefix!r})"

    def bind(self, *, namespace: str, clock: Any) -> None:
        if "\x00" in namespace:
            raise ConfigurationError(
                f"namespace={namespace!r} cannot be used with PostgreSQL: text cannot hold NUL"
            )
        super().bind(namespace=namespace, clock=clock)

    # -- connections ---------------------------------------------------------------

    def _ready(self) -> None:
        if not self._schema_ready:
            if self._install_schema:
                install_with(self._source, self.tables)
            self._schema_ready = True

    @contextmanager
    def _borrow(self, operation: str) -> Iterator[Any]:
        with storage_errors(operation):
            self._ready()
            with self._source.borrow() as conn:
                yield conn

    @contextmanager
    def _transaction(self, operation: str) -> Iterator[Any]:
        with storage_errors(operation):
            self._source.refuse_open_transaction()
            self._ready()
            with self._source.transaction() as conn:
                yield conn

    def close(self) -> None:
        """Close the lock connection and the URL connection, if this store opened them."""
        try:
            self._leases.close()
        finally:
            self._source.close()

    # -- definitions -------------------------------------------------------------------

    def store_definition(self, ref: ReportRef, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Insert unless one is stored (``ON CONFLICT DO NOTHING``); return the stored one."""
        key = ref.definition_key()
        with self._transaction("store_definition") as conn:
            row = conn.execute(self._q.insert_string, [key, orjson.dumps(definition).decode()])
            inserted = row.fetchone()
        if inserted is not None:
            return dict(definition)
        stored = self.load_definition(ref)
        if stored is None:
            raise StorageError(f"postgresql: definition {key!r} vanished while being read")
        return stored

    def load_definition(self, ref: ReportRef) -> dict[str, Any] | None:
        key = ref.definition_key()
        with self._borrow("load_definition") as conn:
            row = conn.execute(self._q.read_string, [key]).fetchone()
        if row is None:
            return None
        try:
            doc = orjson.loads(row[0])
        except orjson.JSONDecodeError as exc:
            raise StorageError(f"postgresql: definition {key!r} is not JSON") from exc
        if not isinstance(doc, dict):
            raise StorageError(f"postgresql: definition {key!r} is not a JSON object")
        return doc

    def list_reports(self, namespace: str) -> list[tuple[str, int]]:
        """``(name, version)`` of every stored definition, parsed from the definition keys."""
        prefix = f"{namespace}:definition:"
        with self._borrow("list_reports") as conn:
            keys = [row[0] for row in conn.execute(self._q.string_keys, [q.like_prefix(prefix)])]
        found: set[tuple[str, int]] = set()
        for key in keys:
            name, sep, version = key[len(prefix) :].rpartition(":v")
            if sep and ":" not in name and version.isdigit():
                found.add((unquote_plus(name), int(version)))
        return sorted(found)

    # -- apply, markers, state ----------------------------------------------------------

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Apply the whole delta in one transaction (atomic: no journal, no recovery)."""
        if not (delta.rollups or delta.state or delta.entry_ids):
            return
        with self._transaction("apply") as conn:
            if delta.rollups:
                q.stage_rollups(conn, self._q, q.rollup_rows(ref, delta))
                conn.execute(self._q.apply_rollups)
            if delta.state:
                keys = [ref.state_key(param, value) for param, value in delta.state]
                values = [str(started) for started in delta.state.values()]
                conn.execute(self._q.apply_state, {"keys": keys, "values": values})
            if delta.entry_ids:
                params = {
                    **q.report_params(ref),
                    "entry_ids": list(delta.entry_ids),
                    "created_at": ms_to_datetime(now_ms(self.clock)),
                }
                conn.execute(self._q.mark_processed, params)

    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]:
        if not entry_ids:
            return set()
        with self._borrow("processed_ids") as conn:
            rows = conn.execute(self._q.processed_ids, [list(entry_ids), *q.report_key(ref)])
            return {row[0] for row in rows}

    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            with self._transaction("forget") as conn:
                conn.execute(self._q.forget, [list(entry_ids), *q.report_key(ref)])

    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        by_key = {ref.state_key(param, value): (param, value) for param, value in keys}
        if not by_key:
            return {}
        with self._borrow("read_state") as conn:
            rows = conn.execute(self._q.read_strings, [list(by_key)]).fetchall()
        return {by_key[key]: int(value) for key, value in rows if q.is_decimal(value)}

    # -- rollups ---------------------------------------------------------------------

    def read_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        bucket_ids: Sequence[str],
    ) -> list[Fields | None]:
        """One index range scan from the first to the last requested bucket."""
        if not bucket_ids:
            return []
        report = q.rollup_report(ref)
        params = [report, granularity, index_key, min(bucket_ids), max(bucket_ids)]
        with self._borrow("read_rollups") as conn:
            rows = conn.execute(self._q.read_range, params).fetchall()
        found = {bucket: q.load_fields(fields) for bucket, fields in rows}
        return [found.get(bucket_id) for bucket_id in bucket_ids]

    def scan_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> list[tuple[str, Fields]]:
        params = [q.rollup_report(ref), granularity, index_key, limit]
        with self._borrow("scan_rollups") as conn:
            rows = conn.execute(self._q.scan, params).fetchall()
        return [(bucket, q.load_fields(fields)) for bucket, fields in rows]

    def summarize(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> tuple[int, Fields]:
        """One aggregate over the index range: no row leaves the server."""
        params = [q.rollup_report(ref), granularity, index_key, limit]
        with self._borrow("summarize") as conn:
            row = conn.execute(self._q.summarize, params).fetchone()
        if row is None:
            return 0, {}
        fields = {
            name: int(value)
            for name, value in zip(FIELDS, row[1:], strict=True)
            if value is not None
        }
        return int(row[0]), fields

    # -- leases, cleanup, watermark ----------------------------------------------------

    def _try_lease(self, key: str, ttl_ms: int, operation: str) -> Lease | None:
        with storage_errors(operation):
            self._source.refuse_open_transaction()
            self._ready()
            return try_lease(self._leases.channel(), key, ttl_ms)

    def try_report_lock(self, ref: ReportRef, ttl_ms: int) -> Lease | None:
        return self._try_lease(ref.process_lock_key(), ttl_ms, "try_report_lock")

    def try_cleanup_lock(self, namespace: str, ttl_ms: int) -> Lease | None:
        return self._try_lease(cleanup_lock_key(namespace), ttl_ms, "try_cleanup_lock")

    def cleanup(self, ref: ReportRef, before_ms: int) -> dict[str, int]:
        """Three set-based DELETEs in one transaction; each walks only an index range."""
        state_prefix = q.like_prefix(f"{ref.namespace}:state:{ref.report_part}:interval:")
        with self._transaction("cleanup") as conn:
            rollups = conn.execute(self._q.cleanup_rollups, [q.rollup_report(ref), before_ms])
            state = conn.execute(self._q.cleanup_state, [state_prefix, before_ms])
            markers = conn.execute(
                self._q.cleanup_markers, [*q.report_key(ref), ms_to_datetime(before_ms)]
            )
            counts = [rollups.rowcount, state.rowcount, markers.rowcount]
        return dict(zip(_COUNTS, counts, strict=True))

    def read_watermark(self, namespace: str) -> int | None:
        with self._borrow("read_watermark") as conn:
            row = conn.execute(self._q.read_string, [watermark_key(namespace)]).fetchone()
        return int(row[0]) if row is not None and q.is_decimal(row[0]) else None

    def write_watermark(self, namespace: str, ms: int) -> None:
        with self._transaction("write_watermark") as conn:
            conn.execute(self._q.upsert_string, [watermark_key(namespace), str(ms)])
