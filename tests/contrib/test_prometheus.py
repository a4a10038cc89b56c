"""``event_meter.contrib.prometheus``: a real registry, scraped and parsed back."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import event_meter
from event_meter import ConfigurationError, EventMeter, Report, StorageError
from event_meter.stores.memory import MemoryRollups, MemoryStream
from support import FakeClock

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from event_meter.contrib.prometheus import PIP_INSTALL, EventMeterCollector  # noqa: E402

NAME = "invoice_delivery"
T = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)
INVOICES = Report(NAME, version=1).index_by("provider").measure_interval_by("customer_id")
QUANTILES = (
    ("min", "0"),
    ("p50", "0.5"),
    ("p90", "0.9"),
    ("p95", "0.95"),
    ("p99", "0.99"),
    ("max", "1"),
)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T + timedelta(minutes=minutes, seconds=seconds)


def put(
    meter: EventMeter,
    started: datetime,
    status: str = "success",
    duration_ms: int | None = None,
    name: str = NAME,
    **params: Any,
) -> None:
    row: dict[str, Any] = {
        "name": name,
        "status": status,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "params": params,
    }
    if duration_ms is not None:
        row["duration_ms"] = duration_ms
    meter.stream.append(name, row)


@pytest.fixture
def meter(memory_meter: EventMeter) -> EventMeter:
    """Ten events over 10:15-10:19 (plus one at 10:20:10, in the minute still filling)."""
    rows = [
        (at(0, 5), "success", 120, "postmark", 44),
        (at(0, 40), "success", 80, "postmark", 44),
        (at(1, 10), "failure", 3000, "sendgrid", 7),
        (at(1, 30), "success", 95, "postmark", 45),
        (at(2, 0), "skipped", None, "ses", 7),
        (at(2, 50), "success", 101, "postmark", 44),
        (at(3, 15), "failure", 2500, "postmark", 45),
        (at(4, 0), "success", 70, "sendgrid", 7),
        (at(4, 59), "success", 66, "postmark", 44),
        (at(5, 10), "success", 999, "postmark", 44),
    ]
    for started, status, duration, provider, customer in rows:
        put(memory_meter, started, status, duration, provider=provider, customer_id=customer)
    assert memory_meter.process_pending(INVOICES).processed == len(rows)
    return memory_meter


def scrape(*collectors: EventMeterCollector) -> Samples:
    """Register on a fresh registry, render the text format and parse it back."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def expected(summary: Mapping[str, Any], labels: Mapping[str, str]) -> Samples:
    """The samples SPEC's summary maps to (the mapping the module docstring states)."""
    out: Samples = {}

    def add(name: str, value: float, **extra: str) -> None:
        out[(name, frozenset({**labels, **extra}.items()))] = value

    for status in ("success", "failure", "skipped"):
        add("event_meter_events", summary[f"{status}_count"], status=status)
    if "per_minute" in summary:
        add("event_meter_per_minute", summary["per_minute"])
    for measure in ("duration_ms", "interval_ms"):
        add(f"event_meter_{measure}_count", summary[f"{measure}_count"])
        add(f"event_meter_{measure}_sum", summary[f"{measure}_sum"])
        for suffix, quantile in QUANTILES:
            if f"{measure}_{suffix}" in summary:
                add(f"event_meter_{measure}", summary[f"{measure}_{suffix}"], quantile=quantile)
    add("event_meter_scrape_error", 0)
    return out


def labels_of(report: str = NAME, version: int = 1, **by: str) -> dict[str, str]:
    return {"report": report, "version": str(version), **by}


# -- values --------------------------------------------------------------------------------


def test_window_of_complete_minutes_equals_the_summary(meter: EventMeter, clock: FakeClock) -> None:
    clock.set(at(5, 30))  # the last five complete minutes are 10:15-10:20
    samples = scrape(EventMeterCollector(meter, [INVOICES]))
    summary = meter.summary(INVOICES, start=at(0), end=at(5))
    assert summary["count"] == 9  # the event at 10:20:10 is in the minute still filling
    assert samples == expected(summary, labels_of())
    # Spelled out once, against the numbers the rows above imply:
    base = frozenset(labels_of().items())
    assert series(samples, "event_meter_events") == {
        base | {("status", "success")}: 6,
        base | {("status", "failure")}: 2,
        base | {("status", "skipped")}: 1,
    }
    assert series(samples, "event_meter_per_minute") == {base: 9 / 5}
    assert series(samples, "event_meter_duration_ms_count") == {base: 8}
    assert series(samples, "event_meter_duration_ms_sum") == {base: summary["duration_ms_sum"]}
    assert samples[("event_meter_duration_ms", base | {("quantile", "0")})] == 66
    assert samples[("event_meter_duration_ms", base | {("quantile", "1")})] == 3000
    assert samples[("event_meter_interval_ms_count", base)] == summary["interval_ms_count"] > 0


def test_the_window_follows_the_meters_clock(meter: EventMeter, clock: FakeClock) -> None:
    collector = EventMeterCollector(meter, [INVOICES], window=timedelta(minutes=2))
    clock.set(at(2, 59))  # 10:15-10:17
    assert scrape(collector) == expected(
        meter.summary(INVOICES, start=at(0), end=at(2)), labels_of()
    )
    clock.set(at(6))  # 10:19-10:21 now includes 10:20:10
    later = scrape(collector)
    assert later == expected(meter.summary(INVOICES, start=at(4), end=at(6)), labels_of())
    assert later[("event_meter_events", frozenset(labels_of(status="success").items()))] == 3


def test_no_window_reads_every_retained_hour(meter: EventMeter) -> None:
    samples = scrape(EventMeterCollector(meter, [INVOICES], window=None))
    summary = meter.summary(INVOICES)
    assert summary["count"] == 10
    assert samples == expected(summary, labels_of())


def test_by_filters_get_one_label_per_key(meter: EventMeter, clock: FakeClock) -> None:
    clock.set(at(5, 30))
    filters: list[dict[str, Any] | None] = [None, {"provider": "postmark"}, {"provider": "ses"}]
    samples = scrape(EventMeterCollector(meter, [INVOICES], by=filters))
    want: Samples = {}
    for by in filters:
        summary = meter.summary(INVOICES, start=at(0), end=at(5), by=by)
        want |= expected(summary, labels_of(provider=(by or {}).get("provider", "")))
    assert samples == want
    postmark = frozenset(labels_of(provider="postmark", status="success").items())
    assert samples[("event_meter_events", postmark)] == 5


def test_percentiles_become_quantiles_when_the_summary_has_them(
    meter: EventMeter, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(at(5, 30))
    real_summary = meter.summary

    def with_percentiles(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in real_summary(*args, **kwargs).items():
            if re.fullmatch(r"\w+_ms_p\d\d", key):
                continue  # whatever the summary has now: this test sets its own
            out[key] = value
            if key == "duration_ms_max":  # where SPEC will put them
                out |= {"duration_ms_p50": 98.5, "duration_ms_p90": 2500, "duration_ms_p99": 3000}
        return out

    monkeypatch.setattr(meter, "summary", with_percentiles)
    samples = scrape(EventMeterCollector(meter, [INVOICES]))
    base = frozenset(labels_of().items())
    assert series(samples, "event_meter_duration_ms") == {
        base | {("quantile", "0")}: 66,
        base | {("quantile", "0.5")}: 98.5,
        base | {("quantile", "0.9")}: 2500,
        base | {("quantile", "0.99")}: 3000,
        base | {("quantile", "1")}: 3000,
    }
    assert series(samples, "event_meter_interval_ms") == {
        base | {("quantile", "0")}: real_summary(INVOICES, start=at(0), end=at(5))[
            "interval_ms_min"
        ],
        base | {("quantile", "1")}: real_summary(INVOICES, start=at(0), end=at(5))[
            "interval_ms_max"
        ],
    }


def test_label_values_are_escaped_and_parse_back(memory_meter: EventMeter) -> None:
    name = 'odd "name"\\ with\nnewline'
    report = Report(name).index_by("provider")
    put(memory_meter, at(0, 5), duration_ms=5, name=name, provider='a"b\\c\nd é')
    memory_meter.process_pending(report)
    collector = EventMeterCollector(
        memory_meter, [report], by=[{"provider": 'a"b\\c\nd é'}], window=None
    )
    samples = scrape(collector)
    summary = memory_meter.summary(report, by={"provider": 'a"b\\c\nd é'})
    assert samples == expected(summary, labels_of(name, provider='a"b\\c\nd é'))


def test_meter_none_reads_the_default_meter(clock: FakeClock) -> None:
    meter = event_meter.configure(
        stream_storage=MemoryStream(), rollup_storage=MemoryRollups(), clock=clock
    )
    put(meter, at(0, 5), duration_ms=42, provider="postmark", customer_id=1)
    event_meter.process_pending(INVOICES)
    clock.set(at(1))
    samples = scrape(EventMeterCollector(None, [(NAME, 1)], window=timedelta(minutes=1)))
    assert samples == expected(event_meter.summary(INVOICES, start=at(0), end=at(1)), labels_of())


# -- failures: a scrape never raises ----------------------------------------------------------


def test_storage_error_is_a_scrape_error_and_a_log_line(
    meter: EventMeter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feeds = Report("feed_refresh")
    put(meter, at(0, 5), name="feed_refresh", duration_ms=3)
    meter.process_pending(feeds)
    clock.set(at(5, 30))
    real_read = meter.rollups.read_rollups

    def failing_read(ref: Any, *args: Any) -> Any:
        if ref.name == NAME:
            raise StorageError("rollups unreachable")
        return real_read(ref, *args)

    monkeypatch.setattr(meter.rollups, "read_rollups", failing_read)
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        samples = scrape(EventMeterCollector(meter, [INVOICES, feeds]))
    assert series(samples, "event_meter_scrape_error") == {
        frozenset(labels_of().items()): 1,
        frozenset(labels_of("feed_refresh").items()): 0,
    }
    failed = {name for name, labels in samples if dict(labels)["report"] == NAME}
    assert failed == {"event_meter_scrape_error"}
    assert series(samples, "event_meter_per_minute").keys() == {
        frozenset(labels_of("feed_refresh").items())
    }
    [record] = caplog.records
    assert record.name == "event_meter"
    assert "invoice_delivery v1" in record.getMessage()
    assert "StorageError: rollups unreachable" in record.getMessage()
    assert record.exc_info is None  # a library error's message says it all


def test_unexpected_error_is_logged_with_its_traceback(
    meter: EventMeter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyError("bug")

    monkeypatch.setattr(meter, "summary", broken)
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        samples = scrape(EventMeterCollector(meter, [INVOICES]))
    assert samples == {("event_meter_scrape_error", frozenset(labels_of().items())): 1}
    assert caplog.records[0].exc_info is not None


def test_missing_report_is_a_scrape_error(
    meter: EventMeter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        samples = scrape(EventMeterCollector(meter, [INVOICES, ("never_processed", 2)]))
    assert samples[("event_meter_scrape_error", frozenset(labels_of("never_processed", 2).items()))]
    assert samples[("event_meter_scrape_error", frozenset(labels_of().items()))] == 0
    assert "never been processed" in caplog.text


def test_failing_clock_is_a_scrape_error_for_every_report(meter: EventMeter) -> None:
    class BrokenClock:
        def now(self) -> datetime:
            raise OSError("no time")

    meter.configure(clock=BrokenClock())
    samples = scrape(EventMeterCollector(meter, [INVOICES, "feed_refresh"]))
    assert samples == {
        ("event_meter_scrape_error", frozenset(labels_of().items())): 1,
        ("event_meter_scrape_error", frozenset(labels_of("feed_refresh").items())): 1,
    }


def test_a_filter_a_report_does_not_index_is_skipped_and_logged_once(
    meter: EventMeter, caplog: pytest.LogCaptureFixture
) -> None:
    feeds = Report("feed_refresh")
    put(meter, at(0, 5), name="feed_refresh", duration_ms=3)
    meter.process_pending(feeds)
    collector = EventMeterCollector(meter, [INVOICES, feeds], by=[{"provider": "postmark"}])
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        first = scrape(collector)
        second = scrape(collector)
    assert first == second
    assert {dict(labels)["report"] for (_, labels) in first} == {NAME}
    assert len(caplog.records) == 1
    assert "skips by={'provider': 'postmark'} for feed_refresh v1" in caplog.text


# -- registration and arguments -------------------------------------------------------------


def test_registering_reads_no_storage_and_same_prefix_collectors_clash(
    meter: EventMeter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("registration read storage")

    monkeypatch.setattr(meter, "summary", no_reads)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EventMeterCollector(meter, [INVOICES]))
    registry.register(EventMeterCollector(meter, [INVOICES], prefix="billing"))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(EventMeterCollector(meter, ["feed_refresh"]))


def test_prefix_names_every_family(meter: EventMeter, clock: FakeClock) -> None:
    clock.set(at(5, 30))
    names = {name for name, _ in scrape(EventMeterCollector(meter, [INVOICES], prefix="billing"))}
    assert names == {
        "billing_events",
        "billing_per_minute",
        "billing_duration_ms",
        "billing_duration_ms_count",
        "billing_duration_ms_sum",
        "billing_interval_ms",
        "billing_interval_ms_count",
        "billing_interval_ms_sum",
        "billing_scrape_error",
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"reports": []}, ValueError, "at least one report"),
        ({"reports": [NAME, (NAME, 1)]}, ValueError, "listed twice"),
        ({"reports": [(NAME, 0)]}, ValueError, "positive int"),
        ({"reports": [42]}, TypeError, "each report must be"),
        ({"by": {"provider": "x"}}, TypeError, "list of filters"),
        ({"by": []}, ValueError, "at least one filter"),
        ({"by": ["provider"]}, TypeError, "None or a mapping"),
        ({"by": [None, {}]}, ValueError, "listed twice"),
        ({"by": [{"provider-name": "x"}]}, ValueError, "label name"),
        ({"by": [{"__provider": "x"}]}, ValueError, "label name"),
        ({"by": [{"status": "x"}]}, ValueError, "clashes"),
        ({"by": [{"provider": None}]}, ValueError, "is None"),
        ({"window": timedelta(seconds=90)}, ValueError, "whole number of minutes"),
        ({"window": timedelta(0)}, ValueError, "whole number of minutes"),
        ({"window": 300}, TypeError, "timedelta"),
        ({"prefix": "event-meter"}, ValueError, "prefix"),
        ({"meter": "memory://"}, TypeError, "EventMeter"),
    ],
)
def test_bad_arguments_fail_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    options: dict[str, Any] = {"reports": [INVOICES], **kwargs}
    with pytest.raises(error, match=message):
        EventMeterCollector(**options)


def test_a_single_report_or_name_is_accepted(meter: EventMeter) -> None:
    by_name = scrape(EventMeterCollector(meter, NAME))
    assert by_name == scrape(EventMeterCollector(meter, INVOICES))
    assert "invoice_delivery v1" in repr(EventMeterCollector(meter, NAME))


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import -> ImportError
    with pytest.raises(ConfigurationError, match="prometheus_client") as error:
        EventMeterCollector(None, [INVOICES])
    assert PIP_INSTALL == 'pip install "event-meter[prometheus]"'
    assert PIP_INSTALL in str(error.value)
