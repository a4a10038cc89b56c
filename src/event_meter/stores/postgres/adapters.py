"""How a ``PostgresRollups`` reaches PostgreSQL: one small adapter interface.

``ConnectionSource`` has three operations:

- ``borrow()``: a connection for statements outside a transaction (each one
  commits by itself);
- ``transaction()``: one connection pinned from BEGIN to COMMIT (ROLLBACK on
  an exception). It raises ``ConfigurationError`` before sending anything when
  the caller has a transaction open on that connection, because our COMMIT
  would be theirs (or our writes would vanish with their ROLLBACK);
- ``connect_dedicated()``: a NEW psycopg connection (autocommit) for the lease
  lock, owned and closed by the caller, so a lease refresh never waits behind
  a data statement and never runs inside a data transaction.

Adapters here: a URL (the store opens and closes its own connection), a
psycopg ``Connection`` (used as given, never closed) and a
``psycopg_pool.ConnectionPool`` (a connection per statement or transaction).
``integrations`` adds a SQLAlchemy ``Engine`` (its pool, psycopg dialect only)
and a Django database alias (``connections[alias]``).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from event_meter.errors import ConfigurationError
from event_meter.stores.postgres._driver import import_psycopg

__all__ = [
    "ConnectionSource",
    "GivenConnection",
    "PoolSource",
    "UrlSource",
    "choose_source",
    "source_for",
    "split_url",
]

URL_SCHEMES = ("postgresql", "postgres")


def split_url(url: str) -> tuple[str, str | None]:
    """``(libpq URL, table_prefix)``: ``?table_prefix=`` is ours, the rest is libpq's.

    The other parameters are passed on byte for byte: libpq decodes only ``%XX``
    (a ``+`` stays a ``+``), so decoding and re-encoding them form-style would turn
    ``options=-c%20lock_timeout%3D5s`` into ``-c+lock_timeout=5s``.
    """
    parts = urlsplit(url)
    prefix: str | None = None
    kept: list[str] = []
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) != "table_prefix":
            if item:
                kept.append(item)
        elif prefix is None:
            prefix = unquote(value)
    return urlunsplit(parts._replace(query="&".join(kept))), prefix


def _caller_transaction(conn: Any) -> bool:
    return bool(conn.info.transaction_status != import_psycopg().pq.TransactionStatus.IDLE)


def check_idle(conn: Any, what: str) -> None:
    if _caller_transaction(conn):
        raise ConfigurationError(
            f"{what} has a transaction open; event-meter processing runs its own "
            "transactions and refuses to run inside the caller's (commit or roll back first)"
        )


def dedicated_like(conn: Any) -> Any:
    """A new autocommit connection to the same server and database as ``conn``."""
    psycopg = import_psycopg()
    return psycopg.connect(conn.info.dsn, password=conn.info.password or None, autocommit=True)


class ConnectionSource(ABC):
    """Where a store gets connections; see the module docstring.

    ``any_thread``: the source serves every thread alike (it locks, or pools), so
    the store's apply may run in a worker thread (``RollupStore.background_apply``).
    """

    any_thread: bool = True

    @abstractmethod
    def borrow(self) -> Any:
        """Context manager: a connection for single statements (each commits)."""

    @abstractmethod
    def transaction(self, *, nested: bool = False) -> Any:
        """Context manager: one connection from BEGIN to COMMIT/ROLLBACK.

        ``nested=True`` runs inside a caller's open transaction (as a savepoint)
        instead of refusing; only ``install`` uses it.
        """

    @abstractmethod
    def connect_dedicated(self) -> Any:
        """A new autocommit psycopg connection; the caller closes it."""

    def refuse_open_transaction(self) -> None:
        """``ConfigurationError`` if the caller has a transaction open; sends nothing."""
        return

    def close(self) -> None:
        """Close what this source opened itself (never what it was given)."""
        return


class OneConnection(ConnectionSource):
    """One connection shared by the store's threads, one statement or transaction at a time."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    @abstractmethod
    def _connection(self) -> Any: ...

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        with self._lock:
            conn = self._connection()
            if conn.autocommit:
                yield conn
            else:  # commits at the end, or a savepoint inside the caller's transaction
                with conn.transaction():
                    yield conn

    @contextmanager
    def transaction(self, *, nested: bool = False) -> Iterator[Any]:
        with self._lock:
            if not nested:
                self.refuse_open_transaction()
            conn = self._connection()
            with conn.transaction():
                yield conn

    def refuse_open_transaction(self) -> None:
        with self._lock:
            check_idle(self._connection(), f"the connection {self._describe()}")

    def _describe(self) -> str:
        return "given to PostgresRollups"


class GivenConnection(OneConnection):
    """A psycopg ``Connection`` given by the application: used as is, never closed."""

    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn

    def _connection(self) -> Any:
        return self.conn

    def connect_dedicated(self) -> Any:
        return dedicated_like(self.conn)


class UrlSource(OneConnection):
    """A connection the store opens from a URL (autocommit), reopened when broken or forked."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import_psycopg()  # fail at construction when the driver is missing
        self.url = url
        self._conn: Any = None
        self._pid = os.getpid()

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed:
            return conn
        if conn is not None and self._pid == os.getpid():
            conn.close()  # broken: discard it
        # After a fork the parent's socket is not ours to close: only forget it.
        self._conn = import_psycopg().connect(self.url, autocommit=True)
        self._pid = os.getpid()
        return self._conn

    def connect_dedicated(self) -> Any:
        return import_psycopg().connect(self.url, autocommit=True)

    def _describe(self) -> str:
        return "opened from the storage URL"

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()


class PoolSource(ConnectionSource):
    """A ``psycopg_pool.ConnectionPool``: a connection per statement or per transaction."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        with self.pool.connection() as conn:  # the pool commits (or rolls back) on return
            yield conn

    @contextmanager
    def transaction(self, *, nested: bool = False) -> Iterator[Any]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def connect_dedicated(self) -> Any:
        conninfo = self.pool.conninfo() if callable(self.pool.conninfo) else self.pool.conninfo
        kwargs = self.pool.kwargs() if callable(self.pool.kwargs) else dict(self.pool.kwargs or {})
        kwargs["autocommit"] = True
        return self.pool.connection_class.connect(conninfo or "", **kwargs)


def _is_pool(value: Any) -> bool:
    return hasattr(value, "getconn") and hasattr(value, "putconn") and hasattr(value, "conninfo")


def _is_engine(value: Any) -> bool:
    return hasattr(value, "raw_connection") and hasattr(value, "dialect")


def source_for(target: Any) -> ConnectionSource:
    """The adapter for a URL, a psycopg connection, a pool or a SQLAlchemy engine."""
    if isinstance(target, ConnectionSource):
        return target
    if isinstance(target, str):
        if urlsplit(target).scheme.lower() not in URL_SCHEMES:
            scheme = urlsplit(target).scheme or "(none)"
            raise ConfigurationError(
                f"a URL with scheme {scheme!r} is not a postgresql:// URL "
                "(the URL is not repeated here: it may hold a password)"
            )
        return UrlSource(split_url(target)[0])
    if _is_engine(target):
        from event_meter.stores.postgres.integrations import EngineSource

        return EngineSource(target)
    if _is_pool(target):
        return PoolSource(target)
    if isinstance(target, import_psycopg().Connection):
        return GivenConnection(target)
    raise ConfigurationError(
        f"{target!r} is neither a postgresql:// URL, a psycopg connection, "
        "a psycopg_pool.ConnectionPool nor a SQLAlchemy Engine"
    )


def choose_source(
    connection: Any = None,
    pool: Any = None,
    engine: Any = None,
    url: str | None = None,
    database: str | None = None,
) -> ConnectionSource:
    """The adapter for exactly one of the ``PostgresRollups`` connection arguments."""
    given = {"connection": connection, "pool": pool, "engine": engine, "url": url}
    given["database"] = database
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise ConfigurationError(
            "PostgresRollups needs exactly one of connection=, pool=, engine=, url= or "
            f"database= (got {', '.join(chosen) or 'none'})"
        )
    if database is not None:
        from event_meter.stores.postgres.integrations import DjangoSource

        return DjangoSource(database)
    if connection is not None and not isinstance(connection, import_psycopg().Connection):
        raise ConfigurationError(f"connection={connection!r} is not a psycopg 3 connection")
    if pool is not None and not _is_pool(pool):
        raise ConfigurationError(f"pool={pool!r} is not a psycopg_pool.ConnectionPool")
    if engine is not None and not _is_engine(engine):
        raise ConfigurationError(f"engine={engine!r} is not a SQLAlchemy Engine")
    return source_for(connection or pool or engine or url)
