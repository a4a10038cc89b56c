"""A lease kept alive by a refresher thread: the one home of that primitive (SPEC 9, 11).

Backends with expiring leases (Redis, PostgreSQL) take the lease themselves and
hand ``KeptLease`` three small callables that talk to their server:

- ``refresh() -> bool`` extends the lease by its ttl if it still holds our
  token (False: it expired or another holder has it);
- ``confirm() -> bool`` tells whether the lease still holds our token;
- ``release() -> None`` removes the lease only if it still holds our token.

The protocol around them lives here once:

- **Keep**: a daemon thread calls ``refresh`` every ``ttl/2``. A refresh that
  raises or returns False marks the lease lost.
- **Check**: ``check()`` raises ``LockLostError`` once the lease is marked lost,
  once the last confirmed expiry has passed (a starved refresher cannot make a
  dead lease look alive), or when ``confirm`` says the token is gone. The
  processor calls it before every write, so a lost lease stops processing
  before its next write.
- **Release**: stops the thread, then calls ``release``; it never raises (a
  lease that could not be removed expires by itself).

Leases run on real time (``time.monotonic`` and the server's clock), never on
the meter's injected clock. After ``os.fork`` the child holds no lease: it
neither refreshes nor releases the parent's, and ``check()`` in the child raises.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from event_meter.errors import LockLostError

__all__ = ["KeptLease"]

log = logging.getLogger("event_meter")

_JOIN_TIMEOUT_S: Final = 5.0


class KeptLease:
    """A held lease on ``key``, refreshed until released; see the module docstring."""

    def __init__(
        self,
        key: str,
        ttl_ms: int,
        taken_at: float,
        *,
        refresh: Callable[[], bool],
        confirm: Callable[[], bool],
        release: Callable[[], object],
        kind: str = "lease",
    ) -> None:
        """``taken_at`` is the ``time.monotonic()`` read just before the take was sent."""
        self.key = key
        self.ttl_ms = ttl_ms
        self._refresh = refresh
        self._confirm = confirm
        self._release = release
        self._kind = kind
        self._pid = os.getpid()
        self._valid_until = taken_at + ttl_ms / 1000
        self._lost: str | None = None
        self._released = False
        self.refreshes = 0  # successful refreshes so far (for tests and debugging)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"event-meter-lease {key}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "released" if self._released else ("lost" if self._lost else "held")
        return f"<{self._kind} {self.key!r} {state}>"

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def _mark_lost(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            if not self._released:
                log.warning("event_meter: lease %r lost: %s", self.key, why)

    def _keep_alive(self) -> None:
        interval = max(self.ttl_ms / 2, 1) / 1000
        while not self._stop.wait(interval):
            if os.getpid() != self._pid:
                return
            sent = time.monotonic()
            try:
                extended = self._refresh()
            except Exception as exc:  # any failure ends the lease; check() reports it
                self._mark_lost(f"refresh failed: {type(exc).__name__}: {exc}")
                return
            if not extended:
                self._mark_lost("the lease expired or holds another token")
                return
            self._valid_until = sent + self.ttl_ms / 1000
            self.refreshes += 1

    def check(self) -> None:
        """Raise ``LockLostError`` unless this process still holds the lease (one round trip)."""
        if os.getpid() != self._pid:
            raise LockLostError(f"lease {self.key!r} belongs to the parent process")
        if self._released:
            raise LockLostError(f"lease {self.key!r} was released")
        if self._lost is None and time.monotonic() >= self._valid_until:
            self._mark_lost("not refreshed before its expiry")
        if self._lost is None:
            try:
                held = self._confirm()
            except Exception as exc:
                self._mark_lost(f"cannot confirm the token: {type(exc).__name__}: {exc}")
                raise LockLostError(f"lease {self.key!r} lost: {self._lost}") from exc
            if not held:
                self._mark_lost("the lease expired or holds another token")
        if self._lost is not None:
            raise LockLostError(f"lease {self.key!r} lost: {self._lost}")

    def release(self) -> None:
        """Stop refreshing and remove the lease if it still holds our token; never raises."""
        if os.getpid() != self._pid or self._released:
            return
        self._released = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)
        try:
            self._release()
        except Exception as exc:
            log.warning(
                "event_meter: could not release lease %r (it expires by itself): %s", self.key, exc
            )
