"""Recording: ``Event`` (finish once), ``WriteResult``, the context manager (SPEC 3).

Nothing here raises into the application because of configuration,
validation or storage: problems travel on the ``WriteResult``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from event_meter._payload import coerce_params
from event_meter._time import SystemClock, iso_us
from event_meter.errors import AlreadyRecordedError, ValidationError

if TYPE_CHECKING:
    from event_meter._meter import EventMeter

__all__ = ["INVALID_NAME", "Event", "WriteResult", "measured"]

F = TypeVar("F", bound=Callable[..., Any])

INVALID_NAME = "event_meter.invalid"
# Finishing is check-then-append-then-mark; a striped lock makes it atomic per
# event without allocating a lock for every event on the recording hot path.
_FINISH_LOCKS = tuple(threading.Lock() for _ in range(64))
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
        "_finished_ns",
        "_meter",
        "_params",
        "_started_ns",
        "error",
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
        self.error: BaseException | None = None
        self.status: str | None = None
        self._finished_ns = 0
        self.recorded = False
        if isinstance(name, str) and name.strip():
            self.name = name
        else:
            self.name = INVALID_NAME
            self.error = ValidationError(
                f"event name must be a non-blank string, got {name!r}; "
                "call event_meter.start('invoice_delivery', ...)"
            )
        if params is None:
            self._params = keyword_params
        else:
            self._params = self._merge(params, keyword_params)
        try:
            self.started_at: datetime | None = (meter._clock if meter else _SYSTEM_CLOCK).now()
        except Exception as exc:
            self.started_at = None
            self.error = self.error or exc
        self._started_ns = time.perf_counter_ns()

    def _merge(self, params: object, keyword_params: dict[str, Any]) -> dict[str, Any]:
        """Mapping params with keyword params over them; keys become ``str``."""
        try:
            if isinstance(params, Mapping):
                merged = {str(k): v for k, v in params.items()}
                merged.update(keyword_params)
                return merged
            problem: Exception = ValidationError(
                f"params must be a mapping, got {type(params).__name__} {params!r:.80}"
            )
        except Exception as exc:
            problem = exc
        self.error = self.error or problem
        return keyword_params

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
        finished_ns = time.perf_counter_ns()
        elapsed_ns = finished_ns - self._started_ns
        duration_ms = (elapsed_ns + 500_000) // 1_000_000 if elapsed_ns > 0 else 0
        lock = _FINISH_LOCKS[(id(self) >> 4) % 64]
        lock.acquire()  # not ``with``: measurably cheaper on this per-event path
        try:
            if self.recorded:
                return WriteResult(
                    False,
                    AlreadyRecordedError(
                        f"event {self.name!r} was already recorded as {self.status!r}; "
                        "an event finishes exactly once"
                    ),
                )
            started_at = self.started_at
            meter = self._meter
            if self.error is not None or started_at is None or meter is None:
                return WriteResult(False, self.error)
            params = {**self._params, **extra} if extra else self._params
            payload: dict[str, Any] = {
                "name": self.name,
                "status": status,
                "started_at": iso_us(started_at),
                "duration_ms": duration_ms,
            }
            if params:
                payload["params"] = coerce_params(params)
            meter.stream.append(self.name, payload)
            self.status = status
            self._finished_ns = finished_ns
            self.recorded = True
            return WriteResult(True, None, payload)
        except Exception as exc:
            return WriteResult(False, exc)
        finally:
            lock.release()

    @property
    def finished_at(self) -> datetime | None:
        """``started_at`` plus the monotonic duration, once recorded."""
        if not self.recorded or self.started_at is None:
            return None
        return self.started_at + timedelta(
            microseconds=(self._finished_ns - self._started_ns) // 1000
        )

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


def measured(start: Callable[[], Event]) -> Callable[[F], F]:
    """Decorator recording each call of a sync or async function as one event.

    ``start`` is called on every call, so the facade's decorator follows the
    current default meter (``configure``/``reset`` after decoration).
    """

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with start():
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with start():
                return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
