"""What only ``SQLiteRollups`` does: URLs, settings, exactness, tampered rows, leases, fork.

The shared contract runs through ``test_rollup_contract.py``; these tests look at
the file itself (with a separate ``sqlite3`` connection) where the contract
cannot. SQLite needs no server: nothing here is ever skipped.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from event_meter.errors import ConfigurationError, LockLostError, StorageError
from event_meter.rollup import merge_all
from event_meter.stores import SQLiteRollups, store_from_url
from event_meter.stores.base import BatchDelta, RollupFile, RollupStore
from event_meter.stores.memory import MemoryStream
from event_meter.stores.sqlite.lock import wall_ms
from support import FakeClock, past_minute_clock, record

NAME = "invoice_delivery"
HOUR = RollupFile("hour", "2026050610", ())
MINUTE = RollupFile("minute", "202605061015", ())


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "rollups.db"


@pytest.fixture
def store(database: Path, clock: FakeClock, namespace: str) -> Iterator[SQLiteRollups]:
    rollups = SQLiteRollups(database)
    rollups.bind(namespace=namespace, clock=clock)
    yield rollups
    rollups.close()


@pytest.fixture
def ref(store: SQLiteRollups) -> ReportRef:
    return ReportRef(store.namespace, NAME, 1)


@pytest.fixture
def raw(database: Path) -> Iterator[sqlite3.Connection]:
    """A connection of our own to the store's file, as a person querying it would open."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=10)
    yield conn
    conn.close()


_numbers = iter(range(1, 1_000_000))


def delta(
    rollups: dict[RollupFile, dict[str, dict[str, Any]]] | None = None,
    state: dict[tuple[str, str], int] | None = None,
) -> BatchDelta:
    number = next(_numbers)
    return BatchDelta(f"{number:064x}", [f"e{number}"], rollups or {}, state or {})


def stored_fields(raw: sqlite3.Connection, index_key: str = "all") -> str:
    row = raw.execute(
        "SELECT fields FROM event_meter_rollups WHERE index_key = ? AND bucket = ?",
        (index_key, HOUR.bucket_id),
    ).fetchone()
    assert row is not None
    return str(row[0])


# -- URLs and construction ------------------------------------------------------------------


def test_urls_give_relative_and_absolute_paths_and_a_table_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///data/rollups.db", "rollups")
    assert isinstance(relative, SQLiteRollups)
    assert relative.path == tmp_path / "data" / "rollups.db"  # resolved once, at construction
    assert relative.tables.prefix == "event_meter"
    absolute = store_from_url(f"sqlite:///{tmp_path}/abs.db?table_prefix=billing_v2", "rollups")
    assert isinstance(absolute, SQLiteRollups)
    assert (absolute.path, absolute.tables.prefix) == (tmp_path / "abs.db", "billing_v2")
    spaced = SQLiteRollups(url=f"sqlite:///{tmp_path}/with%20space.db")
    assert spaced.path.name == "with space.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://:memory:", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite://db.example.com/rollups.db", "names host"),
        ("sqlite://localhost/rollups.db", "names host"),
        ("sqlite:///file:rollups.db?mode=memory", "URI filenames"),
        ("sqlite:///r.db?table_prefix=bad-prefix", "must match"),
        ("sqlite:///r.db?table_prefix=", "must match"),
        ("sqlite:///r.db?timeout=5", "unknown options"),
        ("sqlite:///r.db?table_prefix=a&table_prefix=b", "more than once"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        store_from_url(url, "rollups")


def test_sqlite_is_a_rollup_store_only_and_errors_name_the_option() -> None:
    with pytest.raises(ConfigurationError, match="cannot be used as stream storage"):
        store_from_url("sqlite:///r.db", "stream")
    with pytest.raises(ConfigurationError, match=r"rollup_storage='sqlite://:memory:'"):
        EventMeter(stream_storage="memory://", rollup_storage="sqlite://:memory:")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"path": ":memory:"},
        {"path": ""},
        {"path": "a.db", "url": "sqlite:///b.db"},
        {"path": "a.db", "table_prefix": "no spaces"},
        {"path": "a.db", "busy_timeout_ms": -1},
    ],
)
def test_bad_constructor_arguments_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteRollups(**kwargs)


def test_a_namespace_with_nul_is_refused(store: SQLiteRollups, clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        store.bind(namespace="a\x00b", clock=clock)


def test_connections_use_wal_full_sync_and_the_busy_timeout(
    database: Path, clock: FakeClock
) -> None:
    store = SQLiteRollups(database, busy_timeout_ms=1234)
    store.bind(namespace="ns", clock=clock)
    store.read_watermark("ns")  # opens the file and creates the tables
    conn = store._connections.get()
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (1234,)
    store.close()


def test_table_prefixes_share_one_file_without_seeing_each_other(
    database: Path, clock: FakeClock, raw: sqlite3.Connection
) -> None:
    first, second = SQLiteRollups(database), SQLiteRollups(database, table_prefix="other")
    for store in (first, second):
        store.bind(namespace="ns", clock=clock)
    ref = ReportRef("ns", NAME, 1)
    first.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    assert second.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [None]
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"event_meter_rollups", "other_rollups", "other_processed_entries"} <= tables
    first.close()
    second.close()


def test_the_folder_of_the_file_is_created_and_an_unusable_path_is_a_storage_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    nested = SQLiteRollups(tmp_path / "a" / "b" / "r.db")
    nested.bind(namespace="ns", clock=clock)
    assert nested.read_watermark("ns") is None
    assert (tmp_path / "a" / "b" / "r.db").is_file()
    nested.close()
    folder = SQLiteRollups(tmp_path)  # a directory, not a database file
    folder.bind(namespace="ns", clock=clock)
    with pytest.raises(StorageError, match="read_watermark"):
        folder.read_watermark("ns")


# -- exactness, open-ended fields, tampered rows --------------------------------------------


def test_sums_stay_exact_beyond_64_bits(store: SQLiteRollups, ref: ReportRef) -> None:
    big = 2**63 - 1
    for _ in range(3):
        store.apply(ref, delta({HOUR: {"all": {"count": big, "duration_ms_sum": 2**70}}}))
    expected = {"count": 3 * big, "duration_ms_sum": 3 * 2**70}
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [expected]
    assert store.summarize(ref, "hour", (), "all", None) == (1, expected)


def test_field_names_are_open_ended_and_merge_by_their_suffix(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"duration_ms_h37": 2, "x_min": 5, "x_max": 5}}}))
    store.apply(ref, delta({HOUR: {"all": {"duration_ms_h37": 3, "x_min": 2, "x_max": 9}}}))
    assert stored_fields(raw) == '{"duration_ms_h37":5,"x_min":2,"x_max":9}'


def test_tampered_stored_values_count_as_absent_when_merging_and_reading(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"count": 1, "duration_ms_min": 5}}}))
    raw.execute(
        "UPDATE event_meter_rollups SET fields = ?",
        ('{"count":"7x","duration_ms_min":1.5,"duration_ms_max":"12","success_count":true}',),
    )
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"duration_ms_max": 12}]
    store.apply(ref, delta({HOUR: {"all": {"count": 2, "duration_ms_min": 9}}}))
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [
        {"count": 2, "duration_ms_min": 9, "duration_ms_max": 12}
    ]
    for garbage in ("not json", "[1, 2]", "5"):
        raw.execute("UPDATE event_meter_rollups SET fields = ?", (garbage,))
        assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{}]
        assert store.summarize(ref, "hour", (), "all", None) == (1, {})
    store.apply(ref, delta({HOUR: {"all": {"count": 4}}}))
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 4}]


def test_tampered_state_counts_as_absent_and_cleanup_removes_it(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection
) -> None:
    good, bad = ("customer_id", "1"), ("customer_id", "2")
    store.apply(ref, delta(state={good: 1_000, bad: 1_000}))
    raw.execute(
        "UPDATE event_meter_strings SET value = 'garbage' WHERE key = ?", (ref.state_key(*bad),)
    )
    assert store.read_state(ref, [good, bad]) == {good: 1_000}
    store.apply(ref, delta(state={bad: 500}))  # absent: any start moves it forward
    assert store.read_state(ref, [bad]) == {bad: 500}
    raw.execute("UPDATE event_meter_strings SET value = '-' WHERE key = ?", (ref.state_key(*bad),))
    assert store.cleanup(ref, 0)["interval_state_keys_deleted"] == 1  # unparseable: gone
    assert store.read_state(ref, [good, bad]) == {good: 1_000}


def test_summarize_agrees_with_scan_and_merge(store: SQLiteRollups, ref: ReportRef) -> None:
    for hour in range(24):
        file = RollupFile("hour", f"20260506{hour:02d}", ())
        fields = {"count": hour, "duration_ms_min": 100 - hour, "duration_ms_h12": 2}
        store.apply(ref, delta({file: {"all": fields}}))
    for limit in (None, 1, 5, 24, 30):
        scanned = store.scan_rollups(ref, "hour", (), "all", limit)
        assert store.summarize(ref, "hour", (), "all", limit) == (
            len(scanned),
            merge_all(fields for _, fields in scanned),
        )
    assert RollupStore.summarize is type(store).summarize  # measured: SQL was slower


# -- one transaction ------------------------------------------------------------------------


def test_a_failing_apply_leaves_nothing_behind(
    store: SQLiteRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    broken = delta({HOUR: {"all": {"count": 5}}}, {("customer_id", "1"): 9})
    monkeypatch.setattr(store._q, "mark_processed", "INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(StorageError, match="apply failed"):
        store.apply(ref, broken)
    monkeypatch.undo()
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 1}]
    assert store.read_state(ref, [("customer_id", "1")]) == {}
    assert store.processed_ids(ref, broken.entry_ids) == set()
    assert not store._connections.get().in_transaction


def test_a_writer_waits_for_another_writer_then_fails_cleanly(
    database: Path, clock: FakeClock, raw: sqlite3.Connection
) -> None:
    store = SQLiteRollups(database, busy_timeout_ms=50)
    store.bind(namespace="ns", clock=clock)
    ref = ReportRef("ns", NAME, 1)
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    raw.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StorageError, match="locked"):
            store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
        # WAL: readers are never blocked by the writer.
        assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 1}]
    finally:
        raw.execute("ROLLBACK")
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 2}]
    store.close()


# -- indexes: bucket_index_keys and query plans ---------------------------------------------


def test_bucket_index_keys_lists_one_bucket_of_one_index(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    provider, pair = ("provider",), ("provider", "queue")
    store.apply(
        ref,
        delta(
            {
                RollupFile("hour", "2026050610", provider): {"provider=a": {"count": 1}},
                RollupFile("hour", "2026050610", pair): {"provider=a|queue=q": {"count": 1}},
                RollupFile("hour", "2026050611", provider): {"provider=b": {"count": 1}},
                RollupFile("minute", "202605061015", provider): {"provider=c": {"count": 1}},
                HOUR: {"all": {"count": 3}},
            }
        ),
    )
    store.apply(ref, delta({RollupFile("hour", "2026050610", provider): {"provider=d": {}}}))
    assert store.bucket_index_keys(ref, "hour", "2026050610", provider) == {
        "provider=a",
        "provider=d",
    }
    assert store.bucket_index_keys(ref, "hour", "2026050610", pair) == {"provider=a|queue=q"}
    assert store.bucket_index_keys(ref, "minute", "202605061015", provider) == {"provider=c"}
    assert store.bucket_index_keys(ref, "hour", "2026050612", provider) == set()
    other = ReportRef(ref.namespace, NAME, 2)
    assert store.bucket_index_keys(other, "hour", "2026050610", provider) == set()


def _plan(store: SQLiteRollups, query: str, params: tuple[Any, ...]) -> str:
    rows = store._connections.get().execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
    return " / ".join(str(row[-1]) for row in rows)


def test_reads_scans_listings_and_cleanups_are_index_ranges(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    statements = store._q
    report = f"{ref.namespace}:rollup:{ref.report_part}"
    for query, params, index in [
        (statements.read_range, (report, "hour", "all", "a", "b"), "PRIMARY KEY"),
        (statements.scan, (report, "hour", "all", -1), "PRIMARY KEY"),
        (
            statements.bucket_index_keys,
            (report, "hour", "2026050610", "provider"),
            "COVERING INDEX event_meter_rollups_bucket_idx",
        ),
        (
            statements.cleanup_rollups,
            (report, "hour", "2026050610", 0),
            "INDEX event_meter_rollups_bucket_idx",
        ),
        (statements.cleanup_state, ("a:", "a;", 0), "PRIMARY KEY"),
        (statements.cleanup_markers, ("ns", NAME, 1, 0), "PRIMARY KEY"),
        (statements.string_keys, ("a:", "a;"), "PRIMARY KEY"),
    ]:
        plan = _plan(store, query, params)
        assert "SEARCH" in plan, (query, plan)
        assert index in plan, (query, plan)


# -- leases ---------------------------------------------------------------------------------


def _lease_value(raw: sqlite3.Connection, ref: ReportRef) -> str:
    row = raw.execute(
        "SELECT value FROM event_meter_strings WHERE key = ?", (ref.process_lock_key(),)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection, database: Path
) -> None:
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    expires, _, token = _lease_value(raw, ref).partition(":")
    assert wall_ms() < int(expires) <= wall_ms() + 30_000  # real time, not the fake clock
    other = SQLiteRollups(database)
    other.bind(namespace=store.namespace, clock=store.clock)
    assert other.try_report_lock(ref, 30_000) is None
    raw.execute(  # the holder stalled: its lease ran out
        "UPDATE event_meter_strings SET value = ? WHERE key = ?",
        (f"{wall_ms() - 1}:{token}", ref.process_lock_key()),
    )
    taken = other.try_report_lock(ref, 30_000)
    assert taken is not None
    with pytest.raises(LockLostError):
        lease.check()
    lease.release()  # never removes the new holder's row
    taken.check()
    taken.release()
    other.close()


def test_an_unparseable_lease_row_is_taken(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection
) -> None:
    store.write_watermark(ref.namespace, 1)  # creates the tables
    raw.execute(
        "INSERT INTO event_meter_strings VALUES (?, 'garbage', 0)", (ref.process_lock_key(),)
    )
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    lease.release()


def test_an_apply_under_a_lost_lease_raises_and_writes_nothing(
    store: SQLiteRollups, ref: ReportRef, raw: sqlite3.Connection
) -> None:
    """The fence inside the transaction: taken over, or expired, nothing is written."""
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    token = _lease_value(raw, ref).partition(":")[2]
    key = ref.process_lock_key()
    update = "UPDATE event_meter_strings SET value = ? WHERE key = ?"
    for value, why in [
        (f"{wall_ms() + 60_000}:thief", "held by another"),
        (f"{wall_ms() - 1}:{token}", "expired"),
    ]:
        raw.execute(update, (value, key))
        with pytest.raises(LockLostError, match=why):
            store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
        assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [None]
    raw.execute(update, (f"{wall_ms() + 60_000}:{token}", key))
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    lease.release()
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))  # no lease held: no fence
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 2}]


def test_a_lease_is_refreshed_on_the_refresher_threads_own_connection(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    from support import wait_until

    lease = store.try_report_lock(ref, 200)  # refreshed every 100 ms
    assert lease is not None
    wait_until(lambda: getattr(lease, "refreshes", 0) >= 2, "two refreshes")
    lease.check()
    lease.release()
    assert len(store._connections._open) >= 2  # this thread's and the refresher's


# -- threads and processes ------------------------------------------------------------------


def test_each_thread_has_its_own_connection_and_ended_threads_are_closed(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    seen: list[sqlite3.Connection] = []

    def work() -> None:
        for _ in range(20):
            store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
        seen.append(store._connections.get())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(conn) for conn in seen}) == 4
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 80}]
    assert len(store._connections._open) == 1  # the ended threads' were pruned and closed
    with pytest.raises(sqlite3.ProgrammingError):
        seen[0].execute("SELECT 1")


def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_working(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    parent_conn = store._connections.get()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            assert store._connections.get() is not parent_conn
            store.apply(ref, delta({HOUR: {"all": {"count": 10}}}))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    assert store._connections.get() is parent_conn
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 11}]


def test_close_closes_and_the_store_reopens_on_next_use(
    store: SQLiteRollups, ref: ReportRef
) -> None:
    store.apply(ref, delta({HOUR: {"all": {"count": 1}}}))
    first = store._connections.get()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")
    assert store.read_rollups(ref, "hour", (), "all", [HOUR.bucket_id]) == [{"count": 1}]


# -- end to end -----------------------------------------------------------------------------


def test_a_meter_on_a_sqlite_url_processes_and_reports(
    tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    url = f"sqlite:///{tmp_path}/meter.db?table_prefix=billing"
    meter = EventMeter(
        namespace=namespace, stream_storage=MemoryStream(), rollup_storage=url, clock=clock
    )
    report = Report(NAME).index_by("provider").measure_interval_by("customer_id")
    for provider in ("postmark", "postmark", "ses"):
        record(meter, NAME, provider=provider, customer_id=1)
        clock.advance(seconds=1)
    past_minute_clock(clock)
    result = meter.process_pending(report)
    assert (result.processed, result.complete) == (3, True)
    assert meter.summary(report, by={"provider": "postmark"})["count"] == 2
    assert meter.summary(report)["interval_ms_count"] == 2
    meter.close()
    conn = sqlite3.connect(tmp_path / "meter.db")
    assert conn.execute("SELECT count(*) FROM billing_rollups").fetchone()[0] > 0
    conn.close()
