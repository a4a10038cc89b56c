"""SQLite connections of one store: one per thread and per process, and the error boundary.

- **Per thread**: each thread gets its own connection (``threading.local``),
  so no connection is ever used by two threads at once. Connections are opened
  with ``check_same_thread=False`` only so that ``close`` (and the pruning of
  connections whose thread has ended) can close them from another thread.
- **Per process**: a forked child never touches a connection of its parent
  (SQLite's locks are per process: using, or even closing, an inherited
  connection can corrupt the parent's lock state). The ``os.register_at_fork``
  child hook moves every inherited connection to a graveyard that is never
  closed and clears the thread-local slots; the child opens its own. A pid
  check covers forks that skip the hooks.
- **Settings** of every connection: WAL journal (readers never block the
  writer), ``synchronous=FULL`` (every commit is fsynced, so a committed apply
  survives power loss: the stream rows it covers are deleted right after),
  ``busy_timeout`` (writers queue for the lock instead of failing), and the
  merge function of ``_fields``.
- **Transactions**: ``transaction()`` is ``BEGIN IMMEDIATE`` ... ``COMMIT``
  (the write lock is taken up front, so a transaction never fails half way
  for a lock), rolled back on any exception. Statements outside it autocommit.
- **Errors**: ``storage_errors`` is the one place where ``sqlite3.Error`` and
  ``OSError`` become ``StorageError``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from event_meter.errors import ConfigurationError, LockLostError, StorageError
from event_meter.stores.sqlite._fields import MERGE_FUNCTION, merge_json

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "Connections", "storage_errors"]

DEFAULT_BUSY_TIMEOUT_MS: Final = 10_000
SYNCHRONOUS: Final = "FULL"

_LIVE: weakref.WeakSet[Connections] = weakref.WeakSet()
# Connections inherited through fork: kept referenced forever so that nothing in
# the child ever closes them (a close would release locks the parent relies on).
_GRAVEYARD: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for connections in list(_LIVE):
        connections.forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def storage_errors(operation: str, path: Path) -> Iterator[None]:
    """The one place where driver and file system failures become ``StorageError``."""
    try:
        yield
    except (StorageError, ConfigurationError, LockLostError):
        raise
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(
            f"sqlite: {operation} failed on {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc


class Connections:
    """This thread's connection to one database file, opened on first use."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._guard = threading.Lock()
        self._open: dict[threading.Thread, sqlite3.Connection] = {}
        self._pid = os.getpid()
        _LIVE.add(self)

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened, configured and registered on first use)."""
        if self._pid != os.getpid():
            self.forget_inherited()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # see the module docstring: close from any thread
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise ConfigurationError(
                    f"sqlite: {str(self.path)!r} cannot use WAL journal mode (got {mode!r}); "
                    "put the database on a local file system"
                )
            conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
            conn.create_function(MERGE_FUNCTION, 2, merge_json, deterministic=True)
        except BaseException:
            conn.close()
            raise
        with self._guard:
            self._prune()
            self._open[threading.current_thread()] = conn
        return conn

    def _prune(self) -> None:
        """Close the connections of threads that have ended (their slot is gone)."""
        for thread in [t for t in self._open if not t.is_alive()]:
            self._open.pop(thread).close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on this thread's connection; COMMIT, or ROLLBACK on any error."""
        conn = self.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is broken; SQLite rolls back on close or recovery
            raise

    def forget_inherited(self) -> None:
        """In a forked child: never use (nor close) the parent's connections.

        Runs without taking ``_guard``: a parent thread may have held it at the
        fork, and the child's copy would then stay locked for good.
        """
        if self._pid == os.getpid():
            return
        self._guard = threading.Lock()
        _GRAVEYARD.extend(self._open.values())
        self._open = {}
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close every connection this process opened (call it once threads are done)."""
        with self._guard:
            if self._pid != os.getpid():
                return
            opened, self._open = self._open, {}
            self._local = threading.local()
        for conn in opened.values():
            conn.close()
