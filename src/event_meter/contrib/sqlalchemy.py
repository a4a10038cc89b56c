"""The PostgreSQL rollup tables as SQLAlchemy ``MetaData``, for Alembic users.

``metadata(table_prefix)`` describes the three tables of SPEC section 11
exactly as ``event_meter.stores.postgres.install`` creates them (the columns,
collations and indexes of ``sql/schema.sql``, the rollups table with
``fillfactor = 70``),
so ``metadata().create_all(engine)`` and ``install(engine)`` give the same
schema. The store itself never uses this module; it runs its own SQL.

Let Alembic autogenerate manage the tables (``install_schema=False`` on the
store then, since migrations create them)::

    from event_meter.contrib.sqlalchemy import metadata as event_meter_metadata

    target_metadata = [Base.metadata, event_meter_metadata()]

Or keep autogenerate away from them (created by ``event-meter postgres
install`` or by the store on first use) with ``include_object`` in ``env.py``;
it is called for tables and for indexes (``obj.table`` names their table)::

    EVENT_METER_TABLES = frozenset(event_meter_metadata().tables)

    def include_object(obj, name, type_, reflected, compare_to):
        table = obj.table.name if type_ == "index" else name
        return table not in EVENT_METER_TABLES

    context.configure(..., include_object=include_object)
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from event_meter.stores.postgres.schema import DEFAULT_TABLE_PREFIX, Tables

__all__ = ["metadata"]


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def metadata(table_prefix: str = DEFAULT_TABLE_PREFIX) -> sa.MetaData:
    """A new ``MetaData`` holding the tables of ``table_prefix`` (validated:
    ``ConfigurationError`` unless it matches ``[A-Za-z_][A-Za-z0-9_]*`` and is
    short enough for every derived name)."""
    tables = Tables.of(table_prefix)
    names = tables.names
    result = sa.MetaData()
    sa.Table(
        names["rollups"],
        result,
        sa.Column("key", sa.Text(collation="C"), primary_key=True),
        sa.Column(
            "fields",
            postgresql.JSONB,
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        _timestamp("updated_at"),
        sa.Column("series", sa.BigInteger, nullable=False),
        sa.Column("bucket", sa.Text(collation="C"), nullable=False),
        sa.Column("bucket_end_ms", sa.BigInteger, nullable=True),
        sa.Index(
            names["rollups_key_prefix_idx"], "key", postgresql_ops={"key": "text_pattern_ops"}
        ),
        sa.Index(names["rollups_series_idx"], "series", "bucket"),
        postgresql_with={"fillfactor": "70"},
    )
    sa.Table(
        names["strings"],
        result,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        _timestamp("updated_at"),
        sa.Index(
            names["strings_key_prefix_idx"], "key", postgresql_ops={"key": "text_pattern_ops"}
        ),
    )
    sa.Table(
        names["processed"],
        result,
        sa.Column("namespace", sa.Text, primary_key=True),
        sa.Column("event_name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("entry_id", sa.Text, primary_key=True),
        _timestamp("created_at"),
        sa.Index(names["processed_created_at_idx"], "created_at"),
    )
    return result
