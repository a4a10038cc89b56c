"""A slowed PostgreSQL server under a processor: a lock holder asleep in ``pg_sleep``.

Another session takes the row locks of every rollup row (``SELECT ... FOR UPDATE``)
and then sleeps in ``pg_sleep`` inside its open transaction while a processor
applies a batch that touches those rows. ``PostgresRollups`` sets no
``lock_timeout`` or ``statement_timeout`` of its own, so the server's (or the
user's, through libpq ``options`` in the URL) decide:

| case | what the user sees | result |
| --- | --- | --- |
| no timeout (the default) | ``process_pending`` waits for the holder, then returns | exact |
| ``lock_timeout`` in the URL | ``StorageError`` (lock timeout) before the holder wakes | exact |

While it waits (seen in ``pg_stat_activity`` as a ``Lock`` wait) the report lease
(ttl 0.4 s) is refreshed on its own connection and never lost. With the timeout,
the pass after the holder committed is the exact one. "Exact" covers the
counts per customer and the interval samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from event_meter import EventMeter
from event_meter.errors import StorageError
from event_meter.stores.file.stream import FileStream
from event_meter.stores.postgres import PostgresRollups
from event_meter.stores.postgres.adapters import split_url
from faults.events import assert_counts, record, report
from pg_server import PostgresServer, new_table_prefix
from support import FakeClock

pytestmark = pytest.mark.postgres

SLEEP_S: Final = 1.5
LOCK_TTL_S: Final = 0.4
DEADLINE_S: Final = 15.0
MINUTE: Final = datetime(2026, 5, 6, 10, 15, tzinfo=UTC)


@pytest.fixture
def meters(
    postgres_server: PostgresServer, tmp_path: Path, namespace: str
) -> Iterator[Callable[..., EventMeter]]:
    """Makes ``file->postgres`` meters on one table prefix; the URL may carry options."""
    made: list[EventMeter] = []
    prefix = new_table_prefix()

    def make(clock: FakeClock, query: str = "") -> EventMeter:
        url = f"{postgres_server.dsn}?table_prefix={prefix}{query}"
        meter = EventMeter(
            namespace=namespace,
            stream_storage=FileStream(tmp_path / "stream", host="h"),
            rollup_storage=PostgresRollups(url=url),
            clock=clock,
            lock_ttl=LOCK_TTL_S,
        )
        made.append(meter)
        return meter

    yield make
    for meter in made:
        meter.stream.close()
        meter.rollups.close()


class SleepingLockHolder(threading.Thread):
    """Locks every rollup row of ``table``, then sleeps ``SLEEP_S`` in ``pg_sleep``, commits.

    ``locked`` is set once the locks are held; ``saw_waiter`` once another backend
    was seen waiting on a lock (``pg_stat_activity.wait_event_type = 'Lock'``).
    """

    def __init__(self, server: PostgresServer, table: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.table = table
        self.locked = threading.Event()
        self.saw_waiter = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from psycopg import sql

        try:
            with self.server.connect() as conn, conn.transaction():
                query = sql.SQL("SELECT key FROM {} FOR UPDATE").format(sql.Identifier(self.table))
                assert conn.execute(query).fetchall(), "no rollup rows to lock"
                self.locked.set()
                watcher = threading.Thread(target=self._watch, daemon=True)
                watcher.start()
                conn.execute("SELECT pg_sleep(%s)", [SLEEP_S])
                watcher.join()
        except BaseException as exc:  # reported by the test through ``error``
            self.error = exc
            self.locked.set()

    def _watch(self) -> None:
        deadline = time.monotonic() + SLEEP_S
        with self.server.connect() as conn:
            while time.monotonic() < deadline and not self.saw_waiter.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                if row is not None and row[0] > 0:
                    self.saw_waiter.set()
                time.sleep(0.02)  # polling the server, bounded by the sleep


def _hold_rows(server: PostgresServer, meter: EventMeter) -> SleepingLockHolder:
    store = meter.rollups
    assert isinstance(store, PostgresRollups)
    holder = SleepingLockHolder(server, f"{store.tables.prefix}_rollups")
    holder.start()
    assert holder.locked.wait(DEADLINE_S), "the holder never took the locks"
    assert holder.error is None, holder.error
    return holder


def _first_pass(meter: EventMeter, clock: FakeClock) -> list[dict[str, Any]]:
    """Rows for the holder to lock: 8 events processed; then 8 more pending."""
    clock.set(MINUTE)
    payloads = record(meter, clock, 8)
    clock.set(MINUTE + timedelta(minutes=2))
    assert meter.process_pending(report()).processed == 8
    clock.set(MINUTE + timedelta(minutes=1))
    meter.stream.close()  # a new file for the next events
    payloads += record(meter, clock, 8, first=8)
    clock.set(MINUTE + timedelta(minutes=3))
    return payloads


def test_a_processor_waits_for_a_sleeping_lock_holder_and_counts_exactly(
    postgres_server: PostgresServer, meters: Callable[..., EventMeter]
) -> None:
    """User sees: ``process_pending`` takes about as long as the holder sleeps and
    then returns normally; its lease survives the wait (a lost lease would raise
    ``LockLostError``). Nothing lost or doubled: the counts and the interval samples
    are exact.
    """
    clock = FakeClock()
    meter = meters(clock)
    payloads = _first_pass(meter, clock)
    holder = _hold_rows(postgres_server, meter)
    started = time.monotonic()
    result = meter.process_pending(report())
    waited = time.monotonic() - started
    holder.join(DEADLINE_S)
    assert holder.error is None, holder.error
    assert holder.saw_waiter.is_set(), "the apply never waited on the row locks"
    assert (result.processed, result.complete, result.locked) == (8, True, False)
    assert waited >= SLEEP_S / 2  # it did wait for the holder (which slept SLEEP_S)
    assert_counts(meter, payloads)


def test_a_lock_timeout_from_the_url_fails_the_pass_and_the_next_is_exact(
    postgres_server: PostgresServer, meters: Callable[..., EventMeter]
) -> None:
    """User sees: with ``options=-c lock_timeout=200ms`` in the URL, ``process_pending``
    raises ``StorageError`` (lock timeout) well before the holder wakes. Nothing lost:
    the transaction rolled back, the rows were released, and the next pass (after the
    holder committed) processes them once.
    """
    clock = FakeClock()
    meter = meters(clock, "&options=-c%20lock_timeout%3D200ms")
    payloads = _first_pass(meter, clock)
    holder = _hold_rows(postgres_server, meter)
    started = time.monotonic()
    with pytest.raises(StorageError, match="lock timeout"):
        meter.process_pending(report())
    assert time.monotonic() - started < SLEEP_S
    assert_counts(meter, payloads[:8])  # nothing of the failed batch was applied
    holder.join(DEADLINE_S)
    assert holder.error is None, holder.error

    again = meter.process_pending(report())
    assert (again.processed, again.skipped_already_processed, again.complete) == (8, 0, True)
    assert_counts(meter, payloads)


def test_libpq_options_survive_the_table_prefix_split_byte_for_byte() -> None:
    """libpq decodes only ``%XX`` in a URL (a ``+`` stays a ``+``), so the query left
    after taking ``table_prefix`` out must be passed on exactly as written."""
    url, prefix = split_url(
        "postgresql://u@h/db?options=-c%20lock_timeout%3D200ms&table_prefix=p&application_name=a+b"
    )
    assert prefix == "p"
    assert urlsplit(url).query == "options=-c%20lock_timeout%3D200ms&application_name=a+b"
