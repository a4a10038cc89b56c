"""In-process processors for pairings with a ``memory`` store.

Their processors are threads, so a crash is an exception (``CrashError``)
raised by a thread-local trigger wrapped around store methods, only where a real
error can happen (after the markers test, before or after apply, after delete,
before forget); the thread then starts over with a new meter. Each life is
armed until the planned number of crashes fired.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Final

from crash.pairings import Storage
from crash.points import CrashError
from event_meter import EventMeter
from stress.plan import Gatekeeper, Slots
from stress.runner import POLL_S, PROCESSORS, Figures, batch_sizes, drain, writers_done

_HOOKS: Final = (
    ("stream", "delete", "after"),
    ("rollups", "processed_ids", "after"),
    ("rollups", "apply", "before"),
    ("rollups", "apply", "after"),
    ("rollups", "forget", "before"),
)


class _Armed:
    """One processor life's trigger: the label, the call number, what happened."""

    def __init__(self, label: str | None, at: int) -> None:
        self.label, self.at = label, at
        self.count = 0
        self.fired = False


class ThreadCrashes:
    """Per-processor triggers around store methods: ``CrashError`` at the n-th call.

    The trigger lives in a context variable, so it follows a processor's calls into
    the worker thread that applies its batches (the pipeline copies the context).
    """

    def __init__(self) -> None:
        self._armed: contextvars.ContextVar[_Armed | None] = contextvars.ContextVar(
            "stress_armed", default=None
        )
        self._lock = threading.Lock()
        self._wrapped: set[tuple[int, str]] = set()  # (store id, label)

    def install(self, meter: EventMeter) -> None:
        for role, method, when in _HOOKS:
            store = getattr(meter, role)
            with self._lock:
                label = f"{method}-{when}"
                if (id(store), label) in self._wrapped:
                    continue
                self._wrapped.add((id(store), label))
            setattr(store, method, self._wrap(getattr(store, method), label))

    def _wrap(self, original: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if label.endswith("before"):
                self._tick(label)
            result = original(*args, **kwargs)
            if label.endswith("after"):
                self._tick(label)
            return result

        return wrapper

    def _tick(self, label: str) -> None:
        armed = self._armed.get()
        if armed is None or armed.label != label or armed.fired:
            return
        with self._lock:  # the processor's thread and its apply worker may both tick
            armed.count += 1
            fire = armed.count == armed.at
            armed.fired = armed.fired or fire
        if fire:
            raise CrashError(f"injected at {label} #{armed.at}")

    @contextmanager
    def arm(self, label: str | None, at: int) -> Iterator[Callable[[], bool]]:
        armed = _Armed(label, at)
        token = self._armed.set(armed)
        try:
            yield lambda: armed.fired
        finally:
            self._armed.reset(token)


def thread_processors(
    storage: Storage,
    slots: Slots,
    gate: Gatekeeper,
    figures: Figures,
    kills: int,
    seed: int,
    deadline: float,
) -> list[Callable[[], None]]:
    """The gatekeeper and ``PROCESSORS`` processor thread bodies; each life is armed
    until ``kills`` crashes fired."""
    crashes = ThreadCrashes()
    lock = threading.Lock()
    storage.meter()  # make the shared stores before any thread races to make them
    # Threads of one process drain fast: smaller batches give more lives to crash.
    sizes = tuple(max(2, n // 3) for n in batch_sizes(figures.events))

    def processor(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        while time.monotonic() < deadline:
            with lock:
                meter = storage.meter()
                figures.processors_started += 1
                arm = figures.kills < kills
            crashes.install(meter)
            _, method, when = rng.choice(_HOOKS)
            with crashes.arm(f"{method}-{when}" if arm else None, rng.randint(1, 3)) as fired:
                try:
                    drain(meter, rng.choice(sizes), slots, fired)
                except CrashError:
                    pass
            if not fired():
                return  # drained: the writers are done and nothing is left
            with lock:
                figures.kills += 1
                figures.kills_while_writing += not writers_done(slots)
        raise AssertionError(f"stress run timed out: {figures}")

    def gatekeeper() -> None:
        while not gate.open:
            gate.tick(figures.kills)
            time.sleep(POLL_S)  # polling the kill count

    return [gatekeeper, *(partial(processor, n) for n in range(PROCESSORS))]
