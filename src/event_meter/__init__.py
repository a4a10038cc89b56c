"""event-meter: record runtime events, roll them up in storage you own, report on them.

The module functions delegate to a process-wide default ``EventMeter``. With no
configuration at all it uses the embedded default: file stream and file
rollups under ``$EVENT_METER_PATH`` or ``./.event_meter``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from event_meter import errors
from event_meter._meter import EventMeter
from event_meter.errors import (
    AlreadyRecordedError,
    ConfigurationError,
    DefinitionChangedError,
    DefinitionNotFoundError,
    EventMeterError,
    LockLostError,
    StorageError,
    UnsupportedQueryError,
    ValidationError,
)
from event_meter.event import Event, WriteResult, measured
from event_meter.processor import ProcessResult
from event_meter.report import Report

__all__ = [
    "AlreadyRecordedError",
    "ConfigurationError",
    "DefinitionChangedError",
    "DefinitionNotFoundError",
    "Event",
    "EventMeter",
    "EventMeterError",
    "LockLostError",
    "ProcessResult",
    "Report",
    "StorageError",
    "UnsupportedQueryError",
    "ValidationError",
    "WriteResult",
    "acompare",
    "aprocess_pending",
    "aseries",
    "asummary",
    "cleanup_history",
    "compare",
    "configure",
    "default_meter",
    "errors",
    "measure",
    "process_pending",
    "report_definition",
    "reset",
    "series",
    "start",
    "summary",
]

__version__ = "0.1.0"

F = TypeVar("F", bound=Callable[..., Any])

_default: EventMeter | None = None
_default_lock = threading.Lock()


def default_meter() -> EventMeter:
    """The process-wide meter the module functions use (created on first use)."""
    global _default
    meter = _default
    if meter is None:
        with _default_lock:
            if _default is None:
                _default = EventMeter()
            meter = _default
    return meter


def configure(**options: Any) -> EventMeter:
    """Configure the default meter (options update the current ones) and return it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = EventMeter(**options)
        else:
            _default.configure(**options)
        return _default


def reset() -> None:
    """Close the default meter and return to an unconfigured default."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


def start(name: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Event:
    """Start measuring one run of ``name``; finish with success/skip/failure. Never raises."""
    try:
        meter = default_meter()
    except Exception as exc:
        return _broken_event(name, exc)
    return meter.start(name, params, **kw)


def _broken_event(name: object, exc: Exception) -> Event:
    """An event that reports a configuration failure on every finish."""
    event = Event(None, name, None, {})
    event.error = exc
    return event


def measure(name: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Callable[[F], F]:
    """Decorator recording each call of a sync or async function (default meter).

    The default meter is looked up at each call, not at decoration time, so a
    function decorated at import time follows a later ``configure``/``reset``.
    """
    return measured(lambda: start(name, params, **kw))


def process_pending(report: Report | str, **kwargs: Any) -> ProcessResult:
    return default_meter().process_pending(report, **kwargs)


def summary(report: Report | str, **kwargs: Any) -> dict[str, Any]:
    return default_meter().summary(report, **kwargs)


def series(report: Report | str, **kwargs: Any) -> list[dict[str, Any]]:
    return default_meter().series(report, **kwargs)


def compare(report: Report | str, **kwargs: Any) -> dict[str, Any]:
    return default_meter().compare(report, **kwargs)


def report_definition(report: Report | str, **kwargs: Any) -> dict[str, Any]:
    return default_meter().report_definition(report, **kwargs)


def cleanup_history(before: object, events: Iterable[str] | str | None = None) -> dict[str, int]:
    return default_meter().cleanup_history(before, events)


async def aprocess_pending(report: Report | str, **kwargs: Any) -> ProcessResult:
    return await default_meter().aprocess_pending(report, **kwargs)


async def asummary(report: Report | str, **kwargs: Any) -> dict[str, Any]:
    return await default_meter().asummary(report, **kwargs)


async def aseries(report: Report | str, **kwargs: Any) -> list[dict[str, Any]]:
    return await default_meter().aseries(report, **kwargs)


async def acompare(report: Report | str, **kwargs: Any) -> dict[str, Any]:
    return await default_meter().acompare(report, **kwargs)
