"""Batched commands shared by the Redis stores: ``SCAN``, ``MGET``, ``DEL``, hash reads.

Each sends its commands pipelined in chunks of ``BATCH`` keys, so one call is
one round trip however many keys it names. The keys of one call share a hash
tag (one report), so multi-key commands are valid on Redis Cluster too; they
are queued with ``execute_command`` because redis-py's cluster pipeline blocks
its ``mget``/``delete``/``evalsha`` methods for several keys, yet routes the
raw commands by their (single) slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from event_meter.stores.redis._client import text
from event_meter.stores.redis._scripts import LuaScript, run_pipeline

__all__ = ["BATCH", "SCAN_COUNT", "delete_keys", "mget_keys", "read_hashes", "scan_keys"]

BATCH: Final = 500
SCAN_COUNT: Final = 1_000
READ_CHUNK: Final = 1_000
_READ_HASHES: Final = LuaScript("read_hashes")


def scan_keys(client: Any, pattern: str) -> Iterator[str]:
    """Keys matching ``pattern`` (``SCAN MATCH``), each once, as ``str``."""
    seen: set[str] = set()  # SCAN may return a key more than once
    for raw in client.scan_iter(match=pattern, count=SCAN_COUNT):
        key = text(raw) or ""
        if key not in seen:
            seen.add(key)
            yield key


def mget_keys(client: Any, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys`` (None when missing): pipelined ``MGET`` chunks of 500."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(keys), BATCH):
        # A raw MGET: redis-py's cluster pipeline blocks ``pipe.mget`` but routes this
        # one by its keys, which share one report's slot.
        pipe.execute_command("MGET", *keys[i : i + BATCH])
    return [value for reply in pipe.execute() for value in reply]


def delete_keys(client: Any, keys: Sequence[str]) -> int:
    """``DEL`` in pipelined batches of 500; returns how many of ``keys`` existed."""
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(keys), BATCH):
        pipe.execute_command("DEL", *keys[i : i + BATCH])  # raw, like MGET above
    return sum(int(deleted) for deleted in pipe.execute())


def read_hashes(client: Any, keys: Sequence[str]) -> list[dict[Any, Any] | None]:
    """``HGETALL`` of every key (None when missing), in one round trip.

    One ``read_hashes`` script call per 1,000 keys instead of one pipelined
    ``HGETALL`` per key: the client parses a few nested replies rather than
    thousands, which makes wide reads several times faster.
    """
    calls = [(_READ_HASHES, keys[i : i + READ_CHUNK], ()) for i in range(0, len(keys), READ_CHUNK)]
    replies = run_pipeline(client, calls) if calls else []
    return [
        dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None
        for reply in replies
        for flat in reply
    ]
