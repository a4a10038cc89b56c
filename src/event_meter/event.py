"""Recording: ``Event`` (finish once), ``WriteResult``, the context manager (SPEC 3).

Nothing here raises into the application because of configuration,
validation or storage: problems travel on the ``WriteResult``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from event_meter._payload import build_payload, coerce_params
from event_meter._time import SystemClock, iso_us
from event_meter.errors import AlreadyRecordedError, ValidationError

if TYPE_CHECKING:
    from event_meter._meter import EventMeter

__all__ = ["INVALID_NAME", "Event", "WriteResult"]

INVALID_NAME = "event_meter.invalid"
_SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one finish call; truthy iff the event was recorded."""

    recorded: bool
    error: BaseException | None = None
    payload: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.recorded


def error_class_name(kind: type) -> str:
    """``ValueError`` for built-ins, ``module.QualifiedName`` otherwise."""
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


class Event:
    """One measured run, from ``start`` to exactly one recorded finish."""

    __slots__ = (
        "_lock",
        "_meter",
        "_params",
        "_started_ns",
        "error",
        "finished_at",
        "name",
        "recorded",
        "started_at",
        "status",
    )

    def __init__(
        self,
        meter: EventMeter | None,
        name: object,
        params: object,
        keyword_params: dict[str, Any],
    ) -> None:
        self._meter = meter
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.status: str | None = None
        self.finished_at: datetime | None = None
        self.recorded = False
        self.started_at: datetime | None = None
        if isinstance(name, str) and name.strip():
            self.name = name
        else:
            self.name = INVALID_NAME
            self.error = ValidationError(
                f"event name must be a non-blank string, got {name!r}; "
                "call event_meter.start('invoice_delivery', ...)"
            )
        merged: dict[str, Any]
        if params is None:
            merged = keyword_params
        elif isinstance(params, Mapping):
            merged = {str(k): v for k, v in params.items()}
            merged.update(keyword_params)
        else:
            merged = keyword_params
            self.error = self.error or ValidationError(
                f"params must be a mapping, got {type(params).__name__} {params!r:.80}"
            )
        self._params = merged
        try:
            self.started_at = (meter.config.clock if meter else _SYSTEM_CLOCK).now()
        except Exception as exc:
            self.error = self.error or exc
        self._started_ns = time.perf_counter_ns()

    def __repr__(self) -> str:
        return f"<Event {self.name!r} status={self.status!r} recorded={self.recorded}>"

    # -- finishing -----------------------------------------------------------------

    def success(self, **params: Any) -> WriteResult:
        return self._finish("success", params)

    def skip(self, reason: object = None, /, **params: Any) -> WriteResult:
        extra: dict[str, Any] = {}
        if isinstance(reason, Mapping):
            extra.update({str(k): v for k, v in reason.items()})
        elif reason is not None:
            extra["skip_reason"] = str(reason)
        extra.update(params)
        return self._finish("skipped", extra)

    def failure(self, error: object = None, /, **params: Any) -> WriteResult:
        extra: dict[str, Any] = {}
        if isinstance(error, BaseException):
            extra["error_class"] = error_class_name(type(error))
            extra["error_message"] = str(error)
        elif isinstance(error, Mapping):
            extra.update({str(k): v for k, v in error.items()})
        elif error is not None:
            extra["error_class"] = type(error).__name__
            extra["error_message"] = str(error)
        extra.update(params)
        return self._finish("failure", extra)

    async def asuccess(self, **params: Any) -> WriteResult:
        return await asyncio.to_thread(self.success, **params)

    async def askip(self, reason: object = None, /, **params: Any) -> WriteResult:
        return await asyncio.to_thread(self.skip, reason, **params)

    async def afailure(self, error: object = None, /, **params: Any) -> WriteResult:
        return await asyncio.to_thread(self.failure, error, **params)

    def _finish(self, status: str, extra: dict[str, Any]) -> WriteResult:
        duration_ms = max(0, (time.perf_counter_ns() - self._started_ns + 500_000) // 1_000_000)
        try:
            with self._lock:
                if self.recorded:
                    return WriteResult(
                        False,
                        AlreadyRecordedError(
                            f"event {self.name!r} was already recorded as {self.status!r}; "
                            "an event finishes exactly once"
                        ),
                    )
                if self.error is not None or self.started_at is None or self._meter is None:
                    return WriteResult(False, self.error)
                params = self._params
                if extra:
                    params = {**params, **extra}
                payload = build_payload(
                    self.name,
                    status,
                    iso_us(self.started_at),
                    duration_ms,
                    coerce_params(params) if params else params,
                )
                finished_at = self._meter.config.clock.now()
                self._meter._append(self.name, payload)
                self.status = status
                self.finished_at = finished_at
                self.recorded = True
                return WriteResult(True, None, payload)
        except Exception as exc:
            return WriteResult(False, exc)

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Event:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.recorded:
            return
        if exc is not None:
            self.failure(exc)
        else:
            self.success()

    async def __aenter__(self) -> Event:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.recorded:
            return
        if exc is not None:
            await self.afailure(exc)
        else:
            await self.asuccess()
