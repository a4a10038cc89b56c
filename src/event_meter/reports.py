"""Reports over stored rollups: summary, series, compare (SPEC section 10).

Reports read rollups only; they never process or clean, and they answer a
``by`` filter only from an index of the stored definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from event_meter._keys import ReportRef, index_key
from event_meter._time import (
    GRANULARITIES,
    bucket_id,
    bucket_ms,
    ms_to_datetime,
    parse_time,
    window_buckets,
)
from event_meter.errors import UnsupportedQueryError
from event_meter.rollup import merge_all, render_summary
from event_meter.stores.base import RollupStore

__all__ = ["compare", "resolve_index", "series", "summary"]

CHANGE_KEYS = (
    "count",
    "success_count",
    "failure_count",
    "skipped_count",
    "per_minute",
    "duration_ms_avg",
    "interval_ms_avg",
)


def resolve_index(
    definition: Mapping[str, Any], by: Mapping[str, Any] | None
) -> tuple[tuple[str, ...], str]:
    """The stored index answering ``by`` and the index key of its values."""
    if by is None:
        return (), "all"
    if not isinstance(by, Mapping):
        raise TypeError(f"by must be a mapping of param to value, got {type(by).__name__} {by!r}")
    for param, value in by.items():
        if value is None:
            raise ValueError(f"by[{param!r}] is None; filter on a value, or leave the param out")
    params = tuple(sorted(str(p) for p in by))
    stored = {tuple(index) for index in definition.get("indexes", [])}
    if params not in stored:
        known = ", ".join(repr(list(i)) for i in sorted(stored) if i) or "none"
        raise UnsupportedQueryError(
            f"{definition.get('name')} v{definition.get('version')} has no index on "
            f"{list(params)}; its indexes: {known}. Add index_by({', '.join(map(repr, params))}) "
            "in a new report version"
        )
    return params, index_key(params, {str(k): v for k, v in by.items()})


def _window(start: object, end: object) -> tuple[int, int]:
    start_ms = parse_time(start, "start")
    end_ms = parse_time(end, "end")
    if end_ms <= start_ms:
        raise ValueError(f"end ({end!r}) must be after start ({start!r})")
    return start_ms, end_ms


def summary(
    rollups: RollupStore,
    ref: ReportRef,
    definition: Mapping[str, Any],
    *,
    start: object = None,
    end: object = None,
    by: Mapping[str, Any] | None = None,
    key_limit: int | None,
) -> dict[str, Any]:
    if (start is None) != (end is None):
        raise ValueError("pass both start and end, or neither (for every retained hour)")
    index, key = resolve_index(definition, by)
    if start is not None:
        start_ms, end_ms = _window(start, end)
        buckets = window_buckets(start_ms, end_ms, "minute")
        ids = [bucket_id(b, "minute") for b in buckets]
        fields = merge_all(rollups.read_rollups(ref, "minute", index, key, ids))
        return render_summary(fields, len(buckets) * GRANULARITIES["minute"] / 1000)
    limit = None if key_limit is None else key_limit + 1
    retained, fields = rollups.summarize(ref, "hour", index, key, limit)
    if key_limit is not None and retained > key_limit:
        raise ValueError(
            f"{ref.name} v{ref.version} keeps more than {key_limit} hour buckets for {key!r}; "
            "pass start= and end= for a window, or raise summary_key_limit"
        )
    return render_summary(fields, None)


def series(
    rollups: RollupStore,
    ref: ReportRef,
    definition: Mapping[str, Any],
    *,
    now_ms: int,
    start: object = None,
    end: object = None,
    every: str = "minute",
    by: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    if not isinstance(every, str) or every not in GRANULARITIES:
        raise ValueError(f"every={every!r} is not a bucket size; use 'minute' or 'hour'")
    size = bucket_ms(every)
    index, key = resolve_index(definition, by)
    end_ms = parse_time(end, "end") if end is not None else now_ms - now_ms % size + size
    start_ms = parse_time(start, "start") if start is not None else end_ms - 3_600_000
    if end_ms <= start_ms:
        raise ValueError(f"end ({end!r}) must be after start ({start!r})")
    buckets = window_buckets(start_ms, end_ms, every)
    stored = rollups.read_rollups(ref, every, index, key, [bucket_id(b, every) for b in buckets])
    seconds = size / 1000
    out: list[dict[str, Any]] = []
    for start_of_bucket, fields in zip(buckets, stored, strict=True):
        row: dict[str, Any] = {
            "bucket": ms_to_datetime(start_of_bucket).strftime("%Y-%m-%dT%H:%M:%SZ")
        }
        row.update(render_summary(fields or {}, seconds))
        out.append(row)
    return out


def _pair(window: object, what: str) -> tuple[object, object]:
    if not isinstance(window, Sequence) or isinstance(window, str) or len(window) != 2:
        raise ValueError(f"{what} must be a (start, end) pair of times, got {window!r}")
    return window[0], window[1]


def _change(before: Any, after: Any) -> dict[str, Any]:
    difference = after - before if before is not None and after is not None else None
    ratio = after / before if difference is not None and before != 0 else None
    return {"before": before, "after": after, "difference": difference, "ratio": ratio}


def compare(
    rollups: RollupStore,
    ref: ReportRef,
    definition: Mapping[str, Any],
    *,
    before: object,
    after: object,
    by: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    b_start, b_end = _pair(before, "before")
    a_start, a_end = _pair(after, "after")
    first = summary(rollups, ref, definition, start=b_start, end=b_end, by=by, key_limit=None)
    second = summary(rollups, ref, definition, start=a_start, end=a_end, by=by, key_limit=None)
    change = {name: _change(first.get(name), second.get(name)) for name in CHANGE_KEYS}
    return {"before": first, "after": second, "change": change}
