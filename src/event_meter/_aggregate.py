"""Fold validated events into minute and hour rollup deltas (SPEC 9, steps 6-7).

This is the processing hot path. Each event costs one dict lookup per
applicable index plus in-place integer updates on a preallocated list; index
keys are cached per value, and hour rollups are derived from the minute
accumulators once per batch instead of once per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from event_meter._keys import ALL_INDEX_KEY, esc, value_text
from event_meter._payload import PendingEvent
from event_meter._time import HOUR_MS, MINUTE_MS, bucket_id
from event_meter.report import Report
from event_meter.rollup import FIELDS
from event_meter.stores.base import BatchDelta, Fields, RollupFile

__all__ = ["Aggregator"]

_BIG: Final = 1 << 62
# Accumulator slots, in FIELDS order; min slots start at +inf, max slots at -inf.
_TEMPLATE: Final = [0, 0, 0, 0, _BIG, -_BIG, 0, 0, _BIG, -_BIG, 0, 0, _BIG, -_BIG]
_CACHE_LIMIT: Final = 200_000
Keyer = Callable[[Mapping[str, Any]], str | None]


def _all_keyer(params: Mapping[str, Any]) -> str:
    return ALL_INDEX_KEY


def _single_keyer(param: str) -> Keyer:
    prefix = f"{esc(param)}="
    by_str: dict[str, str] = {}
    by_int: dict[int, str] = {}

    def key(params: Mapping[str, Any]) -> str | None:
        value = params.get(param)
        if value is None:
            return None
        kind = type(value)
        # Caches are split by type: 1, 1.0 and True are equal dict keys but
        # render as "1", "1.0" and "true".
        if kind is str:
            found = by_str.get(value)
            if found is None:
                if len(by_str) > _CACHE_LIMIT:
                    by_str.clear()
                found = by_str[value] = prefix + esc(value)
            return found
        if kind is int:
            found = by_int.get(value)
            if found is None:
                if len(by_int) > _CACHE_LIMIT:
                    by_int.clear()
                found = by_int[value] = prefix + str(value)
            return found
        return prefix + esc(value_text(value))

    return key


def _multi_keyer(params_of_index: tuple[str, ...]) -> Keyer:
    prefixes = [f"{esc(p)}=" for p in params_of_index]
    by_strs: dict[tuple[Any, ...], str] = {}

    def key(params: Mapping[str, Any]) -> str | None:
        values = tuple([params.get(p) for p in params_of_index])
        if None in values:
            return None
        found = by_strs.get(values) if all(type(v) is str for v in values) else None
        if found is None:
            found = "|".join(
                prefix + esc(value_text(v)) for prefix, v in zip(prefixes, values, strict=True)
            )
            if all(type(v) is str for v in values):
                if len(by_strs) > _CACHE_LIMIT:
                    by_strs.clear()
                by_strs[values] = found
        return found

    return key


def _keyer(index: tuple[str, ...]) -> Keyer:
    if not index:
        return _all_keyer
    if len(index) == 1:
        return _single_keyer(index[0])
    return _multi_keyer(index)


class Aggregator:
    """Builds one ``BatchDelta`` per batch for one report. Reuse it across batches."""

    def __init__(self, report: Report) -> None:
        self.indexes = report.indexes
        self._keyers = [_keyer(index) for index in self.indexes]
        self._position = {index: i for i, index in enumerate(self.indexes)}
        rules: dict[str, list[int]] = {}
        for rule in report.intervals:
            rules.setdefault(rule.param, []).append(self._position[rule.group_by])
        self.interval_params = tuple(rules)
        self._rules = list(rules.items())
        self._bucket_ids: dict[tuple[int, str], str] = {}

    def state_keys(self, events: Iterable[PendingEvent]) -> set[tuple[str, str]]:
        """The interval state keys a batch needs to read before ``build``."""
        keys: set[tuple[str, str]] = set()
        for param in self.interval_params:
            for event in events:
                value = event.params.get(param)
                if value is not None:
                    keys.add((param, value_text(value)))
        return keys

    def build(
        self,
        events: Iterable[PendingEvent],
        state: dict[tuple[str, str], int],
        batch_id: str,
        entry_ids: list[str],
    ) -> BatchDelta:
        """Aggregate ``events`` (stream order); ``state`` is updated in place."""
        minutes: dict[int, list[dict[str, list[int]]]] = {}
        keyers = list(enumerate(self._keyers))
        n_indexes = len(keyers)
        rules = self._rules
        new_state: dict[tuple[str, str], int] = {}
        for _, status, started, duration, params in events:
            minute = started - started % MINUTE_MS
            cells = minutes.get(minute)
            if cells is None:
                cells = minutes[minute] = [{} for _ in range(n_indexes)]
            keys: list[str | None] = []
            for position, keyer in keyers:
                key = keyer(params)
                keys.append(key)
                if key is None:
                    continue
                acc = cells[position].get(key)
                if acc is None:
                    acc = cells[position][key] = _TEMPLATE.copy()
                acc[0] += 1
                acc[1 + status] += 1
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
            for param, positions in rules:
                value = params.get(param)
                if value is None:
                    continue
                applicable = [p for p in positions if keys[p] is not None]
                if not applicable:
                    continue
                state_key = (param, value_text(value))
                previous = state.get(state_key)
                if previous is not None and started <= previous:
                    continue  # state only moves forward; late events give no sample
                state[state_key] = new_state[state_key] = started
                if previous is None:
                    continue
                sample = started - previous
                for position in applicable:
                    acc = cells[position][keys[position]]  # type: ignore[index]
                    acc[10] += 1
                    acc[11] += sample
                    if sample < acc[12]:
                        acc[12] = sample
                    if sample > acc[13]:
                        acc[13] = sample
        delta = BatchDelta(batch_id=batch_id, entry_ids=entry_ids, state=new_state)
        self._emit(minutes, delta)
        return delta

    def _bucket(self, start: int, granularity: str) -> str:
        found = self._bucket_ids.get((start, granularity))
        if found is None:
            if len(self._bucket_ids) > 10_000:
                self._bucket_ids.clear()
            found = self._bucket_ids[(start, granularity)] = bucket_id(start, granularity)
        return found

    def _emit(self, minutes: dict[int, list[dict[str, list[int]]]], delta: BatchDelta) -> None:
        hours: dict[int, list[dict[str, list[int]]]] = {}
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
                        target[key] = acc.copy()
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


def _merge_acc(into: list[int], acc: list[int]) -> None:
    for slot in (0, 1, 2, 3, 6, 7, 10, 11):
        into[slot] += acc[slot]
    for slot in (4, 8, 12):
        if acc[slot] < into[slot]:
            into[slot] = acc[slot]
    for slot in (5, 9, 13):
        if acc[slot] > into[slot]:
            into[slot] = acc[slot]


def _fields(acc: list[int]) -> Fields:
    """Accumulator -> stored fields: zero sums and unknown min/max left out."""
    fields: Fields = {}
    for slot, name in enumerate(FIELDS):
        value = acc[slot]
        if slot in (4, 8, 12):
            if value != _BIG:
                fields[name] = value
        elif slot in (5, 9, 13):
            if value != -_BIG:
                fields[name] = value
        elif value or slot == 0:
            fields[name] = value
    return fields
