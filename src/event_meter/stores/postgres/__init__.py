"""PostgreSQL rollup store (``postgresql://``; the ``postgres`` extra, psycopg 3).

``PostgresRollups`` keeps rollups, interval state, processed markers, leases
and the cleanup watermark in three tables (SPEC 11); ``schema_sql`` returns
their DDL and ``install`` runs it. psycopg is imported only when a store or an
install actually connects.
"""

from __future__ import annotations

from event_meter.stores.postgres.rollups import PostgresRollups
from event_meter.stores.postgres.schema import install, schema_sql

__all__ = ["PostgresRollups", "install", "schema_sql"]
