"""PostgreSQL hardening: hostile text everywhere, LIKE wildcards, and connection leaks.

``test_postgres_specific.py`` already checks invalid table prefixes, one
processing pass with hostile text in every position, LIKE wildcards in
namespaces, NUL in a namespace, and 1,000 passes through a URL store. This
module adds:

- hostile text that must round-trip **exactly**: every stored key is the SPEC 6
  logical key, values that differ only in a LIKE wildcard or an escape stay
  apart, and no other table of the database changes;
- LIKE wildcards (``_``, ``%``, ``\\``) in event names: reports named ``a_b``
  and ``axb`` never see or clean each other;
- a table prefix smuggled through a URL query is rejected before connecting;
- 1,000 processing passes leak no server backend through a pool or a given
  connection either (counted in ``pg_stat_activity``);
- the fast paths keep the exact semantics: a summary over corrupt stored values
  (answered by the exact aggregate), markers that are already stored (the
  ``ON CONFLICT DO NOTHING`` fallback of the COPY), markers with COPY's special
  characters, and cleanup's key ranges at the ends of time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef, esc
from event_meter._time import datetime_to_ms
from event_meter.errors import ConfigurationError
from event_meter.stores import store_from_url
from event_meter.stores.base import BatchDelta, RollupFile, RollupStore
from event_meter.stores.memory import MemoryStream
from event_meter.stores.postgres import PostgresRollups
from pg_server import PostgresServer, count_backends
from support import FakeClock, record, wait_until

pytestmark = pytest.mark.postgres

FAR_FUTURE = "2100-01-01T00:00:00Z"
PARAM = "v'%_\\"
IDENTITY = "c\x00%"
HOSTILE = [
    "a_b",
    "axb",
    "a%b",
    "a%%b",
    "a\\b",
    "a\\\\b",
    "it's",
    'say "hi"',
    "nul\x00byte",
    "ünïcödé 名前 🚀",
    "k=v|x:y",
    "'; DROP TABLE x; --",
    "%",
    "_",
    "",
]


def database_tables(admin: psycopg.Connection[Any], prefix: str) -> dict[str, int]:
    """Every table of the database outside ``prefix`` with its row count."""
    rows = admin.execute(
        "SELECT schemaname, tablename FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    counts: dict[str, int] = {}
    for schema, table in rows:
        if table.startswith(f"{prefix}_"):
            continue
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[f"{schema}.{table}"] = int(admin.execute(query).fetchone()[0])  # type: ignore[index]
    return counts


def stored_rollup_keys(admin: psycopg.Connection[Any], prefix: str) -> set[str]:
    query = sql.SQL("SELECT key FROM {}").format(sql.Identifier(f"{prefix}_rollups"))
    return {row[0] for row in admin.execute(query)}


def test_hostile_text_round_trips_exactly_and_touches_no_other_table(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    sentinel = f"{prefix}x_sentinel"  # outside the store's three tables
    admin.execute(sql.SQL("CREATE TABLE {} (v text)").format(sql.Identifier(sentinel)))
    admin.execute(sql.SQL("INSERT INTO {} VALUES ('keep')").format(sql.Identifier(sentinel)))
    try:
        before = database_tables(admin, prefix)
        namespace = "ns'\"\\%_ ü;--"
        name = "ev'\"\\%_ü\x00;--"
        store = PostgresRollups(url=server.dsn, table_prefix=prefix)
        meter = EventMeter(
            namespace=namespace, stream_storage=MemoryStream(), rollup_storage=store, clock=clock
        )
        report = Report(name).index_by(PARAM).measure_interval_by(IDENTITY, group_by=PARAM)
        counts = {value: 1 + i % 3 for i, value in enumerate(HOSTILE)}
        for value, count in counts.items():
            for _ in range(count):
                record(meter, name, **{PARAM: value, IDENTITY: value})
                clock.advance(seconds=1)
        assert meter.process_pending(report).processed == sum(counts.values())

        for value, count in counts.items():
            summary = meter.summary(name, version=1, by={PARAM: value})
            assert summary["count"] == count, value
            assert summary["interval_ms_count"] == count - 1, value
            assert summary["interval_ms_sum"] == 1_000 * (count - 1), value
        assert meter.summary(name, version=1)["count"] == sum(counts.values())
        assert meter.report_definition(name, version=1) == report.definition()
        assert store.list_reports(namespace) == [(name, 1)]

        ref = ReportRef(namespace, name, 1)
        index_keys = {"all"} | {f"{esc(PARAM)}={esc(v)}" for v in counts}
        buckets = {("minute", "202605061015"), ("minute", "202605061016"), ("hour", "2026050610")}
        keys = stored_rollup_keys(admin, prefix)
        expected = {ref.rollup_key(g, b, k) for g, b in buckets for k in index_keys}
        assert keys <= expected
        assert {key.rsplit(":", 1)[-1] for key in keys} == index_keys
        state = store.read_state(ref, [(IDENTITY, value) for value in counts])
        assert set(state) == {(IDENTITY, value) for value in counts}

        assert database_tables(admin, prefix) == before
        meter.close()
        store.close()
    finally:
        admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(sentinel)))


WILDCARD_NAMES = ("a_b", "axb", "a%b", "a%25b", "aXYb", "a\\b", "a\\\\b", "a")


def test_like_wildcards_in_event_names_never_widen_reads_or_cleanup(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    meter = EventMeter(
        namespace="ns", stream_storage=MemoryStream(), rollup_storage=store, clock=clock
    )
    reports = {name: Report(name).index_by("p").measure_interval_by("c") for name in WILDCARD_NAMES}
    for i, name in enumerate(WILDCARD_NAMES):
        for _ in range(i + 2):
            record(meter, name, p="x", c=1)
            clock.advance(seconds=1)
        assert meter.process_pending(reports[name]).processed == i + 2
    assert store.list_reports("ns") == sorted((name, 1) for name in WILDCARD_NAMES)
    for i, name in enumerate(WILDCARD_NAMES):
        assert meter.summary(name, version=1)["count"] == i + 2
        assert meter.summary(name, version=1)["interval_ms_count"] == i + 1

    ref = ReportRef("ns", "a_b", 1)
    state_rows = admin.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE key LIKE '%%:state:%%'").format(
            sql.Identifier(f"{prefix}_strings")
        )
    ).fetchone()
    assert state_rows is not None
    assert state_rows[0] == len(WILDCARD_NAMES)
    # Markers are forgotten after the delete; put some back to see cleanup's reach.
    for name in WILDCARD_NAMES:
        store.apply(ReportRef("ns", name, 1), BatchDelta("0" * 64, [f"marker-{name}"], {}, {}))
    keys = stored_rollup_keys(admin, prefix)
    own = {key for key in keys if key.startswith(f"ns:rollup:{ref.report_part}:")}
    assert len(own) == 4  # (all, p=x) x (minute, hour)
    counts = meter.cleanup_history(before=FAR_FUTURE, events=["a_b"])
    assert counts == {
        "rollup_keys_deleted": 4,
        "interval_state_keys_deleted": 1,
        "processed_entries_deleted": 1,
    }
    assert stored_rollup_keys(admin, prefix) == keys - own
    assert store.read_state(ref, [("c", "1")]) == {}
    assert meter.summary("a_b", version=1)["count"] == 0
    for i, name in enumerate(WILDCARD_NAMES[1:], start=1):
        assert meter.summary(name, version=1)["count"] == i + 2, name
        other = ReportRef("ns", name, 1)
        assert store.read_state(other, [("c", "1")]) != {}, name
        assert store.processed_ids(other, [f"marker-{name}"]) == {f"marker-{name}"}, name
    meter.close()
    store.close()


@pytest.mark.parametrize(
    "query",
    [
        "table_prefix=t%22%3B%20DROP%20TABLE%20x%3B--",
        "table_prefix=t%27",
        "table_prefix=t%5C",
        "table_prefix=t%25",
        "table_prefix=t%00",
        "table_prefix=t%C3%BC",
    ],
)
def test_a_hostile_table_prefix_in_a_url_is_rejected_before_connecting(query: str) -> None:
    url = f"postgresql://nobody@127.0.0.1:1/none?{query}"
    with pytest.raises(ConfigurationError, match="table_prefix"):
        store_from_url(url, "rollups")
    with pytest.raises(ConfigurationError, match="table_prefix"):
        PostgresRollups(url=url)


# -- connections ------------------------------------------------------------------------------


def _thousand_passes(store: PostgresRollups, clock: FakeClock) -> None:
    meter = EventMeter(
        namespace="ns", stream_storage=MemoryStream(), rollup_storage=store, clock=clock
    )
    report = Report("invoice_delivery").index_by("p").measure_interval_by("c")
    for _ in range(1_000):
        record(meter, "invoice_delivery", p="x", c=1)
        clock.advance(seconds=1)
        assert meter.process_pending(report).processed == 1
    assert meter.summary("invoice_delivery", version=1)["count"] == 1_000
    meter.close()


def test_a_thousand_passes_through_a_pool_leak_no_connection(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    before = count_backends(admin)
    with ConnectionPool(server.dsn, min_size=1, max_size=3, open=True) as pool:
        store = PostgresRollups(pool=pool, table_prefix=prefix)
        _thousand_passes(store, clock)
        assert count_backends(admin) <= before + 3 + 1  # the pool's at most 3, one lock connection
        store.close()
        wait_until(lambda: count_backends(admin) <= before + 3, "the lock connection to close")
        assert not pool.closed
    wait_until(lambda: count_backends(admin) == before, "the backends to exit")


@pytest.mark.parametrize("autocommit", [False, True], ids=["transactional", "autocommit"])
def test_a_thousand_passes_through_a_given_connection_leak_no_connection(
    admin: psycopg.Connection[Any],
    server: PostgresServer,
    prefix: str,
    clock: FakeClock,
    autocommit: bool,
) -> None:
    before = count_backends(admin)
    with psycopg.connect(server.dsn, autocommit=autocommit) as conn:
        store = PostgresRollups(connection=conn, table_prefix=prefix)
        _thousand_passes(store, clock)
        assert count_backends(admin) == before + 2  # the given one and one lock connection
        store.close()
        wait_until(lambda: count_backends(admin) == before + 1, "the lock connection to close")
        assert not conn.closed
    wait_until(lambda: count_backends(admin) == before, "the backends to exit")


# -- markers at batch scale -------------------------------------------------------------------


def test_marker_lookups_stay_linear_under_a_generic_plan(
    server: PostgresServer, prefix: str
) -> None:
    """``processed_ids`` and ``forget`` of a 20,000-row batch take well under a second.

    psycopg prepares a statement on its 5th run and PostgreSQL then switches to a
    generic plan, where ``entry_id = ANY($4)`` is a filter that walks the whole
    array for every stored marker (quadratic: seconds per batch). Forced here.
    """
    with psycopg.connect(
        server.dsn, autocommit=True, options="-c plan_cache_mode=force_generic_plan"
    ) as conn:
        store = PostgresRollups(connection=conn, table_prefix=prefix)
        store.bind(namespace="ns", clock=FakeClock())
        ref = ReportRef("ns", "invoice_delivery", 1)
        ids = [f"202605061015-host-1-abcdef12.jsonl:{i}" for i in range(20_000)]
        store.apply(ref, BatchDelta("0" * 64, ids, {}, {}))
        started = time.perf_counter()
        assert store.processed_ids(ref, ids) == set(ids)
        store.forget(ref, ids)
        seconds = time.perf_counter() - started
        assert store.processed_ids(ref, ids) == set()
        store.close()
    assert seconds < 1.0, f"{seconds:.2f} s for 20,000 markers"


# -- the fast paths keep the exact semantics ---------------------------------------------------

HOUR_FIELDS = {
    "count": 3,
    "success_count": 2,
    "duration_ms_min": 5,
    "duration_ms_max": 90,
    "duration_ms_sum": 120,
    "duration_ms_h12": 3,
    "not_a_field": 1,
}
CORRUPT = ['"12"', "1.5", "2.0", '{"x": 1}', "null", "true", '"abc"', '" 7"', '"1e3"', "1e3"]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
@pytest.mark.parametrize("corrupt", CORRUPT)
def test_a_summary_over_corrupt_values_is_the_merge_of_the_scan(
    admin: psycopg.Connection[Any],
    server: PostgresServer,
    prefix: str,
    clock: FakeClock,
    autocommit: bool,
    corrupt: str,
) -> None:
    """The fast aggregate fails or shows a fraction on such values; the exact one answers."""
    with psycopg.connect(server.dsn, autocommit=autocommit) as conn:
        store = PostgresRollups(connection=conn, table_prefix=prefix)
        store.bind(namespace="ns", clock=clock)
        ref = ReportRef("ns", "invoice_delivery", 1)
        files = {RollupFile("hour", f"20260506{h}", ()): {"all": HOUR_FIELDS} for h in "012"}
        store.apply(ref, BatchDelta("0" * 64, ["e:1"], files))
        summary = store.summarize(ref, "hour", (), "all", None)
        assert summary == RollupStore.summarize(store, ref, "hour", (), "all", None)
        assert summary[1]["duration_ms_h12"] == 9
        assert "not_a_field" not in summary[1]
        for name in ("count", "duration_ms_min", "duration_ms_max", "duration_ms_h12"):
            admin.execute(
                sql.SQL(
                    "UPDATE {} SET fields = fields || jsonb_build_object(%s::text, %s::jsonb)"
                    " WHERE key = %s"
                ).format(sql.Identifier(f"{prefix}_rollups")),
                [name, corrupt, ref.rollup_key("hour", "2026050601", "all")],
            )
        for limit in (None, 2):
            summary = store.summarize(ref, "hour", (), "all", limit)
            assert summary == RollupStore.summarize(store, ref, "hour", (), "all", limit)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        store.close()


def test_an_apply_over_stored_markers_keeps_them_and_applies_the_rest(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    """The markers' COPY meets a unique violation; the ``ON CONFLICT DO NOTHING`` insert
    then marks the new ids and leaves the stored ones (and their time) as they were."""
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    store.bind(namespace="ns", clock=clock)
    ref = ReportRef("ns", "invoice_delivery", 1)
    file = RollupFile("minute", "202605061015", ())
    store.apply(ref, BatchDelta("0" * 64, ["f:1", "f:2"], {file: {"all": {"count": 2}}}))
    clock.advance(hours=1)
    store.apply(ref, BatchDelta("1" * 64, ["f:2", "f:3"], {file: {"all": {"count": 2}}}))
    assert store.processed_ids(ref, ["f:1", "f:2", "f:3", "f:4"]) == {"f:1", "f:2", "f:3"}
    assert store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [{"count": 4}]
    query = sql.SQL("SELECT entry_id, created_at FROM {} ORDER BY entry_id").format(
        sql.Identifier(f"{prefix}_processed_entries")
    )
    times = dict(admin.execute(query).fetchall())
    assert times["f:1"] == times["f:2"] < times["f:3"]
    store.close()


def test_markers_with_copy_special_characters_round_trip(
    server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    """Markers travel as COPY text: tabs, newlines, backslashes and ``\\N`` are escaped."""
    namespace = "ns\t\\N\n"
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    store.bind(namespace=namespace, clock=clock)
    ref = ReportRef(namespace, "a\tb\\c", 1)
    ids = ["t\tab:1", "new\nline:2", "back\\slash:3", "cr\r:4", "\\N", "\\.", "ünï 名:5", "p:6"]
    store.apply(ref, BatchDelta("0" * 64, ids))
    assert store.processed_ids(ref, [*ids, "p:7"]) == set(ids)
    store.forget(ref, ids[:4])
    assert store.processed_ids(ref, ids) == set(ids[4:])
    assert store.cleanup(ref, 4_102_444_800_000)["processed_entries_deleted"] == len(ids) - 4
    store.close()


def test_cleanup_bounds_at_the_ends_of_time(
    admin: psycopg.Connection[Any], server: PostgresServer, prefix: str, clock: FakeClock
) -> None:
    """Cleanup walks key ranges; a ``before`` beyond or before every bucket id still
    deletes exactly the buckets that ended, and never a key whose bucket does not parse."""
    store = PostgresRollups(url=server.dsn, table_prefix=prefix)
    store.bind(namespace="ns", clock=clock)
    ref = ReportRef("ns", "invoice_delivery", 1)
    one = {"all": {"count": 1}}
    files = {
        RollupFile("minute", "202605061015", ()): one,
        RollupFile("minute", "999912312358", ()): one,
        RollupFile("hour", "0001010100", ()): one,
        RollupFile("minute", "2026050610xx", ()): one,
    }
    store.apply(ref, BatchDelta("0" * 64, ["e:1"], files))
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    assert store.cleanup(ref, datetime_to_ms(first))["rollup_keys_deleted"] == 0
    assert store.cleanup(ref, 4_102_444_800_000)["rollup_keys_deleted"] == 2  # 2026, year 1
    assert store.cleanup(ref, datetime_to_ms(last))["rollup_keys_deleted"] == 1  # 9999
    assert len(stored_rollup_keys(admin, prefix)) == 1  # the one that does not parse
    store.close()
