"""Redis-only behaviour: key shapes, TTLs, scripts, protocols, journal recovery, leases.

The generic behaviour runs in the contract suites; this module checks what only
the Redis backends have, on the session's real ``redis-server``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

import event_meter
from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from event_meter._time import datetime_to_ms
from event_meter.errors import ConfigurationError, LockLostError, StorageError
from event_meter.stores import store_from_url
from event_meter.stores.base import BatchDelta, Fields, RollupFile, Undecodable
from event_meter.stores.redis import _apply
from event_meter.stores.redis._scripts import run_pipeline
from event_meter.stores.redis.lock import RedisLease, try_lease
from event_meter.stores.redis.rollups import RedisRollups
from event_meter.stores.redis.stream import RedisStream
from servers import RedisServer
from support import FakeClock, random_namespace, wait_until

pytestmark = pytest.mark.redis

NAME = "invoice_delivery"
TTL_MS = 3_600_000


def ms(hour: int, minute: int = 0, second: int = 0) -> int:
    return datetime_to_ms(datetime(2026, 5, 6, hour, minute, second, tzinfo=UTC))


def fields(count: int, **more: int) -> Fields:
    return {"count": count, "success_count": count, **more}


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as made:
        yield made


@pytest.fixture
def rollups(redis_server: RedisServer, namespace: str, clock: FakeClock) -> Iterator[RedisRollups]:
    store = RedisRollups(url=redis_server.url, ttl_ms=TTL_MS)
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()


@pytest.fixture
def stream(redis_server: RedisServer, namespace: str, clock: FakeClock) -> Iterator[RedisStream]:
    store = RedisStream(url=redis_server.url)
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()


@pytest.fixture
def ref(namespace: str) -> ReportRef:
    return ReportRef(namespace, NAME, 1)


def big_delta(batch: str, buckets: int = 12, entry_ids: list[str] | None = None) -> BatchDelta:
    """A delta over many rollup keys and state keys, so it spans several chunks."""
    rollups = {
        RollupFile("minute", f"2026050610{m:02d}", ("provider",)): {
            f"provider=p{p}": fields(1, duration_ms_min=m, duration_ms_max=m) for p in range(5)
        }
        for m in range(buckets)
    }
    state = {("customer_id", str(c)): ms(10, c % 60) for c in range(40)}
    return BatchDelta(batch, entry_ids or [f"{batch}:{i}" for i in range(30)], rollups, state)


def all_rollups(store: RedisRollups, ref: ReportRef, buckets: int = 12) -> list[Any]:
    return [
        store.read_rollups(
            ref,
            "minute",
            ("provider",),
            f"provider=p{p}",
            [f"2026050610{m:02d}" for m in range(buckets)],
        )
        for p in range(5)
    ]


# -- key shapes and TTLs ---------------------------------------------------------------------------


def test_rollup_keys_share_the_report_hash_tag(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef, namespace: str
) -> None:
    rollups.store_definition(ref, {"name": NAME, "fingerprint": "x"})
    rollups.apply(
        ref,
        BatchDelta(
            "b" * 64,
            ["1778062500000-0"],
            {
                RollupFile("minute", "202605061015", ()): {"all": fields(1)},
                RollupFile("hour", "2026050610", ()): {"all": fields(1)},
            },
            {("customer_id", "4 2"): ms(10)},
        ),
    )
    tag = "{invoice_delivery:v1}"
    expected = {
        f"{namespace}:rollup:{tag}:minute:202605061015:all",
        f"{namespace}:rollup:{tag}:hour:2026050610:all",
        f"{namespace}:state:{tag}:interval:customer_id:4+2",
        f"{namespace}:definition:{tag}",
        f"{namespace}:processed:{tag}:1778062500000-0",
        f"{namespace}:buckets:{tag}:hour:all",  # hour buckets only: minutes are SCANned
    }
    assert {k.decode() for k in client.scan_iter(match=f"{namespace}:*")} == expected
    assert client.zrange(f"{namespace}:buckets:{tag}:hour:all", 0, -1) == [b"2026050610"]
    assert client.hgetall(f"{namespace}:rollup:{tag}:minute:202605061015:all") == {
        b"count": b"1",
        b"success_count": b"1",
    }
    assert client.get(f"{namespace}:state:{tag}:interval:customer_id:4+2") == str(ms(10)).encode()
    assert (
        client.get(f"{namespace}:processed:{tag}:1778062500000-0") == b"2026-05-06T10:15:00.000000Z"
    )


def test_apply_sends_what_prepare_apply_encoded(
    rollups: RedisRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = BatchDelta(
        "c" * 64, ["f.jsonl:1"], {RollupFile("minute", "202605061015", ()): {"all": fields(1)}}
    )
    rollups.prepare_apply(ref, applied)

    def encode_again(*args: Any) -> Any:
        raise AssertionError("apply encoded the delta again")

    monkeypatch.setattr(_apply, "encode_apply", encode_again)
    rollups.apply(ref, applied)
    assert rollups.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [fields(1)]
    assert rollups.processed_ids(ref, ["f.jsonl:1"]) == {"f.jsonl:1"}


def test_every_key_of_one_report_hashes_to_one_cluster_slot(ref: ReportRef) -> None:
    from redis.crc import key_slot

    keys = RedisRollups(url="redis://127.0.0.1:1/0").keys(ref)
    names = [
        keys.rollup("hour", "2026050610", "provider=a"),
        keys.state("customer_id", "42"),
        keys.processed("1-0"),
        keys.definition(),
        keys.process_lock(),
        keys.journal(),
        keys.guard("f" * 64, 3),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_stream_and_quarantine_keys_have_no_tag(
    stream: RedisStream, client: redis.Redis, namespace: str, clock: FakeClock
) -> None:
    meter = EventMeter(
        namespace=namespace, stream_storage=stream, rollup_storage="memory://", clock=clock
    )
    stream.append("odd name", {"name": "odd name", "status": "success", "started_at": "x"})
    client.xadd(stream.stream_key("odd name"), {"payload": b"{not json"})
    result = meter.process_pending(Report("odd name"))
    assert (result.processed, result.malformed) == (2, 2)
    assert stream.stream_key("odd name") == f"{namespace}:stream:odd+name"
    records = client.lrange(f"{namespace}:quarantine:odd+name", 0, -1)
    assert len(records) == 2
    newest = orjson.loads(records[0])
    assert set(newest) == {"id", "reason", "raw", "at"}
    assert newest["raw"] == "{not json"
    assert 0 < client.pttl(f"{namespace}:quarantine:odd+name") <= 7 * 86_400_000
    assert client.xlen(stream.stream_key("odd name")) == 0


def test_rollup_state_and_marker_keys_expire_after_the_ttl_and_definitions_never(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    rollups.store_definition(ref, {"name": NAME})
    rollups.apply(ref, big_delta("c" * 64, buckets=1))
    keys = rollups.keys(ref)
    for key in (
        keys.rollup("minute", "202605061000", "provider=p0"),
        keys.state("customer_id", "7"),
        keys.processed("c" * 64 + ":0"),
    ):
        assert 0 < client.pttl(key) <= TTL_MS, key
    assert client.pttl(keys.definition()) == -1
    assert client.exists(keys.journal()) == 0, "the journal entry is gone after the apply"
    assert list(client.scan_iter(match=f"{keys.pattern(f'{ref.namespace}:applied:')}")) == []


# -- scripts, protocols, clients -------------------------------------------------------------------


def test_scripts_are_loaded_again_after_script_flush(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    file = RollupFile("minute", "202605061015", ())
    rollups.apply(ref, BatchDelta("1" * 64, ["a"], {file: {"all": fields(1)}}))
    client.script_flush()
    rollups.apply(ref, BatchDelta("2" * 64, ["b"], {file: {"all": fields(2)}}))
    assert rollups.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [fields(3)]
    client.script_flush()
    lease = rollups.try_report_lock(ref, 30_000)
    assert lease is not None
    lease.check()
    lease.release()
    assert rollups.try_report_lock(ref, 30_000) is not None


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "str"])
@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_resp2_and_resp3_clients_with_and_without_decoding_work(
    redis_server: RedisServer, namespace: str, clock: FakeClock, protocol: int, decode: bool
) -> None:
    with redis.Redis.from_url(
        redis_server.url, protocol=protocol, decode_responses=decode
    ) as given:
        meter = EventMeter(
            namespace=namespace, redis=given, clock=clock, rollup_ttl=3600, redis_read_limit=2
        )
        assert isinstance(meter.stream, RedisStream)
        assert isinstance(meter.rollups, RedisRollups)
        report = Report(NAME).index_by("provider").measure_interval_by("customer_id")
        for _ in range(5):
            meter.start(NAME, customer_id=1, provider="p").success()
            clock.advance(seconds=1)
        meter.stream.append(NAME, {"name": NAME, "status": "nope", "started_at": "x"})
        result = meter.process_pending(report)
        assert (result.processed, result.malformed, result.complete) == (6, 1, True)
        assert meter.summary(report, by={"provider": "p"})["count"] == 5
        assert meter.summary(report)["interval_ms_count"] == 4
        assert meter.report_definition(NAME, version=1)["name"] == NAME
        meter.cleanup_history(before="2026-05-07T00:00:00Z")
        assert meter.summary(report)["count"] == 0
        meter.close()
        assert given.ping()  # a client the meter was given stays open


def test_a_factory_is_called_once_per_purpose_and_its_clients_are_closed(
    redis_server: RedisServer, namespace: str, clock: FakeClock
) -> None:
    made: list[redis.Redis] = []

    def factory() -> redis.Redis:
        made.append(redis.Redis.from_url(redis_server.url))
        return made[-1]

    meter = EventMeter(namespace=namespace, redis=factory, clock=clock)
    assert made == [], "clients are made on first use"
    meter.start(NAME).success()
    clock.advance(minutes=1)
    assert meter.process_pending(Report(NAME).measure_interval_by("x")).processed == 1
    assert len(made) == 4  # stream data, stream lock, rollup data, rollup lock
    assert len({id(c) for c in made}) == 4
    disconnects: list[int] = []
    for one in made:
        one.connection_pool.disconnect = lambda *a, **k: disconnects.append(1)  # type: ignore[method-assign]
    meter.close()
    assert len(disconnects) == 4


def test_leases_use_the_lock_client(
    redis_server: RedisServer, namespace: str, ref: ReportRef
) -> None:
    data = redis.Redis.from_url(redis_server.url)
    locks = redis.Redis.from_url(redis_server.url.replace("/0", "/1"))
    store = RedisRollups(data, lock_redis=locks)
    store.bind(namespace=namespace, clock=FakeClock())
    lease = store.try_report_lock(ref, 30_000)
    assert lease is not None
    key = store.keys(ref).process_lock()
    assert (data.exists(key), locks.exists(key)) == (0, 1)
    lease.release()
    store.close()
    assert data.ping()
    assert locks.ping()
    data.close()
    locks.close()


def test_urls_build_redis_stores(redis_server: RedisServer) -> None:
    assert isinstance(store_from_url(redis_server.url, "stream"), RedisStream)
    assert isinstance(store_from_url(redis_server.url, "rollups"), RedisRollups)
    assert isinstance(store_from_url("rediss://example.invalid:6380/0", "rollups"), RedisRollups)
    assert isinstance(store_from_url("unix:///tmp/no.sock?db=0", "stream"), RedisStream)
    limited = store_from_url(redis_server.url, "stream", redis_read_limit=3)
    assert isinstance(limited, RedisStream)
    assert limited.read_limit == 3
    ttl = store_from_url(redis_server.url, "rollups", rollup_ttl_ms=5_000)
    assert isinstance(ttl, RedisRollups)
    assert ttl.ttl_ms == 5_000


def test_a_missing_driver_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(ConfigurationError, match=r'pip install "event-meter\[redis\]"'):
        RedisRollups(url="redis://localhost:6379/0")
    with pytest.raises(ConfigurationError, match=r'pip install "event-meter\[redis\]"'):
        event_meter.configure(stream_storage="redis://localhost:6379/0")


@pytest.mark.parametrize("bad", ["app{x}", "app}", "{"])
def test_a_namespace_with_braces_is_a_configuration_error(
    redis_server: RedisServer, bad: str
) -> None:
    with pytest.raises(ConfigurationError, match="hash tags"):
        EventMeter(namespace=bad, rollup_storage=redis_server.url, stream_storage="memory://")
    with pytest.raises(ConfigurationError, match="hash tags"):
        RedisStream(url=redis_server.url).bind(namespace=bad, clock=FakeClock())


def test_an_unreachable_server_is_a_storage_error_and_recording_never_raises(
    namespace: str, clock: FakeClock
) -> None:
    from servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    meter = EventMeter(namespace=namespace, stream_storage=url, rollup_storage=url, clock=clock)
    result = meter.start(NAME).success()
    assert not result.recorded
    assert isinstance(result.error, StorageError)
    with pytest.raises(StorageError, match="redis"):
        meter.process_pending(Report(NAME))
    with pytest.raises(StorageError):
        meter.rollups.read_watermark(namespace)
    meter.close()


# -- the journal: partial applies and recovery -----------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_apply, "CHUNK_KEYS", 7)


def die_after_chunks(monkeypatch: pytest.MonkeyPatch, sent: int) -> None:
    """The next chunk pipeline sends its first ``sent`` chunks, then the connection resets
    (other script pipelines run as usual)."""

    def dies_after(client: Any, calls: Any) -> list[Any]:
        if calls and calls[0][0] is _apply.CHUNK:
            run_pipeline(client, calls[:sent])
            raise redis.exceptions.ConnectionError("connection reset mid-pipeline")
        return run_pipeline(client, calls)

    monkeypatch.setattr(_apply, "run_pipeline", dies_after)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("fail_at", [0, 1, 4])
def test_a_partial_apply_is_finished_exactly_by_recover_or_a_retry(
    rollups: RedisRollups,
    redis_server: RedisServer,
    ref: ReportRef,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    fail_at: int,
) -> None:
    delta = big_delta("d" * 64)
    assert len(_apply.chunks(rollups.keys(ref), delta)) > 5
    die_after_chunks(monkeypatch, fail_at)  # the connection drops after chunk fail_at - 1
    with pytest.raises(StorageError, match="connection reset"):
        rollups.apply(ref, delta)
    monkeypatch.setattr(_apply, "run_pipeline", run_pipeline)
    assert rollups.processed_ids(ref, delta.entry_ids) == set()
    other = RedisRollups(url=redis_server.url, ttl_ms=TTL_MS)  # another processor recovers
    other.bind(namespace=ref.namespace, clock=clock)
    other.recover(ref)
    rollups.recover(ref)
    rollups.apply(ref, delta)  # a retry of the finished batch changes nothing
    assert rollups.processed_ids(ref, delta.entry_ids) == set(delta.entry_ids)
    expected = [[fields(1, duration_ms_min=m, duration_ms_max=m) for m in range(12)]] * 5
    assert all_rollups(rollups, ref) == expected
    assert rollups.read_state(ref, [("customer_id", "3")]) == {("customer_id", "3"): ms(10, 3)}
    other.close()


@pytest.mark.usefixtures("small_chunks")
def test_a_retried_apply_of_a_journaled_batch_finishes_it_once(
    rollups: RedisRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = big_delta("e" * 64)
    real = run_pipeline

    def markers_fail(client: Any, calls: Any) -> list[Any]:
        if calls and calls[0][0] is _apply.MARKERS:
            raise redis.exceptions.TimeoutError("timeout")
        return real(client, calls)

    monkeypatch.setattr(_apply, "run_pipeline", markers_fail)
    with pytest.raises(StorageError):
        rollups.apply(ref, delta)
    monkeypatch.setattr(_apply, "run_pipeline", real)
    rollups.apply(ref, delta)
    rollups.apply(ref, delta)
    rollups.recover(ref)
    assert (
        all_rollups(rollups, ref)
        == [[fields(1, duration_ms_min=m, duration_ms_max=m) for m in range(12)]] * 5
    )


def test_merge_laws_keep_64_bit_sums_exact_and_ignore_corrupt_stored_values(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    file = RollupFile("hour", "2026050610", ())
    key = rollups.keys(ref).rollup("hour", "2026050610", "all")
    big = 2**62 + 1
    rollups.apply(ref, BatchDelta("1" * 64, ["a"], {file: {"all": {"duration_ms_sum": big}}}))
    rollups.apply(ref, BatchDelta("2" * 64, ["b"], {file: {"all": {"duration_ms_sum": 2}}}))
    client.hset(key, mapping={"count": "7x", "duration_ms_min": "1.5", "started_at_ms_max": "abc"})
    rollups.apply(
        ref,
        BatchDelta(
            "3" * 64,
            ["c"],
            {file: {"all": {"count": 2, "duration_ms_min": 9, "started_at_ms_max": ms(10)}}},
        ),
    )
    assert rollups.read_rollups(ref, "hour", (), "all", ["2026050610"]) == [
        {"count": 2, "duration_ms_sum": big + 2, "duration_ms_min": 9, "started_at_ms_max": ms(10)}
    ]
    state_key = rollups.keys(ref).state("customer_id", "1")
    client.set(state_key, "garbage")
    assert rollups.read_state(ref, [("customer_id", "1")]) == {}
    rollups.apply(ref, BatchDelta("4" * 64, ["d"], state={("customer_id", "1"): 5}))
    assert rollups.read_state(ref, [("customer_id", "1")]) == {("customer_id", "1"): 5}


# -- scans with odd namespaces ---------------------------------------------------------------------


@pytest.mark.parametrize("odd", ["ns*", "ns?", "ns[ab]", "ns\\", "n*s:rollup"])
def test_glob_characters_in_the_namespace_do_not_widen_scans(
    redis_server: RedisServer, clock: FakeClock, odd: str
) -> None:
    token = random_namespace()
    mine, others = (
        f"{token}:{odd}",
        [f"{token}:nsX", f"{token}:nsa", f"{token}:ns\\x", f"{token}:nXs"],
    )
    stores = {}
    for namespace in [mine, *others]:
        store = RedisRollups(url=redis_server.url)
        store.bind(namespace=namespace, clock=clock)
        report = ReportRef(namespace, NAME, 1)
        store.store_definition(report, {"name": NAME})
        store.apply(
            report,
            BatchDelta(
                "f" * 64,
                [f"{namespace}:1"],
                {
                    RollupFile("hour", "2026050610", ("provider",)): {
                        "provider=a": fields(1),
                    },
                    RollupFile("hour", "2026050611", ("provider", "queue")): {
                        "provider=a|queue=b": fields(2),
                    },
                },
                {("customer_id", "1"): ms(9)},
            ),
        )
        stores[namespace] = store
    store, report = stores[mine], ReportRef(mine, NAME, 1)
    assert store.list_reports(mine) == [(NAME, 1)]
    assert store.scan_rollups(report, "hour", ("provider",), "provider=a", None) == [
        ("2026050610", fields(1))
    ]
    assert store.cleanup(report, ms(12)) == {
        "rollup_keys_deleted": 2,
        "interval_state_keys_deleted": 1,
        "processed_entries_deleted": 1,
    }
    for namespace in others:
        assert stores[namespace].scan_rollups(
            ReportRef(namespace, NAME, 1), "hour", ("provider",), "provider=a", None
        ) == [("2026050610", fields(1))]
    for one in stores.values():
        one.close()


def test_scan_ignores_keys_that_do_not_parse(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    keys = rollups.keys(ref)
    prefix = keys.rollup_prefix("hour")
    client.hset(f"{prefix}20260506:all", "count", "1")  # not an hour id
    client.hset(f"{prefix}2026050610:all:extra", "count", "1")
    client.hset(f"{prefix}2026050611:all", "count", "4")
    # The bucket index may name ids that do not parse, or buckets whose hash is gone.
    members = ("20260506", "2026050699", "2026050611", "2026050612")
    client.zadd(keys.buckets("hour", "all"), dict.fromkeys(members, 0))
    assert rollups.scan_rollups(ref, "hour", (), "all", None) == [("2026050611", {"count": 4})]
    assert rollups.cleanup(ref, ms(23))["rollup_keys_deleted"] == 1
    assert b"2026050611" not in client.zrange(keys.buckets("hour", "all"), 0, -1)


def test_scan_rollups_reads_the_bucket_index_not_the_keyspace(
    rollups: RedisRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    for hour in (12, 10, 11):
        file = RollupFile("hour", f"20260506{hour}", ())
        rollups.apply(ref, BatchDelta(f"{hour:064x}", [f"e{hour}"], {file: {"all": fields(1)}}, {}))
    client = rollups._client()

    def no_scan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("scan_rollups must not SCAN the keyspace")

    monkeypatch.setattr(client, "scan_iter", no_scan)
    found = rollups.scan_rollups(ref, "hour", (), "all", None)
    assert [bucket for bucket, _ in found] == ["2026050610", "2026050611", "2026050612"]
    assert rollups.scan_rollups(ref, "hour", (), "all", 2) == found[:2]


def test_bucket_index_keys_reads_a_member_set_kept_by_apply_and_cleanup_drops_it(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = RollupFile("hour", "2026050610", ("customer_id",))
    pairs = RollupFile("hour", "2026050610", ("provider", "queue"))
    rollups.apply(
        ref,
        BatchDelta(
            "1" * 64,
            ["a"],
            {
                hour: {"customer_id=1": fields(1), "customer_id=a+b": fields(1)},
                pairs: {"provider=p|queue=q": fields(1)},
                RollupFile("hour", "2026050610", ()): {"all": fields(2)},
                RollupFile("hour", "2026050611", ("customer_id",)): {"customer_id=2": fields(1)},
            },
        ),
    )
    rollups.apply(ref, BatchDelta("2" * 64, ["b"], {hour: {"customer_id=3": fields(1)}}))
    monkeypatch.setattr(client, "scan_iter", None)  # never a SCAN of the keyspace
    monkeypatch.setattr(rollups._client(), "scan_iter", None)
    assert rollups.bucket_index_keys(ref, "hour", "2026050610", ("customer_id",)) == {
        "customer_id=1",
        "customer_id=a+b",
        "customer_id=3",
    }
    assert rollups.bucket_index_keys(ref, "hour", "2026050610", ("provider", "queue")) == {
        "provider=p|queue=q"
    }
    assert rollups.bucket_index_keys(ref, "hour", "2026050611", ("customer_id",)) == {
        "customer_id=2"
    }
    assert rollups.bucket_index_keys(ref, "hour", "2026050612", ("customer_id",)) == set()
    assert rollups.bucket_index_keys(ref, "minute", "202605061000", ("customer_id",)) == set()
    held_by = rollups.keys(ref).bucket_keys("hour", "2026050610", ("customer_id",))
    assert 0 < client.pttl(held_by) <= TTL_MS
    monkeypatch.undo()
    rollups.cleanup(ref, ms(11))  # the 10:00 bucket ended; 11:00 is kept
    assert rollups.bucket_index_keys(ref, "hour", "2026050610", ("customer_id",)) == set()
    assert rollups.bucket_index_keys(ref, "hour", "2026050611", ("customer_id",)) == {
        "customer_id=2"
    }
    left = {k.decode() for k in client.scan_iter(match=f"{ref.namespace}:bucket_keys:*")}
    assert left == {rollups.keys(ref).bucket_keys("hour", "2026050611", ("customer_id",))}


def test_every_field_merges_by_its_name_and_sums_stay_exact_past_53_bits(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    """Field names are open-ended (histogram buckets, ...): "*_min", "*_max", else a sum."""
    file = RollupFile("minute", "202605061000", ())
    key = rollups.keys(ref).rollup("minute", "202605061000", "all")
    first = {"duration_ms_h37": 2, "lag_min": 5, "lag_max": 5, "near": 2**53 - 10}
    first |= {"wide": 999_999_999_999_999, "huge": 2**62}
    rollups.apply(ref, BatchDelta("1" * 64, ["a"], {file: {"all": first}}))
    second = {"duration_ms_h37": 3, "lag_min": 3, "lag_max": 9, "near": 20}
    second |= {"wide": 2**53 - 1, "huge": 2**61, "new_h1": 1}
    rollups.apply(ref, BatchDelta("2" * 64, ["b"], {file: {"all": second}}))
    rollups.apply(ref, BatchDelta("3" * 64, ["c"], {file: {"all": {"lag_min": 4, "lag_max": 8}}}))
    expected = {
        "duration_ms_h37": 5,
        "lag_min": 3,
        "lag_max": 9,
        "near": 2**53 + 10,
        "wide": 999_999_999_999_999 + 2**53 - 1,
        "huge": 2**62 + 2**61,
        "new_h1": 1,
    }
    assert client.hgetall(key) == {k.encode(): str(v).encode() for k, v in expected.items()}


def test_values_that_are_not_integers_are_left_out(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    file = RollupFile("minute", "202605061000", ())
    key = rollups.keys(ref).rollup("minute", "202605061000", "all")
    odd: dict[str, Any] = {"a": True, "b": 1.5, "c": "abc", "d": None, "e_min": "7x"}
    for n, count in enumerate((1, 2)):  # a new hash, then a merge
        delta = BatchDelta(f"{n:064x}", [f"e{n}"], {file: {"all": {"count": count, **odd}}})
        rollups.apply(ref, delta)
    assert client.hgetall(key) == {b"count": b"3"}


@pytest.mark.usefixtures("small_chunks")
def test_chunks_wider_than_one_lua_call_are_written_in_slices(
    rollups: RedisRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lua can pass at most ~8,000 arguments to one command: big groups go in slices."""
    monkeypatch.setattr(_apply, "CHUNK_KEYS", 10_000)
    monkeypatch.setattr(_apply, "CHUNK_ARGS", 10**9)
    file = RollupFile("hour", "2026050610", ("customer_id",))
    wide = {f"duration_ms_h{k}": 1 for k in range(5_000)}
    values = {f"customer_id={c}": fields(1) for c in range(5_000)} | {"customer_id=w": wide}
    delta = BatchDelta("1" * 64, ["a"], {file: values})
    assert len(_apply.chunks(rollups.keys(ref), delta)) == 1
    for n in range(2):  # a new hash, then a merge
        rollups.apply(ref, replace(delta, batch_id=f"{n:064x}", entry_ids=[f"e{n}"]))
    keys = rollups.bucket_index_keys(ref, "hour", "2026050610", ("customer_id",))
    assert keys == set(values)
    found = rollups.read_rollups(ref, "hour", ("customer_id",), "customer_id=1", ["2026050610"])
    assert found == [fields(2)]
    raw = rollups._client().hgetall(rollups.keys(ref).rollup("hour", "2026050610", "customer_id=w"))
    assert len(raw) == 5_000
    assert set(raw.values()) == {b"2"}


def test_keys_holding_another_type_are_replaced(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef
) -> None:
    keys = rollups.keys(ref)
    file = RollupFile("hour", "2026050610", ("provider",))
    client.set(keys.rollup("hour", "2026050610", "provider=a"), "not a hash")
    client.lpush(keys.state("customer_id", "1"), "not a string")
    client.set(keys.buckets("hour", "provider=a"), "not a zset")
    client.set(keys.bucket_keys("hour", "2026050610", ("provider",)), "not a set")
    delta = BatchDelta(
        "1" * 64, ["a"], {file: {"provider=a": fields(1)}}, {("customer_id", "1"): 7}
    )
    rollups.apply(ref, delta)
    assert rollups.scan_rollups(ref, "hour", ("provider",), "provider=a", None) == [
        ("2026050610", fields(1))
    ]
    assert rollups.read_state(ref, [("customer_id", "1")]) == {("customer_id", "1"): 7}
    assert rollups.bucket_index_keys(ref, "hour", "2026050610", ("provider",)) == {"provider=a"}


@pytest.mark.usefixtures("small_chunks")
def test_a_journal_of_a_release_that_cut_chunks_by_key_name_replays_exactly(
    rollups: RedisRollups, client: redis.Redis, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its chunking has no order element: the replay cuts by key name, as it did."""
    delta = big_delta("e" * 64)
    monkeypatch.setattr(_apply, "current_chunking", lambda: (7, 4_096, _apply.BY_NAME))
    die_after_chunks(monkeypatch, 2)
    with pytest.raises(StorageError):
        rollups.apply(ref, delta)
    monkeypatch.undo()
    journal = rollups.keys(ref).journal()
    doc = orjson.loads(client.hget(journal, delta.batch_id) or b"")
    assert doc["chunking"] == [7, 4_096, _apply.BY_NAME]
    doc["chunking"] = [7, 4_096]  # as an earlier release journaled it
    client.hset(journal, delta.batch_id, orjson.dumps(doc))
    rollups.recover(ref)
    expected = [[fields(1, duration_ms_min=m, duration_ms_max=m) for m in range(12)]] * 5
    assert all_rollups(rollups, ref) == expected
    assert rollups.processed_ids(ref, delta.entry_ids) == set(delta.entry_ids)


ODD_ENTRY_IDS = (
    *("202605061000-host-1-ab12cd34.jsonl:17", "1778062500000-0", "a:b:c", "", ":", "a:"),
    *(":5", "é:1", "a b:1", "x:é", "a%:1", "weird:1 2", "a:~.-_", "日本:語"),
)


@pytest.mark.parametrize("entry_id", ODD_ENTRY_IDS)
def test_marker_keys_escape_entry_ids_like_esc(ref: ReportRef, entry_id: str) -> None:
    keys = RedisRollups(url="redis://localhost:1/0").keys(ref)
    assert keys.processed_many([entry_id]) == [keys.processed(entry_id)]


def test_marker_keys_of_a_whole_batch_escape_each_id_like_esc(ref: ReportRef) -> None:
    keys = RedisRollups(url="redis://localhost:1/0").keys(ref)
    batch = [*ODD_ENTRY_IDS, "line\nbreak:1", *ODD_ENTRY_IDS[:2]]
    assert keys.processed_many(batch) == [keys.processed(entry_id) for entry_id in batch]
    ascii_only = [entry_id for entry_id in ODD_ENTRY_IDS if entry_id.isascii()]
    assert keys.processed_many(ascii_only) == [keys.processed(entry_id) for entry_id in ascii_only]


# -- the stream ------------------------------------------------------------------------------------


def test_stream_rows_released_between_held_batches_are_read_again_at_once(
    redis_server: RedisServer, namespace: str, client: redis.Redis
) -> None:
    """A read while batches are held starts after them, until one is released."""
    store = RedisStream(url=redis_server.url)
    store.bind(namespace=namespace, clock=FakeClock())
    for i in range(9):
        store.append(NAME, {"i": i})
    first, second, third = (store.read(NAME, 3) for _ in range(3))
    assert [e.payload["i"] for e in third.entries] == [6, 7, 8]
    store.release(second)
    again = store.read(NAME, 100)
    assert [e.payload["i"] for e in again.entries] == [3, 4, 5]
    for batch in (first, third, again):
        store.delete(batch)
    assert store.pending(NAME) == 0
    store.close()


def test_stream_reads_honour_read_limit_and_use_redis_ids(
    redis_server: RedisServer, namespace: str, client: redis.Redis
) -> None:
    store = RedisStream(url=redis_server.url, read_limit=2)
    store.bind(namespace=namespace, clock=FakeClock())
    for i in range(5):
        store.append(NAME, {"i": i})
    client.xadd(store.stream_key(NAME), {"other": "field"})
    assert store.pending(NAME) == 6
    batch = store.read(NAME, 100)
    assert [e.payload for e in batch.entries] == [{"i": 0}, {"i": 1}]
    rows: Any = client.xrange(store.stream_key(NAME), count=2)
    ids = [row_id.decode() for row_id, _ in rows]
    assert [e.id for e in batch.entries] == ids
    store.delete(batch)
    rest = [store.read(NAME, 100) for _ in range(3)]
    assert [len(b.entries) for b in rest] == [2, 2, 0]
    assert isinstance(rest[1].entries[1].payload, Undecodable)
    assert rest[1].entries[1].payload.reason == "no payload field"
    for one in rest:
        store.delete(one)
    assert store.pending(NAME) == 0
    store.close()


# -- the lease lock --------------------------------------------------------------------------------


def test_a_held_lease_refuses_a_second_taker(client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:process_lock"
    lease = try_lease(client, key, 30_000)
    assert lease is not None
    assert try_lease(client, key, 30_000) is None
    lease.check()
    lease.release()
    assert client.exists(key) == 0


def test_refreshes_keep_a_short_lease_alive_past_its_ttl(
    client: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:process_lock"
    lease = try_lease(client, key, 300)
    assert isinstance(lease, RedisLease)
    wait_until(lambda: lease.refreshes >= 4, "four refreshes (600 ms, twice the ttl)")
    lease.check()
    assert client.get(key) == lease.token.encode()
    assert 0 < client.pttl(key) <= 300
    lease.release()
    assert client.exists(key) == 0


@pytest.mark.parametrize("how", ["deleted", "overwritten"])
def test_a_lease_whose_key_is_gone_or_taken_is_lost(
    client: redis.Redis, namespace: str, how: str
) -> None:
    key = f"{namespace}:process_lock"
    lease = try_lease(client, key, 30_000)
    assert lease is not None
    if how == "deleted":
        client.delete(key)
    else:
        client.set(key, "someone else")
    with pytest.raises(LockLostError):
        lease.check()
    lease.release()
    assert client.get(key) == (None if how == "deleted" else b"someone else")


def test_a_lease_that_cannot_be_refreshed_is_lost(client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:process_lock"
    lease = try_lease(client, key, 200)
    assert isinstance(lease, RedisLease)
    client.set(key, "taken over", px=10_000)
    wait_until(lambda: lease.lost, "the refresher to notice")
    with pytest.raises(LockLostError, match="another token"):
        lease.check()
    lease.release()
    assert client.get(key) == b"taken over"


def test_processing_stops_with_lock_lost_before_the_next_write(
    redis_server: RedisServer, namespace: str, clock: FakeClock, client: redis.Redis
) -> None:
    meter = EventMeter(
        namespace=namespace, redis=lambda: redis.Redis.from_url(redis_server.url), clock=clock
    )
    report = Report(NAME).measure_interval_by("customer_id")
    for i in range(6):
        meter.stream.append(
            NAME,
            {
                "name": NAME,
                "status": "success",
                "started_at": f"2026-05-06T10:15:0{i}Z",
                "params": {"customer_id": 1},
            },
        )
    real_apply = meter.rollups.apply
    calls: list[int] = []

    def steal_after_first(ref: ReportRef, delta: BatchDelta) -> None:
        real_apply(ref, delta)
        calls.append(1)
        client.set(f"{namespace}:process_lock:{{{NAME}:v1}}", "thief")

    meter.rollups.apply = steal_after_first  # type: ignore[method-assign]
    with pytest.raises(LockLostError):
        meter.process_pending(report, batch_size=2)
    assert calls == [1]
    client.delete(f"{namespace}:process_lock:{{{NAME}:v1}}")
    meter.rollups.apply = real_apply  # type: ignore[method-assign]
    result = meter.process_pending(report, batch_size=2)
    assert (result.processed, result.skipped_already_processed) == (4, 2)
    summary = meter.summary(report)
    assert (summary["count"], summary["interval_ms_count"]) == (6, 5)
    meter.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_neither_checks_nor_releases_the_parents_lease(
    client: redis.Redis, namespace: str
) -> None:
    key = f"{namespace}:process_lock"
    lease = try_lease(client, key, 30_000)
    assert lease is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            lease.check()
        except LockLostError:
            lease.release()
            code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lease.check()
    assert client.get(key) == lease.token.encode()
    lease.release()


def test_lua_scripts_ship_as_package_resources() -> None:
    from importlib import resources

    folder = resources.files("event_meter.stores.redis") / "lua"
    names = {p.name for p in folder.iterdir() if p.name.endswith(".lua")}
    assert names >= {
        "apply_begin.lua",
        "apply_chunk.lua",
        "apply_markers.lua",
        "cleanup_state.lua",
        "lease_refresh.lua",
        "lease_release.lua",
        "read_hashes.lua",
    }


@pytest.mark.usefixtures("small_chunks")
def test_a_replay_after_an_upgrade_that_changed_the_chunk_size_is_exact(
    rollups: RedisRollups, ref: ReportRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps the chunking of the first try, so the guards still line up."""
    delta = big_delta("e" * 64)
    die_after_chunks(monkeypatch, 2)
    with pytest.raises(StorageError):
        rollups.apply(ref, delta)
    monkeypatch.setattr(_apply, "run_pipeline", run_pipeline)
    monkeypatch.setattr(_apply, "CHUNK_KEYS", 3)  # the "upgraded" release cuts smaller chunks
    rollups.recover(ref)
    expected = [[fields(1, duration_ms_min=m, duration_ms_max=m) for m in range(12)]] * 5
    assert all_rollups(rollups, ref) == expected
    assert rollups.processed_ids(ref, delta.entry_ids) == set(delta.entry_ids)
