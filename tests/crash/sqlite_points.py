"""Crash points inside the ONE transaction of a ``SQLiteRollups`` apply.

``in_apply(where, snapshot, at)`` wraps the store's transaction so that a
trigger fires just before the ``where`` statement of apply number ``at``:

- ``before-rollups``: the write lock is held (``BEGIN IMMEDIATE``), nothing written;
- ``before-state``: the rollup rows are upserted, the interval state is not;
- ``before-markers``: rollups and state are written, the markers are not;
- ``before-commit``: every statement ran, COMMIT has not.

Used by ``test_crash_sqlite.py`` and by the stress suite's ``file->sqlite`` kills.
``committed(database)`` is what another connection sees of the three tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

from crash.points import CrashPoint, Trigger
from event_meter import EventMeter
from event_meter.stores.sqlite import SQLiteRollups

__all__ = ["WHERE", "committed", "in_apply"]

WHERE: Final = ("before-rollups", "before-state", "before-markers", "before-commit")


def committed(database: Path) -> dict[str, Any]:
    """What another connection sees of the three tables (leases left out: they move)."""
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return {
            "rollups": conn.execute(
                "SELECT key, fields FROM event_meter_rollups ORDER BY key"
            ).fetchall(),
            "strings": conn.execute(
                "SELECT key, value FROM event_meter_strings"
                " WHERE key NOT LIKE '%\\_lock%' ESCAPE '\\' ORDER BY key"
            ).fetchall(),
            "markers": conn.execute(
                "SELECT namespace, event_name, version, entry_id"
                " FROM event_meter_processed_entries ORDER BY entry_id"
            ).fetchall(),
        }
    finally:
        conn.close()


class _Watched:
    """The apply's connection; ``before(name)`` runs before each watched statement."""

    def __init__(
        self, conn: sqlite3.Connection, before: Callable[[str], None], names: dict[str, str]
    ) -> None:
        self._conn = conn
        self._before = before
        self._names = names

    def execute(self, query: str, *args: Any) -> Any:
        if query in self._names:
            self._before(self._names[query])
        return self._conn.execute(query, *args)

    def executemany(self, query: str, *args: Any) -> Any:
        if query in self._names:
            self._before(self._names[query])
        return self._conn.executemany(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def in_apply(where: str, snapshot: Path | None, at: int) -> CrashPoint:
    """A crash ``where`` (one of ``WHERE``) inside the transaction of apply number ``at``.

    Just before it fires, the committed state goes to ``snapshot`` (JSON), if given.
    """
    statement = where.removeprefix("before-")

    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        store = meter.rollups
        assert isinstance(store, SQLiteRollups)
        names = {
            store._q.apply_rollups: "rollups",
            store._q.apply_state: "state",
            store._q.mark_processed: "markers",
        }
        applying = [False]
        real_apply = store.apply
        real_transaction = store._connections.transaction

        def save() -> None:
            if snapshot is not None:
                snapshot.write_text(json.dumps(committed(store.path)))

        def reach(name: str) -> None:
            if name == statement:
                trigger.tick(name, save)

        def apply(*args: Any, **kwargs: Any) -> Any:
            applying[0] = True
            try:
                return real_apply(*args, **kwargs)
            finally:
                applying[0] = False

        @contextmanager
        def transaction() -> Iterator[Any]:
            with real_transaction() as conn:
                if not applying[0]:
                    yield conn
                    return
                yield _Watched(conn, reach, names)
                reach("commit")

        mp.setattr(store, "apply", apply)
        mp.setattr(store._connections, "transaction", transaction)

    return CrashPoint(f"in-apply-{where}", at, install)
