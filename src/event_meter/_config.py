"""Options, defaults and their validation (SPEC section 2)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Final

from event_meter._time import Clock, SystemClock
from event_meter.errors import ConfigurationError

__all__ = ["Config", "build_config"]

logger = logging.getLogger("event_meter")

DAY_MS: Final = 86_400_000
SYNC_MODES: Final = ("none", "flush", "fsync")


def log_cleanup_error(exc: BaseException) -> None:
    """Default ``auto_cleanup_error_handler``: a warning, never an exception."""
    logger.warning("event_meter: automatic cleanup failed: %s", exc, exc_info=exc)


@dataclass(frozen=True, slots=True)
class Config:
    """Validated options of one ``EventMeter``; durations are integer milliseconds."""

    namespace: str = "event_meter:v1"
    stream_storage: Any = None
    rollup_storage: Any = None
    redis: Any = None
    stream_sync: str = "flush"
    redis_read_limit: int | None = None
    rollup_ttl_ms: int = 31 * DAY_MS
    lock_ttl_ms: int = 30_000
    auto_cleanup_history: bool = False
    cleanup_history_retention_ms: int = 31 * DAY_MS
    cleanup_history_interval_ms: int = 3_600_000
    summary_key_limit: int | None = 10_000
    auto_cleanup_error_handler: Callable[[BaseException], object] = field(default=log_cleanup_error)
    clock: Clock = field(default_factory=SystemClock)


_DURATIONS: Final = {
    "rollup_ttl": "rollup_ttl_ms",
    "lock_ttl": "lock_ttl_ms",
    "cleanup_history_retention": "cleanup_history_retention_ms",
    "cleanup_history_interval": "cleanup_history_interval_ms",
}
OPTIONS: Final = (
    "namespace",
    "stream_storage",
    "rollup_storage",
    "redis",
    "stream_sync",
    "redis_read_limit",
    *_DURATIONS,
    "auto_cleanup_history",
    "summary_key_limit",
    "auto_cleanup_error_handler",
    "clock",
)


def _bad(option: str, value: object, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{option}={value!r} is invalid: {allowed}")


def _duration_ms(option: str, value: object) -> int:
    if isinstance(value, timedelta):
        ms = value / timedelta(milliseconds=1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ms = float(value) * 1000
    else:
        raise _bad(option, value, "pass a positive number of seconds or a datetime.timedelta")
    if not math.isfinite(ms) or ms <= 0 or round(ms) < 1:
        raise _bad(option, value, "it must be positive (at least 1 ms)")
    return round(ms)


def _optional_positive_int(option: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(option, value, "pass None or a positive int")
    return value


def _validate(option: str, value: Any) -> tuple[str, Any]:
    """One option as (Config field, value); raises ``ConfigurationError``."""
    if option in _DURATIONS:
        return _DURATIONS[option], _duration_ms(option, value)
    if option == "namespace":
        if not isinstance(value, str) or not value.strip():
            raise _bad(
                option, value, "pass a non-blank string such as 'billing_app:event_meter:v1'"
            )
    elif option == "stream_sync":
        if value not in SYNC_MODES:
            raise _bad(option, value, f"use one of {', '.join(map(repr, SYNC_MODES))}")
    elif option in ("redis_read_limit", "summary_key_limit"):
        value = _optional_positive_int(option, value)
    elif option == "auto_cleanup_history":
        if not isinstance(value, bool):
            raise _bad(option, value, "pass True or False")
    elif option == "auto_cleanup_error_handler":
        if not callable(value):
            raise _bad(option, value, "pass a callable taking the exception")
    elif option == "clock":
        if not callable(getattr(value, "now", None)):
            raise _bad(option, value, "pass an object with now() returning an aware UTC datetime")
    elif option in ("stream_storage", "rollup_storage"):
        if value is not None and not isinstance(value, str) and not hasattr(value, "bind"):
            raise _bad(option, value, "pass a storage URL string or a store object")
    elif option == "redis":
        if value is not None and not callable(value) and not hasattr(value, "execute_command"):
            raise _bad(option, value, "pass a redis-py client or a zero-argument factory")
    else:
        raise ConfigurationError(
            f"unknown option {option!r}; known options: {', '.join(sorted(OPTIONS))}"
        )
    return option, value


def build_config(base: Config | None = None, options: Mapping[str, Any] | None = None) -> Config:
    """``base`` updated with validated ``options`` (keyword names of ``configure``)."""
    changes = dict(_validate(name, value) for name, value in (options or {}).items())
    config = base if base is not None else Config()
    return replace(config, **changes) if changes else config


def option_names() -> tuple[str, ...]:
    return OPTIONS


def config_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Config))
