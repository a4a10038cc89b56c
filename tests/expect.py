"""Expected histogram fields and percentiles, computed apart from the library.

The library maps a sample to its bucket with a logarithm; here the bucket is
found by a binary search over the bucket bounds ``gamma^j``, and percentiles
are the exact nearest-rank values of the raw samples, compared within the 1%
relative accuracy the histogram promises.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_BOUNDS = [GAMMA**j for j in range(2_300)]  # bucket k >= 1 ends at gamma^(k-1)
QUANTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99))


def hist_field(measure: str, value: int) -> str:
    """The histogram field that counts ``value`` (ms, >= 0)."""
    if value == 0:
        return f"{measure}_h0"
    return f"{measure}_h{bisect.bisect_left(_BOUNDS, value) + 1}"


def histogram(measure: str, values: Iterable[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        name = hist_field(measure, value)
        out[name] = out.get(name, 0) + 1
    return out


def nearest_rank(values: Sequence[int], q: int) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def percentiles(measure: str, values: Sequence[int]) -> dict[str, Any]:
    """``{"<measure>_p50": approx(exact), ...}``, within the promised 1%."""
    return {
        f"{measure}_{label}": pytest.approx(nearest_rank(values, q), rel=ALPHA, abs=1e-9)
        for label, q in QUANTILES
    }
