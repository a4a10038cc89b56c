"""Shared test helpers: an injectable clock and store factories per backend.

Later backends join by adding a name to ``STREAM_KINDS`` / ``ROLLUP_KINDS`` and a
branch to the factories; every contract and scenario test then runs on them.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from event_meter import EventMeter, WriteResult
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from event_meter.stores.memory import MemoryRollups, MemoryStream

STREAM_KINDS = ("memory", "file")
ROLLUP_KINDS = ("memory", "file")
PAIRINGS = (("memory", "memory"), ("file", "file"), ("file", "memory"), ("memory", "file"))
T0 = datetime(2026, 5, 6, 10, 15, 0, tzinfo=UTC)


class FakeClock:
    """A UTC clock that moves only when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        self.current += timedelta(seconds=seconds, **delta)
        return self.current

    def set(self, value: datetime) -> None:
        self.current = value


def random_namespace(odd: bool = False) -> str:
    token = secrets.token_hex(4)
    return f"test ns:{token}/ä%_|=" if odd else f"test:{token}"


def make_stream(kind: str, path: Path) -> StreamStore:
    if kind == "memory":
        return MemoryStream()
    if kind == "file":
        return FileStream(path, sync="flush")
    raise ValueError(f"unknown stream kind {kind!r}")


def make_rollups(kind: str, path: Path) -> RollupStore:
    if kind == "memory":
        return MemoryRollups()
    if kind == "file":
        return FileRollups(path)
    raise ValueError(f"unknown rollup kind {kind!r}")


def past_minute_clock(clock: FakeClock, minutes: int = 2) -> None:
    """Move the clock past the file stream's claim grace for what was written."""
    clock.advance(minutes=minutes)


def record(meter: EventMeter, name: str, status: str = "success", **params: Any) -> dict[str, Any]:
    """Record one event through the public API and return its payload."""
    event = meter.start(name, **params)
    result: WriteResult
    if status == "success":
        result = event.success()
    elif status == "failure":
        result = event.failure(RuntimeError("boom"))
    else:
        result = event.skip("not needed")
    assert result.recorded, result.error
    assert result.payload is not None
    return result.payload
