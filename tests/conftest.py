from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import event_meter
from event_meter import EventMeter
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.memory import MemoryRollups, MemoryStream
from pg_server import PostgresServer, session_server, stop_session_server
from servers import RedisServer
from support import (
    PAIRINGS,
    ROLLUP_KINDS,
    SERVICES,
    STREAM_KINDS,
    FakeClock,
    drop_namespace,
    kind_params,
    make_rollups,
    make_stream,
    pairing_params,
    random_namespace,
    use_redis,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def namespace() -> str:
    return random_namespace()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (skipped locally without one, fails in CI)."""
    server = RedisServer()
    server.start()
    use_redis(server.url)
    yield server
    use_redis(None)
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skipped locally without one, fails in CI)."""
    server = session_server()
    yield server
    stop_session_server()


def _services(request: pytest.FixtureRequest, *kinds: str) -> None:
    """Start the servers ``kinds`` need (only when a test uses such a kind)."""
    for kind in kinds:
        if kind in SERVICES:
            request.getfixturevalue(SERVICES[kind])


@pytest.fixture(params=kind_params(STREAM_KINDS))
def stream_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[StreamStore]:
    _services(request, request.param)
    store = make_stream(request.param, tmp_path / "stream")
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()
    drop_namespace([request.param], namespace)


@pytest.fixture(params=kind_params(ROLLUP_KINDS))
def rollup_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[RollupStore]:
    _services(request, request.param)
    store = make_rollups(request.param, tmp_path / "rollups")
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()
    drop_namespace([request.param], namespace)


@pytest.fixture(params=pairing_params(PAIRINGS), ids=lambda p: f"{p[0]}->{p[1]}")
def meter(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[EventMeter]:
    stream_kind, rollup_kind = request.param
    _services(request, stream_kind, rollup_kind)
    instance = EventMeter(
        namespace=namespace,
        stream_storage=make_stream(stream_kind, tmp_path / "stream"),
        rollup_storage=make_rollups(rollup_kind, tmp_path / "rollups"),
        clock=clock,
    )
    yield instance
    instance.stream.close()
    instance.rollups.close()
    drop_namespace(request.param, namespace)


@pytest.fixture(autouse=True)
def _isolated_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own embedded default folder and a fresh default meter."""
    monkeypatch.setenv("EVENT_METER_PATH", str(tmp_path / "embedded"))
    event_meter.reset()
    yield
    event_meter.reset()


@pytest.fixture
def memory_meter(clock: FakeClock, namespace: str) -> EventMeter:
    return EventMeter(
        namespace=namespace,
        stream_storage=MemoryStream(),
        rollup_storage=MemoryRollups(),
        clock=clock,
    )
