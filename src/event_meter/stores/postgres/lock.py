"""The PostgreSQL lease lock: a row in ``{p}_strings`` (SPEC 11).

- **Take**: one upsert (``sql/lease_take.sql``) writes ``"<expires ms>:<token>"``
  unless a live lease is stored; it overwrites only a lease whose expiry has
  passed (or whose value does not parse), so of concurrent takers exactly one
  gets the row back. Expiry is on the server's clock (``clock_timestamp()``),
  so processors on hosts with skewed clocks agree.
- **Keep, check, release** follow ``event_meter.stores._lease.KeptLease``:
  refreshed every ttl/2 by a daemon thread, ``check`` confirms the token (one
  ``SELECT``), release deletes the row only if it still holds our token.

Every statement runs on the store's **lock connection**, a separate connection
from the data statements, serialised by ``LockChannel``'s own lock.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from event_meter.stores._lease import KeptLease
from event_meter.stores.postgres._driver import statement
from event_meter.stores.postgres.schema import Tables

__all__ = ["LeaseConnection", "LockChannel", "try_lease"]


class LockChannel:
    """The lock connection of one store and the lease statements on it."""

    def __init__(self, conn: Any, tables: Tables) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        names = tables.names
        self._take = statement("lease_take", names)
        self._refresh = statement("lease_refresh", names)
        from psycopg import sql

        table = sql.Identifier(tables.table("strings"))
        self._read = sql.SQL("SELECT value FROM {} WHERE key = %s").format(table)
        self._delete = sql.SQL(
            "DELETE FROM {} WHERE key = %s AND split_part(value, ':', 2) = %s"
        ).format(table)

    def _run(self, query: Any, params: Any) -> Any:
        """One statement in its own transaction; the first column of the first row."""
        with self._lock:
            if self.conn.autocommit:
                cursor = self.conn.execute(query, params)
            else:
                with self.conn.transaction():
                    cursor = self.conn.execute(query, params)
            row = cursor.fetchone() if cursor.description is not None else None
        return None if row is None else row[0]

    def take(self, key: str, token: str, ttl_ms: int) -> bool:
        params = {"key": key, "token": token, "ttl_ms": ttl_ms}
        return self._run(self._take, params) is not None

    def refresh(self, key: str, token: str, ttl_ms: int) -> bool:
        params = {"key": key, "token": token, "ttl_ms": ttl_ms}
        return self._run(self._refresh, params) is not None

    def holds(self, key: str, token: str) -> bool:
        value = self._run(self._read, [key])
        return isinstance(value, str) and value.partition(":")[2] == token

    def release(self, key: str, token: str) -> None:
        self._run(self._delete, [key, token])


class LeaseConnection:
    """A store's one lock connection: the given one, else opened on first use.

    A connection it opened is reopened when it broke, replaced (never touched)
    in a forked child, and closed by ``close``; a given one is never closed.
    """

    def __init__(self, connect: Callable[[], Any], tables: Tables, given: Any = None) -> None:
        self._connect = connect
        self._tables = tables
        self._given = given
        self._channel: LockChannel | None = None
        self._pid = os.getpid()
        self._guard = threading.Lock()

    def _owned(self) -> bool:
        return self._given is None and self._pid == os.getpid()

    def channel(self) -> LockChannel:
        with self._guard:
            channel = self._channel
            if channel is not None and (self._pid != os.getpid() or channel.conn.closed):
                if self._owned():
                    channel.conn.close()
                channel = None  # a forked child opens its own; the parent's socket is not ours
            if channel is None:
                conn = self._given if self._given is not None else self._connect()
                channel = self._channel = LockChannel(conn, self._tables)
                self._pid = os.getpid()
            return channel

    def close(self) -> None:
        with self._guard:
            channel, self._channel = self._channel, None
            if channel is not None and self._owned():
                channel.conn.close()


def try_lease(channel: LockChannel, key: str, ttl_ms: int) -> KeptLease | None:
    """Take the lease on ``key`` for ``ttl_ms`` (kept alive until released), or None if held."""
    token = secrets.token_hex(16)
    sent = time.monotonic()
    if not channel.take(key, token, ttl_ms):
        return None
    return KeptLease(
        key,
        ttl_ms,
        sent,
        refresh=lambda: channel.refresh(key, token, ttl_ms),
        confirm=lambda: channel.holds(key, token),
        release=lambda: channel.release(key, token),
        kind="PostgresLease",
    )
