"""Fixtures of the fault cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from event_meter import EventMeter
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from support import FakeClock


@pytest.fixture
def file_meters(tmp_path: Path, namespace: str) -> Iterator[Callable[..., EventMeter]]:
    """Makes meters (file stream at ``stream``, file rollups at ``rollups``); closes them."""
    made: list[EventMeter] = []

    def make(stream: Path, rollups: Path, clock: FakeClock) -> EventMeter:
        meter = EventMeter(
            namespace=namespace,
            stream_storage=FileStream(stream, host="h"),
            rollup_storage=FileRollups(rollups),
            clock=clock,
        )
        made.append(meter)
        return meter

    yield make
    for meter in made:
        meter.stream.close()
        meter.rollups.close()
