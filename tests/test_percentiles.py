"""Percentiles in summaries and series, through processing, on every pairing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef
from expect import percentiles
from support import SUMMARY_ORDER, FakeClock

NAME = "invoice_delivery"
T = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)
DURATIONS = [3, 7, 7, 12, 45, 80, 120, 250, 900, 4_000, 4_100, 65_000]


def put(meter: EventMeter, started: datetime, duration_ms: int, **params: Any) -> None:
    meter.stream.append(
        NAME,
        {
            "name": NAME,
            "status": "success",
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "duration_ms": duration_ms,
            "params": params,
        },
    )


def record(meter: EventMeter, clock: FakeClock, report: Report) -> None:
    for n, duration in enumerate(DURATIONS):  # one customer, 5 s apart, over two minutes
        put(meter, T + timedelta(seconds=5 * n + 2.5 * (n % 2)), duration, customer_id=1)
    clock.advance(minutes=3)
    assert meter.process_pending(report).processed == len(DURATIONS)


def test_summaries_and_series_carry_percentiles_after_each_max(
    meter: EventMeter, clock: FakeClock
) -> None:
    report = Report(NAME).measure_interval_by("customer_id")
    record(meter, clock, report)
    summary = meter.summary(report)
    starts = [5_000 * n + 2_500 * (n % 2) for n in range(len(DURATIONS))]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert summary == {
        **summary,
        **percentiles("duration_ms", DURATIONS),
        **percentiles("interval_ms", gaps),
    }
    keys = list(summary)
    assert keys == [k for k in SUMMARY_ORDER if k in keys]
    assert keys.index("duration_ms_p50") == keys.index("duration_ms_max") + 1
    assert keys.index("interval_ms_p99") == len(keys) - 1
    rows = meter.series(report, start=T, end=T + timedelta(minutes=2))
    assert [row["count"] for row in rows] == [12, 0]
    assert rows[0] == {**rows[0], **percentiles("duration_ms", DURATIONS)}
    assert "duration_ms_p50" not in rows[1]  # no samples, no percentiles


def test_percentiles_can_be_turned_off_per_report(meter: EventMeter, clock: FakeClock) -> None:
    report = Report(NAME, percentiles=False).measure_interval_by("customer_id")
    record(meter, clock, report)
    summary = meter.summary(report)
    assert summary["duration_ms_count"] == len(DURATIONS)
    assert summary["interval_ms_count"] == len(DURATIONS) - 1
    assert not [key for key in summary if key[-3:] in ("p50", "p90", "p95", "p99")]
    ref = ReportRef(meter.config.namespace, NAME, 1)
    (hour,) = meter.rollups.read_rollups(ref, "hour", (), "all", ["2026050610"])
    assert hour is not None
    assert not [name for name in hour if "_h" in name]


def test_turning_percentiles_off_is_a_new_definition() -> None:
    plain = Report(NAME)
    off = Report(NAME, percentiles=False)
    assert "percentiles" not in plain.definition()
    assert off.definition()["percentiles"] is False
    assert off.fingerprint != plain.fingerprint
    assert Report.from_definition(off.definition()) == off
    assert "percentiles=False" in repr(off)


@pytest.mark.parametrize("bad", [None, 0, 1, "no"])
def test_percentiles_must_be_a_bool(bad: Any) -> None:
    with pytest.raises(TypeError, match=f"percentiles must be True or False, got {bad!r}"):
        Report(NAME, percentiles=bad)
