"""UTC time: clocks, parsing of time inputs, ISO rendering, bucket math (SPEC 7).

All arithmetic is on integer milliseconds since the epoch (``*_ms``).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "GRANULARITIES",
    "Clock",
    "SystemClock",
    "bucket_id",
    "bucket_ms",
    "bucket_start",
    "datetime_to_ms",
    "iso_ms",
    "iso_us",
    "ms_to_datetime",
    "now_ms",
    "parse_bucket_id",
    "parse_time",
    "window_buckets",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
GRANULARITIES: Final = {"minute": MINUTE_MS, "hour": HOUR_MS}
_ID_LENGTH: Final = {"minute": 12, "hour": 10}


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC ``datetime``."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real UTC wall clock."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


def datetime_to_ms(value: datetime) -> int:
    """Whole milliseconds since the epoch; naive datetimes are taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    seconds = calendar.timegm(value.timetuple())
    return seconds * 1000 + value.microsecond // 1000


def now_ms(clock: Clock) -> int:
    return datetime_to_ms(clock.now())


def ms_to_datetime(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def iso_us(value: datetime) -> str:
    """``2026-05-06T10:15:20.000000Z`` for an aware or naive (UTC) datetime."""
    if value.tzinfo is not None and value.tzinfo is not UTC and value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat() runs in C; it drops the fraction when microsecond is 0.
    text = value.isoformat()
    if value.microsecond:
        return text[:26] + "Z"
    return text[:19] + ".000000Z"


def iso_ms(ms: int) -> str:
    """ISO text with 6 fractional digits for integer milliseconds."""
    return iso_us(ms_to_datetime(ms))


def parse_time(value: object, what: str = "time") -> int:
    """A time input (aware/naive ``datetime`` or ISO-8601 text) as epoch milliseconds.

    Raises ``TypeError`` for other types and ``ValueError`` for unparseable text.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{what} {value!r} is not an ISO-8601 time; "
                "pass a datetime or text like '2026-05-06T10:15:00Z'"
            ) from None
    else:
        raise TypeError(
            f"{what} must be a datetime or an ISO-8601 string, got {type(value).__name__} {value!r}"
        )
    try:
        return datetime_to_ms(parsed)
    except OverflowError:  # an offset that moves the time past year 1 or 9999 in UTC
        raise ValueError(f"{what} {value!r} is outside the range of UTC datetimes") from None


def bucket_ms(granularity: str) -> int:
    try:
        return GRANULARITIES[granularity]
    except KeyError:
        raise ValueError(
            f"every={granularity!r} is not a bucket size; use 'minute' or 'hour'"
        ) from None


def bucket_start(ms: int, granularity: str) -> int:
    size = GRANULARITIES[granularity]
    return ms - ms % size


def bucket_id(start_ms: int, granularity: str) -> str:
    """``%Y%m%d%H%M`` for minutes, ``%Y%m%d%H`` for hours."""
    t = ms_to_datetime(start_ms)
    if granularity == "minute":
        return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}"
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}"


def parse_bucket_id(text: str, granularity: str) -> int | None:
    """The start ms of a bucket id, or None when the text is not one."""
    if len(text) != _ID_LENGTH[granularity] or not text.isascii() or not text.isdigit():
        return None
    try:
        t = datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]) if granularity == "minute" else 0,
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return datetime_to_ms(t)


def window_buckets(start_ms: int, end_ms: int, granularity: str) -> list[int]:
    """Bucket starts covering ``[start, end)``: from ``floor(start)`` while ``< end``."""
    size = GRANULARITIES[granularity]
    first = start_ms - start_ms % size
    return list(range(first, end_ms, size)) if end_ms > first else []
