"""The crash-safety workload and its truth, computed here without the library's aggregator.

``workload(seed)`` is a fixed set of ``invoice_delivery`` events over three hour
buckets (10:57 to 12:16 UTC) in bursts of minutes, with every status, missing
durations, 24 customers, 3 providers, a few events without a customer or a
provider, late events (a long duration makes a row land after rows that started
later) and two malformed rows. Rows are appended in the order they finished, with
the clock at that moment, so the file stream names files after that minute.

``fold`` is a tiny reference implementation of SPEC 9 steps 6 and 7 in stream
order; ``assert_exact`` compares every minute and hour bucket of every index key
(and the unwindowed summaries) of a meter with it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from event_meter import EventMeter, Report
from event_meter._keys import ReportRef, index_key
from event_meter._time import bucket_id
from expect import hist_field

EVENT: Final = "invoice_delivery"
PROVIDERS: Final = ("postmark", "sendgrid", "ses")
CUSTOMERS: Final = tuple(range(1, 25))
BATCH_SIZE: Final = 7
START: Final = datetime(2026, 5, 6, 10, 57, tzinfo=UTC)
RANGE: Final = (datetime(2026, 5, 6, 10, 50, tzinfo=UTC), datetime(2026, 5, 6, 12, 30, tzinfo=UTC))
HOUR_RANGE: Final = (datetime(2026, 5, 6, 10, tzinfo=UTC), datetime(2026, 5, 6, 13, tzinfo=UTC))
# (minute offset from START, events started in that minute)
_BURSTS: Final = ((0, 9), (1, 6), (2, 11), (3, 8), (17, 5), (33, 6), (62, 9), (63, 8), (78, 6))
_MINUTE_MS: Final = 60_000
_HOUR_MS: Final = 3_600_000
_COUNTS: Final = ("count", "success_count", "failure_count", "skipped_count")
COMPARED: Final = (
    *_COUNTS,
    "started_at_min",
    "started_at_max",
    *(f"{m}_{s}" for m in ("duration_ms", "interval_ms") for s in ("count", "sum", "min", "max")),
)

Key = tuple[tuple[str, Any], ...]
"""An index key as the ``by`` of a query: ``()`` is the all index."""


def interval_report() -> Report:
    """The report of the brief: two indexes and an interval rule grouped by provider."""
    return (
        Report(EVENT)
        .index_by("provider")
        .index_by("customer_id")
        .measure_interval_by("customer_id", group_by="provider")
    )


def counts_report() -> Report:
    """The same indexes without interval rules: no report lock, processors run in parallel."""
    return Report(EVENT).index_by("provider").index_by("customer_id")


@dataclass(frozen=True, slots=True)
class Row:
    """One appended row: when it started and finished (epoch µs), and what it says."""

    started_us: int
    finished_us: int
    status: str
    duration_ms: int | None
    customer_id: int | None
    provider: str | None

    @property
    def started_ms(self) -> int:
        return self.started_us // 1000

    def payload(self) -> dict[str, Any]:
        """The SPEC 4 payload, built by hand."""
        seconds, micros = divmod(self.started_us, 1_000_000)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        out: dict[str, Any] = {
            "name": EVENT,
            "status": self.status,
            "started_at": f"{stamp}.{micros:06d}Z",
        }
        if self.duration_ms is not None:
            out["duration_ms"] = self.duration_ms
        params: dict[str, Any] = {"attempt": 1}
        if self.customer_id is not None:
            params["customer_id"] = self.customer_id
        if self.provider is not None:
            params["provider"] = self.provider
        out["params"] = params
        return out


def _epoch_us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def workload(seed: int = 7) -> list[Row]:
    """The rows in stream (append) order; deterministic for a seed."""
    rng = random.Random(seed)
    rows: list[Row] = []
    start_us = _epoch_us(START)
    for minute, count in _BURSTS:
        for _ in range(count):
            started = start_us + minute * 60_000_000 + rng.randrange(60_000_000)
            status = rng.choices(("success", "failure", "skipped"), (70, 20, 10))[0]
            duration: int | None = None if rng.random() < 0.12 else rng.randrange(4_000)
            if rng.random() < 0.08:
                duration = rng.randrange(65_000, 130_000)  # finishes minutes later: a late row
            customer = None if rng.random() < 0.06 else rng.choice(CUSTOMERS)
            provider = None if rng.random() < 0.06 else rng.choice(PROVIDERS)
            finished = started + (duration if duration is not None else rng.randrange(900)) * 1000
            rows.append(Row(started, finished, status, duration, customer, provider))
    # Same start in the same millisecond for one customer: the second gives no sample.
    twin = next(r for r in rows if r.customer_id is not None and r.provider is not None)
    rows.append(
        Row(
            twin.started_us + 300,
            twin.finished_us + 5_000,
            "success",
            12,
            twin.customer_id,
            twin.provider,
        )
    )
    # Two malformed rows (an unknown status): counted as malformed, never rolled up.
    for source in (rows[5], rows[40]):
        rows.append(Row(source.started_us, source.finished_us + 1, "unknown", 1, 3, "ses"))
    rows.sort(key=lambda r: r.finished_us)  # stable: ties keep generation order
    return rows


def record(meter: EventMeter, rows: Iterable[Row], clock: Any) -> None:
    """Append every row with the clock at its finish time, then pass the claim grace."""
    last = START
    for row in rows:
        seconds, micros = divmod(row.finished_us, 1_000_000)
        last = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)
        clock.set(last)
        meter.stream.append(EVENT, row.payload())
    clock.set(last + timedelta(minutes=3))  # every file's minute ended > 10 s ago


Fields = dict[str, int]
Truth = dict[tuple[str, int, Key], Fields]


def _add(fields: Fields, name: str, value: int) -> None:
    fields[name] = fields.get(name, 0) + value


def _low(fields: Fields, name: str, value: int) -> None:
    fields[name] = min(fields.get(name, value), value)


def _high(fields: Fields, name: str, value: int) -> None:
    fields[name] = max(fields.get(name, value), value)


def fold(rows: Iterable[Row], *, intervals: bool) -> Truth:
    """Reference fold of SPEC 9 steps 6-7, in stream order."""
    truth: Truth = {}
    state: dict[int, int] = {}
    for row in rows:
        if row.status not in ("success", "failure", "skipped"):
            continue
        started = row.started_ms
        keys: list[Key] = [()]
        if row.provider is not None:
            keys.append((("provider", row.provider),))
        if row.customer_id is not None:
            keys.append((("customer_id", row.customer_id),))
        sample: int | None = None
        if intervals and row.customer_id is not None and row.provider is not None:
            previous = state.get(row.customer_id)
            if previous is None or started > previous:
                state[row.customer_id] = started
                sample = None if previous is None else started - previous
        for granularity, size in (("minute", _MINUTE_MS), ("hour", _HOUR_MS)):
            bucket = started - started % size
            for key in keys:
                fields = truth.setdefault((granularity, bucket, key), {})
                _add(fields, "count", 1)
                _add(fields, f"{row.status}_count", 1)
                _low(fields, "started_at_ms_min", started)
                _high(fields, "started_at_ms_max", started)
                if row.duration_ms is not None:
                    _add(fields, "duration_ms_count", 1)
                    _add(fields, "duration_ms_sum", row.duration_ms)
                    _low(fields, "duration_ms_min", row.duration_ms)
                    _high(fields, "duration_ms_max", row.duration_ms)
                    _add(fields, hist_field("duration_ms", row.duration_ms), 1)
            if sample is not None:
                fields = truth[(granularity, bucket, (("provider", row.provider),))]
                _add(fields, "interval_ms_count", 1)
                _add(fields, "interval_ms_sum", sample)
                _low(fields, "interval_ms_min", sample)
                _high(fields, "interval_ms_max", sample)
                _add(fields, hist_field("interval_ms", sample), 1)
    return truth


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}000Z"


def _merge(parts: Iterable[Fields]) -> Fields:
    total: Fields = {}
    for part in parts:
        for name, value in part.items():
            if name.endswith("_min"):
                _low(total, name, value)
            elif name.endswith("_max"):
                _high(total, name, value)
            else:
                _add(total, name, value)
    return total


def expected(fields: Fields | None) -> dict[str, Any]:
    """What a summary or series row must show (the ``COMPARED`` keys) for ``fields``."""
    fields = fields or {}
    out: dict[str, Any] = {name: fields.get(name, 0) for name in _COUNTS}
    for edge in ("min", "max"):
        if f"started_at_ms_{edge}" in fields:
            out[f"started_at_{edge}"] = _iso(fields[f"started_at_ms_{edge}"])
    for measure in ("duration_ms", "interval_ms"):
        for part in ("count", "sum", "min", "max"):
            name = f"{measure}_{part}"
            if name in fields or part in ("count", "sum"):
                out[name] = fields.get(name, 0)
    return out


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in COMPARED if name in row}


def query_keys() -> list[Key]:
    """Every index key of the workload: all, each provider, each customer."""
    keys: list[Key] = [()]
    keys += [(("provider", p),) for p in PROVIDERS]
    keys += [(("customer_id", c),) for c in CUSTOMERS]
    return keys


def _histograms(fields: Mapping[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (fields or {}).items() if "_ms_h" in k and v}


def assert_exact(meter: EventMeter, report: Report, truth: Truth) -> None:
    """Every minute and hour bucket and every unwindowed summary equals ``truth``,
    and every stored histogram bucket count too."""
    wrong: list[str] = []
    ref = ReportRef(meter.config.namespace, report.name, report.version)
    for key in query_keys():
        by = dict(key) or None
        index = tuple(name for name, _ in key)
        for every, (start, end) in (("minute", RANGE), ("hour", HOUR_RANGE)):
            starts: list[int] = []
            for got in meter.series(report, start=start, end=end, every=every, by=by):
                bucket = int(datetime.fromisoformat(got["bucket"]).timestamp()) * 1000
                starts.append(bucket)
                want = expected(truth.get((every, bucket, key)))
                if shown(got) != want:
                    wrong.append(f"{every} {got['bucket']} {by}: got {shown(got)}, want {want}")
            ids = [bucket_id(ms, every) for ms in starts]
            stored = meter.rollups.read_rollups(ref, every, index, index_key(index, dict(key)), ids)
            for ms, fields in zip(starts, stored, strict=True):
                want_h = _histograms(truth.get((every, ms, key)))
                if _histograms(fields) != want_h:
                    wrong.append(f"{every} {ms} {by} histogram: {_histograms(fields)} != {want_h}")
        hours = [fields for (gran, _, k), fields in truth.items() if gran == "hour" and k == key]
        got_total = shown(meter.summary(report, by=by))
        if got_total != expected(_merge(hours)):
            wrong.append(f"summary {by}: got {got_total}, want {expected(_merge(hours))}")
    assert not wrong, f"{len(wrong)} rollups differ from the truth:\n" + "\n".join(wrong[:12])
