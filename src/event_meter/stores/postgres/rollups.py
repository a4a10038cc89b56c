"""``PostgresRollups``: the rollup store in three PostgreSQL tables (SPEC 11).

How the contract is kept:

- **Apply** is ONE transaction on one pinned connection (``_apply``): a
  multi-row upsert of the rollups that merges the jsonb ``fields`` by the laws
  in SQL, the state upsert with ``GREATEST``, the markers. All of it commits or
  none of it, so no journal is needed and ``recover`` has nothing to do.
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

import orjson

from event_meter._keys import ReportRef, cleanup_lock_key, watermark_key
from event_meter._time import ms_to_datetime, now_ms
from event_meter.errors import ConfigurationError, StorageError
from event_meter.stores._definitions import definition_doc, reports_of_keys
from event_meter.stores.base import BatchDelta, Fields, Lease, RollupStore
from event_meter.stores.postgres import _queries as q
from event_meter.stores.postgres import _rows
from event_meter.stores.postgres._apply import Encoded, apply_delta, encode_apply
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
        self.background_apply = self._source.any_thread
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
        return definition_doc(row[0], key, "postgresql")

    def list_reports(self, namespace: str) -> list[tuple[str, int]]:
        """``(name, version)`` of every stored definition, parsed from the definition keys."""
        prefix = f"{namespace}:definition:"
        with self._borrow("list_reports") as conn:
            keys = [row[0] for row in conn.execute(self._q.string_keys, [q.like_prefix(prefix)])]
        return reports_of_keys(prefix, keys)

    # -- apply, markers, state ----------------------------------------------------------

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Apply the whole delta in one transaction (atomic: no journal, no recovery)."""
        if not (delta.rollups or delta.state or delta.entry_ids):
            return
        created_at = ms_to_datetime(now_ms(self.clock))
        encoded = delta.encoded.get("postgres")
        with self._transaction("apply") as conn:
            apply_delta(
                conn,
                self._q,
                ref,
                delta,
                created_at,
                encoded if isinstance(encoded, Encoded) else None,
            )

    def prepare_apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Encode the rollup rows and the state of ``delta`` ahead of ``apply`` (in the
        processing thread, while the previous batch's transaction runs)."""
        delta.encoded["postgres"] = encode_apply(ref, delta)

    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]:
        if not entry_ids:
            return set()
        with self._borrow("processed_ids") as conn:
            params = [_rows.json_list(entry_ids), *q.report_key(ref)]
            rows = conn.execute(self._q.processed_ids, params)
            return {row[0] for row in rows}

    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            with self._transaction("forget") as conn:
                conn.execute(self._q.forget, [_rows.json_list(entry_ids), *q.report_key(ref)])

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
        """One ``(series, bucket)`` index range from the first to the last requested bucket."""
        if not bucket_ids:
            return []
        params = _rows.series_params(ref, granularity, index_key)
        params.update(first=min(bucket_ids), last=max(bucket_ids))
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
        params = _rows.series_params(ref, granularity, index_key)
        params["limit"] = limit
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
        """One aggregate over the index range (``sql/summarize.sql``): every field name
        present, merged by its law; ``clean_fields`` keeps the valid ones."""
        params = _rows.series_params(ref, granularity, index_key)
        params["limit"] = limit
        with self._borrow("summarize") as conn:
            count, merged = q.summarize(conn, self._q, params)
        return count, q.load_fields(merged) if merged is not None else {}

    def bucket_index_keys(
        self, ref: ReportRef, granularity: str, bucket_id: str, params: tuple[str, ...]
    ) -> set[str]:
        """The index keys (e.g. ``customer_id=42``) stored in one bucket of the index over
        ``params`` (sorted param names, never empty): one primary key range, the keys
        whose index key starts with the first param, filtered to this index's shape."""
        if not params:
            return set()
        low, high, cut = _rows.bucket_range(ref, granularity, bucket_id, params)
        with self._borrow("bucket_index_keys") as conn:
            keys = [row[0][cut:] for row in conn.execute(self._q.bucket_keys, [low, high])]
        return {key for key in keys if _rows.is_index_key_of(key, params)}

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
        """Three set-based DELETEs in one transaction; each walks only index ranges (the
        rollups: the key ranges of the minute and the hour buckets that ended)."""
        state_prefix = q.like_prefix(f"{ref.namespace}:state:{ref.report_part}:interval:")
        with self._transaction("cleanup") as conn:
            ranges = _rows.cleanup_ranges(ref, before_ms)
            rollups = conn.execute(self._q.cleanup_rollups, [*ranges, before_ms])
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
