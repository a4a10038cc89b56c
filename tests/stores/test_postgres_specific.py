"""PostgreSQL rollups beyond the contract: schema, adapters, transactions, injection, leases.

The contract and every processing, report and cleanup scenario already run on
``postgres`` through the fixtures of ``conftest.py``; this module covers what
only this backend has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef, esc
from event_meter.errors import ConfigurationError, LockLostError, StorageError
from event_meter.stores import store_from_url
from event_meter.stores._lease import KeptLease
from event_meter.stores.base import BatchDelta, RollupFile
from event_meter.stores.memory import MemoryStream
from event_meter.stores.postgres import PostgresRollups, install, schema_sql
from event_meter.stores.postgres.adapters import source_for
from pg_server import PostgresServer, count_backends, new_table_prefix
from servers import free_port
from support import FakeClock, random_namespace, record, wait_until

pytestmark = pytest.mark.postgres

NAME = "invoice_delivery"
IDLE = psycopg.pq.TransactionStatus.IDLE
INTRANS = psycopg.pq.TransactionStatus.INTRANS


def tables_of(admin: psycopg.Connection[Any], prefix: str) -> list[str]:
    rows = admin.execute(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE %s ORDER BY tablename",
        [prefix.replace("_", r"\_") + r"\_%"],
    ).fetchall()
    return [row[0] for row in rows]


def interval_report(
    name: str = NAME, param: str = "provider", identity: str = "customer_id"
) -> Report:
    return Report(name).index_by(param).measure_interval_by(identity)


def scenario(rollups: PostgresRollups, clock: FakeClock) -> None:
    """Record three events, process, read: the same small story on every adapter."""
    meter = EventMeter(
        namespace=random_namespace(),
        stream_storage=MemoryStream(),
        rollup_storage=rollups,
        clock=clock,
    )
    try:
        for status, provider in [
            ("success", "postmark"),
            ("failure", "postmark"),
            ("success", "ses"),
        ]:
            record(meter, NAME, status, provider=provider, customer_id=42)
            clock.advance(seconds=10)
        result = meter.process_pending(interval_report())
        assert (result.processed, result.malformed, result.complete) == (3, 0, True)
        assert meter.process_pending(interval_report()).processed == 0
        everything = meter.summary(NAME, version=1)
        assert (everything["count"], everything["failure_count"]) == (3, 1)
        assert (everything["interval_ms_count"], everything["interval_ms_sum"]) == (2, 20_000)
        assert meter.summary(NAME, version=1, by={"provider": "postmark"})["count"] == 2
        assert meter.series(NAME, version=1) is not None
    finally:
        meter.close()


# -- schema and install -------------------------------------------------------------------


def test_schema_has_the_spec_tables_columns_and_indexes(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str
) -> None:
    install(server.dsn, table_prefix=prefix)
    assert tables_of(admin, prefix) == [
        f"{prefix}_processed_entries",
        f"{prefix}_rollups",
        f"{prefix}_strings",
    ]

    def columns(table: str) -> dict[str, tuple[str, str]]:
        rows = admin.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = %s",
            [f"{prefix}_{table}"],
        ).fetchall()
        return {name: (kind, nullable) for name, kind, nullable in rows}

    assert columns("rollups") == {
        "key": ("text", "NO"),
        "fields": ("jsonb", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
        "series": ("bigint", "NO"),
        "bucket": ("text", "NO"),
        "bucket_end_ms": ("bigint", "YES"),
    }
    collations = admin.execute(
        "SELECT column_name, collation_name FROM information_schema.columns"
        " WHERE table_name = %s AND collation_name IS NOT NULL",
        [f"{prefix}_rollups"],
    ).fetchall()
    assert dict(collations) == {"key": "C", "bucket": "C"}  # bytewise key ranges
    assert columns("strings") == {
        "key": ("text", "NO"),
        "value": ("text", "NO"),
        "updated_at": ("timestamp with time zone", "NO"),
    }
    assert columns("processed_entries") == {
        "namespace": ("text", "NO"),
        "event_name": ("text", "NO"),
        "version": ("integer", "NO"),
        "entry_id": ("text", "NO"),
        "created_at": ("timestamp with time zone", "NO"),
    }
    rows = admin.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE %s",
        [prefix.replace("_", r"\_") + r"\_%"],
    ).fetchall()
    indexes = {name: definition.split(" USING ")[1] for name, definition in rows}
    assert indexes == {
        f"{prefix}_rollups_pkey": "btree (key)",
        f"{prefix}_strings_pkey": "btree (key)",
        f"{prefix}_processed_entries_pkey": "btree (namespace, event_name, version, entry_id)",
        f"{prefix}_processed_created_at_idx": "btree (created_at)",
        f"{prefix}_rollups_key_prefix_idx": "btree (key text_pattern_ops)",
        f"{prefix}_strings_key_prefix_idx": "btree (key text_pattern_ops)",
        f"{prefix}_rollups_series_idx": "btree (series, bucket)",
    }


def test_install_is_idempotent_through_every_target(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str
) -> None:
    install(server.dsn, table_prefix=prefix)
    install(server.dsn, table_prefix=prefix)
    with psycopg.connect(server.dsn) as conn:
        install(conn, table_prefix=prefix)
        assert conn.info.transaction_status == IDLE
        assert not conn.closed
    with ConnectionPool(server.dsn, min_size=1, max_size=1, open=True) as pool:
        install(pool, table_prefix=prefix)
    admin.execute(schema_sql(prefix).encode())
    assert len(tables_of(admin, prefix)) == 3


def test_schema_sql_names_only_the_prefix_tables() -> None:
    text = schema_sql()
    assert 'CREATE TABLE IF NOT EXISTS "event_meter_rollups"' in text
    assert 'CREATE TABLE IF NOT EXISTS "event_meter_strings"' in text
    assert 'CREATE TABLE IF NOT EXISTS "event_meter_processed_entries"' in text
    assert '"billing_rollups"' in schema_sql("billing")


@pytest.mark.parametrize(
    "bad", ["", "1abc", "a-b", "a b", 'a";drop table x;--', "ä", "a\x00", "x" * 39, 5]
)
def test_table_prefix_must_be_a_plain_identifier(server: PostgresServer, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix") as caught:
        PostgresRollups(url=server.dsn, table_prefix=bad)
    assert repr(bad) in str(caught.value)
    with pytest.raises(ConfigurationError, match="table_prefix"):
        schema_sql(bad)
    with pytest.raises(ConfigurationError, match="table_prefix"):
        install(server.dsn, table_prefix=bad)


def test_the_longest_allowed_prefix_works(server: PostgresServer) -> None:
    longest = "p" * 38
    install(server.dsn, table_prefix=longest)
    with server.connect() as conn:
        assert len(tables_of(conn, longest)) == 3
        for suffix in ("_rollups", "_strings", "_processed_entries"):
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(longest + suffix)))


def test_tables_are_created_on_first_use_unless_disabled(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str
) -> None:
    ref = ReportRef("ns", NAME, 1)
    store = PostgresRollups(url=server.dsn, table_prefix=prefix, install_schema=False)
    with pytest.raises(StorageError, match="does not exist"):
        store.load_definition(ref)
    store.close()
    assert tables_of(admin, prefix) == []
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    assert store.load_definition(ref) is None
    store.close()
    assert len(tables_of(admin, prefix)) == 3


# -- URL registry, driver and errors -------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_urls_build_postgres_rollups_with_the_table_prefix(
    server: PostgresServer, prefix: str, scheme: str
) -> None:
    url = server.dsn.replace("postgresql://", f"{scheme}://") + f"?table_prefix={prefix}"
    store = store_from_url(url, "rollups")
    assert isinstance(store, PostgresRollups)
    assert store.tables.prefix == prefix
    store.close()
    with pytest.raises(ConfigurationError, match="cannot be used as stream storage"):
        store_from_url(url, "stream")
    with pytest.raises(ConfigurationError, match="table_prefix='a-b'"):
        store_from_url(f"{server.dsn}?table_prefix=a-b", "rollups")


def test_a_missing_driver_names_the_extra(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match='pip install "event-meter\\[postgres\\]"'):
        PostgresRollups(url=server.dsn)
    with pytest.raises(ConfigurationError, match='pip install "event-meter\\[postgres\\]"'):
        EventMeter(rollup_storage=server.dsn)


def test_driver_errors_become_storage_errors() -> None:
    store = PostgresRollups(
        url=f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=5"
    )
    with pytest.raises(StorageError, match=r"postgresql: .* failed") as caught:
        store.load_definition(ReportRef("ns", NAME, 1))
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    store.close()


def test_exactly_one_connection_argument_is_required(server: PostgresServer) -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        PostgresRollups()
    with pytest.raises(ConfigurationError, match="exactly one"):
        PostgresRollups(url=server.dsn, database="default")
    with pytest.raises(ConfigurationError, match="not a psycopg 3 connection"):
        PostgresRollups(connection=object())


def test_an_engine_must_use_the_psycopg_dialect() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="psycopg dialect"):
        PostgresRollups(engine=engine)
    engine.dispose()


# -- adapters ------------------------------------------------------------------------------


def test_url_adapter(server: PostgresServer, prefix: str, clock: FakeClock) -> None:
    store = PostgresRollups(url=f"{server.dsn}?table_prefix={prefix}")
    assert store.background_apply  # one connection under a lock: any thread may apply
    scenario(store, clock)
    store.close()


def test_url_through_the_meter_option(
    server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    meter = EventMeter(
        namespace=random_namespace(),
        stream_storage=MemoryStream(),
        rollup_storage=f"{server.dsn}?table_prefix={prefix}",
        clock=clock,
    )
    record(meter, NAME, provider="postmark", customer_id=1)
    assert meter.process_pending(interval_report()).processed == 1
    assert meter.summary(NAME, version=1)["count"] == 1
    meter.close()


@pytest.mark.parametrize("autocommit", [False, True], ids=["transactional", "autocommit"])
def test_connection_adapter_uses_the_connection_and_leaves_it_open_and_idle(
    server: PostgresServer, prefix: str, clock: FakeClock, autocommit: bool
) -> None:
    with psycopg.connect(server.dsn, autocommit=autocommit) as conn:
        store = PostgresRollups(connection=conn, table_prefix=prefix)
        scenario(store, clock)
        store.close()
        assert not conn.closed
        assert conn.info.transaction_status == IDLE
        assert conn.autocommit is autocommit


def test_pool_adapter(server: PostgresServer, prefix: str, clock: FakeClock) -> None:
    with ConnectionPool(server.dsn, min_size=1, max_size=2, open=True) as pool:
        store = PostgresRollups(pool=pool, table_prefix=prefix)
        assert store.background_apply
        scenario(store, clock)
        store.close()
        assert not pool.closed
        stats = pool.get_stats()
        assert stats.get("requests_num", 0) > 0


def test_sqlalchemy_engine_adapter(server: PostgresServer, prefix: str, clock: FakeClock) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = server.dsn.replace("postgresql://", "postgresql+psycopg://")
    engine = sqlalchemy.create_engine(url, pool_size=2)
    try:
        store = PostgresRollups(engine=engine, table_prefix=prefix)
        assert store.background_apply
        scenario(store, clock)
        store.close()
        with engine.connect() as conn:  # the engine still works and saw our commits
            table = sqlalchemy.table(f"{prefix}_rollups")
            count = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(table))
            assert count.scalar_one() > 0
    finally:
        engine.dispose()


def test_lock_connection_given_is_used_and_not_closed(
    server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as lock_conn:
        store = PostgresRollups(url=server.dsn, table_prefix=prefix, lock_connection=lock_conn)
        scenario(store, clock)
        store.close()
        assert not lock_conn.closed


DJANGO_SCRIPT = """
import sys
import django
from django.conf import settings
from django.db import transaction

port, prefix = sys.argv[1], sys.argv[2]
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "postgres",
                           "USER": "postgres", "HOST": "127.0.0.1", "PORT": port}},
    USE_TZ=True,
)
django.setup()
sys.path.insert(0, sys.argv[3])
from event_meter.errors import ConfigurationError
from event_meter.stores.postgres import PostgresRollups
from support import FakeClock
from stores.test_postgres_specific import scenario, interval_report, record, NAME

store = PostgresRollups(database="default", table_prefix=prefix)
assert store.background_apply is False  # Django connections belong to their thread
scenario(store, FakeClock())
from event_meter import EventMeter
from event_meter.stores.memory import MemoryStream
meter = EventMeter(stream_storage=MemoryStream(), rollup_storage=store)
record(meter, NAME, provider="x", customer_id=1)
with transaction.atomic():
    try:
        meter.process_pending(interval_report())
    except ConfigurationError as exc:
        assert "atomic" in str(exc), exc
    else:
        raise AssertionError("processing ran inside atomic()")
assert meter.process_pending(interval_report()).processed == 1
store.close()
print("django ok")
"""


def test_django_alias_adapter(server: PostgresServer, prefix: str) -> None:
    pytest.importorskip("django")
    tests_dir = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(DJANGO_SCRIPT),
            str(server.port),
            prefix,
            str(tests_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "django ok" in done.stdout


# -- the caller's transaction --------------------------------------------------------------


@pytest.mark.parametrize("report", [Report(NAME), interval_report()], ids=["counts", "intervals"])
def test_processing_inside_a_callers_transaction_is_refused_before_anything(
    admin: psycopg.Connection[Any],
    server: PostgresServer,
    prefix: str,
    clock: FakeClock,
    report: Report,
) -> None:
    with psycopg.connect(server.dsn) as conn:
        store = PostgresRollups(connection=conn, table_prefix=prefix)
        meter = EventMeter(
            namespace=random_namespace(),
            stream_storage=MemoryStream(),
            rollup_storage=store,
            clock=clock,
        )
        record(meter, NAME, provider="postmark", customer_id=1)
        conn.execute("SELECT 1")  # the application opened a transaction
        with pytest.raises(ConfigurationError, match="transaction open"):
            meter.process_pending(report)
        assert conn.info.transaction_status == INTRANS
        assert tables_of(admin, prefix) == []  # nothing was sent, not even the DDL
        conn.rollback()
        assert meter.process_pending(report).processed == 1
        conn.execute("SELECT 1")  # reads inside the caller's transaction are fine
        assert meter.summary(NAME, version=1)["count"] == 1
        assert conn.info.transaction_status == INTRANS
        conn.rollback()
        store.close()


# -- injection ---------------------------------------------------------------------------

ODD = "q'uote\"d \\back%pct_under\x00nul ü名 ;DROP TABLE x;--"


def test_no_sql_injection_through_names_params_values_or_namespaces(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    namespace = "ns'\\%_ ü;--"
    meter = EventMeter(
        namespace=namespace, stream_storage=MemoryStream(), rollup_storage=store, clock=clock
    )
    param, identity = f"p{ODD}", f"c{ODD}"
    report = Report(ODD).index_by(param).measure_interval_by(identity)
    for _ in range(2):
        record(meter, ODD, **{param: ODD, identity: ODD})
        clock.advance(seconds=5)
    assert meter.process_pending(report).processed == 2
    assert meter.summary(ODD, version=1, by={param: ODD})["count"] == 2
    assert meter.summary(ODD, version=1)["interval_ms_sum"] == 5_000
    assert store.list_reports(namespace) == [(ODD, 1)]
    assert len(tables_of(admin, prefix)) == 3
    counts = meter.cleanup_history(before="2100-01-01T00:00:00Z", events=[ODD])
    assert counts["rollup_keys_deleted"] == 4
    assert counts["interval_state_keys_deleted"] == 1
    meter.close()
    store.close()


def test_like_wildcards_in_namespaces_match_only_themselves(
    server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    meters = {}
    for namespace in ("a_b%", "axbyz"):
        meters[namespace] = meter = EventMeter(
            namespace=namespace, stream_storage=MemoryStream(), rollup_storage=store, clock=clock
        )
        for _ in range(2):
            record(meter, NAME, provider="p", customer_id=1)
            clock.advance(seconds=5)
        meter.process_pending(interval_report())
    assert store.list_reports("a_b%") == [(NAME, 1)]
    assert store.list_reports("a_") == []
    counts = meters["a_b%"].cleanup_history(before="2100-01-01T00:00:00Z")
    assert counts["interval_state_keys_deleted"] == 1
    kept = store.read_state(ReportRef("axbyz", NAME, 1), [("customer_id", "1")])
    assert list(kept) == [("customer_id", "1")]
    assert meters["axbyz"].summary(NAME, version=1)["count"] == 2
    store.close()


def test_a_namespace_with_nul_is_a_configuration_error(server: PostgresServer) -> None:
    store = PostgresRollups(url=server.dsn)
    with pytest.raises(ConfigurationError, match="NUL"):
        EventMeter(namespace="a\x00b", stream_storage=MemoryStream(), rollup_storage=store)
    store.close()


# -- corrupt stored values --------------------------------------------------------------


def test_corrupt_stored_numbers_are_treated_as_absent(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    store.bind(namespace="ns", clock=clock)
    ref = ReportRef("ns", NAME, 1)
    file = RollupFile("minute", "202605061015", ())

    def apply(number: int, fields: dict[str, int], state: dict[tuple[str, str], int]) -> None:
        store.apply(
            ref, BatchDelta(f"{number:064x}", [f"e{number}"], {file: {"all": fields}}, state)
        )

    apply(1, {"count": 1}, {("customer_id", "42"): 1000})
    rollups = sql.Identifier(f"{prefix}_rollups")
    strings = sql.Identifier(f"{prefix}_strings")
    admin.execute(
        sql.SQL("UPDATE {} SET fields = %s::jsonb").format(rollups),
        [
            '{"count": "abc", "success_count": "12", "failure_count": null, "duration_ms_min": 1.5,'
            ' "duration_ms_max": {"x": 1}, "duration_ms_sum": "1e3", "started_at_ms_min": 7,'
            ' "started_at_ms_max": "99999999999999999999"}'
        ],
    )
    admin.execute(
        sql.SQL("UPDATE {} SET value = 'soon' WHERE key LIKE '%%:state:%%'").format(strings)
    )
    assert store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [
        {"success_count": 12, "started_at_ms_min": 7, "started_at_ms_max": 99999999999999999999}
    ]
    assert store.read_state(ref, [("customer_id", "42")]) == {}
    apply(
        2,
        {
            "count": 2,
            "success_count": 1,
            "failure_count": 1,
            "duration_ms_min": 5,
            "duration_ms_max": 7,
            "duration_ms_sum": 9,
            "started_at_ms_min": 3,
            "started_at_ms_max": 4,
        },
        {("customer_id", "42"): 500},
    )
    assert store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [
        {
            "count": 2,
            "success_count": 13,
            "failure_count": 1,
            "duration_ms_min": 5,
            "duration_ms_max": 7,
            "duration_ms_sum": 9,
            "started_at_ms_min": 3,
            "started_at_ms_max": 99999999999999999999,
        }
    ]
    assert store.read_state(ref, [("customer_id", "42")]) == {("customer_id", "42"): 500}
    admin.execute(sql.SQL("UPDATE {} SET value = 'x' WHERE key LIKE '%%last_run'").format(strings))
    store.write_watermark("ns", 5)
    admin.execute(sql.SQL("UPDATE {} SET value = 'x' WHERE key LIKE '%%last_run'").format(strings))
    assert store.read_watermark("ns") is None
    store.close()


# -- index keys of a bucket ------------------------------------------------------------------


def test_bucket_index_keys_lists_one_index_of_one_bucket(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    store.bind(namespace="ns", clock=clock)
    ref, other = ReportRef("ns", NAME, 1), ReportRef("ns", NAME, 2)
    one, minute, odd = {"count": 1}, "202605061015", "a|b=c d%"
    customers = {f"customer_id={esc(v)}": one for v in ("42", "43", odd)}
    pairs = {f"customer_id=42|provider={esc(v)}": one for v in ("ses", odd)}
    spaced = {f"{esc('a b')}={esc(odd)}": one}
    store.apply(
        ref,
        BatchDelta(
            "0" * 64,
            ["e:1"],
            {
                RollupFile("minute", minute, ()): {"all": one},
                RollupFile("minute", minute, ("customer_id",)): customers,
                RollupFile("minute", minute, ("customer_id", "provider")): pairs,
                RollupFile("minute", minute, ("customer_id_2",)): {"customer_id_2=1": one},
                RollupFile("minute", minute, ("a b",)): spaced,
                RollupFile("minute", "202605061016", ("customer_id",)): {"customer_id=9": one},
                RollupFile("hour", "2026050610", ("customer_id",)): {"customer_id=7": one},
            },
        ),
    )
    file = {RollupFile("minute", minute, ("customer_id",)): {"customer_id=1": one}}
    store.apply(other, BatchDelta("1" * 64, ["e:2"], file))

    def keys(granularity: str, bucket: str, *params: str) -> set[str]:
        return store.bucket_index_keys(ref, granularity, bucket, params)

    assert keys("minute", minute, "customer_id") == set(customers)
    assert keys("minute", minute, "customer_id", "provider") == set(pairs)
    assert keys("minute", minute, "customer_id_2") == {"customer_id_2=1"}
    assert keys("minute", minute, "a b") == set(spaced)
    assert keys("minute", minute, "provider") == set()
    assert keys("minute", "202605061016", "customer_id") == {"customer_id=9"}
    assert keys("hour", "2026050610", "customer_id") == {"customer_id=7"}
    assert keys("minute", "202605061017", "customer_id") == set()
    assert keys("minute", minute) == set()
    assert store.bucket_index_keys(other, "minute", minute, ("customer_id",)) == {"customer_id=1"}
    # One range of the primary key, whatever the table's size.
    admin.execute("SET enable_seqscan = off")
    query = store._q.bucket_keys.as_string(admin)
    plan = "\n".join(row[0] for row in admin.execute("EXPLAIN " + query, ["a", "b"]))
    assert f"{prefix}_rollups_pkey" in plan, plan
    assert "Index Cond" in plan, plan
    store.close()


# -- leases ----------------------------------------------------------------------------------


@pytest.fixture
def store(server: PostgresServer, prefix: str, clock: FakeClock) -> Iterator[PostgresRollups]:
    install(server.dsn, table_prefix=prefix)
    rollups = PostgresRollups(url=server.dsn, table_prefix=prefix)
    rollups.bind(namespace="ns", clock=clock)
    yield rollups
    rollups.close()


def lease_row(admin: psycopg.Connection[Any], prefix: str, key: str) -> str | None:
    query = sql.SQL("SELECT value FROM {} WHERE key = %s").format(
        sql.Identifier(f"{prefix}_strings")
    )
    row = admin.execute(query, [key]).fetchone()
    return None if row is None else str(row[0])


def set_lease_row(admin: psycopg.Connection[Any], prefix: str, key: str, value: str) -> None:
    query = sql.SQL(
        "INSERT INTO {} (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    ).format(sql.Identifier(f"{prefix}_strings"))
    admin.execute(query, [key, value])


def test_a_held_lease_cannot_be_taken_twice(
    server: PostgresServer, store: PostgresRollups, prefix: str
) -> None:
    ref = ReportRef("ns", NAME, 1)
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    other = PostgresRollups(url=server.dsn, table_prefix=prefix)
    assert other.try_report_lock(ref, 30_000) is None
    assert store.try_report_lock(ref, 30_000) is None
    assert other.try_cleanup_lock("ns", 30_000) is not None  # a different key
    lease.check()
    lease.release()
    again = other.try_report_lock(ref, 30_000)
    assert again is not None
    again.release()
    other.close()


@pytest.mark.parametrize("stored", ["1:deadbeef", "garbage", "", "99999999999999999999999:x"])
def test_an_expired_or_unreadable_lease_is_taken_over(
    admin: psycopg.Connection[Any], store: PostgresRollups, prefix: str, stored: str
) -> None:
    ref = ReportRef("ns", NAME, 1)
    set_lease_row(admin, prefix, ref.process_lock_key(), stored)
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    value = lease_row(admin, prefix, ref.process_lock_key()) or ""
    expires, _, token = value.partition(":")
    assert int(expires) > time.time() * 1000 + 20_000
    assert len(token) == 32
    lease.release()
    assert lease_row(admin, prefix, ref.process_lock_key()) is None


def test_a_live_foreign_lease_is_respected(
    admin: psycopg.Connection[Any], store: PostgresRollups, prefix: str
) -> None:
    key = "ns:process_lock"
    set_lease_row(admin, prefix, key, f"{int(time.time() * 1000) + 60_000}:foreign")
    assert store.try_cleanup_lock("ns", 30_000) is None


def test_a_taken_over_lease_is_lost_and_release_leaves_the_new_holder(
    admin: psycopg.Connection[Any], store: PostgresRollups, prefix: str
) -> None:
    ref = ReportRef("ns", NAME, 1)
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    thief = f"{int(time.time() * 1000) + 60_000}:thief"
    set_lease_row(admin, prefix, ref.process_lock_key(), thief)
    with pytest.raises(LockLostError):
        lease.check()
    lease.release()
    assert lease_row(admin, prefix, ref.process_lock_key()) == thief


def test_a_failed_refresh_loses_the_lease_and_a_new_lock_connection_is_opened(
    admin: psycopg.Connection[Any], store: PostgresRollups, prefix: str
) -> None:
    ref = ReportRef("ns", NAME, 1)
    lease = store.try_report_lock(ref, 300)
    assert isinstance(lease, KeptLease)
    wait_until(lambda: lease.refreshes >= 2, "two refreshes")
    lock_pid = store._leases.channel().conn.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", [lock_pid])
    wait_until(lambda: lease.lost, "the refresher to notice")
    with pytest.raises(LockLostError):
        lease.check()
    lease.release()
    taken: list[Any] = []

    def retake() -> bool:  # our old row expires 300 ms after the last refresh
        taken.append(store.try_report_lock(ref, 30_000))
        return taken[-1] is not None

    wait_until(retake, "the lease to be taken again on a new lock connection")
    assert store._leases.channel().conn.info.backend_pid != lock_pid
    taken[-1].release()


def test_a_lease_lost_mid_pass_raises_and_the_retry_counts_exactly(
    admin: psycopg.Connection[Any],
    server: PostgresServer,
    prefix: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    meter = EventMeter(
        namespace="ns", stream_storage=MemoryStream(), rollup_storage=store, clock=clock
    )
    for _ in range(3):
        record(meter, NAME, provider="p", customer_id=7)
        clock.advance(seconds=2)
    key = ReportRef("ns", NAME, 1).process_lock_key()
    real_read_state = store.read_state

    def steal(*args: Any) -> Any:
        found = real_read_state(*args)
        set_lease_row(admin, prefix, key, "1:thief")  # taken over, then expired again
        return found

    monkeypatch.setattr(store, "read_state", steal)
    with pytest.raises(LockLostError):
        meter.process_pending(interval_report())
    monkeypatch.undo()
    assert meter.summary(NAME, version=1)["count"] == 0
    assert meter.process_pending(interval_report()).processed == 3
    summary = meter.summary(NAME, version=1)
    assert (summary["count"], summary["interval_ms_count"], summary["interval_ms_sum"]) == (
        3,
        2,
        4_000,
    )
    meter.close()
    store.close()


# -- connections: never leaked -------------------------------------------------------------


def test_close_closes_the_lock_connection_and_the_url_connection(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str
) -> None:
    before = count_backends(admin)
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    lease = store.try_cleanup_lock("ns", 30_000)
    assert lease is not None
    assert count_backends(admin) == before + 2  # one data connection, one lock connection
    lease.release()
    store.close()
    wait_until(lambda: count_backends(admin) == before, "the backends to exit")


def test_a_thousand_processing_passes_leak_no_connection(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    before = count_backends(admin)
    meter = EventMeter(
        namespace="ns",
        stream_storage=MemoryStream(),
        rollup_storage=f"{server.dsn}?table_prefix={prefix}",
        clock=clock,
    )
    report = interval_report()
    for _ in range(1_000):
        record(meter, NAME, provider="p", customer_id=1)
        clock.advance(seconds=1)
        assert meter.process_pending(report).processed == 1
    assert count_backends(admin) == before + 2
    assert meter.summary(NAME, version=1)["count"] == 1_000
    meter.close()
    wait_until(lambda: count_backends(admin) == before, "the backends to exit")


def test_pool_processing_takes_one_lock_connection_only(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    before = count_backends(admin)
    with ConnectionPool(server.dsn, min_size=1, max_size=2, open=True) as pool:
        store = PostgresRollups(pool=pool, table_prefix=prefix)
        meter = EventMeter(
            namespace="ns", stream_storage=MemoryStream(), rollup_storage=store, clock=clock
        )
        for _ in range(50):
            record(meter, NAME, provider="p", customer_id=1)
            clock.advance(seconds=1)
            meter.process_pending(interval_report())
        assert count_backends(admin) <= before + 3  # the pool's two, one lock connection
        store.close()
        meter.close()
    wait_until(lambda: count_backends(admin) == before, "the backends to exit")


@pytest.mark.postgres
def test_missing_tables_error_says_how_to_create_them(server: PostgresServer) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=new_table_prefix(), install_schema=False)
    store.bind(namespace="ns:missing", clock=FakeClock())
    try:
        with pytest.raises(StorageError, match="event-meter postgres install"):
            store.load_definition(ReportRef("ns:missing", "invoice_delivery", 1))
    finally:
        store.close()


def test_schema_sql_needs_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    text = schema_sql("billing")
    assert 'CREATE TABLE IF NOT EXISTS "billing_rollups"' in text
    assert '"billing_processed_entries"' in text


def test_non_postgres_url_error_does_not_echo_the_url() -> None:
    with pytest.raises(ConfigurationError) as caught:
        source_for("mysql://admin:s3cret@db/app")
    assert "s3cret" not in str(caught.value)
    assert "'mysql'" in str(caught.value)


def test_apply_sends_what_prepare_apply_encoded(
    store: PostgresRollups, monkeypatch: pytest.MonkeyPatch
) -> None:
    from event_meter.stores.postgres import _apply

    ref = ReportRef("ns", NAME, 1)
    applied = BatchDelta(
        "c" * 64,
        ["f.jsonl:1"],
        {RollupFile("minute", "202605061015", ()): {"all": {"count": 1}}},
        {("customer_id", "7"): 1_778_062_500_000},
    )
    store.prepare_apply(ref, applied)

    def encode_again(*args: Any) -> Any:
        raise AssertionError("apply encoded the delta again")

    monkeypatch.setattr(_apply, "encode_apply", encode_again)
    store.apply(ref, applied)
    assert store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [{"count": 1}]
    assert store.read_state(ref, [("customer_id", "7")]) == {
        ("customer_id", "7"): 1_778_062_500_000
    }
    assert store.processed_ids(ref, ["f.jsonl:1"]) == {"f.jsonl:1"}
