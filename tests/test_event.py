"""Recording (SPEC 3): ``start``, the finish calls, ``WriteResult``, context managers,
the ``measure`` decorator, durations, thread safety and the module facade."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import event_meter
from event_meter import AlreadyRecordedError, Event, EventMeter, ValidationError, WriteResult
from event_meter.stores import MemoryRollups, MemoryStream
from support import T0, FakeClock, stored

INVALID_NAME = "event_meter.invalid"


class DeliveryError(Exception):
    """An application exception defined outside ``builtins``."""


class Billing:
    class RejectedError(Exception):
        """A nested class: its qualified name has a dot in it."""


class FlakyStream(MemoryStream):
    """A memory stream whose first ``failures`` appends raise."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def append(self, name: str, payload: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("disk full")
        super().append(name, payload)


class BrokenClock:
    def now(self) -> datetime:
        raise RuntimeError("clock is broken")


def meter_with_stream(stream: MemoryStream, clock: FakeClock) -> EventMeter:
    return EventMeter(stream_storage=stream, rollup_storage=MemoryRollups(), clock=clock)


def params_of(result: WriteResult) -> dict[str, Any]:
    assert result.recorded, result.error
    assert result.payload is not None
    params: dict[str, Any] = result.payload.get("params", {})
    return params


# -- start ------------------------------------------------------------------------------


def test_name_is_positional_only_so_a_param_called_name_works(memory_meter: EventMeter) -> None:
    result = memory_meter.start("invoice_delivery", name="customer", params="p").success()
    assert result.payload is not None
    assert result.payload["name"] == "invoice_delivery"
    assert params_of(result) == {"name": "customer", "params": "p"}


def test_mapping_and_keyword_params_merge_with_keywords_winning(memory_meter: EventMeter) -> None:
    event = memory_meter.start("job", {"provider": "a", "queue": "q"}, provider="b", extra=1)
    assert params_of(event.success()) == {"provider": "b", "queue": "q", "extra": 1}


def test_param_keys_become_str(memory_meter: EventMeter) -> None:
    odd_keys: dict[Any, str] = {1: "one", ("a", 2): "tuple"}
    event = memory_meter.start("job", odd_keys)
    params = params_of(event.success())
    assert params == {"1": "one", str(("a", 2)): "tuple"}
    assert all(type(key) is str for key in params)


@pytest.mark.parametrize("name", ["", "   ", "\t\n", None, 42, b"job"])
def test_blank_or_unusable_name_never_raises_and_fails_every_finish(
    memory_meter: EventMeter, clock: FakeClock, name: Any
) -> None:
    event = memory_meter.start(name)
    assert event.name == INVALID_NAME
    assert isinstance(event.error, ValidationError)
    assert repr(name) in str(event.error)
    for finish in (event.success, event.skip, event.failure):
        result = finish()
        assert not result
        assert result.error is event.error
        assert result.payload is None
    assert not event.recorded
    assert stored(memory_meter, clock, INVALID_NAME) == []


@pytest.mark.parametrize("params", [["a", 1], "customer_id=42", 42, ("a", "b")])
def test_params_that_are_not_a_mapping_are_kept_as_the_event_error(
    memory_meter: EventMeter, clock: FakeClock, params: Any
) -> None:
    event = memory_meter.start("job", params, queue="q")
    assert event.name == "job"
    assert isinstance(event.error, ValidationError)
    assert "mapping" in str(event.error)
    result = event.success()
    assert not result.recorded
    assert result.error is event.error
    assert stored(memory_meter, clock, "job") == []


def test_a_clock_that_raises_is_kept_on_the_event(namespace: str) -> None:
    meter = EventMeter(
        namespace=namespace,
        stream_storage=MemoryStream(),
        rollup_storage=MemoryRollups(),
        clock=BrokenClock(),
    )
    event = meter.start("job", queue="q")
    assert isinstance(event.error, RuntimeError)
    assert event.started_at is None
    result = event.success()
    assert not result.recorded
    assert result.error is event.error
    assert isinstance(meter.stream, MemoryStream)
    assert meter.stream.pending("job") == 0


def test_started_at_comes_from_the_injected_clock(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 5, 6, 10, 15, 20, 123456, tzinfo=UTC))
    event = memory_meter.start("job")
    clock.advance(seconds=5)
    result = event.success()
    assert event.started_at == datetime(2026, 5, 6, 10, 15, 20, 123456, tzinfo=UTC)
    assert result.payload is not None
    assert result.payload["started_at"] == "2026-05-06T10:15:20.123456Z"


def test_a_non_utc_clock_is_rendered_in_utc(memory_meter: EventMeter, clock: FakeClock) -> None:
    clock.set(datetime(2026, 5, 6, 12, 15, 20, tzinfo=timezone(timedelta(hours=2))))
    result = memory_meter.start("job").success()
    assert result.payload is not None
    assert result.payload["started_at"] == "2026-05-06T10:15:20.000000Z"


# -- finishing --------------------------------------------------------------------------


def test_success_records_status_and_params(memory_meter: EventMeter, clock: FakeClock) -> None:
    event = memory_meter.start("invoice_delivery", customer_id=42, provider="postmark")
    result = event.success(message_id="msg_123")
    assert result
    assert result.recorded is True
    assert result.error is None
    assert result.payload is not None
    assert result.payload["status"] == "success"
    assert result.payload["params"] == {
        "customer_id": 42,
        "provider": "postmark",
        "message_id": "msg_123",
    }
    assert stored(memory_meter, clock, "invoice_delivery") == [result.payload]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("quota reached", {"skip_reason": "quota reached"}),
        (42, {"skip_reason": "42"}),
        ({"skip_reason": "custom", 7: "seven"}, {"skip_reason": "custom", "7": "seven"}),
        (None, {}),
    ],
)
def test_skip_reason(memory_meter: EventMeter, reason: object, expected: dict[str, Any]) -> None:
    result = memory_meter.start("job", queue="q").skip(reason)
    assert result.payload is not None
    assert result.payload["status"] == "skipped"
    assert params_of(result) == {"queue": "q", **expected}


def test_skip_keywords_win_over_a_mapping_reason(memory_meter: EventMeter) -> None:
    result = memory_meter.start("job").skip({"why": "reason"}, why="keyword")
    assert params_of(result) == {"why": "keyword"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad input"), {"error_class": "ValueError", "error_message": "bad input"}),
        (KeyError("k"), {"error_class": "KeyError", "error_message": "'k'"}),
        (
            DeliveryError("bounced"),
            {"error_class": f"{__name__}.DeliveryError", "error_message": "bounced"},
        ),
        (
            Billing.RejectedError("no"),
            {"error_class": f"{__name__}.Billing.RejectedError", "error_message": "no"},
        ),
        ({"error_code": 503, 9: "x"}, {"error_code": 503, "9": "x"}),
        ("timeout", {"error_class": "str", "error_message": "timeout"}),
        (503, {"error_class": "int", "error_message": "503"}),
        (None, {}),
    ],
    ids=["builtin", "builtin-str", "app", "nested", "mapping", "str", "int", "none"],
)
def test_failure_payload(memory_meter: EventMeter, error: object, expected: dict[str, Any]) -> None:
    result = memory_meter.start("job", queue="q").failure(error)
    assert result.payload is not None
    assert result.payload["status"] == "failure"
    assert params_of(result) == {"queue": "q", **expected}


def test_failure_keywords_are_params(memory_meter: EventMeter) -> None:
    result = memory_meter.start("job").failure(ValueError("x"), attempt=3)
    assert params_of(result) == {"error_class": "ValueError", "error_message": "x", "attempt": 3}


def test_finish_params_win_over_start_params(memory_meter: EventMeter) -> None:
    event = memory_meter.start("job", {"provider": "a"}, queue="q", attempt=1)
    assert params_of(event.success(provider="b", attempt=2)) == {
        "provider": "b",
        "queue": "q",
        "attempt": 2,
    }
    event = memory_meter.start("job", error_class="start", skip_reason="start")
    assert params_of(event.failure(ValueError("x")))["error_class"] == "ValueError"
    event = memory_meter.start("job", skip_reason="start")
    assert params_of(event.skip("finish"))["skip_reason"] == "finish"


@pytest.mark.parametrize("second", ["success", "skip", "failure"])
def test_a_second_finish_is_already_recorded(
    memory_meter: EventMeter, clock: FakeClock, second: str
) -> None:
    event = memory_meter.start("job")
    first = event.success()
    assert first.recorded
    again = getattr(event, second)()
    assert isinstance(again, WriteResult)
    assert not again
    assert again.recorded is False
    assert isinstance(again.error, AlreadyRecordedError)
    assert again.payload is None
    assert event.status == "success"
    assert len(stored(memory_meter, clock, "job")) == 1


def test_a_failed_append_leaves_the_event_unrecorded_and_retryable(clock: FakeClock) -> None:
    stream = FlakyStream(failures=1)
    meter = meter_with_stream(stream, clock)
    event = meter.start("job", queue="q")
    first = event.success()
    assert not first.recorded
    assert isinstance(first.error, OSError)
    assert first.payload is None
    assert (event.recorded, event.status, event.finished_at) == (False, None, None)
    second = event.success()
    assert second.recorded
    assert (event.recorded, event.status) == (True, "success")
    assert stored(meter, clock, "job") == [second.payload]


def test_a_failed_validation_leaves_the_event_retryable(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    event = memory_meter.start("job")
    bad = event.success(payload=object())
    assert not bad.recorded
    assert isinstance(bad.error, ValidationError)
    assert not event.recorded
    good = event.failure("gave up")
    assert good.recorded
    assert stored(memory_meter, clock, "job") == [good.payload]


def test_storage_errors_never_raise_on_the_write_path(clock: FakeClock) -> None:
    stream = FlakyStream(failures=10**9)
    meter = meter_with_stream(stream, clock)
    results = [
        meter.start("job").success(),
        meter.start("job").skip("x"),
        meter.start("job").failure(ValueError("x")),
        asyncio.run(meter.start("job").asuccess()),
    ]
    assert [result.recorded for result in results] == [False] * 4
    assert all(isinstance(result.error, OSError) for result in results)

    with meter.start("job") as event:
        pass
    assert not event.recorded

    with pytest.raises(DeliveryError), meter.start("job") as event:
        raise DeliveryError("app error is still re-raised")
    assert not event.recorded

    @meter.measure("job")
    def work() -> str:
        return "done"

    assert work() == "done"
    assert stream.attempts == 7


def test_write_result_fields_and_truthiness() -> None:
    ok = WriteResult(True, None, {"name": "x"})
    failed = WriteResult(False, ValueError("x"))
    assert bool(ok) is True
    assert bool(failed) is False
    assert failed.payload is None
    assert (ok.recorded, ok.error, ok.payload) == (True, None, {"name": "x"})


class FakeCounter:
    """``perf_counter_ns`` returning ``start`` first, then ``end``."""

    def __init__(self, start: int, end: int) -> None:
        self.values: Iterator[int] = iter([start])
        self.end = end

    def __call__(self) -> int:
        return next(self.values, self.end)


def test_readable_attributes_before_and_after(
    memory_meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_ns = 10_000_000_000
    monkeypatch.setattr(time, "perf_counter_ns", FakeCounter(start_ns, start_ns + 734_400_000))
    event = memory_meter.start("job")
    assert isinstance(event, Event)
    assert (event.name, event.started_at) == ("job", T0)
    assert (event.finished_at, event.status, event.error, event.recorded) == (
        None,
        None,
        None,
        False,
    )
    result = event.skip()
    assert (event.status, event.error, event.recorded) == ("skipped", None, True)
    assert result.payload is not None
    # finished_at agrees with started_at and the recorded duration (to the rounding).
    assert event.finished_at is not None
    assert event.started_at is not None
    elapsed = event.finished_at - event.started_at
    assert abs(elapsed - timedelta(milliseconds=result.payload["duration_ms"])) < timedelta(
        milliseconds=1
    )


# -- duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed_ns", "expected_ms"),
    [
        (0, 0),
        (499_999, 0),
        (500_001, 1),
        (1_499_999, 1),
        (734_400_000, 734),
        (734_600_000, 735),
        (-5_000_000, 0),
    ],
)
def test_duration_is_rounded_to_the_nearest_ms_and_never_negative(
    memory_meter: EventMeter,
    monkeypatch: pytest.MonkeyPatch,
    elapsed_ns: int,
    expected_ms: int,
) -> None:
    start = 10_000_000_000
    monkeypatch.setattr(time, "perf_counter_ns", FakeCounter(start, start + elapsed_ns))
    event = memory_meter.start("job")
    result = event.success()
    assert result.payload is not None
    assert result.payload["duration_ms"] == expected_ms


# -- context managers and the decorator ---------------------------------------------------


def test_context_manager_records_success_on_normal_exit(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    with memory_meter.start("job", queue="q") as event:
        assert not event.recorded
    assert event.status == "success"
    [payload] = stored(memory_meter, clock, "job")
    assert (payload["status"], payload["params"]) == ("success", {"queue": "q"})


def test_context_manager_records_failure_and_reraises(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    with pytest.raises(DeliveryError, match="bounced"), memory_meter.start("job") as event:
        raise DeliveryError("bounced")
    assert event.status == "failure"
    [payload] = stored(memory_meter, clock, "job")
    assert payload["params"] == {
        "error_class": f"{__name__}.DeliveryError",
        "error_message": "bounced",
    }


def test_context_manager_does_not_record_twice(memory_meter: EventMeter, clock: FakeClock) -> None:
    with memory_meter.start("job") as event:
        event.skip("inside")
    assert event.status == "skipped"
    assert [p["status"] for p in stored(memory_meter, clock, "job")] == ["skipped"]


def test_context_manager_reraises_without_recording_a_finished_event_again(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    def finish_then_fail(event: Event) -> None:
        event.success()
        raise DeliveryError("after finishing")

    with pytest.raises(DeliveryError), memory_meter.start("job") as event:
        finish_then_fail(event)
    assert event.status == "success"
    assert [p["status"] for p in stored(memory_meter, clock, "job")] == ["success"]


def test_measure_decorator_on_a_sync_function(memory_meter: EventMeter, clock: FakeClock) -> None:
    @memory_meter.measure("feed_refresh", {"queue": "feeds"}, kind="sync")
    def refresh(feed_id: int, *, fail: bool = False) -> int:
        """Refresh one feed."""
        if fail:
            raise DeliveryError(f"feed {feed_id}")
        return feed_id * 2

    assert refresh.__name__ == "refresh"
    assert refresh.__doc__ == "Refresh one feed."
    assert refresh(21) == 42
    with pytest.raises(DeliveryError):
        refresh(7, fail=True)
    payloads = stored(memory_meter, clock, "feed_refresh")
    assert [(p["status"], p["params"].get("error_message")) for p in payloads] == [
        ("success", None),
        ("failure", "feed 7"),
    ]
    assert all(p["params"]["queue"] == "feeds" for p in payloads)
    assert all(p["params"]["kind"] == "sync" for p in payloads)


def test_measure_decorator_on_an_async_function(memory_meter: EventMeter, clock: FakeClock) -> None:
    @memory_meter.measure("feed_refresh", queue="feeds")
    async def refresh(feed_id: int) -> int:
        await asyncio.sleep(0)
        if feed_id < 0:
            raise DeliveryError("negative")
        return feed_id

    assert inspect.iscoroutinefunction(refresh)
    assert asyncio.run(refresh(5)) == 5
    with pytest.raises(DeliveryError):
        asyncio.run(refresh(-1))
    payloads = stored(memory_meter, clock, "feed_refresh")
    assert [p["status"] for p in payloads] == ["success", "failure"]
    assert payloads[1]["params"]["error_class"] == f"{__name__}.DeliveryError"


def test_each_decorated_call_is_its_own_event(memory_meter: EventMeter, clock: FakeClock) -> None:
    @memory_meter.measure("job")
    def work() -> None:
        clock.advance(seconds=1)

    for _ in range(3):
        work()
    starts = [p["started_at"] for p in stored(memory_meter, clock, "job")]
    assert starts == [
        "2026-05-06T10:15:00.000000Z",
        "2026-05-06T10:15:01.000000Z",
        "2026-05-06T10:15:02.000000Z",
    ]


def test_async_finish_twins(memory_meter: EventMeter, clock: FakeClock) -> None:
    async def run() -> list[WriteResult]:
        return [
            await memory_meter.start("job", n=1).asuccess(extra="x"),
            await memory_meter.start("job", n=2).askip("later"),
            await memory_meter.start("job", n=3).afailure(ValueError("bad")),
        ]

    results = asyncio.run(run())
    assert [r.recorded for r in results] == [True, True, True]
    assert [params_of(r) for r in results] == [
        {"n": 1, "extra": "x"},
        {"n": 2, "skip_reason": "later"},
        {"n": 3, "error_class": "ValueError", "error_message": "bad"},
    ]
    assert [p["status"] for p in stored(memory_meter, clock, "job")] == [
        "success",
        "skipped",
        "failure",
    ]


def test_async_with(memory_meter: EventMeter, clock: FakeClock) -> None:
    async def run() -> None:
        async with memory_meter.start("job", n=1):
            await asyncio.sleep(0)
        async with memory_meter.start("job", n=2) as event:
            await event.askip("done inside")
        with pytest.raises(DeliveryError):
            async with memory_meter.start("job", n=3):
                raise DeliveryError("boom")

    asyncio.run(run())
    payloads = stored(memory_meter, clock, "job")
    assert [(p["params"]["n"], p["status"]) for p in payloads] == [
        (1, "success"),
        (2, "skipped"),
        (3, "failure"),
    ]


# -- concurrency ------------------------------------------------------------------------


def test_many_threads_recording_through_one_meter_lose_nothing(
    meter: EventMeter, clock: FakeClock
) -> None:
    threads, per_thread = 8, 150
    barrier = threading.Barrier(threads)
    failures: list[WriteResult] = []

    def work(thread: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            result = meter.start("job", thread=thread, i=i).success()
            if not result:
                failures.append(result)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    payloads = stored(meter, clock, "job")
    seen = sorted((p["params"]["thread"], p["params"]["i"]) for p in payloads)
    assert seen == [(t, i) for t in range(threads) for i in range(per_thread)]


def test_recorded_payloads_round_trip_through_every_stream(
    meter: EventMeter, clock: FakeClock
) -> None:
    result = meter.start("invoice_delivery", customer_id=42).success(provider="postmark")
    assert stored(meter, clock, "invoice_delivery") == [result.payload]


# -- the module facade ------------------------------------------------------------------


def test_facade_start_uses_the_embedded_default_under_event_meter_path(tmp_path: Path) -> None:
    result = event_meter.start("invoice_delivery", customer_id=42).success()
    assert result.recorded, result.error
    root = tmp_path / "embedded"
    lines = [
        json.loads(line) for file in root.rglob("*.jsonl") for line in file.read_text().splitlines()
    ]
    assert [line["payload"] for line in lines] == [result.payload]


def test_configure_returns_the_default_and_updates_its_options(
    clock: FakeClock, namespace: str
) -> None:
    meter = event_meter.configure(
        namespace=namespace, stream_storage="memory://", rollup_storage="memory://", clock=clock
    )
    assert meter is event_meter.default_meter()
    assert meter.config.namespace == namespace
    again = event_meter.configure(lock_ttl=5)
    assert again is meter
    assert meter.config.lock_ttl_ms == 5_000
    assert meter.config.namespace == namespace
    assert meter.config.clock is clock
    event = event_meter.start("job", queue="q")
    assert event.started_at == T0
    assert event.success().recorded
    assert stored(meter, clock, "job")[0]["params"] == {"queue": "q"}


def test_reset_restores_an_unconfigured_default(clock: FakeClock) -> None:
    configured = event_meter.configure(namespace="custom:ns", clock=clock)
    event_meter.reset()
    fresh = event_meter.default_meter()
    assert fresh is not configured
    assert fresh.config.namespace == "event_meter:v1"
    assert fresh.config.clock is not clock


def test_facade_measure_records_through_the_current_default(
    clock: FakeClock, namespace: str
) -> None:
    @event_meter.measure("job", queue="q")
    def work() -> str:
        return "done"

    event_meter.reset()  # decorated at import time, configured later
    meter = event_meter.configure(
        namespace=namespace, stream_storage="memory://", rollup_storage="memory://", clock=clock
    )
    assert work() == "done"
    assert [p["params"] for p in stored(meter, clock, "job")] == [{"queue": "q"}]
