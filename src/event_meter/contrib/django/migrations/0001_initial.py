"""The three rollup tables with the default prefix ``event_meter``.

The DDL is ``schema_sql`` itself (``sql/schema.sql``: one source of truth
with ``install`` and ``event-meter postgres schema``), idempotent, so a
database where ``install`` already ran migrates cleanly.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations

from event_meter.stores.postgres.schema import DEFAULT_TABLE_PREFIX, Tables, schema_sql


class PostgresRunSQL(migrations.RunSQL):  # type: ignore[misc]  # Django: untyped
    """``RunSQL`` on PostgreSQL only.

    On another database (a SQLite project that keeps its rollups in files or
    Redis) the tables are not needed and the PostgreSQL DDL would fail.
    """

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, *args)


def drop_sql(table_prefix: str) -> str:
    tables = Tables.of(table_prefix)
    roles = ("processed", "strings", "rollups")
    return "\n".join(f'DROP TABLE IF EXISTS "{tables.table(role)}";' for role in roles)


class Migration(migrations.Migration):  # type: ignore[misc]  # Django: untyped
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    operations: ClassVar[list[Any]] = [
        PostgresRunSQL(schema_sql(DEFAULT_TABLE_PREFIX), reverse_sql=drop_sql(DEFAULT_TABLE_PREFIX))
    ]
