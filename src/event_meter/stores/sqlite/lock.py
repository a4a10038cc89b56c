"""The SQLite lease lock: a row in ``{p}_strings`` (SPEC 9, 11).

- **Take**: in one ``BEGIN IMMEDIATE`` transaction (the database's single
  write lock, so concurrent takers are serialised), read the row and write
  ``"<expires ms>:<token>"`` only if there is none, its expiry has passed, or
  it does not parse. Of concurrent takers exactly one gets it.
- **Keep, check, release** follow ``event_meter.stores._lease.KeptLease``: a
  daemon thread refreshes the expiry every ttl/2 (on its own connection, as
  every thread has one), ``check`` confirms the token, release deletes the row
  only if it still holds our token.
- **Fence**: ``fence`` checks, inside an apply transaction, that the lease
  row this process took still holds our token and an expiry in the future. Under the write
  lock nobody can take it over before that transaction commits, so an apply
  that passes the fence never races a new holder.

Expiry is on this host's real clock (``time.time``), never the meter's
injected clock: every process sharing the file runs on this host.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from typing import Final

from event_meter.errors import LockLostError
from event_meter.stores._lease import KeptLease
from event_meter.stores.sqlite._connections import Connections
from event_meter.stores.sqlite._queries import Queries

__all__ = ["LeaseRows", "parse_lease"]

_MAX_EXPIRY_DIGITS: Final = 18


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_lease(value: object) -> tuple[int, str] | None:
    """``(expires ms, token)`` of a stored lease value, or None when it does not parse."""
    if not isinstance(value, str):
        return None
    expires, sep, token = value.partition(":")
    if not sep or not expires.isascii() or not expires.isdigit():
        return None
    if len(expires) > _MAX_EXPIRY_DIGITS:
        return None
    return int(expires), token


class LeaseRows:
    """Leases of one store: take, refresh, confirm, release, and the apply fence."""

    def __init__(self, connections: Connections, queries: Queries) -> None:
        self._connections = connections
        self._q = queries
        # key -> (pid, token) of the leases this store holds, for ``fence``.
        self._held: dict[str, tuple[int, str]] = {}

    def _read(self, conn: sqlite3.Connection, key: str) -> tuple[int, str] | None:
        row = conn.execute(self._q.read_string, (key,)).fetchone()
        return None if row is None else parse_lease(row[0])

    def take(self, key: str, token: str, ttl_ms: int) -> bool:
        with self._connections.transaction() as conn:
            now = wall_ms()
            held = self._read(conn, key)
            if held is not None and held[0] > now:
                return False
            conn.execute(self._q.upsert_string, (key, f"{now + ttl_ms}:{token}", now))
            return True

    def refresh(self, key: str, token: str, ttl_ms: int) -> bool:
        with self._connections.transaction() as conn:
            held = self._read(conn, key)
            if held is None or held[1] != token:
                return False
            now = wall_ms()
            conn.execute(self._q.upsert_string, (key, f"{now + ttl_ms}:{token}", now))
            return True

    def holds(self, key: str, token: str) -> bool:
        held = self._read(self._connections.get(), key)
        return held is not None and held[1] == token

    def fence(self, conn: sqlite3.Connection, key: str) -> None:
        """Inside a write transaction: ``LockLostError`` unless the lease on ``key`` that
        this process holds still has our token and a future expiry (nothing to check
        when this process holds no lease on ``key``)."""
        pid, token = self._held.get(key, (0, ""))
        if pid != os.getpid():
            return
        held = self._read(conn, key)
        if held is None or held[1] != token:
            raise LockLostError(f"lease {key!r} is held by another processor")
        if held[0] <= wall_ms():
            raise LockLostError(f"lease {key!r} expired before this write")

    def release(self, key: str, token: str) -> None:
        if self._held.get(key, (0, ""))[1] == token:
            self._held.pop(key, None)
        with self._connections.transaction() as conn:
            row = conn.execute(self._q.read_string, (key,)).fetchone()
            held = None if row is None else parse_lease(row[0])
            if held is not None and held[1] == token:
                conn.execute(self._q.delete_string, (key, row[0]))

    def try_lease(self, key: str, ttl_ms: int) -> KeptLease | None:
        """The lease on ``key`` for ``ttl_ms`` (kept alive until released), or None if held."""
        token = secrets.token_hex(16)
        sent = time.monotonic()
        if not self.take(key, token, ttl_ms):
            return None
        self._held[key] = (os.getpid(), token)
        return KeptLease(
            key,
            ttl_ms,
            sent,
            refresh=lambda: self.refresh(key, token, ttl_ms),
            confirm=lambda: self.holds(key, token),
            release=lambda: self.release(key, token),
            kind="SQLiteLease",
        )
