"""The events the fault cases record, and the exact-count check they end with."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from event_meter import EventMeter, Report
from event_meter.stores.file._stream_layout import StreamDirs
from support import FakeClock

__all__ = [
    "CUSTOMERS",
    "MINUTE",
    "NAME",
    "STALE",
    "YOUNG",
    "assert_counts",
    "quarantined",
    "record",
    "report",
    "samples",
]

NAME: Final = "invoice_delivery"
CUSTOMERS: Final = 4
MINUTE: Final = datetime(2026, 5, 6, 10, 15, tzinfo=UTC)  # files named 202605061015-...
YOUNG: Final = MINUTE + timedelta(minutes=2)  # claimable, not stale
STALE: Final = MINUTE + timedelta(minutes=11)  # the minute ended 10 min ago


def report() -> Report:
    """One customer index and an interval rule per customer."""
    return Report(NAME).index_by("customer").measure_interval_by("customer")


def record(meter: EventMeter, clock: FakeClock, count: int, first: int = 0) -> list[dict[str, Any]]:
    """``count`` events one second apart, event ``i`` for customer ``i % 4``; their payloads."""
    out = []
    for i in range(first, first + count):
        result = meter.start(NAME, customer=i % CUSTOMERS, n=i).success()
        assert result.recorded, result.error
        assert result.payload is not None
        out.append(result.payload)
        clock.advance(seconds=1)
    return out


def samples(payloads: list[dict[str, Any]]) -> int:
    """Interval samples of ``payloads`` processed in this order (SPEC 9 step 7).

    ``started_at`` strings have a fixed width, so they compare as times do.
    """
    last: dict[Any, str] = {}
    found = 0
    for payload in payloads:
        customer, started = payload["params"]["customer"], payload["started_at"]
        previous = last.get(customer)
        if previous is None or started > previous:
            found += previous is not None
            last[customer] = started
    return found


def assert_counts(meter: EventMeter, payloads: list[dict[str, Any]]) -> None:
    """Exactly ``payloads`` (in processing order) are counted, each once.

    Checked: the total, each customer's count and the interval samples.
    """
    per_customer = Counter(p["params"]["customer"] for p in payloads)
    summary = meter.summary(report())
    assert (summary["count"], summary["interval_ms_count"]) == (len(payloads), samples(payloads))
    for customer in range(CUSTOMERS):
        got = meter.summary(report(), by={"customer": customer})["count"]
        assert got == per_customer[customer], f"customer {customer}"


def quarantined(dirs: StreamDirs, file: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The quarantined rows of ``file`` and its ``.meta.json``."""
    rows = (dirs.quarantine / f"{file}.malformed.jsonl").read_bytes().splitlines()
    meta = orjson.loads((dirs.quarantine / f"{file}.meta.json").read_bytes())
    return [orjson.loads(row) for row in rows], meta
