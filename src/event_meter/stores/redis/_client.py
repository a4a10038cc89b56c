"""redis-py access for the Redis stores: import, clients, replies, errors, Lua scripts.

Everything that depends on the driver's behaviour lives here, once:

- ``import_redis`` imports redis-py lazily; a missing driver is a
  ``ConfigurationError`` with the ``pip install`` line.
- ``ClientSource`` turns a URL, a client or a zero-argument factory into a
  client on first use, and closes only what it created (URL clients, and
  clients a factory made for this store).
- ``text`` / ``mapping`` normalise replies: redis-py 5-8, RESP2 or RESP3,
  ``decode_responses`` on or off all come out as ``str`` and ``dict``.
- ``translate`` (and ``storage_errors`` around it) is the one place where
  ``redis.exceptions.RedisError`` and ``OSError`` become
  ``event_meter.errors.StorageError``.
- ``client_sources`` decides which connections serve data and leases.

Lua scripts are called through ``_scripts``; batched commands live in ``_commands``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Final

from event_meter.errors import ConfigurationError, StorageError

__all__ = [
    "PIP_INSTALL",
    "ClientSource",
    "check_namespace",
    "client_sources",
    "decimal",
    "glob_escape",
    "import_redis",
    "is_client",
    "mapping",
    "redis_errors",
    "storage_errors",
    "text",
    "translate",
]

PIP_INSTALL: Final = 'pip install "event-meter[redis]"'
_GLOB_SPECIAL: Final = frozenset("*?[]\\")


def import_redis() -> ModuleType:
    """The ``redis`` module; ``ConfigurationError`` naming the extra when it is missing."""
    try:
        import redis
    except ImportError as exc:
        raise ConfigurationError(
            f"the Redis stores need the redis-py driver; install it with: {PIP_INSTALL}"
        ) from exc
    return redis


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis failed" (driver errors and socket errors)."""
    return (import_redis().exceptions.RedisError, OSError)


def translate(exc: Exception, operation: str) -> Exception:
    """The one place where driver and socket failures become ``StorageError``.

    Returns the exception to raise (from ``exc``): a ``StorageError`` for
    Redis and socket errors, ``exc`` itself for anything else.
    """
    if isinstance(exc, StorageError) or not isinstance(exc, redis_errors()):
        return exc
    error = StorageError(f"redis: {operation} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


@contextmanager
def storage_errors(operation: str) -> Iterator[None]:
    """``translate`` around a block (hot paths call ``translate`` in a plain ``except``)."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, operation)
        if error is exc:
            raise
        raise error from exc


def check_namespace(namespace: str) -> None:
    """Braces would break the hash tags of SPEC section 11."""
    if "{" in namespace or "}" in namespace:
        raise ConfigurationError(
            f"namespace={namespace!r} cannot be used with Redis stores: "
            "'{' and '}' are reserved for Redis Cluster hash tags"
        )


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a ``SCAN MATCH`` pattern."""
    return "".join(f"\\{ch}" if ch in _GLOB_SPECIAL else ch for ch in text)


def text(value: Any) -> str | None:
    """A reply value as ``str`` (bytes are UTF-8); None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def decimal(value: Any) -> int | None:
    """A stored plain decimal integer, else None (SPEC 8: corrupt numbers are absent)."""
    raw = text(value)
    if not raw:
        return None
    digits = raw[1:] if raw[0] == "-" else raw
    return int(raw) if digits.isascii() and digits.isdigit() else None


def mapping(reply: Any) -> dict[str, Any]:
    """A hash-like reply (a dict, or a flat RESP2 list of pairs) with ``str`` keys."""
    if isinstance(reply, dict):
        return {text(k) or "": v for k, v in reply.items()}
    if isinstance(reply, list | tuple):
        return {text(reply[i]) or "": reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    return {}


def is_client(value: Any) -> bool:
    """A redis-py compatible client (``Redis``, ``RedisCluster``, ...), not a factory."""
    return hasattr(value, "execute_command")


class ClientSource:
    """Where one store gets one of its clients (data or lock), built on first use.

    ``given`` is a client (used as is, never closed), a zero-argument factory
    (called once, its client is closed with the store) or None with ``url``
    (a client built from the URL, closed with the store). After ``os.fork`` the
    same client is fine: redis-py's connection pool notices the new pid and
    opens fresh connections in the child.
    """

    def __init__(self, given: Any = None, *, url: str | None = None, purpose: str = "data") -> None:
        if given is None and url is None:
            raise ConfigurationError(
                f"a Redis store needs a client, a client factory or a URL for its {purpose} "
                "connection, e.g. RedisRollups(url='redis://localhost:6379/0')"
            )
        if given is not None and not is_client(given) and not callable(given):
            raise ConfigurationError(
                f"redis={given!r} is neither a redis-py client nor a zero-argument factory"
            )
        if url is not None:
            import_redis()  # fail at construction, not at first use, when the driver is missing
        self._given = given
        self._url = url
        self._client: Any = given if is_client(given) else None
        self._owned = False
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if self._given is not None:
                    made = self._given()
                    if not is_client(made):
                        raise ConfigurationError(
                            f"the redis factory {self._given!r} returned {made!r}, "
                            "not a redis-py client"
                        )
                else:
                    assert self._url is not None
                    made = import_redis().Redis.from_url(self._url)
                self._client, self._owned = made, True
            return self._client

    def close(self) -> None:
        """Close the client if this source created it; the next ``get`` makes a new one."""
        with self._lock:
            client, owned = self._client, self._owned
            if not owned:
                return
            self._client, self._owned = None, False
        try:
            client.close()
        except Exception as exc:
            if not isinstance(exc, redis_errors()):
                raise


def client_sources(
    redis: Any, lock_redis: Any, url: str | None
) -> tuple[ClientSource, ClientSource]:
    """The data and lock client sources of one store (SPEC 2: separate lock connections).

    ``lock_redis`` wins when given. Otherwise a factory is called a second time
    and a URL builds a second client. A single client given as ``redis`` serves
    the lock too: redis-py checks a connection out of the client's pool for each
    command, so a lease refresh never waits behind a data command on one socket.
    """
    if redis is not None and url is not None:
        raise ConfigurationError("pass either redis= (a client or a factory) or url=, not both")
    data = ClientSource(redis, url=url, purpose="data")
    if lock_redis is not None:
        lock = ClientSource(lock_redis, purpose="lock")
    elif redis is not None and is_client(redis):
        lock = data
    else:
        lock = ClientSource(redis, url=url, purpose="lock")
    return data, lock
