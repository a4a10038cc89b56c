"""Rollup fields, their merge laws and their rendering (SPEC section 8). Pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from event_meter._time import iso_ms
from event_meter.histogram import HISTOGRAM_FIELDS, percentiles

__all__ = [
    "FIELDS",
    "OVERFLOW_FIELD",
    "clean_fields",
    "merge_fields",
    "render_summary",
]

FIELDS: Final = (
    "count",
    "success_count",
    "failure_count",
    "skipped_count",
    "started_at_ms_min",
    "started_at_ms_max",
    "duration_ms_count",
    "duration_ms_sum",
    "duration_ms_min",
    "duration_ms_max",
    "interval_ms_count",
    "interval_ms_sum",
    "interval_ms_min",
    "interval_ms_max",
)
OVERFLOW_FIELD: Final = "overflow_count"
"""Events of a bucket that the cardinality guard moved to an index's overflow value
(kept in the all index; sum law)."""
MIN_FIELDS: Final = frozenset(f for f in FIELDS if f.endswith("_min"))
MAX_FIELDS: Final = frozenset(f for f in FIELDS if f.endswith("_max"))
# Stored names: the SPEC fields, the histogram buckets (sum law) and the overflow count.
_KNOWN: Final = frozenset(FIELDS) | HISTOGRAM_FIELDS | {OVERFLOW_FIELD}
_DECIMAL = re.compile(r"-?[0-9]+\Z")
_INT_ONLY: Final = frozenset((int,))


def clean_fields(raw: Mapping[Any, Any]) -> dict[str, int]:
    """Known fields whose stored value is a plain decimal integer; the rest is absent.

    Known: the SPEC section 8 fields, histogram buckets (``event_meter.histogram``)
    and ``overflow_count``.

    Accepts ints (not bools) and decimal text (``"12"``, ``b"12"``), so every
    backend treats a corrupt stored number the same way.
    """
    if _KNOWN.issuperset(raw) and set(map(type, raw.values())) <= _INT_ONLY:
        return dict(raw)  # the common case, checked in C: known names, int values
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if name not in _KNOWN:
            continue
        kind = type(value)
        if kind is int:
            out[name] = value
        elif kind is str or kind is bytes:
            text = value.decode("ascii", "replace") if kind is bytes else value
            if _DECIMAL.match(text):
                out[name] = int(text)
    return out


def merge_fields(into: dict[str, int], delta: Mapping[str, int]) -> dict[str, int]:
    """Merge ``delta`` into ``into`` by the laws: min, max, everything else adds."""
    for name, value in delta.items():
        current = into.get(name)
        if current is None:
            into[name] = value
        elif name in MIN_FIELDS:
            if value < current:
                into[name] = value
        elif name in MAX_FIELDS:
            if value > current:
                into[name] = value
        else:
            into[name] = current + value
    return into


def merge_all(rollups: Iterable[Mapping[str, int] | None]) -> dict[str, int]:
    total: dict[str, int] = {}
    for fields in rollups:
        if fields:
            merge_fields(total, fields)
    return total


def render_summary(fields: Mapping[str, int], window_seconds: float | None) -> dict[str, Any]:
    """The summary dict in SPEC order; ``window_seconds`` None means the observed span."""
    out: dict[str, Any] = {
        "count": fields.get("count", 0),
        "success_count": fields.get("success_count", 0),
        "failure_count": fields.get("failure_count", 0),
        "skipped_count": fields.get("skipped_count", 0),
    }
    overflow = fields.get(OVERFLOW_FIELD)
    if overflow:
        out[OVERFLOW_FIELD] = overflow
    first = fields.get("started_at_ms_min")
    last = fields.get("started_at_ms_max")
    if first is not None:
        out["started_at_min"] = iso_ms(first)
    if last is not None:
        out["started_at_max"] = iso_ms(last)
    if window_seconds is None and out["count"] > 0 and first is not None and last is not None:
        window_seconds = (last - first) / 1000
    if window_seconds is not None and (out["count"] > 0 or window_seconds > 0):
        out["rate_window_seconds"] = float(window_seconds)
        if window_seconds > 0:
            out["per_second"] = out["count"] / window_seconds
            out["per_minute"] = out["count"] * 60 / window_seconds
    for measure in ("duration_ms", "interval_ms"):
        count = fields.get(f"{measure}_count", 0)
        total = fields.get(f"{measure}_sum", 0)
        out[f"{measure}_count"] = count
        out[f"{measure}_sum"] = total
        if count > 0:
            out[f"{measure}_avg"] = total / count
        low = fields.get(f"{measure}_min")
        high = fields.get(f"{measure}_max")
        if low is not None:
            out[f"{measure}_min"] = low
        if high is not None:
            out[f"{measure}_max"] = high
        if count > 0:
            found = percentiles(fields, measure)
            if found is not None:
                for label, value in found.items():
                    out[f"{measure}_{label}"] = value
    return out
