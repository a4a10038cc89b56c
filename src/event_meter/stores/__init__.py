"""Storage backends and the URL registry.

``store_from_url(url, role, ...)`` resolves a storage URL through one plain dict
of scheme -> module, imported only when used, so optional drivers are never
imported by applications that do not use them. Store classes are importable
from here lazily too (``from event_meter.stores import FileStream``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from event_meter.errors import ConfigurationError

if TYPE_CHECKING:
    from event_meter.stores.base import RollupStore, StreamStore
    from event_meter.stores.file.rollups import FileRollups
    from event_meter.stores.file.stream import FileStream
    from event_meter.stores.memory import MemoryRollups, MemoryStream
    from event_meter.stores.postgres import PostgresRollups
    from event_meter.stores.redis.rollups import RedisRollups
    from event_meter.stores.redis.stream import RedisStream
    from event_meter.stores.sqlite import SQLiteRollups

__all__ = [
    "FileRollups",
    "FileStream",
    "MemoryRollups",
    "MemoryStream",
    "PostgresRollups",
    "RedisRollups",
    "RedisStream",
    "SQLiteRollups",
    "embedded_path",
    "store_from_url",
]

Role = Literal["stream", "rollups"]

# class name -> module; imported on first attribute access.
_CLASSES: dict[str, str] = {
    "MemoryStream": "event_meter.stores.memory",
    "MemoryRollups": "event_meter.stores.memory",
    "FileStream": "event_meter.stores.file.stream",
    "FileRollups": "event_meter.stores.file.rollups",
    "RedisStream": "event_meter.stores.redis.stream",
    "RedisRollups": "event_meter.stores.redis.rollups",
    "PostgresRollups": "event_meter.stores.postgres.rollups",
    "SQLiteRollups": "event_meter.stores.sqlite.rollups",
}

# scheme -> (stream class, rollup class); None where the role is not offered.
SCHEMES: dict[str, tuple[str | None, str | None]] = {
    "memory": ("MemoryStream", "MemoryRollups"),
    "file": ("FileStream", "FileRollups"),
    "redis": ("RedisStream", "RedisRollups"),
    "rediss": ("RedisStream", "RedisRollups"),
    "unix": ("RedisStream", "RedisRollups"),
    "postgresql": (None, "PostgresRollups"),
    "postgres": (None, "PostgresRollups"),
    "sqlite": (None, "SQLiteRollups"),
}
REDIS_SCHEMES = ("redis", "rediss", "unix")


def __getattr__(name: str) -> Any:
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'event_meter.stores' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def embedded_path() -> Path:
    """``$EVENT_METER_PATH``, else ``./.event_meter``: the embedded default's folder."""
    return Path(os.environ.get("EVENT_METER_PATH") or ".event_meter")


def file_path_of(url: str) -> Path:
    """The folder of a ``file:///abs`` or ``file:relative`` URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"storage URL {url!r} names host {parts.netloc!r}; "
            "use file:///absolute/path or file:relative/path"
        )
    path = unquote(parts.path)
    if not path:
        raise ConfigurationError(f"storage URL {url!r} has no path; use file:///absolute/path")
    return Path(path)


def store_from_url(
    url: str,
    role: Role,
    *,
    stream_sync: str = "flush",
    redis_read_limit: int | None = None,
    rollup_ttl_ms: int | None = None,
) -> StreamStore | RollupStore:
    """A new store for ``url`` in ``role`` ("stream" or "rollups")."""
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    classes = SCHEMES.get(scheme)
    if classes is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ConfigurationError(f"unknown storage URL scheme in {url!r}; known schemes: {known}")
    class_name = classes[0] if role == "stream" else classes[1]
    if class_name is None:
        raise ConfigurationError(f"{scheme}:// cannot be used as {role} storage ({url!r})")
    cls = __getattr__(class_name)
    if scheme == "memory":
        return cls()  # type: ignore[no-any-return]
    if scheme in REDIS_SCHEMES:
        if role == "stream":
            return cls(url=url, read_limit=redis_read_limit)  # type: ignore[no-any-return]
        ttl = {} if rollup_ttl_ms is None else {"ttl_ms": rollup_ttl_ms}
        return cls(url=url, **ttl)  # type: ignore[no-any-return]
    if class_name in ("PostgresRollups", "SQLiteRollups"):
        return cls(url=url)  # type: ignore[no-any-return]
    if role == "stream":
        return cls(file_path_of(url), sync=stream_sync)  # type: ignore[no-any-return]
    return cls(file_path_of(url))  # type: ignore[no-any-return]
