"""History cleanup and automatic cleanup (SPEC 12) over every pairing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from event_meter._time import datetime_to_ms
from support import FakeClock, record

NAME = "invoice_delivery"
ZERO = {"rollup_keys_deleted": 0, "interval_state_keys_deleted": 0, "processed_entries_deleted": 0}


def when(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, 6, hour, minute, tzinfo=UTC)


def report_of(name: str = NAME) -> Report:
    return Report(name).index_by("provider").measure_interval_by("customer_id", group_by="provider")


def record_and_process(
    meter: EventMeter, clock: FakeClock, started: datetime, customer_id: int, name: str = NAME
) -> None:
    """One event started at ``started``, processed two minutes later (markers kept)."""
    clock.set(started)
    record(meter, name, customer_id=customer_id, provider="p")
    clock.advance(minutes=2)
    result = meter.process_pending(report_of(name))
    assert (result.processed, result.complete, result.locked) == (1, True, False)


def ref_of(meter: EventMeter, name: str = NAME) -> ReportRef:
    return ReportRef(meter.config.namespace, name, 1)


def markers_kept(meter: EventMeter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep processed markers after the delete, as a crash before ``forget`` would."""

    def keep(ref: ReportRef, entry_ids: object) -> None:
        return None

    monkeypatch.setattr(meter.rollups, "forget", keep)


def hourly(meter: EventMeter, name: str = NAME) -> list[int]:
    rows = meter.series(Report(name), start=when(9), end=when(11), every="hour")
    return [row["count"] for row in rows]


# -- cleanup_history -----------------------------------------------------------------------


def test_cleanup_history_counts_by_kind_and_deletes_only_older_data(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers_kept(meter, monkeypatch)
    record_and_process(meter, clock, when(9, 10), customer_id=1)  # marked at 09:12
    record_and_process(meter, clock, when(10, 20), customer_id=2)  # marked at 10:22
    assert hourly(meter) == [1, 1]
    counts = meter.cleanup_history(when(10))
    # minute 09:10 and hour 09, each with the all and the provider=p key
    assert counts == {
        "rollup_keys_deleted": 4,
        "interval_state_keys_deleted": 1,
        "processed_entries_deleted": 1,
    }
    assert list(counts) == list(ZERO)
    assert hourly(meter) == [0, 1]
    assert meter.summary(Report(NAME), start=when(10, 20), end=when(10, 21))["count"] == 1
    state = meter.rollups.read_state(ref_of(meter), [("customer_id", "1"), ("customer_id", "2")])
    assert state == {("customer_id", "2"): datetime_to_ms(when(10, 20))}
    assert meter.cleanup_history(when(10)) == ZERO


def test_cleanup_history_deletes_buckets_that_end_at_before(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers_kept(meter, monkeypatch)
    record_and_process(meter, clock, when(10, 20), customer_id=2)
    assert meter.cleanup_history(when(10, 20)) == ZERO  # minute 10:20 ends at 10:21
    assert meter.cleanup_history(when(10, 21)) == {
        "rollup_keys_deleted": 2,  # minute 10:20: all + provider=p
        "interval_state_keys_deleted": 1,
        "processed_entries_deleted": 0,  # marked at 10:22
    }
    assert hourly(meter) == [0, 1]
    assert meter.cleanup_history(when(11)) == {
        "rollup_keys_deleted": 2,  # hour 10 ends at 11:00
        "interval_state_keys_deleted": 0,
        "processed_entries_deleted": 1,
    }
    assert hourly(meter) == [0, 0]


def test_cleanup_history_accepts_every_time_form(meter: EventMeter, clock: FakeClock) -> None:
    record_and_process(meter, clock, when(9, 10), customer_id=1)
    assert meter.cleanup_history("2026-05-06T10:00:00Z")["rollup_keys_deleted"] == 4
    with pytest.raises(TypeError):
        meter.cleanup_history(1234)
    with pytest.raises(ValueError, match="before"):
        meter.cleanup_history("soon")


@pytest.mark.parametrize(
    "events", [["invoice_delivery"], "invoice_delivery", ("invoice_delivery",)]
)
def test_cleanup_history_events_filter(meter: EventMeter, clock: FakeClock, events: object) -> None:
    record_and_process(meter, clock, when(9, 10), customer_id=1)
    record_and_process(meter, clock, when(9, 11), customer_id=1, name="feed_refresh")
    counts = meter.cleanup_history(when(10), events=events)  # type: ignore[arg-type]
    assert counts["rollup_keys_deleted"] == 4
    assert hourly(meter) == [0, 0]
    assert hourly(meter, "feed_refresh") == [1, 0]
    assert meter.cleanup_history(when(10), events=[])["rollup_keys_deleted"] == 0
    assert meter.cleanup_history(when(10), events=["unknown"])["rollup_keys_deleted"] == 0
    assert hourly(meter, "feed_refresh") == [1, 0]
    assert meter.cleanup_history(when(10))["rollup_keys_deleted"] == 4
    assert hourly(meter, "feed_refresh") == [0, 0]


def test_cleanup_history_without_reports_counts_nothing(meter: EventMeter) -> None:
    assert meter.cleanup_history(when(23)) == ZERO


def test_pending_stream_rows_are_never_aged_out(meter: EventMeter, clock: FakeClock) -> None:
    record_and_process(meter, clock, when(9, 10), customer_id=1)
    clock.set(when(9, 20))
    record(meter, NAME, customer_id=1, provider="p")
    clock.set(when(12))
    meter.cleanup_history(when(23))
    result = meter.process_pending(report_of())
    assert result.processed == 1
    assert meter.summary(Report(NAME), start=when(9, 20), end=when(9, 21))["count"] == 1


# -- automatic cleanup ---------------------------------------------------------------------


def enable_auto(meter: EventMeter, **more: object) -> None:
    meter.configure(
        auto_cleanup_history=True,
        cleanup_history_retention=timedelta(hours=1),
        cleanup_history_interval=timedelta(minutes=10),
        **more,
    )


def watermark(meter: EventMeter) -> int | None:
    return meter.rollups.read_watermark(meter.config.namespace)


def test_automatic_cleanup_is_off_by_default(meter: EventMeter, clock: FakeClock) -> None:
    assert meter.config.auto_cleanup_history is False
    record_and_process(meter, clock, when(9, 10), customer_id=1)
    record_and_process(meter, clock, when(12), customer_id=1)
    assert watermark(meter) is None
    assert hourly(meter) == [1, 0]


def test_automatic_cleanup_runs_after_processing_when_the_watermark_is_missing_or_old(
    meter: EventMeter, clock: FakeClock
) -> None:
    enable_auto(meter)
    record_and_process(meter, clock, when(9, 10), customer_id=1)  # processed at 09:12
    assert watermark(meter) == datetime_to_ms(when(9, 12))
    assert hourly(meter) == [1, 0]  # retention 1 h: nothing old enough yet

    clock.set(when(9, 17))  # 5 minutes later: within the interval, no run
    meter.process_pending(report_of())
    assert watermark(meter) == datetime_to_ms(when(9, 12))

    clock.set(when(11, 30))  # long after: runs with before = 10:30
    meter.process_pending(report_of())
    assert watermark(meter) == datetime_to_ms(when(11, 30))
    assert hourly(meter) == [0, 0]
    assert meter.rollups.read_state(ref_of(meter), [("customer_id", "1")]) == {}


def test_automatic_cleanup_skips_when_the_cleanup_lock_is_held(
    meter: EventMeter, clock: FakeClock
) -> None:
    enable_auto(meter)
    lease = meter.rollups.try_cleanup_lock(meter.config.namespace, 30_000)
    assert lease is not None
    try:
        record_and_process(meter, clock, when(9, 10), customer_id=1)
        clock.set(when(12))
        meter.process_pending(report_of())
        assert watermark(meter) is None
        assert hourly(meter) == [1, 0]
    finally:
        lease.release()
    meter.process_pending(report_of())
    assert watermark(meter) == datetime_to_ms(when(12))
    assert hourly(meter) == [0, 0]


def test_automatic_cleanup_does_not_run_after_a_locked_pass(
    meter: EventMeter, clock: FakeClock
) -> None:
    enable_auto(meter)
    lease = meter.rollups.try_report_lock(ref_of(meter), 30_000)
    assert lease is not None
    try:
        result = meter.process_pending(report_of())
        assert result.locked is True
        assert watermark(meter) is None
    finally:
        lease.release()


def test_automatic_cleanup_errors_go_to_the_handler_not_the_caller(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BaseException] = []
    enable_auto(meter, auto_cleanup_error_handler=seen.append)
    boom = RuntimeError("disk gone")

    def broken_cleanup(ref: ReportRef, before_ms: int) -> dict[str, int]:
        raise boom

    record_and_process(meter, clock, when(9, 10), customer_id=1)  # stores the definition
    monkeypatch.setattr(meter.rollups, "cleanup", broken_cleanup)
    clock.set(when(12))
    record(meter, NAME, customer_id=1, provider="p")
    clock.advance(minutes=2)
    result = meter.process_pending(report_of())
    assert (result.processed, result.complete) == (1, True)
    assert seen == [boom]


def test_default_error_handler_logs_a_warning_on_the_event_meter_logger(
    meter: EventMeter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    enable_auto(meter)
    record_and_process(meter, clock, when(9, 10), customer_id=1)

    def broken_cleanup(ref: ReportRef, before_ms: int) -> dict[str, int]:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(meter.rollups, "cleanup", broken_cleanup)
    clock.set(when(12))
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        result = meter.process_pending(report_of())
    assert result.locked is False
    found = [r for r in caplog.records if r.name == "event_meter" and r.levelno == logging.WARNING]
    assert len(found) == 1
    exc = found[0].exc_info[1] if found[0].exc_info else None
    assert "disk gone" in found[0].getMessage() or str(exc) == "disk gone"
