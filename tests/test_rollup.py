"""Rollup arithmetic and rendering (SPEC 8): merge laws, corrupt values, summary dicts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from event_meter.rollup import FIELDS, clean_fields, merge_all, merge_fields, render_summary
from expect import histogram
from support import SUMMARY_ORDER

MIN_FIELDS = ("started_at_ms_min", "duration_ms_min", "interval_ms_min")
MAX_FIELDS = ("started_at_ms_max", "duration_ms_max", "interval_ms_max")
SUM_FIELDS = tuple(f for f in FIELDS if f not in MIN_FIELDS + MAX_FIELDS)
SPEC_FIELDS = (
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
T0_MS = (datetime(2026, 5, 6, 10, 15, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
    milliseconds=1
)


def test_the_stored_fields_are_the_spec_fields() -> None:
    assert set(FIELDS) == set(SPEC_FIELDS)


# -- merge laws -------------------------------------------------------------------------

rollups = st.dictionaries(st.sampled_from(SPEC_FIELDS), st.integers(0, 10**15), max_size=14)


def merged_by_the_laws(parts: list[dict[str, int]]) -> dict[str, int]:
    """The SPEC laws computed field by field, independently of ``merge_fields``."""
    out: dict[str, int] = {}
    for field in SPEC_FIELDS:
        values = [part[field] for part in parts if field in part]
        if not values:
            continue
        if field.endswith("_min"):
            out[field] = min(values)
        elif field.endswith("_max"):
            out[field] = max(values)
        else:
            out[field] = sum(values)
    return out


@given(st.lists(rollups, max_size=6))
def test_merge_follows_the_laws_in_any_order(parts: list[dict[str, int]]) -> None:
    expected = merged_by_the_laws(parts)
    assert merge_all(parts) == expected
    for order in itertools.islice(itertools.permutations(parts), 24):
        assert merge_all(order) == expected


@given(rollups, rollups, rollups)
def test_merge_is_associative(a: dict[str, int], b: dict[str, int], c: dict[str, int]) -> None:
    left = merge_fields(merge_fields(dict(a), b), c)
    right = merge_fields(dict(a), merge_fields(dict(b), c))
    assert left == right


def test_merge_laws_by_example() -> None:
    into = {"count": 2, "duration_ms_min": 5, "duration_ms_max": 9, "started_at_ms_min": 100}
    delta = {
        "count": 3,
        "duration_ms_min": 7,
        "duration_ms_max": 12,
        "started_at_ms_min": 50,
        "interval_ms_sum": 40,
    }
    assert merge_fields(into, delta) == {
        "count": 5,
        "duration_ms_min": 5,
        "duration_ms_max": 12,
        "started_at_ms_min": 50,
        "interval_ms_sum": 40,
    }


def test_merge_all_skips_missing_rollups() -> None:
    assert merge_all([None, {"count": 1}, {}, None, {"count": 2}]) == {"count": 3}
    assert merge_all([]) == {}


# -- corrupt stored values --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        1.5,
        "1.5",
        "abc",
        "",
        " 12",
        "12 ",
        "12\n",
        "+12",
        "1e3",
        "0x10",
        "1_000",
        "\u0661\u0662",  # Arabic-Indic digits: decimal to str.isdigit, not plain ASCII
        True,
        False,
        None,
        b"abc",
        b"1.5",
        [1],
        {"n": 1},
    ],
    ids=repr,
)
def test_values_that_are_not_plain_decimal_integers_are_absent(value: Any) -> None:
    assert clean_fields({"count": value, "success_count": 4}) == {"success_count": 4}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), ("12", 12), (b"12", 12), ("0", 0), ("-3", -3), ("007", 7), (10**20, 10**20)],
    ids=repr,
)
def test_plain_decimal_integers_are_read(value: Any, expected: int) -> None:
    assert clean_fields({"duration_ms_sum": value}) == {"duration_ms_sum": expected}


def test_byte_field_names_are_read_and_unknown_fields_dropped() -> None:
    raw: dict[Any, Any] = {b"count": b"3", "_applied": "1", "not_a_field": 5, "failure_count": "1"}
    assert clean_fields(raw) == {"count": 3, "failure_count": 1}


# -- rendering --------------------------------------------------------------------------


def iso(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


FULL = {
    "count": 6,
    "success_count": 3,
    "failure_count": 2,
    "skipped_count": 1,
    "started_at_ms_min": T0_MS + 123,
    "started_at_ms_max": T0_MS + 90_123,
    "duration_ms_count": 4,
    "duration_ms_sum": 10,
    "duration_ms_min": 1,
    "duration_ms_max": 5,
    "interval_ms_count": 3,
    "interval_ms_sum": 7,
    "interval_ms_min": 2,
    "interval_ms_max": 3,
    "overflow_count": 1,
    **histogram("duration_ms", [1, 2, 2, 5]),
    **histogram("interval_ms", [2, 2, 3]),
}


def test_render_with_a_window_has_every_key_in_spec_order() -> None:
    summary = render_summary(FULL, 120)
    assert tuple(summary) == SUMMARY_ORDER
    assert summary["started_at_min"] == iso(T0_MS + 123) == "2026-05-06T10:15:00.123000Z"
    assert summary["started_at_max"] == iso(T0_MS + 90_123)
    assert summary["rate_window_seconds"] == 120.0
    assert type(summary["rate_window_seconds"]) is float
    assert summary["per_second"] == 6 / 120
    assert summary["per_minute"] == 6 * 60 / 120
    assert summary["duration_ms_avg"] == 10 / 4
    assert summary["interval_ms_avg"] == 7 / 3  # no rounding
    assert [summary[f] for f in ("count", "duration_ms_min", "interval_ms_max")] == [6, 1, 3]


def test_render_without_a_window_uses_the_observed_span() -> None:
    summary = render_summary(FULL, None)
    assert summary["rate_window_seconds"] == 90.0
    assert type(summary["rate_window_seconds"]) is float
    assert summary["per_second"] == 6 / 90
    assert summary["per_minute"] == 6 * 60 / 90


def test_render_of_nothing_omits_what_is_unknown() -> None:
    assert render_summary({}, None) == {
        "count": 0,
        "success_count": 0,
        "failure_count": 0,
        "skipped_count": 0,
        "duration_ms_count": 0,
        "duration_ms_sum": 0,
        "interval_ms_count": 0,
        "interval_ms_sum": 0,
    }


def test_render_of_an_empty_window_keeps_the_window_and_zero_rates() -> None:
    summary = render_summary({}, 60)
    assert summary["rate_window_seconds"] == 60.0
    assert summary["per_second"] == 0.0
    assert summary["per_minute"] == 0.0
    assert "duration_ms_avg" not in summary
    assert "started_at_min" not in summary


def test_rates_need_a_positive_window() -> None:
    one_event = {"count": 1, "started_at_ms_min": T0_MS, "started_at_ms_max": T0_MS}
    summary = render_summary(one_event, None)
    assert summary["rate_window_seconds"] == 0.0
    assert "per_second" not in summary
    assert "per_minute" not in summary


def test_averages_only_when_their_counts_are_positive() -> None:
    summary = render_summary(
        {"count": 2, "duration_ms_count": 0, "interval_ms_count": 2, "interval_ms_sum": 3}, 60
    )
    assert "duration_ms_avg" not in summary
    assert summary["interval_ms_avg"] == 1.5
    assert "interval_ms_min" not in summary
    assert "duration_ms_max" not in summary


def test_min_and_max_are_rendered_when_known_even_alone() -> None:
    summary = render_summary({"duration_ms_max": 9, "started_at_ms_min": T0_MS}, None)
    assert summary["duration_ms_max"] == 9
    assert "duration_ms_min" not in summary
    assert summary["started_at_min"] == "2026-05-06T10:15:00.000000Z"
    assert "started_at_max" not in summary
