"""Reports (SPEC 5, 8, 10): summary, series, compare, report_definition, async twins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import event_meter
from event_meter import (
    DefinitionNotFoundError,
    EventMeter,
    Report,
    UnsupportedQueryError,
)
from expect import percentiles
from support import SUMMARY_ORDER, FakeClock

NAME = "invoice_delivery"
T = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)
CHANGE_KEYS = [
    "count",
    "success_count",
    "failure_count",
    "skipped_count",
    "per_minute",
    "duration_ms_avg",
    "interval_ms_avg",
]


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T + timedelta(minutes=minutes, seconds=seconds)


def put(
    meter: EventMeter,
    started: datetime,
    status: str = "success",
    duration_ms: int | None = None,
    **params: Any,
) -> None:
    row: dict[str, Any] = {
        "name": NAME,
        "status": status,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if duration_ms is not None:
        row["duration_ms"] = duration_ms
    if params:
        row["params"] = params
    meter.stream.append(NAME, row)


def process(meter: EventMeter, clock: FakeClock, report: Report) -> None:
    clock.advance(minutes=2)  # past the file stream's claim grace
    result = meter.process_pending(report)
    assert not result.locked
    assert result.complete


def assert_in_order(summary: dict[str, Any]) -> None:
    keys = list(summary)
    assert keys == [k for k in SUMMARY_ORDER if k in keys]
    assert set(keys) <= set(SUMMARY_ORDER)


# -- summary with a window -----------------------------------------------------------------


def test_summary_with_a_window_reads_its_minute_buckets(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    put(meter, at(0, 20), duration_ms=100)
    put(meter, at(1, 10), "failure", duration_ms=300)
    put(meter, at(2, 59.999), "skipped")
    put(meter, at(-1, 59))  # before the window
    process(meter, clock, report)
    summary = meter.summary(report, start=at(0), end=at(2))
    assert summary == {
        "count": 2,
        "success_count": 1,
        "failure_count": 1,
        "skipped_count": 0,
        "started_at_min": "2026-05-06T10:15:20.000000Z",
        "started_at_max": "2026-05-06T10:16:10.000000Z",
        "rate_window_seconds": 120.0,
        "per_second": 2 / 120,
        "per_minute": 1.0,
        "duration_ms_count": 2,
        "duration_ms_sum": 400,
        "duration_ms_avg": 200.0,
        "duration_ms_min": 100,
        "duration_ms_max": 300,
        **percentiles("duration_ms", [100, 300]),
        "interval_ms_count": 0,
        "interval_ms_sum": 0,
    }
    assert_in_order(summary)
    assert type(summary["rate_window_seconds"]) is float


def test_window_covers_buckets_from_floor_start_while_bucket_start_is_before_end(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    for minute in range(4):
        put(meter, at(minute, 30))
    process(meter, clock, report)
    # buckets 10:15 and 10:16: 10:16 starts before 10:16:30, 10:17 does not start before it
    summary = meter.summary(report, start=at(0, 45), end=at(1, 30))
    assert summary["count"] == 2
    assert summary["rate_window_seconds"] == 120.0
    exact = meter.summary(report, start=at(1), end=at(2))
    assert (exact["count"], exact["rate_window_seconds"]) == (1, 60.0)


def test_summary_of_a_window_without_events_keeps_the_window(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    process(meter, clock, report)
    summary = meter.summary(report, start=at(0), end=at(3))
    assert summary == {
        "count": 0,
        "success_count": 0,
        "failure_count": 0,
        "skipped_count": 0,
        "rate_window_seconds": 180.0,
        "per_second": 0.0,
        "per_minute": 0.0,
        "duration_ms_count": 0,
        "duration_ms_sum": 0,
        "interval_ms_count": 0,
        "interval_ms_sum": 0,
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-05-06T10:15:00Z", "2026-05-06T10:17:00Z"),
        ("2026-05-06T10:15:00+00:00", "2026-05-06T12:17:00+02:00"),
        (datetime(2026, 5, 6, 10, 15), datetime(2026, 5, 6, 10, 17)),
        (T.astimezone(timezone(timedelta(hours=-5))), T + timedelta(minutes=2)),
    ],
    ids=["iso-z", "iso-offset", "naive", "aware-other-zone"],
)
def test_window_accepts_every_time_form(
    meter: EventMeter, clock: FakeClock, start: object, end: object
) -> None:
    report = Report(NAME)
    put(meter, at(0, 1))
    put(meter, at(1, 1))
    put(meter, at(2, 1))
    process(meter, clock, report)
    summary = meter.summary(report, start=start, end=end)
    assert (summary["count"], summary["rate_window_seconds"]) == (2, 120.0)


# -- summary without a window --------------------------------------------------------------


def test_summary_without_a_window_uses_the_observed_span(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    put(meter, at(0, 20))
    put(meter, at(30, 20.5))
    put(meter, at(-75, 0))  # another hour: every retained hour counts
    process(meter, clock, report)
    summary = meter.summary(report)
    span = (30 * 60 + 0.5) + 75 * 60 + 20
    assert summary["count"] == 3
    assert summary["started_at_min"] == "2026-05-06T09:00:00.000000Z"
    assert summary["started_at_max"] == "2026-05-06T10:45:20.500000Z"
    assert summary["rate_window_seconds"] == span
    assert summary["per_second"] == 3 / span
    assert summary["per_minute"] == 3 * 60 / span
    assert_in_order(summary)


def test_summary_without_a_window_and_without_events_omits_the_rates(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    process(meter, clock, report)
    summary = meter.summary(report)
    assert summary == {
        "count": 0,
        "success_count": 0,
        "failure_count": 0,
        "skipped_count": 0,
        "duration_ms_count": 0,
        "duration_ms_sum": 0,
        "interval_ms_count": 0,
        "interval_ms_sum": 0,
    }


def test_summary_without_a_window_is_capped_by_summary_key_limit(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    for hours in (0, 1, 2):
        put(meter, at(60 * hours))
    process(meter, clock, report)
    meter.configure(summary_key_limit=3)
    assert meter.summary(report)["count"] == 3
    meter.configure(summary_key_limit=2)
    with pytest.raises(ValueError, match=r"start=.*end=") as caught:
        meter.summary(report)
    assert "window" in str(caught.value)
    assert meter.summary(report, start=at(0), end=at(1))["count"] == 1  # a window is not capped
    meter.configure(summary_key_limit=None)
    assert meter.summary(report)["count"] == 3


# -- argument checks -----------------------------------------------------------------------


@pytest.fixture
def processed(meter: EventMeter, clock: FakeClock) -> Report:
    report = Report(NAME).index_by("provider").index_by("queue", "provider")
    put(meter, at(0, 5), provider="postmark", queue="mail", customer_id=44)
    put(meter, at(0, 6), provider="postmark", queue="bulk")
    put(meter, at(0, 7), provider="mailgun", queue="mail")
    process(meter, clock, report)
    return report


@pytest.mark.parametrize(
    "window",
    [{"start": at(0)}, {"end": at(1)}],
    ids=["start-only", "end-only"],
)
def test_summary_needs_both_start_and_end_or_neither(
    meter: EventMeter, processed: Report, window: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="both"):
        meter.summary(processed, **window)


@pytest.mark.parametrize("end", [at(0), at(-1)], ids=["equal", "earlier"])
def test_summary_needs_end_after_start(meter: EventMeter, processed: Report, end: datetime) -> None:
    with pytest.raises(ValueError, match="after"):
        meter.summary(processed, start=at(0), end=end)


@pytest.mark.parametrize("bad", [12345, 1.5, object()])
def test_times_of_the_wrong_type_raise_type_error(
    meter: EventMeter, processed: Report, bad: object
) -> None:
    with pytest.raises(TypeError):
        meter.summary(processed, start=bad, end=at(1))


def test_unparseable_time_text_raises_value_error(meter: EventMeter, processed: Report) -> None:
    with pytest.raises(ValueError, match="not-a-time"):
        meter.summary(processed, start="not-a-time", end=at(1))


# -- by resolution -------------------------------------------------------------------------


def test_by_resolves_the_index_whatever_the_key_order(meter: EventMeter, processed: Report) -> None:
    window: dict[str, Any] = {"start": at(0), "end": at(1)}
    assert meter.summary(processed, by={"provider": "postmark"}, **window)["count"] == 2
    assert (
        meter.summary(processed, by={"queue": "mail", "provider": "postmark"}, **window)["count"]
        == 1
    )
    assert (
        meter.summary(processed, by={"provider": "postmark", "queue": "mail"}, **window)["count"]
        == 1
    )
    assert (
        meter.summary(processed, by={"provider": "mailgun", "queue": "mail"}, **window)["count"]
        == 1
    )
    assert meter.summary(processed, by={}, **window)["count"] == 3


@pytest.mark.parametrize(
    "by",
    [{"customer_id": 44}, {"queue": "mail"}, {"provider": "postmark", "queue": "mail", "x": "y"}],
    ids=["unknown-param", "subset-of-an-index", "superset"],
)
def test_by_without_a_matching_index_raises_unsupported_query(
    meter: EventMeter, processed: Report, by: dict[str, Any]
) -> None:
    with pytest.raises(UnsupportedQueryError) as caught:
        meter.summary(processed, start=at(0), end=at(1), by=by)
    message = str(caught.value)
    assert NAME in message
    for key in by:
        assert key in message
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnsupportedQueryError):
        meter.series(processed, start=at(0), end=at(1), by=by)


def test_by_value_none_raises_value_error(meter: EventMeter, processed: Report) -> None:
    with pytest.raises(ValueError, match="provider"):
        meter.summary(processed, start=at(0), end=at(1), by={"provider": None})


def test_by_values_use_the_key_text_rule(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME).index_by("customer_id")
    put(meter, at(0, 1), customer_id=44)
    put(meter, at(0, 2), customer_id="44")
    process(meter, clock, report)
    for value in (44, "44"):
        assert (
            meter.summary(report, start=at(0), end=at(1), by={"customer_id": value})["count"] == 2
        )


def test_by_is_resolved_against_the_stored_definition(meter: EventMeter, processed: Report) -> None:
    """The Report passed to a read only names the report; its indexes do not matter."""
    bare = Report(NAME)
    assert meter.summary(bare, start=at(0), end=at(1), by={"provider": "postmark"})["count"] == 2
    assert (
        meter.summary(NAME, version=1, start=at(0), end=at(1), by={"provider": "postmark"})["count"]
        == 2
    )
    wider = Report(NAME).index_by("customer_id")
    with pytest.raises(UnsupportedQueryError):
        meter.summary(wider, start=at(0), end=at(1), by={"customer_id": 44})


@pytest.mark.parametrize("call", ["summary", "series", "compare", "report_definition"])
def test_reports_of_a_never_processed_report_raise_definition_not_found(
    meter: EventMeter, call: str
) -> None:
    kwargs: dict[str, Any] = {"version": 1}
    if call == "compare":
        kwargs.update(before=(at(0), at(1)), after=(at(1), at(2)))
    with pytest.raises(DefinitionNotFoundError) as caught:
        getattr(meter, call)("never_processed", **kwargs)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(DefinitionNotFoundError):
        getattr(meter, call)(
            Report("never_processed", version=1),
            **{k: v for k, v in kwargs.items() if k != "version"},
        )


# -- series --------------------------------------------------------------------------------


def test_series_every_minute_has_one_row_per_bucket_with_zero_rows_for_gaps(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    put(meter, at(0, 20), duration_ms=5)
    put(meter, at(0, 40), "failure")
    put(meter, at(2, 5))
    process(meter, clock, report)
    rows = meter.series(report, start=at(0), end=at(3))
    assert [row["bucket"] for row in rows] == [
        "2026-05-06T10:15:00Z",
        "2026-05-06T10:16:00Z",
        "2026-05-06T10:17:00Z",
    ]
    assert [row["count"] for row in rows] == [2, 0, 1]
    for row in rows:
        assert next(iter(row)) == "bucket"
        assert row["rate_window_seconds"] == 60.0
        rest = dict(row)
        del rest["bucket"]
        assert_in_order(rest)
    assert rows[0]["per_second"] == 2 / 60
    assert (rows[0]["success_count"], rows[0]["failure_count"], rows[0]["duration_ms_sum"]) == (
        1,
        1,
        5,
    )
    empty = rows[1]
    for field in (
        "count",
        "success_count",
        "failure_count",
        "skipped_count",
        "duration_ms_count",
        "duration_ms_sum",
        "interval_ms_count",
        "interval_ms_sum",
    ):
        assert empty[field] == 0
    assert "started_at_min" not in empty


def test_series_every_hour(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME)
    put(meter, at(0, 20))
    put(meter, at(44))
    put(meter, at(-16))  # 09:59
    process(meter, clock, report)
    rows = meter.series(
        report, start=datetime(2026, 5, 6, 8, 30, tzinfo=UTC), end=at(40), every="hour"
    )
    assert [(row["bucket"], row["count"]) for row in rows] == [
        ("2026-05-06T08:00:00Z", 0),
        ("2026-05-06T09:00:00Z", 1),
        ("2026-05-06T10:00:00Z", 2),
    ]
    assert all(row["rate_window_seconds"] == 3600.0 for row in rows)


@pytest.mark.parametrize(
    ("every", "first", "last", "rows"),
    [
        ("minute", "2026-05-06T09:48:00Z", "2026-05-06T10:47:00Z", 60),
        ("hour", "2026-05-06T10:00:00Z", "2026-05-06T10:00:00Z", 1),
    ],
)
def test_series_default_window_ends_with_the_current_bucket_and_spans_an_hour(
    meter: EventMeter, clock: FakeClock, every: str, first: str, last: str, rows: int
) -> None:
    report = Report(NAME)
    put(meter, at(0, 30))
    process(meter, clock, report)
    clock.set(datetime(2026, 5, 6, 10, 47, 30, tzinfo=UTC))
    found = meter.series(report, every=every)
    assert len(found) == rows
    assert (found[0]["bucket"], found[-1]["bucket"]) == (first, last)
    assert sum(row["count"] for row in found) == 1


def test_series_default_end_with_an_explicit_start(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME)
    process(meter, clock, report)
    clock.set(datetime(2026, 5, 6, 10, 47, 30, tzinfo=UTC))
    rows = meter.series(report, start=datetime(2026, 5, 6, 10, 40, tzinfo=UTC))
    assert [row["bucket"][11:16] for row in rows] == [f"10:{m}" for m in range(40, 48)]


@pytest.mark.parametrize("every", ["day", "Minute", "", "60", 60, None])
def test_series_rejects_an_unknown_bucket_size(
    meter: EventMeter, processed: Report, every: Any
) -> None:
    with pytest.raises(ValueError, match="every"):
        meter.series(processed, start=at(0), end=at(1), every=every)


def test_series_rejects_end_not_after_start(meter: EventMeter, processed: Report) -> None:
    with pytest.raises(ValueError, match="after"):
        meter.series(processed, start=at(1), end=at(1))


def test_series_by_an_index(meter: EventMeter, processed: Report) -> None:
    rows = meter.series(
        processed, start=at(0), end=at(2), by={"provider": "mailgun", "queue": "mail"}
    )
    assert [row["count"] for row in rows] == [1, 0]


# -- compare -------------------------------------------------------------------------------


def test_compare_reports_both_windows_and_the_change(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME)
    put(meter, at(0, 1))
    put(meter, at(0, 2), "failure")
    for second in (1, 2, 3):
        put(meter, at(1, second), duration_ms=10 * second)
    process(meter, clock, report)
    before, after = (at(0), at(1)), (at(1), at(2))
    result = meter.compare(report, before=before, after=after)
    assert list(result) == ["before", "after", "change"]
    assert result["before"] == meter.summary(report, start=at(0), end=at(1))
    assert result["after"] == meter.summary(report, start=at(1), end=at(2))
    change = result["change"]
    assert list(change) == CHANGE_KEYS
    assert change["count"] == {"before": 2, "after": 3, "difference": 1, "ratio": 1.5}
    assert change["failure_count"] == {"before": 1, "after": 0, "difference": -1, "ratio": 0.0}
    assert change["per_minute"] == {"before": 2.0, "after": 3.0, "difference": 1.0, "ratio": 1.5}
    # a value missing on one side: no difference, no ratio
    assert change["duration_ms_avg"] == {
        "before": None,
        "after": 20.0,
        "difference": None,
        "ratio": None,
    }
    assert change["interval_ms_avg"] == {
        "before": None,
        "after": None,
        "difference": None,
        "ratio": None,
    }
    # b == 0: a difference but no ratio
    assert change["skipped_count"] == {"before": 0, "after": 0, "difference": 0, "ratio": None}
    for entry in change.values():
        assert list(entry) == ["before", "after", "difference", "ratio"]


def test_compare_with_an_empty_before_window_has_no_ratio(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME)
    put(meter, at(1, 1))
    process(meter, clock, report)
    change = meter.compare(report, before=(at(0), at(1)), after=(at(1), at(2)))["change"]
    assert change["count"] == {"before": 0, "after": 1, "difference": 1, "ratio": None}
    assert change["per_minute"] == {"before": 0.0, "after": 1.0, "difference": 1.0, "ratio": None}


def test_compare_by_an_index(meter: EventMeter, processed: Report) -> None:
    result = meter.compare(
        processed, before=(at(-1), at(0)), after=(at(0), at(1)), by={"provider": "postmark"}
    )
    assert result["change"]["count"] == {"before": 0, "after": 2, "difference": 2, "ratio": None}


@pytest.mark.parametrize(
    "bad",
    [
        (at(0),),
        (at(0), at(1), at(2)),
        "2026-05-06T10:15:00Z",
        None,
        at(0),
        (at(1), at(0)),
        (at(0), at(0)),
    ],
    ids=["one-time", "three-times", "text", "none", "a-datetime", "reversed", "empty"],
)
@pytest.mark.parametrize("side", ["before", "after"])
def test_compare_rejects_bad_windows(
    meter: EventMeter, processed: Report, bad: Any, side: str
) -> None:
    windows: dict[str, Any] = {"before": (at(0), at(1)), "after": (at(1), at(2))}
    windows[side] = bad
    with pytest.raises(ValueError, match=r"before|after|start|end"):
        meter.compare(processed, **windows)


# -- report_definition ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "fingerprint"),
    [
        (Report(NAME), "750aff41b3c8553c94eb7392190650a5337db05d6f13c67bf1f74d7dfad0025d"),
        (
            Report(NAME).index_by("provider"),
            "d8947c432268933af693dd5322c9fa4aa3272ea403bb5c494c14eb421fb18e33",
        ),
    ],
    ids=["all-index", "provider-index"],
)
def test_report_definition_is_the_canonical_form_plus_fingerprint(
    meter: EventMeter, report: Report, fingerprint: str
) -> None:
    meter.process_pending(report)
    stored = meter.report_definition(NAME, version=1)
    assert list(stored) == ["name", "version", "indexes", "intervals", "fingerprint"]
    assert stored == {**report.canonical(), "fingerprint": fingerprint}
    assert meter.report_definition(report) == stored


def test_report_definition_of_a_rich_report(meter: EventMeter) -> None:
    report = (
        Report(NAME, version=2)
        .index_by("queue", "provider")
        .index_by("customer_id")
        .measure_interval_by("customer_id", group_by=["region", "provider"])
        .measure_interval_by("account")
    )
    meter.process_pending(report)
    stored = meter.report_definition(NAME, version=2)
    assert stored["indexes"] == [[], ["customer_id"], ["provider", "queue"], ["provider", "region"]]
    assert stored["intervals"] == [
        {"param": "account", "group_by": []},
        {"param": "customer_id", "group_by": ["provider", "region"]},
    ]
    assert stored["fingerprint"] == report.fingerprint


# -- reports never process -----------------------------------------------------------------


def test_reports_never_process_pending_rows(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME)
    put(meter, at(0, 1))
    process(meter, clock, report)
    put(meter, at(0, 2))
    put(meter, at(0, 3))
    clock.advance(minutes=2)
    assert meter.summary(report, start=at(0), end=at(1))["count"] == 1
    assert meter.summary(report)["count"] == 1
    assert meter.series(report, start=at(0), end=at(1))[0]["count"] == 1
    assert (
        meter.compare(report, before=(at(0), at(1)), after=(at(1), at(2)))["before"]["count"] == 1
    )
    result = meter.process_pending(report)
    assert (result.processed, result.skipped_already_processed) == (2, 0)
    assert meter.summary(report, start=at(0), end=at(1))["count"] == 3


# -- async twins ---------------------------------------------------------------------------


def test_async_twins_give_the_same_results(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME).index_by("provider")
    put(meter, at(0, 1), provider="p", duration_ms=3)
    put(meter, at(1, 1), provider="q")
    clock.advance(minutes=2)

    async def run() -> tuple[Any, ...]:
        processed = await meter.aprocess_pending(report)
        summary = await meter.asummary(report, start=at(0), end=at(2), by={"provider": "p"})
        series = await meter.aseries(report, start=at(0), end=at(2))
        compared = await meter.acompare(report, before=(at(0), at(1)), after=(at(1), at(2)))
        return processed, summary, series, compared

    processed, summary, series, compared = asyncio.run(run())
    assert processed.to_dict() == {
        "event_name": NAME,
        "version": 1,
        "processed": 2,
        "skipped_already_processed": 0,
        "malformed": 0,
        "complete": True,
        "locked": False,
    }
    assert summary == meter.summary(report, start=at(0), end=at(2), by={"provider": "p"})
    assert summary["count"] == 1
    assert series == meter.series(report, start=at(0), end=at(2))
    assert [row["count"] for row in series] == [1, 1]
    assert compared == meter.compare(report, before=(at(0), at(1)), after=(at(1), at(2)))


def test_async_twins_raise_like_the_sync_calls(meter: EventMeter) -> None:
    with pytest.raises(DefinitionNotFoundError):
        asyncio.run(meter.asummary("never_processed", version=1))


def test_module_level_async_twins_use_the_default_meter(clock: FakeClock, namespace: str) -> None:
    event_meter.configure(
        namespace=namespace, stream_storage="memory://", rollup_storage="memory://", clock=clock
    )
    report = Report(NAME)
    event = event_meter.start(NAME, provider="p")
    assert event.success().recorded
    clock.advance(minutes=2)

    async def run() -> tuple[Any, ...]:
        processed = await event_meter.aprocess_pending(report)
        summary = await event_meter.asummary(report, start=T, end=at(1))
        series = await event_meter.aseries(report, start=T, end=at(1))
        compared = await event_meter.acompare(report, before=(T, at(1)), after=(at(1), at(2)))
        return processed, summary, series, compared

    processed, summary, series, compared = asyncio.run(run())
    assert processed.processed == 1
    assert summary == event_meter.summary(report, start=T, end=at(1))
    assert summary["count"] == 1
    assert series == event_meter.series(report, start=T, end=at(1))
    assert compared == event_meter.compare(report, before=(T, at(1)), after=(at(1), at(2)))
