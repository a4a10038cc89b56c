"""Build, coerce and load one pending event payload (SPEC section 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final, NamedTuple
from uuid import UUID

from event_meter._time import datetime_to_ms
from event_meter.errors import ValidationError

__all__ = ["STATUSES", "PendingEvent", "build_payload", "coerce_params", "load_payload"]

STATUSES: Final = ("success", "failure", "skipped")
STATUS_CODE: Final = {"success": 0, "failure": 1, "skipped": 2}
_PLAIN: Final = frozenset((str, int, bool, type(None)))
_MAX_INT: Final = 2**63
# orjson writes at most 254 nested lists/dicts, and a file stream line wraps a
# param value in three (line, payload, params): 250 leaves one level to spare.
_MAX_DEPTH: Final = 250


class PendingEvent(NamedTuple):
    """A validated stream row, ready to aggregate."""

    name: str
    status: int  # index into STATUSES
    started_ms: int
    duration_ms: int | None
    params: dict[str, Any]


class _TooDeepError(Exception):
    """A param value nests deeper than ``_MAX_DEPTH`` (or contains itself)."""


def _text(text: str, path: str) -> str:
    """``text`` when UTF-8 can encode it (no lone surrogates); else ``ValidationError``."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"param {path!a} holds text with a lone surrogate ({text!a:.80}) that JSON "
                "storage cannot encode; pass valid Unicode text"
            ) from None
    return text


def _coerce(value: Any, path: str, depth: int = 0) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        if kind is int and not -_MAX_INT <= value < _MAX_INT:
            raise ValidationError(
                f"param {path}={value!r} is too large for JSON storage (64-bit); pass it as a str"
            )
        if kind is str:
            return _text(value, path)
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValidationError(
                f"param {path}={value!r} is not a finite number; pass a finite float or a str"
            )
        return value
    if isinstance(value, Mapping | list | tuple) and depth >= _MAX_DEPTH:
        raise _TooDeepError
    if isinstance(value, Mapping):
        return {
            _text(str(k), f"{path}.{k}"): _coerce(v, f"{path}.{k}", depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_coerce(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Enum):
        return _coerce(value.value, path, depth)
    for base in (bool, int, float, str):  # subclasses of the plain types
        if isinstance(value, base):
            return _coerce(base(value), path, depth)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise ValidationError(
        f"param {path} has a value of type {kind.__qualname__} ({value!r:.80}) that cannot be "
        "stored as JSON; pass str, int, float, bool, None, datetime, date, Decimal, UUID, "
        "Enum, or a list/dict of those"
    )


def coerce_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON-ready values; raises ``ValidationError`` naming the bad param.

    The common case (ASCII keys; ASCII text, bool, None and 64-bit int values)
    returns ``params`` itself: recording builds no second dict for it.
    """
    for key, value in params.items():
        kind = type(value)
        if key.isascii() and (
            (kind is str and value.isascii())
            or kind is bool
            or value is None
            or (kind is int and -_MAX_INT <= value < _MAX_INT)
        ):
            continue
        return _coerce_all(params)
    return params


def _coerce_all(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not key.isascii():
            _text(key, key)
        try:
            out[key] = _coerce(value, key)
        except (_TooDeepError, RecursionError):
            raise ValidationError(
                f"param {key!a} nests lists or dicts more than {_MAX_DEPTH} levels deep (or "
                "contains itself); flatten it"
            ) from None
    return out


def build_payload(
    name: str, status: str, started_at: str, duration_ms: int | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The payload dict in SPEC key order, empty parts omitted."""
    payload: dict[str, Any] = {"name": name, "status": status, "started_at": started_at}
    if duration_ms is not None:
        payload["duration_ms"] = duration_ms
    if params:
        payload["params"] = params
    return payload


# Entries per parse cache before it starts over. Batches hold events of nearby
# times, so a few thousand cover the hot path; 100,000 made each cache grow to
# about 25 MB over the first day of events a processing process loaded.
_PARSE_CACHE_LIMIT: Final = 4_096


class _MinuteCache(dict[str, int]):
    """``YYYY-MM-DDTHH:MM`` -> epoch ms of that minute, parsed once."""

    def __missing__(self, prefix: str) -> int:
        ms = datetime_to_ms(datetime.fromisoformat(prefix + ":00+00:00"))
        if len(self) >= _PARSE_CACHE_LIMIT:
            self.clear()
        self[prefix] = ms
        return ms


_MINUTES = _MinuteCache()
# ``YYYY-MM-DDTHH:MM:SS`` -> epoch ms of that second: one slice and one dict
# lookup per event on the processing hot path (filled from ``_MINUTES``).
_SECONDS: dict[str, int] = {}


def _second_ms(prefix: str) -> int | None:
    """Epoch ms of a ``YYYY-MM-DDTHH:MM:SS`` prefix; None when not of that form."""
    if prefix[16] == ":" and prefix[17:19].isdigit():
        seconds = int(prefix[17:19])
        if seconds < 60:
            ms = _MINUTES[prefix[:16]] + seconds * 1000
            if len(_SECONDS) >= _PARSE_CACHE_LIMIT:
                _SECONDS.clear()
            _SECONDS[prefix] = ms
            return ms
    return None


def _started_ms(text: str) -> int:
    """Epoch ms of a ``started_at`` text; raises ValueError when it is not a time."""
    # Fast path for the exact form we write: 2026-05-06T10:15:20.123456Z. ASCII
    # only: ``isdigit`` and ``int`` also take other scripts' digits, ISO 8601 does not.
    if (
        len(text) == 27
        and text[26] == "Z"
        and text[19] == "."
        and text.isascii()
        and text[20:26].isdigit()
    ):
        second = _SECONDS.get(text[:19])
        if second is None:
            second = _second_ms(text[:19])
        if second is not None:
            return second + int(text[20:23])
    return datetime_to_ms(datetime.fromisoformat(text))


_new_tuple = tuple.__new__  # builds a ``PendingEvent`` without its Python-level __new__


def load_payload(payload: Any) -> PendingEvent | str:
    """A stored payload as a ``PendingEvent``, or the reason it is malformed."""
    if type(payload) is not dict:
        return "payload is not a JSON object"
    get = payload.get
    name = get("name")
    if type(name) is not str or not name.strip():
        return "name is missing or blank"
    raw_status = get("status")
    # A JSON list or object is unhashable: check the type before the lookup.
    status = STATUS_CODE.get(raw_status) if type(raw_status) is str else None
    if status is None:
        return "status is not success, failure or skipped"
    started_at = get("started_at")
    if type(started_at) is not str:
        return "started_at is missing"
    try:
        # The cache hit of ``_started_ms`` inlined: the form we write, a second seen before.
        if (
            len(started_at) == 27
            and started_at[26] == "Z"
            and started_at[19] == "."
            and started_at.isascii()
            and started_at[20:26].isdigit()
            and (second := _SECONDS.get(started_at[:19])) is not None
        ):
            started_ms = second + int(started_at[20:23])
        else:
            started_ms = _started_ms(started_at)
    except (ValueError, OverflowError):
        return "started_at is not a time"
    duration = get("duration_ms")
    if duration is not None and (type(duration) is not int or duration < 0):
        return "duration_ms is not a non-negative integer"
    params = get("params")
    if params is None:
        params = {}
    elif type(params) is not dict:
        return "params is not an object"
    return _new_tuple(PendingEvent, (name, status, started_ms, duration, params))
