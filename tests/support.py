"""Shared test helpers: an injectable clock and store factories per backend.

Later backends join by adding a name to ``STREAM_KINDS`` / ``ROLLUP_KINDS`` and a
branch to the factories; every contract and scenario test then runs on them.
Kinds that need a server (``redis``) carry its marker through ``kind_params`` /
``pairing_params``, and the conftest fixtures start the server on first use
(``SERVICES``: kind -> session fixture name).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from event_meter import EventMeter, WriteResult
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from event_meter.stores.memory import MemoryRollups, MemoryStream

STREAM_KINDS = ("memory", "file", "redis")
ROLLUP_KINDS = ("memory", "file", "redis", "postgres", "sqlite")
PAIRINGS = (
    ("memory", "memory"),
    ("file", "file"),
    ("file", "memory"),
    ("memory", "file"),
    ("file", "redis"),
    ("redis", "redis"),
    ("file", "postgres"),
    ("redis", "postgres"),
    ("file", "sqlite"),
)
SERVICES = {"redis": "redis_server", "postgres": "postgres_server"}
_MARKS = {"redis": pytest.mark.redis, "postgres": pytest.mark.postgres}
_redis_url: str | None = None
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


def kind_params(kinds: tuple[str, ...]) -> list[Any]:
    """``kinds`` as pytest params, each marked with its service marker (``redis``)."""
    return [pytest.param(kind, marks=_MARKS[kind]) if kind in _MARKS else kind for kind in kinds]


def pairing_params(pairings: tuple[tuple[str, str], ...]) -> list[Any]:
    """``(stream kind, rollup kind)`` params marked with every service they need."""
    out: list[Any] = []
    for pair in pairings:
        marks = [_MARKS[kind] for kind in dict.fromkeys(pair) if kind in _MARKS]
        out.append(pytest.param(pair, marks=marks) if marks else pair)
    return out


def use_redis(url: str | None) -> None:
    """Point the ``redis`` kind at a running server (set by the ``redis_server`` fixture)."""
    global _redis_url
    _redis_url = url


def redis_url() -> str:
    if _redis_url is None:
        raise RuntimeError("the redis kind needs the redis_server fixture (request it first)")
    return _redis_url


def make_stream(kind: str, path: Path) -> StreamStore:
    if kind == "memory":
        return MemoryStream()
    if kind == "file":
        return FileStream(path, sync="flush")
    if kind == "redis":
        from event_meter.stores.redis.stream import RedisStream

        return RedisStream(url=redis_url())
    raise ValueError(f"unknown stream kind {kind!r}")


def make_rollups(kind: str, path: Path) -> RollupStore:
    if kind == "memory":
        return MemoryRollups()
    if kind == "file":
        return FileRollups(path)
    if kind == "redis":
        from event_meter.stores.redis.rollups import RedisRollups

        return RedisRollups(url=redis_url())
    if kind == "postgres":
        import pg_server
        from event_meter.stores.postgres import PostgresRollups

        url = pg_server.session_server().dsn
        return PostgresRollups(url=url, table_prefix=pg_server.new_table_prefix())
    if kind == "sqlite":  # no server: one database file per test, never skipped
        from event_meter.stores.sqlite import SQLiteRollups

        return SQLiteRollups(path.with_suffix(".db"))
    raise ValueError(f"unknown rollup kind {kind!r}")


def drop_namespace(kinds: tuple[str, ...] | list[str], namespace: str) -> None:
    """Delete a test namespace's keys from the servers its kinds used (nothing global)."""
    if "postgres" in kinds:
        import pg_server

        pg_server.drop_test_tables()  # the test's own table prefixes
    if "redis" in kinds and _redis_url is not None:
        import redis

        from event_meter.stores.redis._client import glob_escape

        with redis.Redis.from_url(_redis_url) as client:
            keys = list(client.scan_iter(match=f"{glob_escape(namespace)}:*", count=1_000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])


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


SUMMARY_ORDER = (
    "count",
    "success_count",
    "failure_count",
    "skipped_count",
    "overflow_count",
    "started_at_min",
    "started_at_max",
    "rate_window_seconds",
    "per_second",
    "per_minute",
    "duration_ms_count",
    "duration_ms_sum",
    "duration_ms_avg",
    "duration_ms_min",
    "duration_ms_max",
    "duration_ms_p50",
    "duration_ms_p90",
    "duration_ms_p95",
    "duration_ms_p99",
    "interval_ms_count",
    "interval_ms_sum",
    "interval_ms_avg",
    "interval_ms_min",
    "interval_ms_max",
    "interval_ms_p50",
    "interval_ms_p90",
    "interval_ms_p95",
    "interval_ms_p99",
)
"""Every summary key in the order SPEC section 8 renders them, with the percentiles
right after each measure's max and the cardinality guard's overflow count after the
status counts."""


def stored(meter: EventMeter, clock: FakeClock, name: str) -> list[dict[str, Any]]:
    """Every pending payload of ``name``, read back from the meter's stream store."""
    clock.advance(minutes=2)  # past the file stream's claim grace
    payloads: list[dict[str, Any]] = []
    while True:
        batch = meter.stream.read(name, 10_000)
        payloads.extend(entry.payload for entry in batch.entries)
        meter.stream.delete(batch)
        if not batch.entries:
            return payloads


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (a server's state, never the passing of time) until a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
