"""The rows, parameters and key ranges of ``PostgresRollups`` statements.

Batch-sized values are built in one C call each (``orjson.dumps``, a string
join), never element by element through the driver:

- ``rollup_rows``: the batch's rollups as one jsonb array text of
  ``[key, fields, series, bucket, bucket_end_ms]`` rows;
- ``state_object``: the batch's interval state as one jsonb object text;
- ``marker_copy``: the batch's markers as ``COPY`` text;
- ``json_list``: entry ids as one JSON array text.

``series_of`` is the ``series`` column: a signed 64-bit BLAKE2b of
``<report>:<granularity>:<index key>`` (stable across versions and servers;
queries also compare ``key``, so a collision costs nothing but a filtered
row). Key ranges rely on the bytewise order of ``key`` (``COLLATE "C"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef, esc
from event_meter._time import GRANULARITIES, bucket_id, parse_bucket_id
from event_meter.stores.base import BatchDelta

__all__ = [
    "bucket_range",
    "cleanup_ranges",
    "json_list",
    "marker_copy",
    "rollup_report",
    "rollup_rows",
    "series_of",
    "series_params",
    "state_object",
]

_COPY_SPECIAL: Final = ("\\", "\t", "\n", "\r")
_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def rollup_report(ref: ReportRef) -> str:
    """What every rollup key of ``ref`` starts with (followed by ``:``)."""
    return f"{ref.namespace}:rollup:{ref.report_part}"


@lru_cache(maxsize=65_536)
def series_of(report: str, granularity: str, index_key: str) -> int:
    """The ``series`` column of every bucket of one index key of a report."""
    text = f"{report}:{granularity}:{index_key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def series_params(ref: ReportRef, granularity: str, index_key: str) -> dict[str, Any]:
    """``series``, ``head`` and ``tail``: a row of the series has key ``head || bucket || tail``."""
    report = rollup_report(ref)
    return {
        "series": series_of(report, granularity, index_key),
        "head": f"{report}:{granularity}:",
        "tail": f":{index_key}",
    }


def rollup_rows(ref: ReportRef, delta: BatchDelta) -> str:
    """The rollups of ``delta`` as the jsonb array text ``sql/apply_rollups.sql`` takes."""
    report = rollup_report(ref)
    rows: list[tuple[str, dict[str, int], int, str, int | None]] = []
    append = rows.append
    for file, values in delta.rollups.items():
        granularity, bucket = file.granularity, file.bucket_id
        start = parse_bucket_id(bucket, granularity)
        end = None if start is None else start + GRANULARITIES[granularity]
        head = f"{report}:{granularity}:{bucket}:"
        for index_key, fields in values.items():
            series = series_of(report, granularity, index_key)
            append((head + index_key, fields, series, bucket, end))
    return orjson.dumps(rows).decode()


def state_object(ref: ReportRef, state: dict[tuple[str, str], int]) -> str:
    """``{state key: started ms}`` as the jsonb object text ``sql/apply_state.sql`` takes."""
    keyed = {ref.state_key(param, value): started for (param, value), started in state.items()}
    return orjson.dumps(keyed).decode()


def json_list(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES)


def marker_copy(ref: ReportRef, entry_ids: Sequence[str], created_at: datetime) -> str:
    """``COPY ... FROM STDIN`` text of the markers of ``entry_ids``, in id order."""
    head = f"{_copy_text(ref.namespace)}\t{_copy_text(esc(ref.name))}\t{ref.version}\t"
    tail = f"\t{created_at.isoformat()}\n"
    ids = sorted(entry_ids)
    joined = "".join(ids)
    if any(special in joined for special in _COPY_SPECIAL):
        ids = [_copy_text(entry_id) for entry_id in ids]
    return "".join([head + entry_id + tail for entry_id in ids])


def bucket_range(
    ref: ReportRef, granularity: str, bucket: str, params: tuple[str, ...]
) -> tuple[str, str, int]:
    """``(low, high, cut)``: the keys ``low <= key < high`` hold every index key whose
    first param is ``params[0]`` in one bucket; ``key[cut:]`` is the index key."""
    head = f"{rollup_report(ref)}:{granularity}:{bucket}:"
    low = f"{head}{esc(params[0])}="
    return low, low[:-1] + ">", len(head)  # ">" is the character after "="


def is_index_key_of(index_key: str, params: tuple[str, ...]) -> bool:
    """Whether ``index_key`` is a key of the index over ``params`` (values are escaped:
    they hold neither ``|`` nor ``=``)."""
    parts = index_key.split("|")
    return len(parts) == len(params) and all(
        part.startswith(f"{esc(param)}=") and part.count("=") == 1
        for part, param in zip(parts, params, strict=True)
    )


def cleanup_ranges(ref: ReportRef, before_ms: int) -> list[str]:
    """``[low, high]`` per granularity: the keys ``low <= key < high`` hold every bucket of
    ``ref`` that ended by ``before_ms`` (and no later one whose id parses)."""
    report = rollup_report(ref)
    bounds: list[str] = []
    for granularity, size in GRANULARITIES.items():
        low = f"{report}:{granularity}:"
        last = (before_ms - size) // size * size  # the start of the last bucket that ended
        try:
            high = f"{low}{bucket_id(last, granularity)};"  # ";" sorts right after ":"
        except (OverflowError, ValueError):  # beyond the years a datetime holds
            high = f"{low[:-1]};" if last > 0 else low
        bounds += [low, high]
    return bounds
