"""The cardinality guard (``Report(max_values_per_index=N)``), on every pairing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from support import FakeClock

NAME = "invoice_delivery"
T = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)
OTHER = {"customer_id": "__other__"}


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def put(
    meter: EventMeter, started: datetime, duration_ms: int | None = None, **params: Any
) -> None:
    payload: dict[str, Any] = {
        "name": NAME,
        "status": "success",
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "params": params,
    }
    if duration_ms is not None:
        payload["duration_ms"] = duration_ms
    meter.stream.append(NAME, payload)


def process(meter: EventMeter, clock: FakeClock, report: Report) -> None:
    clock.advance(minutes=2)  # past the file stream's claim grace
    result = meter.process_pending(report)
    assert result.complete
    assert not result.locked


def stored_keys(meter: EventMeter, report: Report, granularity: str, bucket: str) -> set[str]:
    ref = ReportRef(meter.config.namespace, report.name, report.version)
    return meter.rollups.bucket_index_keys(ref, granularity, bucket, ("customer_id",))


def guarded(limit: int) -> Report:
    return Report(NAME, max_values_per_index=limit).index_by("customer_id")


def window(meter: EventMeter, report: Report, **by: Any) -> dict[str, Any]:
    return meter.summary(report, start=at(-15), end=at(45), by=by or None)


def test_values_beyond_the_limit_go_to_the_overflow_value(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = guarded(2)
    for customer, duration in (("a", 10), ("b", 20), ("a", 30), ("c", 40), ("d", 50), ("c", 60)):
        put(meter, at(0), duration, customer_id=customer)
    process(meter, clock, report)
    total = window(meter, report)
    assert (total["count"], total["overflow_count"], total["duration_ms_sum"]) == (6, 3, 210)
    assert window(meter, report, customer_id="a")["count"] == 2
    assert window(meter, report, customer_id="b")["count"] == 1
    other = window(meter, report, **OTHER)
    assert (other["count"], other["duration_ms_sum"], other["duration_ms_max"]) == (3, 150, 60)
    assert "overflow_count" not in other  # only the all index counts overflow
    assert window(meter, report, customer_id="c")["count"] == 0
    expected = {"customer_id=a", "customer_id=b", "customer_id=__other__"}
    assert stored_keys(meter, report, "minute", "202605061015") == expected
    assert stored_keys(meter, report, "hour", "2026050610") == expected


def test_a_later_pass_reads_what_the_bucket_holds(meter: EventMeter, clock: FakeClock) -> None:
    report = guarded(2)
    put(meter, at(0), customer_id="a")
    put(meter, at(0), customer_id="b")
    process(meter, clock, report)
    put(meter, at(1), customer_id="e")  # same hour: the bucket is full
    put(meter, at(1), customer_id="a")  # held: keeps its own rollup
    put(meter, at(50), customer_id="e")  # 11:05, a new hour bucket: room again
    process(meter, clock, report)
    assert window(meter, report, customer_id="a")["count"] == 2
    assert window(meter, report, **OTHER)["count"] == 1
    assert window(meter, report)["overflow_count"] == 1
    assert stored_keys(meter, report, "hour", "2026050611") == {"customer_id=e"}
    # Minutes follow their hour: 10:16 never holds e although it holds one value only.
    assert stored_keys(meter, report, "minute", "202605061016") == {
        "customer_id=a",
        "customer_id=__other__",
    }


def test_every_param_of_a_multi_param_index_overflows_together(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME, max_values_per_index=1).index_by("provider", "queue")
    put(memory_meter, at(0), provider="p", queue="q1")
    put(memory_meter, at(0), provider="p", queue="q2")
    put(memory_meter, at(0), queue="q3")  # the index does not apply: nothing to guard
    process(memory_meter, clock, report)
    other = window(memory_meter, report, provider="__other__", queue="__other__")
    assert other["count"] == 1
    assert window(memory_meter, report)["overflow_count"] == 1


def test_a_guarded_report_takes_the_report_lock(memory_meter: EventMeter, clock: FakeClock) -> None:
    report = guarded(5)
    put(memory_meter, at(0), customer_id="a")
    clock.advance(minutes=2)
    ref = ReportRef(memory_meter.config.namespace, NAME, 1)
    lease = memory_meter.rollups.try_report_lock(ref, 60_000)
    assert lease is not None
    try:
        assert memory_meter.process_pending(report).locked
    finally:
        lease.release()
    assert memory_meter.process_pending(report).processed == 1


def test_the_guard_is_part_of_the_definition() -> None:
    plain = Report(NAME).index_by("provider")
    limited = Report(NAME, max_values_per_index=100).index_by("provider")
    assert "max_values_per_index" not in plain.definition()
    assert limited.definition()["max_values_per_index"] == 100
    assert plain.fingerprint != limited.fingerprint
    assert Report.from_definition(limited.definition()) == limited
    assert "max_values_per_index=100" in repr(limited)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10"])
def test_a_bad_limit_is_a_value_error_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match=f"max_values_per_index must be a positive int.*{bad!r}"):
        Report(NAME, max_values_per_index=bad)


def test_a_million_distinct_values_keep_the_rollups_bounded_and_totals_exact(
    memory_meter: EventMeter, clock: FakeClock
) -> None:
    limit = 100
    report = guarded(limit)
    started = T.replace(minute=0)
    events = 1_000_000
    seconds = [
        (started + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for s in range(3600)
    ]
    append = memory_meter.stream.append
    for n in range(events):  # 1,000,000 customers over one hour, 16,667 per minute
        append(
            NAME,
            {
                "name": NAME,
                "status": "success",
                "started_at": seconds[n * 3600 // events],
                "duration_ms": n % 997,
                "params": {"customer_id": n},
            },
        )
    clock.set(started + timedelta(hours=1, minutes=2))
    assert memory_meter.process_pending(report).processed == events
    hour_keys = stored_keys(memory_meter, report, "hour", "2026050610")
    assert len(hour_keys) == limit + 1  # 100 values and the overflow value
    for minute in range(60):
        assert len(
            stored_keys(memory_meter, report, "minute", f"20260506{10:02d}{minute:02d}")
        ) <= (limit + 1)
    end = started + timedelta(hours=1)
    total = memory_meter.summary(report, start=started, end=end)
    assert total["count"] == events
    assert total["overflow_count"] == events - limit
    assert total["duration_ms_sum"] == sum(n % 997 for n in range(events))
    per_value = sum(
        memory_meter.summary(report, start=started, end=end, by={"customer_id": key[12:]})["count"]
        for key in hour_keys
    )
    assert per_value == events
