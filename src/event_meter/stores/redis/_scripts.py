"""Lua scripts kept as package resources (``lua/*.lua``), called by SHA.

``LuaScript`` reads one script, loads it once per client with ``SCRIPT LOAD``
and calls it with ``EVALSHA``; when the server answers ``NOSCRIPT`` (a restart,
a failover, ``SCRIPT FLUSH``) it loads the script again and repeats the call.
``run_pipeline`` sends many script calls in one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from event_meter.stores.redis._client import import_redis

__all__ = ["LuaScript", "run_pipeline"]


def _is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, import_redis().exceptions.NoScriptError)


class LuaScript:
    """One script of ``event_meter/stores/redis/lua``, called by SHA."""

    def __init__(self, name: str) -> None:
        path = resources.files("event_meter.stores.redis").joinpath("lua", f"{name}.lua")
        self.name = name
        self.source = path.read_text(encoding="utf-8")
        self.sha = hashlib.sha1(
            self.source.encode("utf-8")
        ).hexdigest()  # the id Redis gives the script
        self._loaded: set[int] = set()  # id() of clients this script was loaded into

    def load(self, client: Any, *, force: bool = False) -> None:
        if force or id(client) not in self._loaded:
            client.script_load(self.source)
            self._loaded.add(id(client))

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One ``EVALSHA``, loading the script first when the server lacks it."""
        self.load(client)
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except Exception as exc:
            if not _is_noscript(exc):
                raise
        self.load(client, force=True)
        return client.evalsha(self.sha, len(keys), *keys, *args)


def run_pipeline(
    client: Any, calls: Sequence[tuple[LuaScript, Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """Many script calls in one round trip (not atomic together); raises the first error.

    On ``NOSCRIPT`` the scripts are loaded again and the whole pipeline is sent
    again, so every script called this way must be idempotent.
    """
    for attempt in (1, 2):
        for script in {id(s): s for s, _, _ in calls}.values():
            script.load(client, force=attempt == 2)
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            # Not ``pipe.evalsha``: redis-py's cluster pipeline blocks that method, but
            # routes a raw EVALSHA by its keys (one report's keys share one slot).
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        errors = [r for r in replies if isinstance(r, Exception)]
        if not errors:
            return replies
        if attempt == 1 and any(_is_noscript(e) for e in errors):
            continue
        raise errors[0]
    raise AssertionError("unreachable")
