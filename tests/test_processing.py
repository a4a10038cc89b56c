"""Processing (SPEC 5 and 9) over every stream/rollup pairing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from event_meter import DefinitionChangedError, EventMeter, ProcessResult, Report
from event_meter._keys import ReportRef
from event_meter._time import datetime_to_ms
from event_meter.stores.base import BatchDelta, StreamBatch
from event_meter.stores.memory import MemoryRollups, MemoryStream
from expect import percentiles
from support import FakeClock, record

NAME = "invoice_delivery"
T = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)
RESULT_KEYS = [
    "event_name",
    "version",
    "processed",
    "skipped_already_processed",
    "malformed",
    "complete",
    "locked",
]


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payload(
    started: datetime,
    status: str = "success",
    duration_ms: int | None = None,
    name: str = NAME,
    **params: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "status": status, "started_at": iso(started)}
    if duration_ms is not None:
        out["duration_ms"] = duration_ms
    if params:
        out["params"] = params
    return out


def put(
    meter: EventMeter,
    started: datetime,
    status: str = "success",
    duration_ms: int | None = None,
    **params: Any,
) -> None:
    """Append one well-formed pending row with an exact ``started_at``."""
    meter.stream.append(NAME, payload(started, status, duration_ms, **params))


def settle(clock: FakeClock) -> None:
    """Move past the file stream's claim grace for everything appended so far."""
    clock.advance(minutes=2)


def window(
    meter: EventMeter, report: Report, start: datetime, end: datetime, **by: Any
) -> dict[str, Any]:
    return meter.summary(report, start=start, end=end, by=by or None)


def minute_of(meter: EventMeter, report: Report, when: datetime, **by: Any) -> dict[str, Any]:
    start = when.replace(second=0, microsecond=0)
    return window(meter, report, start, start + timedelta(minutes=1), **by)


def hour_of(meter: EventMeter, report: Report, when: datetime, **by: Any) -> dict[str, Any]:
    start = when.replace(minute=0, second=0, microsecond=0)
    (row,) = meter.series(
        report, start=start, end=start + timedelta(hours=1), every="hour", by=by or None
    )
    return row


def interval_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k.startswith("interval_ms")}


def no_intervals() -> dict[str, Any]:
    return {"interval_ms_count": 0, "interval_ms_sum": 0}


def samples(*values: int) -> dict[str, Any]:
    return {
        "interval_ms_count": len(values),
        "interval_ms_sum": sum(values),
        "interval_ms_avg": sum(values) / len(values),
        "interval_ms_min": min(values),
        "interval_ms_max": max(values),
        **percentiles("interval_ms", values),
    }


def state_of(meter: EventMeter, report: Report, param: str, value: str) -> int | None:
    ref = ReportRef(meter.config.namespace, report.name, report.version)
    return meter.rollups.read_state(ref, [(param, value)]).get((param, value))


# -- ProcessResult -------------------------------------------------------------------------


def test_empty_stream_is_complete_and_processes_nothing(meter: EventMeter) -> None:
    result = meter.process_pending(Report(NAME))
    assert isinstance(result, ProcessResult)
    assert result.to_dict() == {
        "event_name": NAME,
        "version": 1,
        "processed": 0,
        "skipped_already_processed": 0,
        "malformed": 0,
        "complete": True,
        "locked": False,
    }


def test_process_result_fields_and_to_dict_order(meter: EventMeter, clock: FakeClock) -> None:
    for i in range(3):
        put(meter, at(i))
    meter.stream.append(NAME, {"name": NAME, "status": "bogus", "started_at": iso(at(4))})
    settle(clock)
    result = meter.process_pending(Report(NAME, version=2))
    assert list(result.to_dict()) == RESULT_KEYS
    assert (result.event_name, result.version) == (NAME, 2)
    assert result.processed == 4  # malformed rows count as processed too
    assert result.malformed == 1
    assert result.skipped_already_processed == 0
    assert result.complete is True
    assert result.locked is False
    assert meter.process_pending(Report(NAME, version=2)).processed == 0


# -- counts and measures -------------------------------------------------------------------


def test_counts_per_status(meter: EventMeter, clock: FakeClock) -> None:
    for status, times in (("success", 3), ("failure", 2), ("skipped", 1)):
        for _ in range(times):
            record(meter, NAME, status)
    settle(clock)
    report = Report(NAME)
    assert meter.process_pending(report).processed == 6
    summary = minute_of(meter, report, T)
    assert (
        summary["count"],
        summary["success_count"],
        summary["failure_count"],
        summary["skipped_count"],
    ) == (
        6,
        3,
        2,
        1,
    )


def test_started_at_min_and_max_use_whole_milliseconds(meter: EventMeter, clock: FakeClock) -> None:
    put(meter, T.replace(second=40, microsecond=500_000))
    put(meter, T.replace(second=20, microsecond=123_999))
    put(meter, T.replace(second=30))
    settle(clock)
    report = Report(NAME)
    meter.process_pending(report)
    summary = minute_of(meter, report, T)
    assert summary["started_at_min"] == "2026-05-06T10:15:20.123000Z"
    assert summary["started_at_max"] == "2026-05-06T10:15:40.500000Z"


def test_duration_stats(meter: EventMeter, clock: FakeClock) -> None:
    for duration in (100, 300, 200, None, 0):
        put(meter, at(5), duration_ms=duration)
    settle(clock)
    report = Report(NAME)
    meter.process_pending(report)
    summary = minute_of(meter, report, T)
    assert summary["count"] == 5
    assert summary["duration_ms_count"] == 4
    assert summary["duration_ms_sum"] == 600
    assert summary["duration_ms_avg"] == 150.0
    assert summary["duration_ms_min"] == 0
    assert summary["duration_ms_max"] == 300


def test_minute_and_hour_buckets_are_both_updated(meter: EventMeter, clock: FakeClock) -> None:
    put(meter, T.replace(minute=15, second=20), duration_ms=10)
    put(meter, T.replace(minute=47), duration_ms=30)
    settle(clock)
    report = Report(NAME)
    meter.process_pending(report)
    assert minute_of(meter, report, T.replace(minute=15))["count"] == 1
    assert minute_of(meter, report, T.replace(minute=47))["count"] == 1
    assert minute_of(meter, report, T.replace(minute=30))["count"] == 0
    hour = hour_of(meter, report, T)
    assert (hour["count"], hour["duration_ms_sum"], hour["duration_ms_max"]) == (2, 40, 30)


def test_late_events_go_to_their_own_buckets_however_late_processed(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    put(meter, T)
    settle(clock)
    meter.process_pending(report)
    clock.advance(hours=5)  # written much later than they started
    late = datetime(2026, 5, 6, 8, 59, 59, 999_000, tzinfo=UTC)
    put(meter, late)
    put(meter, at(1))
    settle(clock)
    assert meter.process_pending(report).processed == 2
    assert minute_of(meter, report, late)["count"] == 1
    assert hour_of(meter, report, late)["count"] == 1
    assert minute_of(meter, report, T)["count"] == 2
    assert hour_of(meter, report, T)["count"] == 2
    now_minute = clock.now().replace(second=0, microsecond=0)
    assert minute_of(meter, report, now_minute)["count"] == 0


# -- indexes -------------------------------------------------------------------------------


def test_index_applies_only_when_every_param_is_present_and_not_none(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME).index_by("provider").index_by("queue", "provider")
    put(meter, at(1), provider="postmark", queue="mail")
    put(meter, at(2), provider="postmark")  # queue missing
    put(meter, at(3), provider="postmark", queue=None)
    put(meter, at(4), provider=None, queue="mail")
    put(meter, at(5), queue="mail")
    put(meter, at(6), provider="", queue="")
    put(meter, at(7))
    settle(clock)
    meter.process_pending(report)
    assert minute_of(meter, report, T)["count"] == 7
    assert minute_of(meter, report, T, provider="postmark")["count"] == 3
    assert minute_of(meter, report, T, provider="")["count"] == 1
    for never in ("None", "null", "none", "postmark|None"):
        assert minute_of(meter, report, T, provider=never)["count"] == 0
    assert minute_of(meter, report, T, provider="postmark", queue="mail")["count"] == 1
    assert minute_of(meter, report, T, provider="", queue="")["count"] == 1
    assert minute_of(meter, report, T, provider="postmark", queue="null")["count"] == 0
    assert minute_of(meter, report, T, provider="null", queue="mail")["count"] == 0


@pytest.mark.parametrize(
    ("stored", "queried"), [(44, "44"), ("44", 44), (44, 44), (True, "true"), (1.5, "1.5")]
)
def test_index_key_values_render_the_same_for_ints_and_their_text(
    meter: EventMeter, clock: FakeClock, stored: Any, queried: Any
) -> None:
    report = Report(NAME).index_by("customer_id")
    put(meter, at(1), customer_id=stored)
    put(meter, at(2), customer_id=str(queried))
    settle(clock)
    meter.process_pending(report)
    assert minute_of(meter, report, T, customer_id=queried)["count"] == 2


def test_int_and_text_of_one_value_share_one_rollup(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME).index_by("customer_id")
    put(meter, at(1), customer_id=44)
    put(meter, at(2), customer_id="44")
    put(meter, at(3), customer_id=45)
    settle(clock)
    meter.process_pending(report)
    for query in (44, "44"):
        assert minute_of(meter, report, T, customer_id=query)["count"] == 2
    assert minute_of(meter, report, T, customer_id=45)["count"] == 1


# -- intervals (SPEC 9 step 7) -------------------------------------------------------------


def interval_report() -> Report:
    return Report(NAME).measure_interval_by("customer_id", group_by="provider")


def test_first_event_gives_no_sample_and_later_ones_give_the_difference(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = interval_report()
    put(meter, at(1), customer_id=42, provider="p")
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == no_intervals()
    assert state_of(meter, report, "customer_id", "42") == datetime_to_ms(at(1))
    put(meter, at(6), customer_id=42, provider="p")
    put(meter, at(13.5), customer_id=42, provider="p")
    put(meter, at(2), customer_id=7, provider="p")  # another identity: its own first event
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(5_000, 7_500)
    assert interval_fields(hour_of(meter, report, T, provider="p")) == samples(5_000, 7_500)
    # samples go to the group index only
    assert interval_fields(minute_of(meter, report, T)) == no_intervals()
    assert state_of(meter, report, "customer_id", "42") == datetime_to_ms(at(13.5))
    assert state_of(meter, report, "customer_id", "7") == datetime_to_ms(at(2))


def test_samples_land_in_the_bucket_of_the_later_event(meter: EventMeter, clock: FakeClock) -> None:
    report = interval_report()
    put(meter, at(50), customer_id=42, provider="p")
    put(meter, at(70), customer_id=42, provider="p")  # next minute
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, at(50), provider="p")) == no_intervals()
    assert interval_fields(minute_of(meter, report, at(70), provider="p")) == samples(20_000)


@pytest.mark.parametrize("late_offset", [0, -3], ids=["equal-start", "earlier-start"])
def test_events_not_later_than_the_state_give_nothing_and_leave_it(
    meter: EventMeter, clock: FakeClock, late_offset: int
) -> None:
    report = interval_report()
    put(meter, at(10), customer_id=42, provider="p")
    put(meter, at(10 + late_offset), customer_id=42, provider="p")
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == no_intervals()
    assert state_of(meter, report, "customer_id", "42") == datetime_to_ms(at(10))
    put(meter, at(10 + late_offset), customer_id=42, provider="p")  # again, in a later pass
    put(meter, at(12), customer_id=42, provider="p")
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(2_000)
    assert minute_of(meter, report, T, provider="p")["count"] == 4


def test_interval_state_persists_across_process_pending_calls(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = interval_report()
    for offset in (1, 4, 9):
        put(meter, at(offset), customer_id=42, provider="p")
        settle(clock)
        meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(3_000, 5_000)


@pytest.mark.parametrize(
    "skipped_params",
    [
        {"customer_id": 42, "provider": None},
        {"customer_id": 42},
        {"customer_id": None, "provider": "p"},
        {"provider": "p"},
    ],
    ids=["group-none", "group-missing", "identity-none", "identity-missing"],
)
def test_rule_is_skipped_when_identity_or_group_value_is_missing(
    meter: EventMeter, clock: FakeClock, skipped_params: dict[str, Any]
) -> None:
    report = interval_report()
    put(meter, at(1), customer_id=42, provider="p")
    put(meter, at(5), **skipped_params)  # must neither sample nor move the state
    put(meter, at(10), customer_id=42, provider="p")
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(9_000)
    assert state_of(meter, report, "customer_id", "42") == datetime_to_ms(at(10))
    assert minute_of(meter, report, T)["count"] == 3


def test_rule_without_group_by_samples_into_the_all_index(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME).measure_interval_by("customer_id")
    put(meter, at(1), customer_id=42)
    put(meter, at(4), customer_id=42, provider="anything")
    put(meter, at(8), customer_id="42")  # same identity as 42
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T)) == samples(3_000, 4_000)


def test_two_rules_on_one_param_see_the_same_previous_value(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = (
        Report(NAME)
        .measure_interval_by("customer_id", group_by="provider")
        .measure_interval_by("customer_id", group_by="queue")
    )
    put(meter, at(1), customer_id=42, provider="p", queue="q")
    put(meter, at(6), customer_id=42, provider="p", queue="q")
    settle(clock)
    meter.process_pending(report)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(5_000)
    assert interval_fields(minute_of(meter, report, T, queue="q")) == samples(5_000)


# -- malformed rows ------------------------------------------------------------------------

GOOD = {"status": "success", "started_at": iso(at(30))}
MALFORMED: dict[str, dict[str, Any]] = {
    "missing-name": dict(GOOD),
    "blank-name": {"name": "  ", **GOOD},
    "name-not-text": {"name": 7, **GOOD},
    "bad-status": {"name": NAME, "status": "ok", "started_at": iso(at(30))},
    "missing-status": {"name": NAME, "started_at": iso(at(30))},
    "missing-started-at": {"name": NAME, "status": "success"},
    "unparseable-started-at": {"name": NAME, "status": "success", "started_at": "yesterday"},
    "negative-duration": {"name": NAME, **GOOD, "duration_ms": -1},
    "float-duration": {"name": NAME, **GOOD, "duration_ms": 1.5},
    "text-duration": {"name": NAME, **GOOD, "duration_ms": "5"},
    "params-not-object": {"name": NAME, **GOOD, "params": ["provider", "p"]},
    "params-text": {"name": NAME, **GOOD, "params": "provider=p"},
    "wrong-event-name": {"name": "other_event", **GOOD},
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_rows_are_counted_not_rolled_up_and_do_not_block_the_batch(
    meter: EventMeter, clock: FakeClock, bad: dict[str, Any]
) -> None:
    report = Report(NAME).index_by("provider")
    put(meter, at(1), duration_ms=10, provider="p")
    meter.stream.append(NAME, bad)
    put(meter, at(2), duration_ms=20, provider="p")
    settle(clock)
    result = meter.process_pending(report)
    assert (result.processed, result.malformed, result.complete) == (3, 1, True)
    summary = minute_of(meter, report, T)
    assert (summary["count"], summary["duration_ms_sum"]) == (2, 30)
    assert minute_of(meter, report, T, provider="p")["count"] == 2
    again = meter.process_pending(report)
    assert (again.processed, again.malformed, again.skipped_already_processed) == (0, 0, 0)


# -- batching ------------------------------------------------------------------------------


def rich_report() -> Report:
    return Report(NAME).index_by("provider").measure_interval_by("customer_id", group_by="provider")


def rich_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(10):
        rows.append(
            payload(
                at(7 * i + (3 if i % 4 == 0 else 0)),
                status=("success", "failure", "skipped")[i % 3],
                duration_ms=10 * i if i % 5 else None,
                customer_id=i % 3,
                provider="p" if i % 2 else "q",
            )
        )
    return rows


def test_small_batches_give_the_same_rollups_as_one_batch(
    meter: EventMeter, clock: FakeClock
) -> None:
    reference = EventMeter(
        namespace=meter.config.namespace,
        stream_storage=MemoryStream(),
        rollup_storage=MemoryRollups(),
        clock=clock,
    )
    for row in rich_rows():
        meter.stream.append(NAME, row)
        reference.stream.append(NAME, row)
    settle(clock)
    progress: list[int] = []
    result = meter.process_pending(
        rich_report(), batch_size=3, progress=lambda r: progress.append(r.processed)
    )
    assert (result.processed, result.complete) == (10, True)
    assert progress == [3, 6, 9, 10]
    assert reference.process_pending(rich_report()).processed == 10
    start, end = T, T + timedelta(minutes=3)
    for by in (None, {"provider": "p"}, {"provider": "q"}):
        assert meter.summary(rich_report(), start=start, end=end, by=by) == reference.summary(
            rich_report(), start=start, end=end, by=by
        )
        assert meter.series(rich_report(), start=start, end=end, by=by) == reference.series(
            rich_report(), start=start, end=end, by=by
        )
    assert (
        interval_fields(meter.summary(rich_report(), start=start, end=end, by={"provider": "p"}))[
            "interval_ms_count"
        ]
        > 0
    )


# -- definitions ---------------------------------------------------------------------------


def test_changed_definition_raises_before_reading_the_stream(
    meter: EventMeter, clock: FakeClock
) -> None:
    original = Report(NAME).index_by("provider")
    meter.process_pending(original)
    put(meter, at(1), provider="p")
    put(meter, at(2), provider="p")
    settle(clock)
    with pytest.raises(DefinitionChangedError, match=rf"{NAME} v1 changed; bump version"):
        meter.process_pending(Report(NAME).index_by("queue"))
    with pytest.raises(DefinitionChangedError):
        meter.process_pending(Report(NAME).index_by("provider").measure_interval_by("customer_id"))
    result = meter.process_pending(original)
    assert (result.processed, result.skipped_already_processed) == (2, 0)
    assert minute_of(meter, original, T, provider="p")["count"] == 2
    assert meter.report_definition(NAME, version=1) == original.definition()


def test_a_new_version_is_a_new_report(meter: EventMeter, clock: FakeClock) -> None:
    meter.process_pending(Report(NAME).index_by("provider"))
    put(meter, at(1), queue="q")
    settle(clock)
    v2 = Report(NAME, version=2).index_by("queue")
    assert meter.process_pending(v2).processed == 1
    assert minute_of(meter, v2, T, queue="q")["count"] == 1


def test_process_by_name_and_version_uses_the_stored_definition(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME).index_by("provider")
    meter.process_pending(report)
    put(meter, at(1), provider="p")
    settle(clock)
    result = meter.process_pending(NAME, version=1)
    assert (result.event_name, result.version, result.processed) == (NAME, 1, 1)
    assert minute_of(meter, report, T, provider="p")["count"] == 1


def test_process_by_name_of_a_new_report_keeps_the_all_index(
    meter: EventMeter, clock: FakeClock
) -> None:
    put(meter, at(1), provider="p")
    settle(clock)
    assert meter.process_pending(NAME, version=3).processed == 1
    assert meter.report_definition(NAME, version=3) == Report(NAME, version=3).definition()
    assert meter.summary(NAME, version=3, start=T, end=at(60))["count"] == 1


def test_process_by_name_needs_a_version(meter: EventMeter) -> None:
    with pytest.raises(ValueError, match="version"):
        meter.process_pending(NAME)


def _returning(report: Report) -> Report:
    return report.index_by("provider")


def _mutating(report: Report) -> None:
    report.index_by("provider")


@pytest.mark.parametrize("define", [_returning, _mutating], ids=["returns-report", "returns-none"])
def test_process_by_name_with_define(
    meter: EventMeter, clock: FakeClock, define: Callable[[Report], Report | None]
) -> None:
    put(meter, at(1), provider="p")
    settle(clock)
    seen: list[Report] = []

    def spy(report: Report) -> Report | None:
        seen.append(report)
        assert (report.name, report.version) == (NAME, 4)
        return define(report)

    result = meter.process_pending(NAME, version=4, define=spy)
    assert len(seen) == 1
    assert result.processed == 1
    assert meter.report_definition(NAME, version=4)["indexes"] == [[], ["provider"]]
    assert meter.summary(NAME, version=4, start=T, end=at(60), by={"provider": "p"})["count"] == 1


# -- locks ---------------------------------------------------------------------------------


def test_report_lock_held_elsewhere_means_locked_and_nothing_read(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = interval_report()
    meter.process_pending(report)
    put(meter, at(1), customer_id=1, provider="p")
    put(meter, at(2), customer_id=1, provider="p")
    settle(clock)
    lease = meter.rollups.try_report_lock(ReportRef(meter.config.namespace, NAME, 1), 30_000)
    assert lease is not None
    try:
        result = meter.process_pending(report)
        assert result.to_dict() == {
            "event_name": NAME,
            "version": 1,
            "processed": 0,
            "skipped_already_processed": 0,
            "malformed": 0,
            "complete": True,
            "locked": True,
        }
        assert minute_of(meter, report, T)["count"] == 0
    finally:
        lease.release()
    after = meter.process_pending(report)
    assert (after.locked, after.processed) == (False, 2)
    assert interval_fields(minute_of(meter, report, T, provider="p")) == samples(1_000)


def test_a_report_without_intervals_does_not_need_the_report_lock(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME).index_by("provider")
    put(meter, at(1), provider="p")
    settle(clock)
    lease = meter.rollups.try_report_lock(ReportRef(meter.config.namespace, NAME, 1), 30_000)
    assert lease is not None
    try:
        result = meter.process_pending(report)
    finally:
        lease.release()
    assert (result.locked, result.processed) == (False, 1)


# -- failures and retries ------------------------------------------------------------------


def test_failed_delete_leaves_rows_applied_once_and_the_next_pass_finishes(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = Report(NAME).index_by("provider")
    for i in range(4):
        put(meter, at(i), provider="p")
    settle(clock)
    real_delete = meter.stream.delete
    calls: list[int] = []

    def delete_fails_once(batch: StreamBatch) -> None:
        calls.append(len(batch.entries))
        if len(calls) == 1:
            raise OSError("disk went away")
        real_delete(batch)

    monkeypatch.setattr(meter.stream, "delete", delete_fails_once)
    first = meter.process_pending(report)
    assert (first.processed, first.skipped_already_processed, first.complete) == (4, 0, False)
    assert minute_of(meter, report, T)["count"] == 4
    second = meter.process_pending(report)
    assert (second.processed, second.skipped_already_processed, second.complete) == (0, 4, True)
    assert minute_of(meter, report, T)["count"] == 4
    assert minute_of(meter, report, T, provider="p")["count"] == 4
    third = meter.process_pending(report)
    assert (third.processed, third.skipped_already_processed) == (0, 0)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_apply_that_raises_releases_the_rows_and_a_retry_is_exact(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    report = interval_report()
    for i in range(3):
        put(meter, at(3 * i), customer_id=1, provider="p")
    settle(clock)
    real_apply = meter.rollups.apply

    def broken_apply(ref: ReportRef, delta: BatchDelta) -> None:
        if when == "after":
            real_apply(ref, delta)
        raise RuntimeError("crash during apply")

    monkeypatch.setattr(meter.rollups, "apply", broken_apply)
    with pytest.raises(RuntimeError, match="crash during apply"):
        meter.process_pending(report)
    monkeypatch.undo()
    retry = meter.process_pending(report)
    if when == "before":
        assert (retry.processed, retry.skipped_already_processed) == (3, 0)
    else:
        assert (retry.processed, retry.skipped_already_processed) == (0, 3)
    summary = minute_of(meter, report, T, provider="p")
    assert summary["count"] == 3
    assert interval_fields(summary) == samples(3_000, 3_000)
    assert meter.process_pending(report).processed == 0


def test_a_failed_forget_does_not_fail_the_pass(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = Report(NAME)
    put(meter, at(1))
    settle(clock)

    def broken_forget(ref: ReportRef, entry_ids: list[str]) -> None:
        raise RuntimeError("cannot forget")

    monkeypatch.setattr(meter.rollups, "forget", broken_forget)
    result = meter.process_pending(report)
    assert (result.processed, result.complete) == (1, True)
    assert minute_of(meter, report, T)["count"] == 1
    assert meter.process_pending(report).processed == 0
