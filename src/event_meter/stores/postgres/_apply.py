"""The statements of one ``PostgresRollups.apply`` transaction (SPEC 11).

1. Rollups: ``sql/apply_rollups.sql``, one ``INSERT ... SELECT ... ON CONFLICT
   DO UPDATE`` over the batch's rows bound as one jsonb parameter; the conflict
   clause merges ``fields`` by the laws in SQL.
2. Interval state: ``sql/apply_state.sql``, an upsert with ``GREATEST``.
3. Markers: ``COPY`` under a savepoint. A marker that is already stored (a
   retry or a competing processor) makes the COPY fail with a unique violation;
   the savepoint is rolled back and ``sql/mark_processed.sql`` inserts the
   markers ``ON CONFLICT DO NOTHING`` instead, so the result is that of the
   SPEC's insert either way. The speculative insert of ``ON CONFLICT`` costs
   twice the server time of COPY, for a case that normal processing never meets.

The caller runs this inside its transaction: all of it commits or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from event_meter._keys import ReportRef
from event_meter.stores.base import BatchDelta
from event_meter.stores.postgres import _rows
from event_meter.stores.postgres._driver import import_psycopg
from event_meter.stores.postgres._queries import Queries, report_params

__all__ = ["Encoded", "apply_delta", "encode_apply"]


@dataclass(frozen=True, slots=True)
class Encoded:
    """The parameters of one apply, encoded ahead (``PostgresRollups.prepare_apply``)."""

    ref: ReportRef
    rows: str | None
    state: str | None


def encode_apply(ref: ReportRef, delta: BatchDelta) -> Encoded:
    return Encoded(
        ref,
        _rows.rollup_rows(ref, delta) if delta.rollups else None,
        _rows.state_object(ref, delta.state) if delta.state else None,
    )


def apply_delta(
    conn: Any,
    queries: Queries,
    ref: ReportRef,
    delta: BatchDelta,
    created_at: datetime,
    encoded: Encoded | None = None,
) -> None:
    """Write ``delta`` on ``conn``, which must be inside a transaction; ``encoded``:
    ``encode_apply`` of the same ``ref`` and ``delta``, when made ahead."""
    if encoded is None or encoded.ref != ref:
        encoded = encode_apply(ref, delta)
    if encoded.rows is not None:
        conn.execute(queries.apply_rollups, {"rows": encoded.rows})
    if encoded.state is not None:
        conn.execute(queries.apply_state, {"state": encoded.state})
    if delta.entry_ids:
        mark_processed(conn, queries, ref, delta.entry_ids, created_at)


def mark_processed(
    conn: Any, queries: Queries, ref: ReportRef, entry_ids: list[str], created_at: datetime
) -> None:
    """Insert the markers of ``entry_ids``, leaving those already stored as they are."""
    unique_violation = import_psycopg().errors.UniqueViolation
    try:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(queries.copy_markers) as copy:
            copy.write(_rows.marker_copy(ref, entry_ids, created_at))
    except unique_violation:
        params = {
            **report_params(ref),
            "entry_ids": _rows.json_list(entry_ids),
            "created_at": created_at,
        }
        conn.execute(queries.mark_processed, params)
