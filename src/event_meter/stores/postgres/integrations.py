"""Adapters for application frameworks: a SQLAlchemy ``Engine`` and a Django alias.

Both plug into the ``ConnectionSource`` interface of ``adapters``; they import
their framework only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from event_meter.errors import ConfigurationError
from event_meter.stores.postgres._driver import import_psycopg
from event_meter.stores.postgres.adapters import (
    ConnectionSource,
    OneConnection,
    dedicated_like,
)

__all__ = ["DjangoSource", "EngineSource"]


class EngineSource(ConnectionSource):
    """A SQLAlchemy ``Engine`` with the psycopg (3) dialect, through its pool."""

    def __init__(self, engine: Any) -> None:
        dialect = engine.dialect
        if dialect.name != "postgresql" or dialect.driver != "psycopg":
            raise ConfigurationError(
                f"engine={engine!r} uses {dialect.name}+{dialect.driver}; PostgresRollups "
                "needs the psycopg dialect (postgresql+psycopg://...)"
            )
        import_psycopg()
        self.engine = engine

    @contextmanager
    def _pinned(self) -> Iterator[Any]:
        raw = self.engine.raw_connection()
        try:
            conn = raw.driver_connection
            with conn.transaction():  # commits before the pool's reset-on-return
                yield conn
        finally:
            raw.close()  # back to the engine's pool

    def borrow(self) -> Any:
        return self._pinned()

    def transaction(self, *, nested: bool = False) -> Any:
        return self._pinned()

    def connect_dedicated(self) -> Any:
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        cparams = {**cparams, "autocommit": True}
        return import_psycopg().connect(*cargs, **cparams)


class DjangoSource(OneConnection):
    """A Django database alias: ``django.db.connections[alias]`` of the calling thread.

    A Django ``atomic()`` block counts as the caller's open transaction.
    """

    any_thread = False  # each thread has its own Django connection: no worker threads

    def __init__(self, alias: str) -> None:
        super().__init__()
        self.alias = alias

    def _wrapper(self) -> Any:
        try:
            db = importlib.import_module("django.db")  # imported here: Django is optional
        except ImportError as exc:
            raise ConfigurationError(
                f'database={self.alias!r} needs Django: pip install "event-meter[django]"'
            ) from exc
        return db.connections[self.alias]

    def _connection(self) -> Any:
        wrapper = self._wrapper()
        wrapper.ensure_connection()
        conn = wrapper.connection
        if not isinstance(conn, import_psycopg().Connection):
            raise ConfigurationError(
                f"database={self.alias!r} is not a PostgreSQL database using psycopg 3"
            )
        return conn

    def refuse_open_transaction(self) -> None:
        if self._wrapper().in_atomic_block:
            raise ConfigurationError(
                f"database={self.alias!r} is inside transaction.atomic(); event-meter "
                "processing runs its own transactions and refuses to run inside the caller's"
            )
        super().refuse_open_transaction()

    def _describe(self) -> str:
        return f"of Django database {self.alias!r}"

    def connect_dedicated(self) -> Any:
        return dedicated_like(self._connection())
