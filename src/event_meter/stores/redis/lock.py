"""The Redis lease lock (SPEC 9, 11); the refresher thread and the check/release
protocol live once in ``event_meter.stores._lease.KeptLease``.

- **Take**: ``SET key <random token> NX PX ttl``; None when another holder has it.
- **Keep**: a daemon thread extends the lease every ``ttl/2`` with a Lua
  compare-and-``PEXPIRE`` on the *lock client* (never the data client, so a
  long data round trip cannot starve the refresh). A refresh that fails, or
  finds the key gone or holding another token, marks the lease lost.
- **Check**: ``check()`` raises ``LockLostError`` once the lease is marked lost,
  once the last confirmed expiry has passed (a starved refresher cannot make a
  dead lease look alive), or when ``GET key`` no longer returns our token. The
  processor calls it before every write, so a lost lease stops processing
  before its next write.
- **Release**: stops the thread, then a Lua compare-and-``DEL`` removes the
  key only if it still holds our token; a release after the lease expired and
  was taken by someone else frees nothing. Release never raises: a key it could
  not delete expires by itself.

Leases run on real time (``time.monotonic`` and Redis' own clock), never on the
meter's injected clock. After ``os.fork`` the child holds no lease: it neither
refreshes nor releases the parent's, and ``check()`` in the child raises.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

from event_meter.stores._lease import KeptLease
from event_meter.stores.redis._client import text
from event_meter.stores.redis._scripts import LuaScript

__all__ = ["RedisLease", "try_lease"]

_REFRESH: Final = LuaScript("lease_refresh")
_RELEASE: Final = LuaScript("lease_release")


def try_lease(client: Any, key: str, ttl_ms: int) -> RedisLease | None:
    """Take the lease on ``key`` for ``ttl_ms`` (kept alive until released), or None if held."""
    token = secrets.token_hex(16)
    sent = time.monotonic()
    if not client.set(key, token, nx=True, px=ttl_ms):
        return None
    return RedisLease(client, key, token, ttl_ms, sent)


class RedisLease(KeptLease):
    """A held lease on one key; see the module docstring for the protocol."""

    def __init__(self, client: Any, key: str, token: str, ttl_ms: int, taken_at: float) -> None:
        self.token = token
        self._client = client
        super().__init__(
            key,
            ttl_ms,
            taken_at,
            refresh=lambda: bool(_REFRESH(client, [key], [token, ttl_ms])),
            confirm=lambda: text(client.get(key)) == token,  # one GET
            release=lambda: _RELEASE(client, [key], [token]),
            kind="RedisLease",
        )
