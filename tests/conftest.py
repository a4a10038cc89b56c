from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import event_meter
from event_meter import EventMeter
from event_meter.stores.base import RollupStore, StreamStore
from support import (
    PAIRINGS,
    ROLLUP_KINDS,
    STREAM_KINDS,
    FakeClock,
    make_rollups,
    make_stream,
    random_namespace,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def namespace() -> str:
    return random_namespace()


@pytest.fixture(params=STREAM_KINDS)
def stream_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[StreamStore]:
    store = make_stream(request.param, tmp_path / "stream")
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()


@pytest.fixture(params=ROLLUP_KINDS)
def rollup_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[RollupStore]:
    store = make_rollups(request.param, tmp_path / "rollups")
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()


@pytest.fixture(params=PAIRINGS, ids=lambda p: f"{p[0]}->{p[1]}")
def meter(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, namespace: str
) -> Iterator[EventMeter]:
    stream_kind, rollup_kind = request.param
    instance = EventMeter(
        namespace=namespace,
        stream_storage=make_stream(stream_kind, tmp_path / "stream"),
        rollup_storage=make_rollups(rollup_kind, tmp_path / "rollups"),
        clock=clock,
    )
    yield instance
    instance.stream.close()
    instance.rollups.close()


@pytest.fixture(autouse=True)
def _isolated_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own embedded default folder and a fresh default meter."""
    monkeypatch.setenv("EVENT_METER_PATH", str(tmp_path / "embedded"))
    event_meter.reset()
    yield
    event_meter.reset()
