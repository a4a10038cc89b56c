"""The schema of one table prefix as plain rows, to compare how tables were created."""

from __future__ import annotations

from typing import Any

import psycopg


def schema_of(conn: psycopg.Connection[Any], prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    """Columns, indexes (full definitions) and storage options of the tables of ``prefix``.

    Names have ``prefix`` replaced by ``{p}``, so two prefixes compare equal
    when their tables were created alike.
    """
    pattern = prefix.replace("_", r"\_") + r"\_%"

    def rows(query: str) -> list[tuple[Any, ...]]:
        found = conn.execute(query, [pattern]).fetchall()
        return [tuple(_named(value, prefix) for value in row) for row in found]

    return {
        "columns": rows(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable,"
            " column_default FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name LIKE %s ORDER BY 1, 2"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND tablename LIKE %s ORDER BY 1, 2"
        ),
        "options": rows(
            "SELECT relname, reloptions FROM pg_class WHERE relkind = 'r' AND relname LIKE %s"
            " ORDER BY 1"
        ),
    }


def _named(value: Any, prefix: str) -> Any:
    return value.replace(prefix, "{p}") if isinstance(value, str) else value
