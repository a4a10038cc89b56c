"""Configuration (SPEC 2): option validation, durations, storage URLs and store objects."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import event_meter
from event_meter import ConfigurationError, EventMeter
from event_meter.stores import FileRollups, FileStream, MemoryRollups, MemoryStream
from support import FakeClock

DURATIONS = ("rollup_ttl", "lock_ttl", "cleanup_history_retention", "cleanup_history_interval")
DURATION_FIELDS = {option: f"{option}_ms" for option in DURATIONS}
BAD_DURATIONS = (
    0,
    -1,
    0.0,
    -0.5,
    1e-9,
    math.nan,
    math.inf,
    True,
    False,
    "30",
    None,
    timedelta(0),
    timedelta(seconds=-1),
    timedelta(microseconds=1),
)

BAD_OPTIONS: list[tuple[str, Any]] = [
    *(("namespace", value) for value in ("", "   ", None, 42, b"ns")),
    *((option, value) for option in DURATIONS for value in BAD_DURATIONS),
    *(("stream_sync", value) for value in ("always", "", "FLUSH", None, True, 1)),
    *(
        (option, value)
        for option in ("redis_read_limit", "summary_key_limit")
        for value in (0, -1, True, False, 1.5, "10")
    ),
    *(("auto_cleanup_history", value) for value in (1, 0, "true", None, "yes")),
    *(("auto_cleanup_error_handler", value) for value in (42, "log", object())),
    *(("clock", value) for value in (object(), datetime.now, "utc", None)),
    ("stream_storage", 42),
    ("rollup_storage", object()),
    ("redis", 42),
]


def memory_meter(**options: Any) -> EventMeter:
    return EventMeter(**{"stream_storage": "memory://", "rollup_storage": "memory://", **options})


class NonCallableNow:
    now = "2026-05-06T10:15:00Z"


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=repr)
def test_invalid_values_name_the_option_and_the_value(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        memory_meter(**{option: value})
    message = str(caught.value)
    assert option in message
    assert repr(value) in message


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS[:8], ids=repr)
def test_configure_validates_too(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        event_meter.configure(stream_storage="memory://", rollup_storage="memory://").configure(
            **{option: value}
        )


def test_a_clock_whose_now_is_not_callable_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="clock"):
        memory_meter(clock=NonCallableNow())


def test_an_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="namspace"):
        memory_meter(namspace="typo")
    with pytest.raises(ConfigurationError, match="namspace"):
        event_meter.configure(namspace="typo")


def test_defaults() -> None:
    config = memory_meter().config
    assert config.namespace == "event_meter:v1"
    assert config.stream_sync == "flush"
    assert config.redis_read_limit is None
    assert config.rollup_ttl_ms == 31 * 86_400_000
    assert config.lock_ttl_ms == 30_000
    assert config.auto_cleanup_history is False
    assert config.cleanup_history_retention_ms == 31 * 86_400_000
    assert config.cleanup_history_interval_ms == 3_600_000
    assert config.summary_key_limit == 10_000
    assert callable(config.auto_cleanup_error_handler)
    assert config.clock.now().utcoffset() == timedelta(0)


@pytest.mark.parametrize("option", DURATIONS)
@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        (5, 5_000),
        (0.25, 250),
        (1.5, 1_500),
        (timedelta(minutes=2), 120_000),
        (timedelta(milliseconds=1), 1),
        (timedelta(days=31), 31 * 86_400_000),
    ],
)
def test_durations_accept_seconds_and_timedelta(option: str, value: Any, expected_ms: int) -> None:
    config = memory_meter(**{option: value}).config
    assert getattr(config, DURATION_FIELDS[option]) == expected_ms


@pytest.mark.parametrize("value", ["none", "flush", "fsync"])
def test_stream_sync_modes(value: str, tmp_path: Path) -> None:
    meter = EventMeter(
        stream_storage=f"file://{tmp_path}", rollup_storage="memory://", stream_sync=value
    )
    assert meter.config.stream_sync == value
    assert isinstance(meter.stream, FileStream)
    assert meter.stream.sync == value


@pytest.mark.parametrize("option", ["redis_read_limit", "summary_key_limit"])
@pytest.mark.parametrize("value", [None, 1, 500])
def test_optional_positive_ints(option: str, value: int | None) -> None:
    assert getattr(memory_meter(**{option: value}).config, option) == value


@pytest.mark.parametrize("value", [True, False])
def test_auto_cleanup_history_accepts_bools(value: bool) -> None:
    assert memory_meter(auto_cleanup_history=value).config.auto_cleanup_history is value


def test_handler_and_clock_objects_are_kept(clock: FakeClock) -> None:
    def handler(exc: BaseException) -> None:
        return None

    config = memory_meter(clock=clock, auto_cleanup_error_handler=handler).config
    assert config.clock is clock
    assert config.auto_cleanup_error_handler is handler


# -- storage ----------------------------------------------------------------------------


def test_memory_urls_build_memory_stores() -> None:
    meter = EventMeter(stream_storage="memory://", rollup_storage="memory://")
    assert isinstance(meter.stream, MemoryStream)
    assert isinstance(meter.rollups, MemoryRollups)


def test_absolute_file_urls_build_file_stores(tmp_path: Path) -> None:
    meter = EventMeter(stream_storage=f"file://{tmp_path}/s", rollup_storage=f"file://{tmp_path}/r")
    assert isinstance(meter.stream, FileStream)
    assert isinstance(meter.rollups, FileRollups)
    assert meter.stream.path == tmp_path / "s"
    assert meter.rollups.path == tmp_path / "r"


def test_relative_file_urls_build_file_stores() -> None:
    meter = EventMeter(stream_storage="file:var/stream", rollup_storage="file:var/rollups")
    assert isinstance(meter.stream, FileStream)
    assert isinstance(meter.rollups, FileRollups)
    assert meter.stream.path == Path("var/stream")
    assert meter.rollups.path == Path("var/rollups")


def test_no_storage_options_use_the_embedded_default(tmp_path: Path) -> None:
    meter = EventMeter()
    assert isinstance(meter.stream, FileStream)
    assert isinstance(meter.rollups, FileRollups)
    assert meter.stream.path == tmp_path / "embedded"
    assert meter.rollups.path == tmp_path / "embedded"


@pytest.mark.parametrize("option", ["stream_storage", "rollup_storage"])
@pytest.mark.parametrize("url", ["bogus://x", "s3://bucket/path", "/var/lib/event_meter", "mem://"])
def test_unknown_url_schemes_list_the_known_ones(option: str, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        memory_meter(**{option: url})
    message = str(caught.value)
    assert repr(url) in message
    assert option in message
    assert "memory://" in message
    assert "file://" in message


@pytest.mark.parametrize("option", ["stream_storage", "rollup_storage"])
def test_file_urls_with_a_host_are_rejected(option: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        memory_meter(**{option: "file://fileserver/var/event_meter"})
    message = str(caught.value)
    assert "fileserver" in message
    assert option in message


def test_store_objects_are_used_as_given_and_bound(clock: FakeClock) -> None:
    stream, rollups = MemoryStream(), MemoryRollups()
    meter = EventMeter(
        namespace="app:em", stream_storage=stream, rollup_storage=rollups, clock=clock
    )
    assert meter.stream is stream
    assert meter.rollups is rollups
    for store in (stream, rollups):
        assert store.namespace == "app:em"
        assert store.clock is clock


def test_a_store_in_the_wrong_role_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="stream_storage"):
        EventMeter(stream_storage=MemoryRollups(), rollup_storage="memory://")
    with pytest.raises(ConfigurationError, match="rollup_storage"):
        EventMeter(stream_storage="memory://", rollup_storage=MemoryStream())


class Closes:
    """Records which memory stores were closed, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.closed: list[object] = []

        def close(store: object) -> None:
            self.closed.append(store)

        for cls in (MemoryStream, MemoryRollups):
            monkeypatch.setattr(cls, "close", close)


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> Closes:
    return Closes(monkeypatch)


def test_close_closes_only_stores_created_from_urls(closes: Closes) -> None:
    given = MemoryStream()
    meter = EventMeter(stream_storage=given, rollup_storage="memory://")
    created = meter.rollups
    meter.close()
    assert closes.closed == [created]


def test_configure_closes_the_stores_it_replaces_but_not_given_ones(closes: Closes) -> None:
    given = MemoryRollups()
    meter = EventMeter(stream_storage="memory://", rollup_storage=given)
    first_stream = meter.stream
    assert meter.configure(stream_sync="fsync") is meter
    assert closes.closed == [first_stream]
    assert meter.stream is not first_stream
    assert meter.rollups is given


def test_configure_without_a_storage_option_keeps_the_stores_and_their_data(
    closes: Closes, clock: FakeClock
) -> None:
    meter = EventMeter(stream_storage="memory://", rollup_storage="memory://")
    stream, rollups = meter.stream, meter.rollups
    assert meter.start("job").success().recorded
    meter.configure(auto_cleanup_history=True, namespace="other:ns", clock=clock)
    assert closes.closed == []
    assert meter.stream is stream
    assert meter.rollups is rollups
    assert stream.namespace == "other:ns"
    assert rollups.clock is clock
    assert meter.process_pending("job", version=1).processed == 1


def test_a_rejected_configure_leaves_the_meter_unchanged(closes: Closes) -> None:
    meter = EventMeter(namespace="app:em", stream_storage="memory://", rollup_storage="memory://")
    stream, rollups = meter.stream, meter.rollups
    with pytest.raises(ConfigurationError, match="lock_ttl"):
        meter.configure(namespace="app:other", lock_ttl=0)
    with pytest.raises(ConfigurationError, match="rollup_storage"):
        meter.configure(stream_storage="memory://", rollup_storage="bogus://")
    assert closes.closed == []
    assert (meter.stream, meter.rollups) == (stream, rollups)
    assert meter.config.namespace == "app:em"
    meter.close()
    assert closes.closed == [stream, rollups]
