"""Fixtures of the crash-safety suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from crash.pairings import Pairing
from event_meter.stores.redis import _apply
from support import SERVICES, drop_namespace


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip ``fsync`` (forked children inherit this too).

    A killed process loses nothing that reached the page cache; ``fsync`` only
    guards against a machine crash, which this suite does not simulate, and on a
    real disk it is two thirds of the run time.
    """
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(autouse=True)
def _pairing_services(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> Iterator[None]:
    """Start the servers of the test's ``pairing`` and drop its namespace afterwards.

    Redis applies are cut into chunks of 4 keys here (instead of 256), so one
    apply of the small workload is several chunk scripts and a crash can land
    between them. Set before any process forks, so every processor and every
    replay of a journal cuts the same chunks.
    """
    callspec = getattr(request.node, "callspec", None)
    pairing = callspec.params.get("pairing") if callspec is not None else None
    services = pairing.services if isinstance(pairing, Pairing) else ()
    for service in services:
        request.getfixturevalue(SERVICES[service])
    if "redis" in services:
        monkeypatch.setattr(_apply, "CHUNK_KEYS", 4)
    yield
    if services:
        drop_namespace(list(services), namespace)
