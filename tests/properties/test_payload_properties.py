"""Properties of loading and coercing payloads (SPEC section 4).

- ``load_payload`` never raises: any value is a ``PendingEvent`` or a reason,
  and which one it is follows the SPEC rules exactly (an oracle written from
  the SPEC text decides, including a reference parse of ``started_at``).
- A payload built by the SPEC rules always loads and round-trips.
- ``coerce_params`` returns what the stream stores can write, or raises
  ``ValidationError``: nothing else.
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from event_meter._payload import STATUSES, PendingEvent, build_payload, coerce_params, load_payload
from event_meter._time import iso_us
from event_meter.errors import ValidationError
from properties.strategies import json_scalars, json_values, surrogate_texts

_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
# Non-ASCII decimal digits (Arabic-Indic, extended Arabic-Indic, fullwidth) that
# ``str.isdigit`` and ``int`` accept but ISO 8601 and ``datetime.fromisoformat`` do not.
_UNICODE_DIGITS = "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u06f5\uff10\uff19"
_TIME_CHARS = "0123456789" + _UNICODE_DIGITS + "²:-T.Z+z x"


# -- oracle written from the SPEC text -----------------------------------------------


def reference_ms(text: str) -> int | None:
    """Epoch ms of an ISO-8601 time (naive = UTC), or None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return (parsed - _EPOCH) // _MS


def spec_accepts(payload: Any) -> bool:
    """SPEC 4: a JSON object with a non-blank name, a known status, a parseable
    ``started_at``, an optional non-negative integer ``duration_ms`` and an
    optional object ``params``."""
    if not isinstance(payload, dict):
        return False
    name, status = payload.get("name"), payload.get("status")
    started_at, duration = payload.get("started_at"), payload.get("duration_ms")
    params = payload.get("params")
    return (
        isinstance(name, str)
        and bool(name.strip())
        and isinstance(status, str)
        and status in STATUSES
        and isinstance(started_at, str)
        and reference_ms(started_at) is not None
        and (duration is None or (type(duration) is int and duration >= 0))
        and (params is None or isinstance(params, dict))
    )


def check_loaded(payload: Any) -> PendingEvent | str:
    loaded = load_payload(payload)
    assert isinstance(loaded, PendingEvent | str)
    assert isinstance(loaded, PendingEvent) == spec_accepts(payload), loaded
    if isinstance(loaded, PendingEvent):
        assert loaded.name == payload["name"]
        assert STATUSES[loaded.status] == payload["status"]
        assert loaded.started_ms == reference_ms(payload["started_at"])
        assert loaded.duration_ms == payload.get("duration_ms")
        assert loaded.params == (payload.get("params") or {})
    else:
        assert loaded  # a reason names what is wrong
    return loaded


# -- strategies ---------------------------------------------------------------------

datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def time_texts(draw: st.DrawFn) -> str:
    """``started_at`` texts: the written form, other ISO forms, and near misses of both."""
    moment = draw(datetimes)
    written = iso_us(moment)  # the form event-meter writes: the loader's fast path
    text = draw(
        st.sampled_from(
            [
                written,
                written,
                moment.isoformat(),
                moment.isoformat(sep=" "),
                moment.replace(tzinfo=draw(offsets)).isoformat(),
                written[:19] + "Z",
            ]
        )
    )
    for _ in range(draw(st.integers(0, 2))):  # mutate a character, often a digit
        digits = [i for i, char in enumerate(text) if char.isdigit()]
        on_a_digit = draw(st.booleans())
        if digits and on_a_digit:
            at = draw(st.sampled_from(digits))
            char = draw(st.sampled_from(_UNICODE_DIGITS + "0123456789x"))
        else:
            at = draw(st.integers(0, len(text) - 1))
            char = draw(st.sampled_from(_TIME_CHARS))
        text = text[:at] + char + text[at + 1 :]
    if draw(st.integers(0, 3)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


_writable_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def payloads(params: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads built by the SPEC rules (what ``Event`` writes), with ``params``."""
    return st.builds(
        build_payload,
        name=st.text(min_size=1, max_size=12).filter(lambda s: bool(s.strip())),
        status=st.sampled_from(STATUSES),
        started_at=st.builds(
            lambda moment, micro: iso_us(moment + timedelta(microseconds=micro)),
            datetimes,
            st.integers(0, 999_999),
        ),
        duration_ms=st.none() | st.integers(0, 2**63 - 1),
        params=params,
    )


valid_payloads = payloads(st.dictionaries(st.text(max_size=8), _writable_values, max_size=4))
# Near-valid payloads mutate fields anyway: lighter params keep them cheap.
_light_payloads = payloads(
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=3), max_size=2)
)


_FIELD_VALUES = {
    "name": st.one_of(st.text(max_size=5), st.sampled_from(["", " ", "\t\n", "\u3000", "ok"])),
    "status": st.one_of(
        st.sampled_from([*STATUSES, "SUCCESS", "succeeded", "skip", "", "failure "]), json_values
    ),
    "started_at": st.one_of(time_texts(), json_scalars),
    "duration_ms": st.one_of(
        st.integers(-3, 3),
        st.integers(),
        st.just(True),
        st.just(False),
        st.floats(),
        st.text(max_size=3),
    ),
    "params": st.one_of(
        st.none(), st.dictionaries(st.text(max_size=3), json_values, max_size=3), json_values
    ),
}


@st.composite
def near_valid_payloads(draw: st.DrawFn) -> Any:
    """A valid payload with some fields replaced, removed or added."""
    payload: dict[Any, Any] = draw(_light_payloads)
    for field in draw(st.sets(st.sampled_from(sorted(_FIELD_VALUES)))):
        if draw(st.integers(0, 4)) == 0:
            payload.pop(field, None)
        else:
            payload[field] = draw(_FIELD_VALUES[field])
    extras = draw(st.dictionaries(st.text(max_size=4) | st.integers(), json_values, max_size=2))
    for key, value in extras.items():
        payload.setdefault(key, value)
    return payload


# -- load_payload -------------------------------------------------------------------


@given(json_values)
def test_any_json_value_loads_or_gives_a_reason(value: Any) -> None:
    check_loaded(value)


@given(near_valid_payloads())
@example({"name": "e", "status": "success", "started_at": "2026-05-06T10:15:\u0662\u0660.000000Z"})
@example(
    {"name": "e", "status": "success", "started_at": "2026-05-06T10:15:20.\u0661\u0662\u0663000Z"}
)
@example({"name": "e", "status": "success", "started_at": "0001-01-01T00:00:00+01:00"})
@example(
    {
        "name": "e",
        "status": "success",
        "started_at": "2026-05-06T10:15:20.000000Z",
        "duration_ms": True,
    }
)
@example({"name": "\u3000", "status": "success", "started_at": "2026-05-06T10:15:20.000000Z"})
def test_near_valid_payloads_load_exactly_when_the_spec_says(payload: Any) -> None:
    check_loaded(payload)


# Found by hypothesis (non-ASCII digits): see the regression test below.
@given(time_texts())
@example("2000-01-01T00:00:\u06600.000000Z")  # as hypothesis shrank it
@example("2026-05-06T10:15:\u0662\u0660.000000Z")
def test_started_at_is_parsed_like_iso_8601(text: str) -> None:
    payload = {"name": "e", "status": "success", "started_at": text}
    # Twice: the second load takes the loader's cached per-second fast path.
    assert check_loaded(payload) == check_loaded(dict(payload))


@given(valid_payloads)
def test_payloads_built_by_the_spec_rules_round_trip(payload: dict[str, Any]) -> None:
    stored = orjson.loads(orjson.dumps({"id": 1, "payload": payload}))["payload"]
    loaded = check_loaded(stored)
    assert isinstance(loaded, PendingEvent)
    assert (
        build_payload(
            loaded.name,
            STATUSES[loaded.status],
            stored["started_at"],
            loaded.duration_ms,
            loaded.params,
        )
        == payload
    )


@pytest.mark.parametrize(
    "started_at",
    [
        "2026-05-06T10:15:\u0662\u0660.000000Z",  # Arabic-Indic seconds
        "2026-05-06T10:15:20.\u0661\u0662\u0663000Z",  # Arabic-Indic fraction
        "2026-05-06T10:15:20.\uff10\uff10\uff10000Z",  # fullwidth fraction
    ],
)
def test_regression_non_ascii_digits_are_not_a_time(started_at: str) -> None:
    # Found by test_started_at_is_parsed_like_iso_8601: the loader's fast path used
    # str.isdigit() and int(), which accept any Unicode decimal digit, so these
    # loaded as 10:15:20.000 while every other ISO form of them is malformed.
    loaded = load_payload({"name": "e", "status": "success", "started_at": started_at})
    assert loaded == "started_at is not a time"


# -- coerce_params ------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    NESTED = ("a", 1)


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


class Number(float):
    pass


class Big(int):
    pass


def _self_containing() -> list[Any]:
    box: list[Any] = []
    box.append(box)
    return box


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


param_scalars: st.SearchStrategy[Any] = st.one_of(
    json_scalars,
    surrogate_texts,
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.decimals(),  # NaN and infinities included
    st.uuids(),
    st.sampled_from([*Colour, *Level]),
    st.builds(Text, st.text()),
    st.builds(Number, st.floats()),
    st.builds(Big, st.integers()),
    st.binary(max_size=3),
    st.complex_numbers(max_magnitude=10),
    st.just(object()),
    st.just(timedelta(seconds=1)),
    st.sets(st.integers(), max_size=2),
)
param_values: st.SearchStrategy[Any] = st.recursive(
    param_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(), surrogate_texts, st.integers()), inner, max_size=3),
    ),
    max_leaves=6,
)


def _check_json_ready(value: Any) -> None:
    """Only the types JSON has, 64-bit ints, finite floats, text UTF-8 can encode."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            assert type(key) is str
            key.encode()
            _check_json_ready(item)
    elif kind is list:
        for item in value:
            _check_json_ready(item)
    elif kind is str:
        value.encode()
    elif kind is int:
        assert -(2**63) <= value < 2**63
    elif kind is float:
        assert math.isfinite(value)
    else:
        assert value is None or kind is bool, kind


@given(st.dictionaries(st.one_of(st.text(), surrogate_texts), param_values, max_size=4))
# Deeper nesting is in the plain regression test below: hypothesis's own
# pretty-printer recurses through an example and would overflow on it.
@example({"deep": _nested(60)})
@example({"loop": _self_containing()})
@example({"\ud800": None})  # as hypothesis shrank it
@example({"bad": "\ud800"})
@example({"\udfff": 1})
@example({"nested": {"k": ["\ud83d"]}})
def test_coerce_params_gives_writable_json_or_a_validation_error(params: dict[str, Any]) -> None:
    try:
        out = coerce_params(params)
    except ValidationError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.startswith("param ")
        return
    _check_json_ready(out)
    assert list(out) == list(params)
    # The deepest wrapping a stream store writes: a file stream line.
    line = orjson.dumps({"id": 1, "payload": {"name": "e", "params": out}})
    assert orjson.loads(line)["payload"]["params"] == out


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"deep": _nested(300)}, "deep"),
        ({"deep": _nested(5_000)}, "deep"),
        ({"loop": _self_containing()}, "loop"),
        ({"bad": "x\ud800"}, "bad"),
        ({"\udfff": 1}, "\\udfff"),
        ({"nested": {"k": ["\ud83d"]}}, "nested.k[0]"),
    ],
)
def test_regression_unwritable_params_are_a_validation_error(
    params: dict[str, Any], named: str
) -> None:
    # Found by test_coerce_params_gives_writable_json_or_a_validation_error: these
    # passed coerce_params (or raised RecursionError) and then failed inside the
    # stream store's JSON encoder, so the WriteResult carried a TypeError from the
    # storage layer instead of a ValidationError naming the param.
    with pytest.raises(ValidationError, match="param") as caught:
        coerce_params(params)
    assert named in str(caught.value)


def test_the_deepest_writable_nesting_is_still_accepted() -> None:
    out = coerce_params({"deep": _nested(250)})
    assert orjson.loads(orjson.dumps({"id": 1, "payload": {"params": out}}))["payload"] == {
        "params": out
    }


@given(
    st.datetimes(timezones=st.none() | st.just(UTC)) | st.dates(),
    st.decimals(allow_nan=False),
    st.uuids(),
)
def test_coercions_follow_the_spec(moment: date, number: Decimal, ident: uuid.UUID) -> None:
    out = coerce_params({"t": moment, "d": number, "u": ident, "e": Colour.RED, "i": Level.LOW})
    assert out == {
        "t": moment.isoformat(),
        "d": str(number),
        "u": str(ident),
        "e": "red",
        "i": 1,
    }
    assert type(out["i"]) is int
