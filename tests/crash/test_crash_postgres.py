"""Crash safety of ``file->postgres`` inside the apply transaction and around its lease.

The generic points (before apply, after apply, after delete before forget, and the
file stream's own) already run on ``file->postgres`` through ``PAIRINGS``. This
module adds the points that only PostgreSQL has, all inside the ONE transaction
of an apply (SPEC 11):

- ``before-rollups``: the transaction is open, the rollup upsert has not run;
- ``before-markers``: rollups and state are upserted, the markers' COPY has
  not run;
- ``before-commit``: every statement ran, COMMIT has not.

At each one the processor is SIGKILLed (a forked child), raises, or has its own
backend terminated by ``pg_terminate_backend`` from another connection. Just
before, the committed state of the three tables is saved; right after, it must
be identical (the transaction rolled back completely). Then one processor or
three competing ones retry, and every bucket must equal the truth.

A lease lost mid-pass (another holder overwrites the lease row, or the refresher
fails because the lock connection was terminated) ends the pass in
``LockLostError``; the retry counts exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import pytest

from crash.pairings import PAIRINGS, Pairing, Storage
from crash.points import CrashPoint, Trigger, armed
from crash.scenarios import (
    REPORTS,
    compete,
    crash_in_child,
    crash_inside_apply,
    finish_and_check,
    lose_lease_after_apply,
    recorded,
)
from crash.workload import BATCH_SIZE, EVENT, interval_report
from event_meter import EventMeter
from event_meter._keys import ReportRef
from event_meter.errors import LockLostError, StorageError
from event_meter.stores._lease import KeptLease
from event_meter.stores.postgres import PostgresRollups
from support import FakeClock

PG: Final = next(p for p in PAIRINGS if p.name == "file->postgres")
WHERE: Final = ("before-rollups", "before-markers", "before-commit")
AT: Final = 3  # the third apply: rows before it are applied, rows after it are pending

pytestmark = pytest.mark.parametrize("pairing", [pytest.param(PG, id=PG.name, marks=PG.marks)])


def _admin() -> Any:
    import pg_server

    return pg_server.session_server().connect()


def _prefix(storage: Storage) -> str:
    prefix: str = storage._shared["table_prefix"]
    return prefix


def committed(prefix: str) -> dict[str, Any]:
    """What another connection sees of the three tables (leases left out: they move)."""
    from psycopg import sql

    def rows(query: str, table: str) -> list[list[Any]]:
        text = sql.SQL(query).format(sql.Identifier(f"{prefix}_{table}"))
        with _admin() as conn:
            return [list(row) for row in conn.execute(text).fetchall()]

    return {
        "rollups": rows("SELECT key, fields::text FROM {} ORDER BY key", "rollups"),
        "strings": rows(
            "SELECT key, value FROM {} WHERE key NOT LIKE '%%\\_lock%%' ORDER BY key", "strings"
        ),
        "markers": rows(
            "SELECT namespace, event_name, version, entry_id FROM {} ORDER BY entry_id",
            "processed_entries",
        ),
    }


def terminate(pid: int) -> None:
    """``pg_terminate_backend(pid)`` from another connection; returns once it is gone."""
    with _admin() as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        deadline = time.monotonic() + 10
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} outlived pg_terminate_backend"
            time.sleep(0.01)  # polling the server, not waiting for time to pass


class _Watched:
    """The apply's pinned connection (or a cursor of it); ``before(statement)`` runs
    before each watched statement or COPY."""

    def __init__(
        self,
        target: Any,
        before: Callable[[Any, str], None],
        names: dict[int, str],
        conn: Any = None,
    ):
        self._target = target
        self._before = before
        self._names = names
        self._conn = target if conn is None else conn

    def _watch(self, query: Any) -> None:
        name = self._names.get(id(query))
        if name is not None:
            self._before(self._conn, name)

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._watch(query)
        return self._target.execute(query, *args, **kwargs)

    def copy(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._watch(query)
        return self._target.copy(query, *args, **kwargs)

    @contextmanager
    def cursor(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._target.cursor(*args, **kwargs) as cursor:
            yield _Watched(cursor, self._before, self._names, self._conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def in_apply(where: str, snapshot: Path, *, terminate_backend: bool = False) -> CrashPoint:
    """A crash ``where`` inside the transaction of apply number ``AT``.

    Just before it fires, the committed state goes to ``snapshot`` (JSON). With
    ``terminate_backend`` the trigger terminates the apply's own backend from
    another connection and lets the apply carry on into the dead connection.
    """
    statement = {"before-rollups": "rollups", "before-markers": "markers"}.get(where, "commit")

    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        store = meter.rollups
        assert isinstance(store, PostgresRollups)
        prefix = store.tables.prefix
        names = {
            id(store._q.apply_rollups): "rollups",
            id(store._q.copy_markers): "markers",
            id(store._q.mark_processed): "markers",
        }
        applying = [False]
        pinned: list[Any] = [None]
        real_apply = store.apply
        real_transaction = store._source.transaction

        def save() -> None:
            snapshot.write_text(json.dumps(committed(prefix)))
            if terminate_backend:
                terminate(pinned[0].info.backend_pid)

        def reach(conn: Any, name: str) -> None:
            if name == statement:
                pinned[0] = conn
                trigger.tick(name, save)

        def apply(*args: Any, **kwargs: Any) -> Any:
            applying[0] = True
            try:
                return real_apply(*args, **kwargs)
            finally:
                applying[0] = False

        @contextmanager
        def transaction(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with real_transaction(*args, **kwargs) as conn:
                if not applying[0]:
                    yield conn
                    return
                yield _Watched(conn, reach, names)
                reach(conn, "commit")

        mp.setattr(store, "apply", apply)
        mp.setattr(store._source, "transaction", transaction)

    kind = "terminate-" if terminate_backend else ""
    return CrashPoint(f"{kind}{where}", AT, install)


def assert_rolled_back(storage: Storage, snapshot: Path) -> None:
    """The committed state equals the one saved just before the crash inside the apply."""
    assert snapshot.exists(), "the crash point was never reached"
    before = json.loads(snapshot.read_text())
    assert before["rollups"], "the crash should follow applied batches"
    assert committed(_prefix(storage)) == before


# -- killed, failed or terminated inside the apply transaction ---------------------------------


@pytest.mark.parametrize("where", WHERE)
def test_kill_inside_the_apply_transaction_then_retry(
    pairing: Pairing, where: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    crash_inside_apply(
        pairing,
        interval_report(),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=True,
    )


@pytest.mark.parametrize("report_kind", sorted(REPORTS))
@pytest.mark.parametrize("where", WHERE)
def test_kill_inside_the_apply_transaction_then_competing_retries(
    pairing: Pairing,
    where: str,
    report_kind: str,
    tmp_path: Path,
    clock: FakeClock,
    namespace: str,
) -> None:
    crash_inside_apply(
        pairing,
        REPORTS[report_kind](),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=True,
        compete_seed=len(where) * 7 + len(report_kind),
    )


@pytest.mark.parametrize("where", WHERE)
def test_exception_inside_the_apply_transaction_then_retry(
    pairing: Pairing, where: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    crash_inside_apply(
        pairing,
        interval_report(),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=False,
    )


@pytest.mark.parametrize("retry", ["same-processor", "competing"])
@pytest.mark.parametrize("where", WHERE)
def test_backend_terminated_inside_the_apply_transaction_then_retry(
    pairing: Pairing, where: str, retry: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """``pg_terminate_backend`` of the apply's own connection (e.g. between COPY and INSERT).

    The pass fails with ``StorageError`` and nothing of that transaction is left;
    the same meter reconnects on its next pass, or competing processors take over.
    """
    report = interval_report()
    snapshot = tmp_path / "before-crash.json"
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        meter = storage.meter()
        crash = in_apply(where, snapshot, terminate_backend=True)
        with armed(meter, crash, lambda: None) as trigger, pytest.raises(StorageError):
            meter.process_pending(report, batch_size=BATCH_SIZE)
        assert trigger.fired
        assert_rolled_back(storage, snapshot)
        if retry == "same-processor":
            result = meter.process_pending(report, batch_size=BATCH_SIZE)
            assert result.complete, result
        else:
            compete(storage, report, seed=len(where))
        finish_and_check(storage, report)


def test_a_transaction_killed_in_the_first_apply_leaves_no_row(
    pairing: Pairing, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """Killed just before the first COMMIT: no rollup, state or marker row exists."""
    report = interval_report()
    snapshot = tmp_path / "before-crash.json"
    crash = CrashPoint("before-first-commit", 1, in_apply("before-commit", snapshot).install)
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        assert crash_in_child(storage, report, crash) == "killed"
        after = committed(_prefix(storage))
        assert (after["rollups"], after["markers"]) == ([], [])
        assert [key for key, _ in after["strings"]] == [
            ReportRef(namespace, EVENT, 1).definition_key()
        ]
        finish_and_check(storage, report)


# -- a lease lost mid-pass ---------------------------------------------------------------------


def _set_lease_row(storage: Storage, namespace: str, value: str | None) -> None:
    from psycopg import sql

    table = sql.Identifier(f"{_prefix(storage)}_strings")
    key = ReportRef(namespace, EVENT, 1).process_lock_key()
    with _admin() as conn:
        if value is None:
            conn.execute(sql.SQL("DELETE FROM {} WHERE key = %s").format(table), [key])
        else:
            conn.execute(
                sql.SQL("UPDATE {} SET value = %s WHERE key = %s").format(table), [value, key]
            )


def test_a_lease_taken_over_mid_pass_raises_and_the_retries_count_exactly(
    pairing: Pairing, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = interval_report()
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        meter = storage.meter()
        thief = f"{int(time.time() * 1000) + 600_000}:thief"
        with pytest.MonkeyPatch.context() as mp:
            lose_lease_after_apply(
                mp, meter, 2, lambda _: _set_lease_row(storage, namespace, thief)
            )
            with pytest.raises(LockLostError):
                meter.process_pending(report, batch_size=BATCH_SIZE)
        assert meter.process_pending(report, batch_size=BATCH_SIZE).locked  # the thief holds it
        _set_lease_row(storage, namespace, None)  # the thief finished and released it
        compete(storage, report, seed=5)
        finish_and_check(storage, report)


def test_a_failed_refresh_mid_pass_raises_and_the_retry_counts_exactly(
    pairing: Pairing, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """The lock connection is terminated: the refresher fails, the pass stops before writing."""
    report = interval_report()

    def lose(lease: KeptLease) -> None:
        store = meter.rollups
        assert isinstance(store, PostgresRollups)
        terminate(store._leases.channel().conn.info.backend_pid)
        deadline = time.monotonic() + 10
        while not lease.lost:  # the refresher runs every ttl/2
            assert time.monotonic() < deadline, "the refresher never noticed"
            time.sleep(0.01)  # polling the refresher thread

    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        meter = storage.meter()
        with pytest.MonkeyPatch.context() as mp:
            lose_lease_after_apply(mp, meter, 2, lose)
            with pytest.raises(LockLostError, match="refresh failed"):
                meter.process_pending(report, batch_size=BATCH_SIZE)
        storage.settle()  # our own lease row expires: nobody could release it
        result = meter.process_pending(report, batch_size=BATCH_SIZE)  # a new lock connection
        assert (result.complete, result.locked) == (True, False), result
        finish_and_check(storage, report)
