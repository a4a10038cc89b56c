"""Histogram percentiles against exact percentiles of random samples.

Any samples, split into any parts (rollups of different buckets or batches),
merged by the laws in any order, give percentiles within 1% of the exact
nearest-rank value of the raw samples; the bucket of a sample agrees with an
independent binary search over the bucket bounds.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from event_meter import histogram
from event_meter.histogram import MAX_VALUE, SMALL, bucket_field, percentiles, representative
from event_meter.rollup import merge_all
from expect import hist_field, nearest_rank

SAMPLES = st.lists(
    st.one_of(
        st.integers(0, 60),
        st.integers(0, 10_000),
        st.integers(0, 10**12),
    ),
    min_size=1,
    max_size=300,
)


def fields_of(measure: str, samples: list[int]) -> dict[str, int]:
    out: dict[str, int] = {
        f"{measure}_count": len(samples),
        f"{measure}_min": min(samples),
        f"{measure}_max": max(samples),
    }
    for sample in samples:
        name = bucket_field(measure, sample)
        out[name] = out.get(name, 0) + 1
    return out


@given(SAMPLES, st.data())
def test_merged_parts_give_percentiles_within_one_percent(
    samples: list[int], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(samples)), max_size=6)))
    edges = [0, *cuts, len(samples)]
    parts = [samples[a:b] for a, b in itertools.pairwise(edges) if b > a]
    order = data.draw(st.permutations(range(len(parts))))
    merged = merge_all(fields_of("duration_ms", parts[i]) for i in order)
    found = percentiles(merged, "duration_ms")
    assert found is not None
    for label, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        exact = nearest_rank(samples, q)
        assert abs(found[label] - exact) <= 0.01 * exact, (label, found[label], exact)


@given(st.one_of(st.integers(0, 100_000), st.integers(0, MAX_VALUE)))
def test_a_sample_lands_in_the_bucket_an_independent_search_finds(value: int) -> None:
    assert bucket_field("interval_ms", value) == hist_field("interval_ms", value)
    k = int(bucket_field("interval_ms", value).rsplit("_h", 1)[1])
    assert abs(representative(k) - value) <= 0.01 * value


def test_no_samples_means_no_percentiles() -> None:
    assert percentiles({"duration_ms_count": 0, "count": 3}, "duration_ms") is None
    assert percentiles({"duration_ms_h5": 0}, "duration_ms") is None


def test_the_large_value_cache_stays_bounded_and_right() -> None:
    values = range(SMALL, SMALL + 7 * 3 * histogram._LARGE_LIMIT, 7)
    for value in values:
        assert bucket_field("duration_ms", value) == hist_field("duration_ms", value)
    assert len(histogram._LARGE) <= histogram._LARGE_LIMIT
    for value in values:  # again, partly from the cache
        assert bucket_field("interval_ms", value) == hist_field("interval_ms", value)
