"""Fixtures of the dashboard tests: recorded file storage and a live server on port 0.

``recorded`` writes 30 ``invoice_delivery`` events (three providers, every
status, 10:50-11:09 UTC so minute and hour buckets both have several rows)
and two events of a report whose name is HTML, with an injected clock, and
processes them. ``dashboard`` serves that storage from a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import ProxyHandler, Request, build_opener

import orjson
import pytest

from event_meter import EventMeter, Report
from event_meter.dashboard import DashboardServer, make_server
from support import FakeClock

T0 = datetime(2025, 1, 6, 10, 50, tzinfo=UTC)
PROVIDERS = ("postmark", "sendgrid", "ses")
INVOICES = Report("invoice_delivery", 1).index_by("provider")
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">"
HOSTILE = Report(HOSTILE_NAME, 1)


@dataclass(frozen=True)
class Recorded:
    """File storage holding the events of ``events`` (started_at, status, provider)."""

    url: str
    namespace: str
    clock: FakeClock
    events: list[tuple[datetime, str, str]] = field(default_factory=list)

    def count(
        self,
        status: str | None = None,
        provider: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        return sum(
            1
            for started, event_status, event_provider in self.events
            if status in (None, event_status)
            and provider in (None, event_provider)
            and (start is None or started >= start)
            and (end is None or started < end)
        )

    def meter(self) -> EventMeter:
        return EventMeter(
            stream_storage=self.url,
            rollup_storage=self.url,
            namespace=self.namespace,
            clock=self.clock,
        )


def invoice_events() -> list[tuple[datetime, str, str]]:
    events = []
    for i in range(30):
        started = T0 + timedelta(minutes=i % 20, seconds=(7 * i) % 60)
        status = "failure" if i % 5 == 3 else "skipped" if i % 7 == 6 else "success"
        events.append((started, status, PROVIDERS[i % 3]))
    return sorted(events)


def _record(
    meter: EventMeter, clock: FakeClock, name: str, started: datetime, status: str, **params: Any
) -> None:
    clock.set(started)
    event = meter.start(name, **params)
    if status == "success":
        result = event.success()
    elif status == "failure":
        result = event.failure(TimeoutError("no answer"))
    else:
        result = event.skip("already_delivered")
    assert result.recorded, result.error


@pytest.fixture
def recorded(tmp_path: Path, namespace: str) -> Recorded:
    data = Recorded((tmp_path / "data").as_uri(), namespace, FakeClock(T0), invoice_events())
    meter = data.meter()
    try:
        for started, status, provider in data.events:
            _record(meter, data.clock, INVOICES.name, started, status, provider=provider)
        for minute in (1, 2):
            _record(meter, data.clock, HOSTILE_NAME, T0 + timedelta(minutes=minute), "success")
        data.clock.set(T0 + timedelta(hours=1))  # every minute file is claimable now
        assert meter.process_pending(INVOICES).processed == len(data.events)
        assert meter.process_pending(HOSTILE).processed == 2
    finally:
        meter.close()
    return data


@dataclass(frozen=True)
class Dashboard:
    """A running dashboard: its URL, the meter it reads and what was recorded."""

    url: str
    meter: EventMeter
    recorded: Recorded
    server: DashboardServer


@pytest.fixture
def dashboard(recorded: Recorded) -> Iterator[Dashboard]:
    meter = recorded.meter()
    server = make_server(meter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Dashboard(server.url, meter, recorded, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        meter.close()


_OPENER = build_opener(ProxyHandler({}))  # loopback requests never go through a proxy


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """``url`` with urllib; HTTP errors are returned, not raised."""
    request = Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=30) as response:
            return Response(response.status, dict(response.headers), response.read())
    except HTTPError as error:
        with error:
            return Response(error.code, dict(error.headers), error.read())
