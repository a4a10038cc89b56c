"""psycopg access for the PostgreSQL store: lazy import, errors, SQL resources.

Everything that depends on the driver lives here once:

- ``import_psycopg`` imports psycopg 3 lazily; a missing driver is a
  ``ConfigurationError`` with the ``pip install`` line.
- ``storage_errors`` is the one place where ``psycopg.Error`` (and socket
  ``OSError``) become ``event_meter.errors.StorageError``.
- ``statement`` reads one ``sql/*.sql`` resource and fills in the table names
  as ``psycopg.sql.Identifier`` s; values never go into the text, they travel
  as bound parameters (``%(name)s`` placeholders in the resource).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from types import ModuleType
from typing import TYPE_CHECKING, Final

from event_meter.errors import ConfigurationError, StorageError

if TYPE_CHECKING:
    from psycopg import sql

__all__ = ["PIP_INSTALL", "import_psycopg", "statement", "storage_errors"]

PIP_INSTALL: Final = 'pip install "event-meter[postgres]"'


def import_psycopg() -> ModuleType:
    """The ``psycopg`` module; ``ConfigurationError`` naming the extra when it is missing."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigurationError(
            f"the PostgreSQL store needs psycopg 3; install it with: {PIP_INSTALL}"
        ) from exc
    return psycopg


@contextmanager
def storage_errors(operation: str) -> Iterator[None]:
    """The one place where driver and socket failures become ``StorageError``."""
    try:
        yield
    except (StorageError, ConfigurationError):
        raise
    except Exception as exc:
        psycopg = import_psycopg()
        if isinstance(exc, psycopg.Error | OSError):
            hint = ""
            if isinstance(exc, psycopg.errors.UndefinedTable):
                hint = (
                    " (the event-meter tables do not exist: run `manage.py migrate event_meter`"
                    " or `event-meter postgres install`, or let the store create them with"
                    " install_schema=True)"
                )
            raise StorageError(
                f"postgresql: {operation} failed: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        raise


@cache
def _resource(name: str) -> str:
    path = resources.files("event_meter.stores.postgres").joinpath("sql", f"{name}.sql")
    return path.read_text(encoding="utf-8")


def statement_text(name: str, tables: dict[str, str]) -> str:
    """``statement`` as plain text, without the driver (for printing DDL).

    Names come from a validated ``table_prefix`` (``[A-Za-z_][A-Za-z0-9_]*``), so
    double-quoting them is exactly what ``psycopg.sql.Identifier`` renders.
    """
    return _resource(name).format(**{key: f'"{value}"' for key, value in tables.items()})


def statement(
    name: str, tables: dict[str, str], fragments: dict[str, str] | None = None
) -> sql.Composed:
    """The SQL resource ``name`` with ``{rollups}``-style names filled in as identifiers,
    and ``fragments`` (constant SQL text of ours, never a value) as they are.

    Literal braces in a resource are written ``{{`` / ``}}``.
    """
    from psycopg import sql

    names: dict[str, sql.Composable] = {k: sql.Identifier(v) for k, v in tables.items()}
    names.update((key, sql.SQL(text)) for key, text in (fragments or {}).items())
    return sql.SQL(_resource(name)).format(**names)
