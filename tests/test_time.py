"""Time (SPEC 7): parsing of time inputs, bucket ids, window coverage, boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from event_meter import EventMeter, Report
from event_meter._time import (
    bucket_id,
    bucket_start,
    datetime_to_ms,
    iso_ms,
    parse_bucket_id,
    parse_time,
    window_buckets,
)
from event_meter.stores import MemoryRollups, MemoryStream
from support import FakeClock

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Epoch ms of a UTC wall time, computed without the code under test."""
    value = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (value - EPOCH) // timedelta(milliseconds=1)


T = ms(2026, 5, 6, 10, 15, 0)


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 5, 6, 10, 15, tzinfo=UTC),
        datetime(2026, 5, 6, 12, 15, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 5, 6, 5, 45, tzinfo=timezone(timedelta(hours=-4, minutes=-30))),
        datetime(2026, 5, 6, 10, 15),
        "2026-05-06T10:15:00Z",
        "2026-05-06T10:15:00.000000Z",
        "2026-05-06T10:15:00+00:00",
        "2026-05-06T12:15:00+02:00",
        "2026-05-06T10:15:00",
        " 2026-05-06T10:15:00Z ",
    ],
    ids=repr,
)
def test_time_inputs_are_utc_milliseconds(value: object) -> None:
    assert parse_time(value) == T


def test_sub_millisecond_digits_are_truncated() -> None:
    assert parse_time("2026-05-06T10:15:00.999999Z") == T + 999
    assert parse_time(datetime(2026, 5, 6, 10, 15, 0, 1999, tzinfo=UTC)) == T + 1
    assert datetime_to_ms(datetime(1969, 12, 31, 23, 59, 59, 999999)) == -1


@pytest.mark.parametrize(
    "value",
    [None, 1778062500, 1778062500.0, True, date(2026, 5, 6), b"2026-05-06T10:15:00Z", object()],
    ids=repr,
)
def test_other_types_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__name__):
        parse_time(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-05-06T25:00:00Z",
        "06/05/2026",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-1))),
    ],
    ids=repr,
)
def test_bad_values_raise_value_error_naming_the_value(value: object) -> None:
    with pytest.raises(ValueError) as caught:  # noqa: PT011 - the message is checked below
        parse_time(value, "start")
    assert repr(value) in str(caught.value)
    assert "start" in str(caught.value)


def test_report_windows_reject_bad_times(clock: FakeClock) -> None:
    meter = EventMeter(stream_storage=MemoryStream(), rollup_storage=MemoryRollups(), clock=clock)
    report = Report("job")
    meter.process_pending(report)
    with pytest.raises(TypeError, match="int"):
        meter.summary(report, start=1778062500, end="2026-05-06T11:00:00Z")
    with pytest.raises(ValueError, match="'noon'"):
        meter.summary(report, start="noon", end="2026-05-06T11:00:00Z")


# -- buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "minute", "hour"),
    [
        (ms(2026, 5, 6, 10, 15, 0), "202605061015", "2026050610"),
        (ms(2026, 5, 6, 10, 15, 59) + 999, "202605061015", "2026050610"),
        (ms(2026, 5, 6, 10, 59, 59) + 999, "202605061059", "2026050610"),
        (ms(2026, 5, 6, 11, 0, 0), "202605061100", "2026050611"),
        (ms(2025, 12, 31, 23, 59, 59) + 999, "202512312359", "2025123123"),
        (ms(2026, 1, 1, 0, 0, 0), "202601010000", "2026010100"),
        (ms(2028, 2, 29, 0, 0, 1), "202802290000", "2028022900"),
    ],
)
def test_bucket_ids_at_boundaries(moment: int, minute: str, hour: str) -> None:
    minute_start = bucket_start(moment, "minute")
    hour_start = bucket_start(moment, "hour")
    assert bucket_id(minute_start, "minute") == minute
    assert bucket_id(hour_start, "hour") == hour
    assert 0 <= moment - minute_start < 60_000
    assert 0 <= moment - hour_start < 3_600_000
    assert parse_bucket_id(minute, "minute") == minute_start
    assert parse_bucket_id(hour, "hour") == hour_start


@pytest.mark.parametrize(
    ("text", "granularity"),
    [
        ("20260506101", "minute"),
        ("2026050610150", "minute"),
        ("202605061060", "minute"),
        ("2026050624", "hour"),
        ("2026133110", "hour"),
        ("20260506ab", "hour"),
        ("\uff12\uff10\uff12\uff16\uff10\uff15\uff10\uff16\uff11\uff10", "hour"),  # fullwidth
        ("202605061015", "hour"),
    ],
)
def test_parse_bucket_id_rejects_what_is_not_a_bucket(text: str, granularity: str) -> None:
    assert parse_bucket_id(text, granularity) is None


def test_iso_rendering_of_milliseconds() -> None:
    assert iso_ms(T + 7) == "2026-05-06T10:15:00.007000Z"
    assert iso_ms(ms(2026, 1, 1, 0, 0, 0)) == "2026-01-01T00:00:00.000000Z"


# -- windows ----------------------------------------------------------------------------

MINUTE = 60_000
HOUR = 3_600_000


@pytest.mark.parametrize(
    ("start", "end", "granularity", "expected"),
    [
        (T, T + 2 * MINUTE, "minute", [T, T + MINUTE]),
        (T + 30_000, T + 2 * MINUTE, "minute", [T, T + MINUTE]),
        (T + 30_000, T + 2 * MINUTE + 1, "minute", [T, T + MINUTE, T + 2 * MINUTE]),
        (T, T + 1, "minute", [T]),
        (T + MINUTE - 1, T + MINUTE, "minute", [T]),
        (T, T, "minute", []),
        (T + 30_000, T + 10_000, "minute", [T]),
        (T + 30_000, T, "minute", []),
        (
            ms(2026, 5, 6, 10, 59, 0),
            ms(2026, 5, 6, 11, 1, 0),
            "hour",
            [
                ms(2026, 5, 6, 10, 0, 0),
                ms(2026, 5, 6, 11, 0, 0),
            ],
        ),
        (ms(2026, 5, 6, 10, 0, 0), ms(2026, 5, 6, 11, 0, 0), "hour", [ms(2026, 5, 6, 10, 0, 0)]),
    ],
)
def test_window_covers_buckets_from_floor_start_while_before_end(
    start: int, end: int, granularity: str, expected: list[int]
) -> None:
    assert window_buckets(start, end, granularity) == expected


def test_an_hour_window_has_sixty_minute_buckets() -> None:
    buckets = window_buckets(T, T + HOUR, "minute")
    assert len(buckets) == 60
    assert buckets == list(range(T, T + HOUR, MINUTE))
