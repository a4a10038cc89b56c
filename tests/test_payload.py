"""The pending-event payload (SPEC 4): shape, coercion, validation and loading."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from event_meter import EventMeter, ValidationError, WriteResult
from event_meter._payload import STATUSES, PendingEvent, build_payload, load_payload
from support import FakeClock, stored

STARTED_AT = "2026-05-06T10:15:20.000000Z"


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.StrEnum):
    FAST = "fast"


def record(meter: EventMeter, **params: Any) -> WriteResult:
    return meter.start("job", **params).success()


def recorded_params(meter: EventMeter, **params: Any) -> dict[str, Any]:
    result = record(meter, **params)
    assert result.recorded, result.error
    assert result.payload is not None
    stored_params: dict[str, Any] = result.payload["params"]
    return stored_params


# -- shape ------------------------------------------------------------------------------


def test_stored_payload_has_the_spec_keys_in_order(meter: EventMeter, clock: FakeClock) -> None:
    clock.set(datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC))
    result = meter.start("invoice_delivery", customer_id=42, provider="postmark").success(
        message_id="msg_123"
    )
    assert result.payload is not None
    assert list(result.payload) == ["name", "status", "started_at", "duration_ms", "params"]
    [row] = stored(meter, clock, "invoice_delivery")
    assert list(row) == ["name", "status", "started_at", "duration_ms", "params"]
    assert row["name"] == "invoice_delivery"
    assert row["status"] == "success"
    assert row["started_at"] == STARTED_AT
    assert type(row["duration_ms"]) is int
    assert row["duration_ms"] >= 0
    assert row["params"] == {"customer_id": 42, "provider": "postmark", "message_id": "msg_123"}


def test_params_are_omitted_when_empty(meter: EventMeter, clock: FakeClock) -> None:
    result = meter.start("job").success()
    assert result.payload is not None
    assert "params" not in result.payload
    [row] = stored(meter, clock, "job")
    assert list(row) == ["name", "status", "started_at", "duration_ms"]


def test_build_payload_omits_a_missing_duration() -> None:
    payload = build_payload("job", "failure", STARTED_AT, None, {})
    assert payload == {"name": "job", "status": "failure", "started_at": STARTED_AT}
    assert list(build_payload("job", "success", STARTED_AT, 0, {"a": 1})) == [
        "name",
        "status",
        "started_at",
        "duration_ms",
        "params",
    ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC), "2026-05-06T10:15:20.000000Z"),
        (datetime(2026, 5, 6, 10, 15, 20, 7, tzinfo=UTC), "2026-05-06T10:15:20.000007Z"),
        (datetime(2026, 5, 6, 10, 15, 20, 999999, tzinfo=UTC), "2026-05-06T10:15:20.999999Z"),
        (
            datetime(2026, 5, 6, 5, 15, 20, 120000, tzinfo=timezone(timedelta(hours=-5))),
            "2026-05-06T10:15:20.120000Z",
        ),
    ],
)
def test_started_at_has_six_fractional_digits_and_z(
    memory_meter: EventMeter, clock: FakeClock, now: datetime, expected: str
) -> None:
    clock.set(now)
    result = record(memory_meter)
    assert result.payload is not None
    assert result.payload["started_at"] == expected


def test_params_named_like_payload_keys_do_not_collide(memory_meter: EventMeter) -> None:
    result = memory_meter.start(
        "job", status="weird", duration_ms=-5, started_at="yesterday", name="other"
    ).failure()
    assert result.payload is not None
    assert result.payload["name"] == "job"
    assert result.payload["status"] == "failure"
    assert result.payload["started_at"] != "yesterday"
    assert result.payload["duration_ms"] >= 0
    assert result.payload["params"] == {
        "status": "weird",
        "duration_ms": -5,
        "started_at": "yesterday",
        "name": "other",
    }


# -- coercion ---------------------------------------------------------------------------

UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
AWARE = datetime(2026, 5, 6, 10, 15, 20, 5, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2026, 5, 6, 10, 15, 20)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AWARE, "2026-05-06T10:15:20.000005+02:00"),
        (NAIVE, "2026-05-06T10:15:20"),
        (date(2026, 5, 6), "2026-05-06"),
        (Decimal("12.50"), "12.50"),
        (UID, "12345678-1234-5678-1234-567812345678"),
        (Color.RED, "red"),
        (Level.HIGH, 3),
        (Mode.FAST, "fast"),
        ((1, "a"), [1, "a"]),
        (
            {"when": date(2026, 1, 2), "ids": [UID, Decimal("1")], 3: {"deep": Color.RED}},
            {
                "when": "2026-01-02",
                "ids": ["12345678-1234-5678-1234-567812345678", "1"],
                "3": {"deep": "red"},
            },
        ),
        (1.5, 1.5),
        (None, None),
        (True, True),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
    ],
    ids=lambda v: type(v).__name__,
)
def test_params_are_coerced_to_json(
    meter: EventMeter, clock: FakeClock, value: Any, expected: Any
) -> None:
    assert recorded_params(meter, value=value) == {"value": expected}
    [row] = stored(meter, clock, "job")
    assert row["params"] == {"value": expected}
    assert type(row["params"]["value"]) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        b"bytes",
        complex(1, 2),
        float("nan"),
        float("inf"),
        float("-inf"),
        2**64,
        -(2**63) - 1,
        [1, object()],
        {"inner": {"deep": float("nan")}},
        {"inner": [2**70]},
    ],
    ids=repr,
)
def test_unsupported_params_fail_validation_and_write_nothing(
    meter: EventMeter, clock: FakeClock, value: Any
) -> None:
    event = meter.start("job", ok=1)
    result = event.success(bad_param=value)
    assert not result.recorded
    assert result.payload is None
    assert isinstance(result.error, ValidationError)
    assert "bad_param" in str(result.error)
    assert not event.recorded
    assert stored(meter, clock, "job") == []


def test_validation_error_names_the_offending_param_among_many(memory_meter: EventMeter) -> None:
    result = memory_meter.start("job", fine="x", also_fine=2).success(culprit=object())
    assert isinstance(result.error, ValidationError)
    message = str(result.error)
    assert "culprit" in message
    assert "also_fine" not in message


# -- loading ----------------------------------------------------------------------------


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "job", "status": "success", "started_at": STARTED_AT}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not _DROP}


_DROP = object()
STARTED_MS = int(datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC).timestamp()) * 1000


@pytest.mark.parametrize("status", ["success", "failure", "skipped"])
def test_load_payload_accepts_valid_rows(status: str) -> None:
    loaded = load_payload(row(status=status, duration_ms=734, params={"a": 1}))
    assert isinstance(loaded, PendingEvent)
    assert loaded.name == "job"
    assert STATUSES[loaded.status] == status
    assert loaded.started_ms == STARTED_MS
    assert loaded.duration_ms == 734
    assert loaded.params == {"a": 1}


def test_load_payload_defaults_optional_parts() -> None:
    loaded = load_payload(row())
    assert isinstance(loaded, PendingEvent)
    assert loaded.duration_ms is None
    assert loaded.params == {}
    zero = load_payload(row(duration_ms=0, params=None))
    assert isinstance(zero, PendingEvent)
    assert zero.duration_ms == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-06T10:15:20.123999Z", datetime(2026, 5, 6, 10, 15, 20, 123000, tzinfo=UTC)),
        ("2026-05-06T10:15:20.000999Z", datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC)),
        ("2026-05-06T12:15:20.500500+02:00", datetime(2026, 5, 6, 10, 15, 20, 500000, tzinfo=UTC)),
        ("2026-05-06T10:15:20", datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC)),
        ("1969-12-31T23:59:59.999999Z", datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_started_ms_is_truncated_to_whole_milliseconds(text: str, expected: datetime) -> None:
    loaded = load_payload(row(started_at=text))
    assert isinstance(loaded, PendingEvent)
    whole_seconds = int((expected - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1))
    assert loaded.started_ms == whole_seconds * 1000 + expected.microsecond // 1000


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(["job"], id="list"),
        pytest.param("job", id="string"),
        pytest.param(None, id="null"),
        pytest.param(42, id="number"),
        pytest.param(row(name=_DROP), id="name-missing"),
        pytest.param(row(name=""), id="name-empty"),
        pytest.param(row(name="   "), id="name-blank"),
        pytest.param(row(name=42), id="name-not-str"),
        pytest.param(row(status=_DROP), id="status-missing"),
        pytest.param(row(status="ok"), id="status-other"),
        pytest.param(row(status="SUCCESS"), id="status-case"),
        pytest.param(row(status="skip"), id="status-skip"),
        pytest.param(row(status=None), id="status-null"),
        pytest.param(row(status=0), id="status-number"),
        pytest.param(row(status=["success"]), id="status-list"),
        pytest.param(row(status={"success": 1}), id="status-object"),
        pytest.param(row(started_at=_DROP), id="started-missing"),
        pytest.param(row(started_at="yesterday"), id="started-text"),
        pytest.param(row(started_at=""), id="started-empty"),
        pytest.param(row(started_at=1778062520), id="started-number"),
        pytest.param(row(started_at="2026-13-06T10:15:20.000000Z"), id="started-month"),
        pytest.param(row(started_at="2026-05-06T10:15:60.000000Z"), id="started-second"),
        pytest.param(row(started_at="2026-05-06T10:75:20.000000Z"), id="started-minute"),
        pytest.param(row(duration_ms=-1), id="duration-negative"),
        pytest.param(row(duration_ms=1.5), id="duration-float"),
        pytest.param(row(duration_ms=2.0), id="duration-whole-float"),
        pytest.param(row(duration_ms=True), id="duration-bool"),
        pytest.param(row(duration_ms="5"), id="duration-str"),
        pytest.param(row(params=[]), id="params-list"),
        pytest.param(row(params="a=1"), id="params-str"),
        pytest.param(row(params=1), id="params-number"),
    ],
)
def test_load_payload_returns_a_reason_for_malformed_rows(payload: Any) -> None:
    reason = load_payload(payload)
    assert isinstance(reason, str)
    assert reason.strip()
