"""Rollup fields as JSON text, and the merge laws as an SQL function (SPEC 8).

One rollup key is one row whose ``fields`` column holds a JSON object of
decimal integers (``{"count":3,"duration_ms_sum":900}``). The merge runs in
Python, registered on every connection as the deterministic SQL function
``event_meter_merge(stored, delta)`` and called by the apply upsert's conflict
clause, because Python integers keep sums exact beyond 64 bits (SQLite's
integers are 64 bit; its arithmetic silently turns an overflow into a float).

The laws take field names as they come: a name ending ``_min`` keeps the
least value, ``_max`` the greatest, every other name adds, so new fields need
no change here. A stored value that is not a plain decimal integer (a tampered
row, a float, text) counts as absent; the delta replaces it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = ["MERGE_FUNCTION", "dump_fields", "is_decimal", "load_fields", "merge_json"]

MERGE_FUNCTION: Final = "event_meter_merge"
_DECIMAL: Final = re.compile(r"-?[0-9]+\Z")


def is_decimal(value: Any) -> bool:
    """True for text that is a plain decimal integer (``-12``, ``0``), as SPEC 8 reads it."""
    return isinstance(value, str) and _DECIMAL.match(value) is not None


_INT_ONLY: Final = frozenset((int,))


def load_fields(text: str | bytes | None) -> dict[str, int]:
    """Stored ``fields`` text -> every field whose value is a decimal integer (any name).

    Anything that is not a JSON object reads as no fields at all. Callers that
    answer reports pass the result through ``rollup.clean_fields`` (known names).
    """
    if text is None:
        return {}
    try:
        raw = orjson.loads(text)
        if not isinstance(raw, dict):
            return {}
        kinds = set(map(type, raw.values()))
        if kinds <= _INT_ONLY:
            return raw  # the common case, checked in C: every value an int
        if float in kinds:
            raw = json.loads(text)  # orjson reads integers beyond 64 bits as floats
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return {}
    out: dict[str, int] = {}
    for name, value in raw.items():
        kind = type(value)
        if kind is int:
            out[name] = value
        elif kind is str and _DECIMAL.match(value):
            out[name] = int(value)
    return out


def dump_fields(fields: Mapping[str, Any]) -> str:
    """Compact JSON of the fields; exact for any size of integer.

    A value that is not an integer is written as it is and reads as absent.
    """
    try:
        return orjson.dumps(fields).decode()
    except TypeError:  # orjson stops at 64 bits (or met a type it cannot write)
        clean = {str(name): value for name, value in fields.items() if type(value) is int}
        return json.dumps(clean, separators=(",", ":"))


def merge_json(stored: str | bytes | None, delta: str | bytes | None) -> str:
    """``event_meter_merge``: the stored fields merged with the delta by the laws, as JSON.

    Total: it never raises (SQLite would abort the whole apply), whatever the
    stored text holds.
    """
    into = load_fields(stored)
    for name, value in load_fields(delta).items():
        current = into.get(name)
        if current is None:
            into[name] = value
        elif name.endswith("_min"):
            if value < current:
                into[name] = value
        elif name.endswith("_max"):
            if value > current:
                into[name] = value
        else:
            into[name] = current + value
    return dump_fields(into)
