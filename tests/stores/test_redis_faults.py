"""Faults of a real ``redis-server``: stopped, restarted, slow, and leases that expire.

Each test starts its own server (``servers.RedisServer``), persistent where a
restart must keep the data (``appendonly yes`` + ``appendfsync always`` in the
server's temp dir), and takes it away under live clients:

- stopped while the application records: every ``start().success()`` returns a
  failed ``WriteResult`` carrying ``StorageError`` within a bounded time, never
  raises, and recording resumes once the server is back on the same port;
- stopped in the middle of a processing pass, before each write step: the pass
  fails cleanly with ``StorageError`` (or, when only the final ``XDEL`` fails,
  ends ``complete=False``), and after a restart the next pass completes with
  nothing lost or counted twice;
- a lease lost mid-pass (its refresh fails, it expires while the processor is
  stalled and another processor takes over, or another token overwrites it)
  ends in ``LockLostError`` before the next write, and counts are exact after
  the retry;
- a slow server (``DEBUG SLEEP``) under a client with a socket timeout: the
  write returns a failed ``WriteResult`` and never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from event_meter.errors import LockLostError, StorageError
from event_meter.stores.redis import _apply, _scripts
from event_meter.stores.redis.rollups import RedisRollups
from event_meter.stores.redis.stream import RedisStream
from servers import RedisServer
from support import FakeClock, random_namespace, wait_until

pytestmark = pytest.mark.redis

NAME = "invoice_delivery"
DEADLINE_S = 15.0
FAILED_WRITE_BOUND_S = 1.0
LOCK_TTL_S = 0.3
CUSTOMERS = 4


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as started:
        yield started


def meter_on(server: RedisServer, clock: FakeClock, **options: Any) -> EventMeter:
    return EventMeter(
        namespace=random_namespace(),
        stream_storage=RedisStream(url=server.url),
        rollup_storage=RedisRollups(url=server.url),
        clock=clock,
        **options,
    )


def record_ok(meter: EventMeter, clock: FakeClock, count: int, first: int = 0) -> None:
    """Record events ``first`` to ``first + count - 1``; event ``i`` is for customer ``i % 4``."""
    for i in range(first, first + count):
        result = meter.start(NAME, customer=i % CUSTOMERS).success()
        assert result.recorded, result.error
        clock.advance(seconds=1)


def report() -> Report:
    return Report(NAME).index_by("customer").measure_interval_by("customer")


def assert_counts(meter: EventMeter, total: int) -> None:
    """Exactly events ``0 .. total - 1`` of ``record_ok``, each counted once."""
    summary = meter.summary(report())
    assert summary["count"] == total
    assert summary["interval_ms_count"] == total - CUSTOMERS  # first event per customer: none
    per_customer = [meter.summary(report(), by={"customer": c})["count"] for c in range(CUSTOMERS)]
    assert per_customer == [len(range(c, total, CUSTOMERS)) for c in range(CUSTOMERS)]


def pending(meter: EventMeter) -> int:
    """Rows left in the Redis stream (``XLEN``)."""
    assert isinstance(meter.stream, RedisStream)
    return meter.stream.pending(NAME)


def journal_entries(meter: EventMeter, server: RedisServer) -> int:
    """Applies left half done in the report's journal hash."""
    assert isinstance(meter.rollups, RedisRollups)
    ref = ReportRef(meter.config.namespace, NAME, 1)
    with redis.Redis.from_url(server.url) as client:
        return int(client.hlen(meter.rollups.keys(ref).journal()))


def process_until_unlocked(meter: EventMeter, batch_size: int = 5) -> Any:
    """One pass, once the leases a failed pass could not release have expired (polled)."""
    deadline = time.monotonic() + DEADLINE_S
    while (result := meter.process_pending(report(), batch_size=batch_size)).locked:
        assert time.monotonic() < deadline, "the leases never expired"
        time.sleep(0.01)
    return result


# -- (a) the server stops while the application records --------------------------------------


def test_recording_fails_fast_while_the_server_is_down_and_resumes_after_a_restart(
    server: RedisServer, clock: FakeClock
) -> None:
    meter = meter_on(server, clock)
    try:
        record_ok(meter, clock, 5)
        server.stop()
        for _ in range(3):
            started = time.monotonic()
            result = meter.start(NAME, customer=9).success()  # must not raise
            elapsed = time.monotonic() - started
            assert not result.recorded
            assert isinstance(result.error, StorageError), result.error
            assert "redis: append failed" in str(result.error)
            assert elapsed < FAILED_WRITE_BOUND_S, f"a failed write blocked for {elapsed:.2f} s"
        server.start()  # same port, same data directory: the 5 acknowledged rows are back
        record_ok(meter, clock, 7, first=5)  # the pooled connections reconnect by themselves
        assert pending(meter) == 12
        done = meter.process_pending(report(), batch_size=5)
        assert (done.processed, done.complete) == (12, True)
        assert_counts(meter, 12)
    finally:
        meter.close()


# -- (b) the server restarts in the middle of a processing pass ------------------------------

STOP_BEFORE = ("begin", "chunks", "markers", "cleanup", "delete")


def stop_server_before(
    mp: pytest.MonkeyPatch, meter: EventMeter, server: RedisServer, step: str, apply_no: int
) -> list[int]:
    """Stop the server just before ``step`` of the ``apply_no``-th apply (or ``XDEL``).

    The steps of a Redis apply are drawn in ``stores/redis/_apply.py``: the
    journal entry (``begin``), the pipelined chunk scripts, the marker scripts,
    then the pipeline deleting the journal entry and guards (``cleanup``); after
    the apply comes the stream's ``XDEL`` (``delete``). Returns the counter of
    applies seen.
    """
    applies = [0]
    real_apply, real_delete = meter.rollups.apply, meter.stream.delete
    real_begin, real_pipeline = _apply.BEGIN, _scripts.run_pipeline

    def at(name: str) -> None:
        if name == step and applies[0] == apply_no and server.running:
            server.stop()

    def apply(*args: Any) -> None:
        applies[0] += 1
        real_apply(*args)

    def begin(client: Any, keys: Any, args: Any) -> Any:
        at("begin")
        return real_begin(client, keys, args)

    def run_pipeline(client: Any, calls: Any) -> list[Any]:
        kind = "chunks" if calls[0][0] is _apply.CHUNK else "markers"
        at(kind)
        replies = real_pipeline(client, calls)
        if kind == "markers":
            at("cleanup")
        return replies

    def delete(batch: Any) -> None:
        at("delete")
        real_delete(batch)

    mp.setattr(meter.rollups, "apply", apply)
    mp.setattr(meter.stream, "delete", delete)
    mp.setattr(_apply, "BEGIN", begin)
    mp.setattr(_apply, "run_pipeline", run_pipeline)
    return applies


@pytest.mark.parametrize("step", STOP_BEFORE)
def test_a_restart_during_processing_fails_the_pass_and_the_next_pass_is_exact(
    server: RedisServer, clock: FakeClock, step: str
) -> None:
    meter = meter_on(server, clock, lock_ttl=1.0)
    try:
        record_ok(meter, clock, 30)
        with pytest.MonkeyPatch.context() as mp:
            stop_server_before(mp, meter, server, step, apply_no=3)
            if step == "delete":  # a failed XDEL is logged; the pass ends incomplete
                first = meter.process_pending(report(), batch_size=5)
                assert (first.processed, first.complete) == (15, False)
            else:
                with pytest.raises(StorageError, match="redis"):
                    meter.process_pending(report(), batch_size=5)
        assert not server.running
        server.start()  # the same data directory: every acknowledged write is back
        result = process_until_unlocked(meter)
        assert result.complete
        # Rows the failed pass applied are skipped (marked), never counted again.
        assert result.processed + result.skipped_already_processed >= 20
        assert pending(meter) == 0
        assert_counts(meter, 30)
        assert journal_entries(meter, server) == 0
    finally:
        meter.close()


# -- (c) a lease lost in the middle of a pass ---------------------------------------------------


def capture_leases(mp: pytest.MonkeyPatch, meter: EventMeter) -> list[Any]:
    """The leases ``meter`` takes (stream read lease, report lock), in order."""
    taken: list[Any] = []
    for store, method in ((meter.stream, "try_read_lock"), (meter.rollups, "try_report_lock")):
        real = getattr(store, method)

        def take(*args: Any, _real: Any = real) -> Any:
            lease = _real(*args)
            taken.append(lease)
            return lease

        mp.setattr(store, method, take)
    return taken


def on_second_read(mp: pytest.MonkeyPatch, meter: EventMeter, action: Callable[[], None]) -> None:
    """Run ``action`` once the pass has applied and deleted its first batch."""
    real_read = meter.stream.read
    reads = [0]

    def read(name: str, limit: int) -> Any:
        reads[0] += 1
        batch = real_read(name, limit)
        if reads[0] == 2:
            action()
        return batch

    mp.setattr(meter.stream, "read", read)


def lock_keys(meter: EventMeter, server: RedisServer) -> list[bytes]:
    with redis.Redis.from_url(server.url) as client:
        return list(client.scan_iter(match=f"{meter.config.namespace}:*_lock*"))


def test_a_failed_refresh_stops_the_pass_with_lock_lost_and_the_retry_is_exact(
    server: RedisServer, clock: FakeClock
) -> None:
    meter = meter_on(server, clock, lock_ttl=LOCK_TTL_S)
    try:
        record_ok(meter, clock, 20)
        with pytest.MonkeyPatch.context() as mp:
            leases = capture_leases(mp, meter)

            def refresh_fails() -> bool:
                raise redis.ConnectionError("injected: the lock connection broke")

            def break_refresh() -> None:
                leases[0]._refresh = refresh_fails
                wait_until(lambda: leases[0].lost, "the refresher to give up the lease")

            on_second_read(mp, meter, break_refresh)
            with pytest.raises(LockLostError, match="refresh failed"):
                meter.process_pending(report(), batch_size=5)
        # The first batch was applied while the second was read (the pipeline overlaps
        # them); the lease check before its delete gave its rows back, marked. Nothing
        # was applied after the loss.
        assert pending(meter) == 20
        result = process_until_unlocked(meter)
        assert (result.processed, result.skipped_already_processed) == (15, 5)
        assert_counts(meter, 20)
    finally:
        meter.close()


def test_a_lease_that_expires_while_stalled_is_taken_over_and_never_counted_twice(
    server: RedisServer, clock: FakeClock
) -> None:
    """Processor A stalls (its refresher is blocked) until its leases expire in Redis;
    processor B takes them and processes everything, including rows A has read. A
    must stop with ``LockLostError`` before writing anything for those rows."""
    first = meter_on(server, clock, lock_ttl=LOCK_TTL_S)
    second = EventMeter(
        namespace=first.config.namespace,
        stream_storage=RedisStream(url=server.url),
        rollup_storage=RedisRollups(url=server.url),
        clock=clock,
        lock_ttl=LOCK_TTL_S,
    )
    unblock = threading.Event()
    try:
        record_ok(first, clock, 20)
        with pytest.MonkeyPatch.context() as mp:
            leases = capture_leases(mp, first)

            def blocked_refresh() -> bool:
                unblock.wait(DEADLINE_S)  # a stalled refresher (GC pause, starved thread)
                return False

            def stall_until_taken_over() -> None:
                for lease in leases:
                    lease._refresh = blocked_refresh
                wait_until(lambda: not lock_keys(first, server), "A's leases to expire")
                taken = second.process_pending(report(), batch_size=5)
                assert (taken.processed, taken.complete, taken.locked) == (15, True, False)
                unblock.set()  # A's refresher wakes up to find its leases gone

            on_second_read(mp, first, stall_until_taken_over)
            with pytest.raises(LockLostError):
                first.process_pending(report(), batch_size=5)
        assert pending(first) == 0
        again = process_until_unlocked(first)
        assert (again.processed, again.skipped_already_processed) == (0, 0)
        assert_counts(first, 20)
    finally:
        unblock.set()
        first.close()
        second.close()


def test_a_lease_overwritten_by_another_processor_ends_in_lock_lost(
    server: RedisServer, clock: FakeClock
) -> None:
    meter = meter_on(server, clock, lock_ttl=1.0)
    key = f"{meter.config.namespace}:stream_lock:{NAME}"
    try:
        record_ok(meter, clock, 20)
        with redis.Redis.from_url(server.url) as client, pytest.MonkeyPatch.context() as mp:
            on_second_read(mp, meter, lambda: client.set(key, "another processor", px=60_000))
            with pytest.raises(LockLostError, match="another token"):
                meter.process_pending(report(), batch_size=5)
            assert client.get(key) == b"another processor"  # the release freed nothing
            assert pending(meter) == 20  # the first batch applied and marked, given back
            assert meter.process_pending(report()).locked
            client.delete(key)  # the other processor finishes and releases its lease
        result = meter.process_pending(report(), batch_size=5)
        assert (result.processed, result.skipped_already_processed) == (15, 5)
        assert_counts(meter, 20)
    finally:
        meter.close()


# -- (d) a slow server ------------------------------------------------------------------------


def test_a_slow_server_times_the_write_out_and_recording_never_raises(
    server: RedisServer, clock: FakeClock
) -> None:
    """``DEBUG SLEEP`` blocks the server; the meter's client has a 0.2 s socket timeout.

    The write returns a failed ``WriteResult`` (``StorageError`` from a
    ``TimeoutError``) in about the timeout. A timeout means "not known to be
    recorded": the server still runs the ``XADD`` it received once it wakes up,
    so the stream ends up holding that event too.
    """
    meter = EventMeter(
        namespace=random_namespace(),
        redis=lambda: redis.Redis.from_url(server.url, socket_timeout=0.2),
        clock=clock,
    )
    admin = redis.Redis.from_url(server.url)
    sleeper = threading.Thread(
        target=lambda: admin.execute_command("DEBUG", "SLEEP", "1.5")  # type: ignore[no-untyped-call]
    )
    try:
        record_ok(meter, clock, 4)
        sleeper.start()
        with redis.Redis.from_url(server.url, socket_timeout=0.05) as probe:

            def asleep() -> bool:
                try:
                    probe.ping()
                except redis.TimeoutError:
                    return True
                return False

            wait_until(asleep, "the server to sleep")
        started = time.monotonic()
        result = meter.start(NAME, customer=4).success()
        elapsed = time.monotonic() - started
        assert not result.recorded
        assert isinstance(result.error, StorageError), result.error
        assert "Timeout" in str(result.error)
        assert elapsed < FAILED_WRITE_BOUND_S, f"the write took {elapsed:.2f} s"
        sleeper.join(DEADLINE_S)
        clock.advance(seconds=1)
        record_ok(meter, clock, 3, first=5)
        assert pending(meter) == 8  # 4 + the timed-out one + 3
        assert meter.process_pending(report()).processed == 8
        assert meter.summary(report())["count"] == 8
    finally:
        sleeper.join(DEADLINE_S)
        admin.close()
        meter.close()
