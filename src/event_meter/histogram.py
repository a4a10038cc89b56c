"""Mergeable log-bucketed histograms of ``duration_ms`` and ``interval_ms``.

Every rollup keeps, beside its sums and extremes, how many samples fell into
each logarithmic bucket, as plain integer fields that add when rollups merge:
``duration_ms_h<k>`` and ``interval_ms_h<k>``. Merging minute rollups into an
hour, or buckets into a window, adds bucket counts, so a percentile of any
window is as exact as the buckets allow, whatever the merge order.

Buckets (the DDSketch mapping with relative accuracy ``ALPHA`` = 1%):
``gamma = (1 + ALPHA) / (1 - ALPHA)``; a sample ``v >= 1`` ms goes to
``k = 1 + ceil(log_gamma(v))`` and ``0`` goes to ``k = 0``. Bucket ``k >= 1``
covers ``(gamma^(k-2), gamma^(k-1)]`` and is represented by
``2 * gamma^(k-1) / (gamma + 1)``, which is within ``ALPHA`` of every value in
it. A percentile is the representative of the bucket that holds the sample
of nearest rank ``ceil(q * n)``, clamped to the exact min and max.

Size: at most ``MAX_BUCKETS`` (2,186, enough for any 64-bit millisecond
value) per measure. Samples close together share buckets: durations within
a factor of 2 of each other span at most 36 buckets, within 10x at most 117,
so a rollup holds a few dozen histogram fields in practice (each a name of
about 15 bytes and a small integer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

__all__ = [
    "ALPHA",
    "HISTOGRAM_FIELDS",
    "MEASURES",
    "PERCENTILES",
    "bucket_field",
    "percentiles",
    "representative",
]

ALPHA: Final = 0.01
GAMMA: Final = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA: Final = math.log(GAMMA)
MAX_VALUE: Final = (1 << 63) - 1
MAX_BUCKETS: Final = 2 + math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA)
MEASURES: Final = ("duration_ms", "interval_ms")
PERCENTILES: Final = ((50, "p50"), (90, "p90"), (95, "p95"), (99, "p99"))
_SMALL: Final = 4_096
_INV_LOG_GAMMA: Final = 1 / _LOG_GAMMA
_UPPER: Final = tuple(GAMMA ** (k - 1) for k in range(MAX_BUCKETS + 2))
"""``_UPPER[k]``: the largest value of bucket ``k >= 1`` (``gamma^(k-1)``)."""
_log = math.log
_ceil = math.ceil


def _bucket(value: int) -> int:
    if value <= 0:
        return 0
    k = 1 + _ceil(_log(value) * _INV_LOG_GAMMA)
    # Float rounding near a boundary may land one bucket off: settle it exactly.
    if value > _UPPER[k]:
        return k + 1
    if k > 1 and value <= _UPPER[k - 1]:
        return k - 1
    return k


def _names(measure: str) -> tuple[str, ...]:
    return tuple(f"{measure}_h{k}" for k in range(MAX_BUCKETS))


_DURATION_NAMES: Final = _names("duration_ms")
_INTERVAL_NAMES: Final = _names("interval_ms")
HISTOGRAM_FIELDS: Final = frozenset(_DURATION_NAMES + _INTERVAL_NAMES)
"""Every histogram field name a rollup may hold."""
_SMALL_BUCKETS: Final = tuple(_bucket(v) for v in range(_SMALL))
DURATION_SMALL: Final = tuple(_DURATION_NAMES[k] for k in _SMALL_BUCKETS)
"""The ``duration_ms`` field of every value below ``SMALL`` (the aggregator indexes it)."""
SMALL: Final = _SMALL
_PREFIX_LEN: Final = {measure: len(measure) + 2 for measure in MEASURES}


_LARGE: dict[int, int] = {}
"""Buckets of values from ``SMALL`` up, as met: periodic work repeats its intervals and
durations, and a lookup is a fraction of a logarithm. Bounded; cleared when full."""
_LARGE_LIMIT: Final = 8_192


def _large_bucket(value: int) -> int:
    found = _LARGE.get(value)
    if found is None:
        if len(_LARGE) >= _LARGE_LIMIT:
            _LARGE.clear()
        found = _LARGE[value] = _bucket(min(value, MAX_VALUE))
    return found


def duration_field_of(value: int) -> str:
    """The ``duration_ms`` histogram field that counts ``value`` (ms, >= 0); hot path."""
    if value < _SMALL:
        return DURATION_SMALL[value]
    return _DURATION_NAMES[_large_bucket(value)]


def interval_field_of(value: int) -> str:
    """The ``interval_ms`` histogram field that counts ``value`` (ms, >= 0); hot path."""
    if value < _SMALL:
        return _INTERVAL_NAMES[_SMALL_BUCKETS[value]]
    return _INTERVAL_NAMES[_large_bucket(value)]


def bucket_field(measure: str, value: int) -> str:
    """The field that counts ``value`` (ms, >= 0) in ``measure``'s histogram."""
    if measure == "duration_ms":
        return duration_field_of(value)
    if measure == "interval_ms":
        return interval_field_of(value)
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


def representative(k: int) -> float:
    """The value bucket ``k`` stands for: within ``ALPHA`` of everything in it.

    Samples are whole milliseconds, so a bucket that holds a single integer (every
    bucket below about 50 ms) stands for exactly that integer.
    """
    if k <= 0:
        return 0.0
    high = GAMMA ** (k - 1)
    top = math.floor(high)
    if top > GAMMA ** (k - 2) >= top - 1:
        return float(top)
    return 2 * high / (GAMMA + 1)


def percentiles(fields: Mapping[str, int], measure: str) -> dict[str, float] | None:
    """``{"p50": ..., "p90": ..., "p95": ..., "p99": ...}`` of ``measure``, or None
    when its histogram holds no samples."""
    cut = _PREFIX_LEN[measure]
    prefix = f"{measure}_h"
    counts: list[tuple[int, int]] = []
    total = 0
    for name, count in fields.items():
        if count > 0 and name.startswith(prefix) and name in HISTOGRAM_FIELDS:
            counts.append((int(name[cut:]), count))
            total += count
    if total == 0:
        return None
    counts.sort()
    low = fields.get(f"{measure}_min")
    high = fields.get(f"{measure}_max")
    out: dict[str, float] = {}
    seen = 0
    position = 0
    for q, label in PERCENTILES:
        rank = max(1, -(-q * total // 100))  # nearest rank, in integers
        while seen + counts[position][1] < rank:
            seen += counts[position][1]
            position += 1
        value = representative(counts[position][0])
        if low is not None and value < low:
            value = float(low)
        if high is not None and value > high:
            value = float(high)
        out[label] = value
    return out
