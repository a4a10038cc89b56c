"""``event-meter postgres schema|install``: the DDL of the rollup tables (SPEC sections 11, 13).

``schema`` prints the idempotent DDL for a table prefix (for a migration tool
or a DBA); ``install`` runs it against ``--url`` or ``$DATABASE_URL``. A
missing URL, a missing driver or an invalid ``--table-prefix`` is one line on
stderr and exit 1 (``CommandError`` or ``ConfigurationError``, printed by
``main``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final

from event_meter.cli._commands import CommandError

__all__ = ["ENV_URL", "install", "schema", "schema_text"]

ENV_URL: Final = "DATABASE_URL"


def _table_prefix(given: str | None, url: str | None = None) -> str:
    """``--table-prefix``, else the URL's ``?table_prefix=``, else the default; validated."""
    from event_meter.stores.postgres.adapters import split_url
    from event_meter.stores.postgres.schema import DEFAULT_TABLE_PREFIX, validate_table_prefix

    prefix = given
    if prefix is None and url is not None:
        prefix = split_url(url)[1]
    return validate_table_prefix(DEFAULT_TABLE_PREFIX if prefix is None else prefix)


def schema_text(table_prefix: str | None = None) -> str:
    """The DDL of ``table_prefix`` (default ``event_meter``), ending with a newline.

    ``ConfigurationError`` for an invalid prefix or a missing driver (the
    statement is composed with psycopg's identifier quoting).
    """
    from event_meter.stores.postgres._driver import import_psycopg
    from event_meter.stores.postgres.schema import schema_sql

    prefix = _table_prefix(table_prefix)
    import_psycopg()
    text = schema_sql(prefix)
    return text if text.endswith("\n") else text + "\n"


def schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text(args.table_prefix))
    return 0


def install(args: argparse.Namespace) -> int:
    from event_meter.stores.postgres.schema import Tables
    from event_meter.stores.postgres.schema import install as install_tables

    if args.table_prefix is not None:
        _table_prefix(args.table_prefix)  # an invalid prefix is reported before a missing URL
    url = args.url or os.environ.get(ENV_URL)
    if not url:
        raise CommandError(
            f"postgres install needs --url postgresql://USER@HOST/DB or ${ENV_URL}; neither is set"
        )
    prefix = _table_prefix(args.table_prefix, url)
    install_tables(url, table_prefix=prefix)
    tables = Tables(prefix)
    names = ", ".join(tables.table(role) for role in ("rollups", "strings", "processed"))
    sys.stdout.write(f"installed {names} (existing tables and rows are kept)\n")
    return 0
