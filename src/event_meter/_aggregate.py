"""Fold validated events into minute and hour rollup deltas (SPEC 9, steps 6-7).

This is the processing hot path. Each event costs one cached lookup that
gives every index key and interval state key of its param values at once, then
one dict lookup per applicable index and in-place integer updates on a
preallocated list, plus one count in the histogram bucket of its duration
(``event_meter.histogram``); hour rollups are derived from the minute
accumulators once per batch instead of once per event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Final

from event_meter._keys import ALL_INDEX_KEY, index_key, value_text
from event_meter._payload import PendingEvent
from event_meter._time import HOUR_MS, MINUTE_MS, bucket_id
from event_meter.histogram import DURATION_SMALL, SMALL, duration_field_of, interval_field_of
from event_meter.report import Report
from event_meter.rollup import FIELDS, OVERFLOW_FIELD
from event_meter.stores.base import BatchDelta, Fields, RollupFile

__all__ = ["Aggregator"]

_BIG: Final = 1 << 62
# Accumulator slots, in FIELDS order (min slots start at +inf, max slots at -inf),
# then the duration and the interval histogram (field name -> count).
_DURATION_HIST: Final = 14
_INTERVAL_HIST: Final = 15
_counts: Callable[[], defaultdict[str, int]] = partial(defaultdict, int)
_ROW_CACHE_LIMIT: Final = 50_000
# Values of these exact types render alike whenever they are equal, so they can
# share a cache entry. Floats cannot (0.0 == -0.0, rendered "0.0" and "-0.0");
# 1, 1.0 and True are equal too, which is why the cache key holds the types.
_CACHEABLE: Final = frozenset((str, int, bool, type(None)))

StateKey = tuple[str, str]
# Per rule: the state key and the group index positions that get its sample.
RuleRow = tuple[StateKey, tuple[int, ...]]
# One event's index keys (None: index not applicable) and applicable interval rules.
# Also the keys without the all index (always "all"), which the hot loop handles apart.
Row = tuple[tuple[str | None, ...], tuple[RuleRow, ...], tuple[str | None, ...]]


class Aggregator:
    """Builds one ``BatchDelta`` per batch for one report. Reuse it across batches."""

    def __init__(self, report: Report) -> None:
        self.indexes = report.indexes
        self.histograms = report.percentiles
        position = {index: i for i, index in enumerate(self.indexes)}
        rules: dict[str, list[int]] = {}
        for rule in report.intervals:
            rules.setdefault(rule.param, []).append(position[rule.group_by])
        self.interval_params = tuple(rules)
        self._rules = [(param, tuple(positions)) for param, positions in rules.items()]
        # Every param a key depends on: the values that decide an event's ``Row``.
        used = {param for index in self.indexes for param in index} | set(rules)
        self._params = tuple(sorted(used))
        self._rows: dict[tuple[Any, ...], Row] = {}
        self._bucket_ids: dict[tuple[int, str], str] = {}

    def _row(self, params: Mapping[str, Any]) -> Row:
        """The ``Row`` of ``params``, from the cache when its values allow one."""
        values = tuple(map(params.get, self._params))
        kinds = tuple(map(type, values))
        try:
            found = self._rows.get(values + kinds)
        except TypeError:  # an unhashable value (list, dict): computed every time
            return self._compute(params)
        if found is None:
            found = self._compute(params)
            if _CACHEABLE.issuperset(kinds):
                if len(self._rows) >= _ROW_CACHE_LIMIT:
                    self._rows.clear()
                self._rows[values + kinds] = found
        return found

    def _compute(self, params: Mapping[str, Any]) -> Row:
        # Runs once per distinct combination of values: for every event when an
        # index holds ids, so plain loops rather than nested generators.
        found: list[str | None] = []
        for index in self.indexes:
            for param in index:
                if params.get(param) is None:
                    found.append(None)
                    break
            else:
                found.append(index_key(index, params))
        keys = tuple(found)
        rules: list[RuleRow] = []
        for param, positions in self._rules:
            value = params.get(param)
            applicable = tuple(p for p in positions if keys[p] is not None)
            if value is not None and applicable:
                rules.append(((param, value_text(value)), applicable))
        return keys, tuple(rules), keys[1:]

    def rows_of(self, events: Iterable[PendingEvent]) -> list[Row]:
        """Every event's ``Row`` (index keys and interval rules), in order."""
        # The body of ``_row`` inlined: this loop runs once per event.
        cache = self._rows
        row_of = self._row
        names = self._params
        out: list[Row] = []
        append = out.append
        for event in events:
            params = event[4]
            values = tuple(map(params.get, names))
            try:
                row = cache.get(values + tuple(map(type, values)))
            except TypeError:
                row = None
            append(row if row is not None else row_of(params))
        return out

    @staticmethod
    def state_keys(rows: Iterable[Row]) -> set[tuple[str, str]]:
        """The interval state keys a batch needs to read before ``build``."""
        return {state_key for row in rows if row[1] for state_key, _ in row[1]}

    def build(
        self,
        events: Iterable[PendingEvent],
        state: dict[tuple[str, str], int],
        batch_id: str,
        entry_ids: list[str],
        rows: list[Row] | None = None,
        overflow: dict[int, int] | None = None,
    ) -> BatchDelta:
        """Aggregate ``events`` (stream order); ``state`` is updated in place.

        ``rows`` are ``rows_of(events)`` when the caller computed them already
        (or rewrote them: the cardinality guard does). ``overflow``: minute start
        ms -> events the guard moved to an overflow value, added to the all index.
        """
        events = events if isinstance(events, list) else list(events)
        if rows is None:
            rows = self.rows_of(events)
        minutes: dict[int, list[dict[str, list[Any]]]] = {}
        n_indexes = len(self.indexes)
        new_state: dict[tuple[str, str], int] = {}
        last_minute = -1
        cells: list[dict[str, list[Any]]] = []
        other_cells: list[dict[str, list[Any]]] = []
        all_acc: list[Any] = []
        minute_ms = MINUTE_MS
        new_acc = _new_acc
        bucket_of = duration_field_of
        small_names = DURATION_SMALL
        small = SMALL
        histograms = self.histograms
        bucket = ""
        for (_, status, started, duration, _params), row in zip(events, rows):  # noqa: B905
            minute = started - started % minute_ms
            if minute != last_minute:  # stream order: mostly the previous minute
                found_cells = minutes.get(minute)
                if found_cells is None:
                    found_cells = minutes[minute] = [{} for _ in range(n_indexes)]
                cells = found_cells
                other_cells = cells[1:]
                all_acc = cells[0].get(ALL_INDEX_KEY) or cells[0].setdefault(
                    ALL_INDEX_KEY, new_acc()
                )
                last_minute = minute
            keys = row[0]
            status_slot = 1 + status
            # The all index applies to every event: no key, no lookup.
            all_acc[0] += 1
            all_acc[status_slot] += 1
            if started < all_acc[4]:
                all_acc[4] = started
            if started > all_acc[5]:
                all_acc[5] = started
            if duration is not None:
                all_acc[6] += 1
                all_acc[7] += duration
                if duration < all_acc[8]:
                    all_acc[8] = duration
                if duration > all_acc[9]:
                    all_acc[9] = duration
                if histograms:
                    bucket = small_names[duration] if duration < small else bucket_of(duration)
                    all_acc[14][bucket] += 1
            for cell, key in zip(other_cells, row[2]):  # noqa: B905 - same lengths by construction
                if key is None:
                    continue
                acc = cell.get(key)
                if acc is None:
                    acc = cell[key] = new_acc()
                acc[0] += 1
                acc[status_slot] += 1
                if started < acc[4]:
                    acc[4] = started
                if started > acc[5]:
                    acc[5] = started
                if duration is not None:
                    acc[6] += 1
                    acc[7] += duration
                    if duration < acc[8]:
                        acc[8] = duration
                    if duration > acc[9]:
                        acc[9] = duration
                    if histograms:
                        acc[14][bucket] += 1
            for state_key, applicable in row[1]:
                previous = state.get(state_key)
                if previous is not None and started <= previous:
                    continue  # state only moves forward; late events give no sample
                state[state_key] = new_state[state_key] = started
                if previous is None:
                    continue
                sample = started - previous
                sample_bucket = interval_field_of(sample) if histograms else ""
                for position in applicable:
                    acc = cells[position][keys[position]]  # type: ignore[index]
                    acc[10] += 1
                    acc[11] += sample
                    if sample < acc[12]:
                        acc[12] = sample
                    if sample > acc[13]:
                        acc[13] = sample
                    if histograms:
                        acc[15][sample_bucket] += 1
        delta = BatchDelta(batch_id=batch_id, entry_ids=entry_ids, state=new_state)
        self._emit(minutes, delta, overflow or {})
        return delta

    def _bucket(self, start: int, granularity: str) -> str:
        found = self._bucket_ids.get((start, granularity))
        if found is None:
            if len(self._bucket_ids) > 10_000:
                self._bucket_ids.clear()
            found = self._bucket_ids[(start, granularity)] = bucket_id(start, granularity)
        return found

    def _emit(
        self,
        minutes: dict[int, list[dict[str, list[Any]]]],
        delta: BatchDelta,
        overflow: dict[int, int],
    ) -> None:
        hours: dict[int, list[dict[str, list[Any]]]] = {}
        for minute, cells in minutes.items():
            hour = minute - minute % HOUR_MS
            hour_cells = hours.get(hour)
            if hour_cells is None:
                hour_cells = hours[hour] = [{} for _ in cells]
            for position, cell in enumerate(cells):
                if not cell:
                    continue
                target = hour_cells[position]
                for key, acc in cell.items():
                    found = target.get(key)
                    if found is None:
                        target[key] = _copy_acc(acc)
                    else:
                        _merge_acc(found, acc)
                delta.rollups[
                    RollupFile("minute", self._bucket(minute, "minute"), self.indexes[position])
                ] = {key: _fields(acc) for key, acc in cell.items()}
        for hour, cells in hours.items():
            for position, cell in enumerate(cells):
                if cell:
                    file = RollupFile("hour", self._bucket(hour, "hour"), self.indexes[position])
                    delta.rollups[file] = {key: _fields(acc) for key, acc in cell.items()}
        for minute, moved in overflow.items():
            for granularity, start in (("minute", minute), ("hour", minute - minute % HOUR_MS)):
                file = RollupFile(granularity, self._bucket(start, granularity), ())
                fields = delta.rollups[file][ALL_INDEX_KEY]
                fields[OVERFLOW_FIELD] = fields.get(OVERFLOW_FIELD, 0) + moved


def _new_acc() -> list[Any]:
    """Sums and extremes, then the two histograms (``defaultdict(int)``: ``+= 1`` is
    the cheapest count in the hot loop)."""
    return [0, 0, 0, 0, _BIG, -_BIG, 0, 0, _BIG, -_BIG, 0, 0, _BIG, -_BIG, _counts(), _counts()]


def _copy_acc(acc: list[Any]) -> list[Any]:
    out = acc.copy()
    out[14] = acc[14].copy()
    out[15] = acc[15].copy()
    return out


def _merge_acc(into: list[Any], acc: list[Any]) -> None:
    """Merge one minute accumulator into its hour's (unrolled: runs per key per batch)."""
    into[0] += acc[0]
    into[1] += acc[1]
    into[2] += acc[2]
    into[3] += acc[3]
    into[6] += acc[6]
    into[7] += acc[7]
    into[10] += acc[10]
    into[11] += acc[11]
    if acc[4] < into[4]:
        into[4] = acc[4]
    if acc[8] < into[8]:
        into[8] = acc[8]
    if acc[12] < into[12]:
        into[12] = acc[12]
    if acc[5] > into[5]:
        into[5] = acc[5]
    if acc[9] > into[9]:
        into[9] = acc[9]
    if acc[13] > into[13]:
        into[13] = acc[13]
    for hist in (_DURATION_HIST, _INTERVAL_HIST):
        target = into[hist]
        for name, count in acc[hist].items():
            target[name] += count


(
    _COUNT,
    _SUCCESS,
    _FAILURE,
    _SKIPPED,
    _STARTED_MIN,
    _STARTED_MAX,
    _DURATION_COUNT,
    _DURATION_SUM,
    _DURATION_MIN,
    _DURATION_MAX,
    _INTERVAL_COUNT,
    _INTERVAL_SUM,
    _INTERVAL_MIN,
    _INTERVAL_MAX,
) = FIELDS


def _fields(acc: list[Any]) -> Fields:
    """Accumulator -> stored fields, in FIELDS order: zero sums and unknown min/max left out,
    then the histogram bucket counts."""
    count, success, failure, skipped, s_min, s_max, d_count, d_sum, d_min, d_max = acc[:10]
    fields: Fields = {_COUNT: count}
    if success:
        fields[_SUCCESS] = success
    if failure:
        fields[_FAILURE] = failure
    if skipped:
        fields[_SKIPPED] = skipped
    if s_min != _BIG:
        fields[_STARTED_MIN] = s_min
    if s_max != -_BIG:
        fields[_STARTED_MAX] = s_max
    if d_count:
        fields[_DURATION_COUNT] = d_count
    if d_sum:
        fields[_DURATION_SUM] = d_sum
    if d_min != _BIG:
        fields[_DURATION_MIN] = d_min
    if d_max != -_BIG:
        fields[_DURATION_MAX] = d_max
    i_count, i_sum, i_min, i_max, durations, intervals = acc[10:]
    if i_count:
        fields[_INTERVAL_COUNT] = i_count
    if i_sum:
        fields[_INTERVAL_SUM] = i_sum
    if i_min != _BIG:
        fields[_INTERVAL_MIN] = i_min
    if i_max != -_BIG:
        fields[_INTERVAL_MAX] = i_max
    if durations:
        fields.update(durations)
    if intervals:
        fields.update(intervals)
    return fields
