"""Crash points: where a processor dies (SIGKILL) or fails (an exception).

A crash point patches one place of the processing path so that the n-th time it
is reached a ``Trigger`` fires: ``kill`` (SIGKILL of the current process) or
``fail`` (raise ``CrashError``). Generic points wrap store methods of the meter,
so they work on every backend; the others need a backend feature
(``file_stream``, ``file_rollups`` or ``redis_rollups``) and patch that
backend's write primitives.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import pytest

from crash.pairings import FILE_ROLLUPS, FILE_STREAM, OVERLAPPING, REDIS_ROLLUPS, Pairing
from event_meter import EventMeter
from event_meter.stores.file import _fs, _journal, _layout, _stream_claims
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.redis import _apply, _scripts


class CrashError(Exception):
    """The injected failure of the exception variant."""


# -- triggers ------------------------------------------------------------------------


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail() -> None:
    raise CrashError("injected crash")


@dataclass
class Trigger:
    """Fires ``fire`` on the ``at``-th tick (1-based); ``prelude`` runs just before."""

    at: int
    fire: Callable[[], None]
    count: int = 0
    fired: bool = False
    labels: list[str] = field(default_factory=list)

    def tick(self, label: str = "", prelude: Callable[[], None] | None = None) -> None:
        self.count += 1
        self.labels.append(label)
        if self.count == self.at and not self.fired:
            self.fired = True
            if prelude is not None:
                prelude()
            self.fire()


def torn_temp(path: Path, data: bytes) -> None:
    """What an atomic write killed before its rename leaves: half a temp file."""
    if path.parent.is_dir():
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.close(fd)


# -- crash points ---------------------------------------------------------------------

Install = Callable[[pytest.MonkeyPatch, EventMeter, Trigger], None]


@dataclass(frozen=True)
class CrashPoint:
    """Where to crash, on the ``at``-th time that place is reached."""

    name: str
    at: int
    install: Install
    requires: frozenset[str] = frozenset()

    def runs_on(self, pairing: Pairing) -> bool:
        return self.requires <= pairing.features


def _wrap(mp: pytest.MonkeyPatch, obj: Any, method: str, *, before: bool, trigger: Trigger) -> None:
    original = getattr(obj, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            trigger.tick(method)
        result = original(*args, **kwargs)
        if not before:
            trigger.tick(method)
        return result

    mp.setattr(obj, method, wrapper)


def _before_apply(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
    _wrap(mp, meter.rollups, "apply", before=True, trigger=trigger)


def _after_apply(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
    _wrap(mp, meter.rollups, "apply", before=False, trigger=trigger)


def _after_delete(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
    _wrap(mp, meter.stream, "delete", before=False, trigger=trigger)


def label_of(path: Path) -> str:
    """A short name for a file written by an apply: journal, rollups-..., state-..., marker."""
    parts = path.parts
    if "journal" in parts:
        return "journal"
    if "processed" in parts:
        return "marker"
    if "state" in parts:
        return f"state-{path.stem}"
    at = parts.index("rollups", len(parts) - 6)
    index = parts[at + 1].split("-")[0]
    return f"rollups-{index}-{parts[at + 2]}-{path.stem}"


def watch_apply_writes(
    mp: pytest.MonkeyPatch,
    meter: EventMeter,
    on_write: Callable[[int, str, Callable[[], None]], None],
) -> None:
    """Call ``on_write(apply number, label, torn)`` before every file write of an apply.

    The steps of a file-rollups apply are: the journal, each rollup file and state
    shard, the marker files, then the journal unlink (label ``journal-unlink``).
    ``torn`` leaves half a temp file of that write, as a kill inside it would.
    """
    current = [0, 0]  # applies so far, the one running (0: none)
    original_apply = meter.rollups.apply

    def apply(*args: Any, **kwargs: Any) -> Any:
        current[0] += 1
        current[1] = current[0]
        try:
            return original_apply(*args, **kwargs)
        finally:
            current[1] = 0

    real_write = _fs.atomic_write  # what _layout and _stream_claims call

    def write(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
        # A write into a missing folder fails untouched and is retried after a mkdir:
        # it is not a step of its own.
        if current[1] and path.parent.is_dir():
            on_write(current[1], label_of(path), lambda: torn_temp(path, data))
        real_write(path, data, fsync=fsync, sync_dir=sync_dir)

    real_remove = _journal.remove

    def remove(layout: ReportLayout, batch_id: str) -> None:
        if current[1]:
            on_write(current[1], "journal-unlink", lambda: None)
        real_remove(layout, batch_id)

    mp.setattr(meter.rollups, "apply", apply)
    mp.setattr(_layout, "atomic_write", write)
    mp.setattr(_journal, "remove", remove)


def apply_step(apply_no: int, step: int, *, torn: bool = False) -> CrashPoint:
    """Crash before step ``step`` (0-based) of apply number ``apply_no``."""

    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        def on_write(number: int, label: str, tear: Callable[[], None]) -> None:
            if number == apply_no:
                trigger.tick(label, tear if torn else None)

        watch_apply_writes(mp, meter, on_write)

    suffix = "-torn" if torn else ""
    return CrashPoint(f"apply{apply_no}-step{step}{suffix}", step + 1, install, FILE_ROLLUP_SET)


FILE_ROLLUP_SET: Final = frozenset({FILE_ROLLUPS})
FILE_STREAM_SET: Final = frozenset({FILE_STREAM})


class _OsProxy:
    """``os`` for ``_stream_claims``, with a hook before each ``unlink``."""

    def __init__(self, on_unlink: Callable[[str], None]) -> None:
        self._on_unlink = on_unlink

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def unlink(self, path: Any, *args: Any, **kwargs: Any) -> None:
        self._on_unlink(os.fspath(path))
        os.unlink(path, *args, **kwargs)


def _in_delete(mp: pytest.MonkeyPatch, meter: EventMeter) -> list[bool]:
    """A flag that is true while ``meter.stream.delete`` runs."""
    flag = [False]
    original = meter.stream.delete

    def delete(*args: Any, **kwargs: Any) -> Any:
        flag[0] = True
        try:
            return original(*args, **kwargs)
        finally:
            flag[0] = False

    mp.setattr(meter.stream, "delete", delete)
    return flag


def _unlink_point(suffix: str) -> Install:
    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        active = _in_delete(mp, meter)

        def on_unlink(path: str) -> None:
            # finish_claim unlinks the offset even when there is none: count real ones.
            if active[0] and path.endswith(suffix) and os.path.exists(path):
                trigger.tick(f"unlink {suffix}")

        mp.setattr(_stream_claims, "os", _OsProxy(on_unlink))

    return install


def _offset_write(*, torn: bool) -> Install:
    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        real = _fs.atomic_write

        def write(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
            trigger.tick("offset", (lambda: torn_temp(path, data)) if torn else None)
            real(path, data, fsync=fsync)

        mp.setattr(_stream_claims, "atomic_write", write)

    return install


def watch_redis_apply(
    mp: pytest.MonkeyPatch, meter: EventMeter, on_step: Callable[[str, Callable[[], None]], None]
) -> None:
    """Call ``on_step(label, partial)`` before every script call of a Redis apply.

    The steps of one ``RedisRollups.apply`` (see ``stores/redis/_apply.py``) are
    ``begin`` (the journal entry), ``chunk-<i>`` (before chunk script ``i`` of the
    pipelined chunks), ``markers-<i>`` (before marker script ``i``) and
    ``cleanup`` (before the journal entry and guards are deleted). ``partial``
    sends the calls of the pipeline before this one, as a client killed while
    writing its pipeline would leave it. Replays by ``recover`` are not steps.
    """
    inside = [False]
    original_apply = meter.rollups.apply

    def apply(*args: Any, **kwargs: Any) -> Any:
        inside[0] = True
        try:
            return original_apply(*args, **kwargs)
        finally:
            inside[0] = False

    real_begin = _apply.BEGIN
    real_pipeline = _scripts.run_pipeline  # what _apply calls

    def begin(client: Any, keys: Any, args: Any) -> Any:
        if inside[0]:
            on_step("begin", lambda: None)
        return real_begin(client, keys, args)

    def run_pipeline(client: Any, calls: Any) -> list[Any]:
        if not inside[0]:
            return real_pipeline(client, calls)
        kind = "chunk" if calls[0][0] is _apply.CHUNK else "markers"
        for i in range(len(calls)):

            def partial(i: int = i) -> None:
                if i:
                    real_pipeline(client, calls[:i])

            on_step(f"{kind}-{i}", partial)
        replies = real_pipeline(client, calls)
        if kind == "markers":
            on_step("cleanup", lambda: None)
        return replies

    mp.setattr(meter.rollups, "apply", apply)
    mp.setattr(_apply, "BEGIN", begin)
    mp.setattr(_apply, "run_pipeline", run_pipeline)


REDIS_ROLLUP_SET: Final = frozenset({REDIS_ROLLUPS})
REDIS_STEPS: Final = ("begin", "chunk-0", "chunk-2", "markers-0", "cleanup")
"""Steps every Redis apply of the workload has (chunks of 4 keys: see the conftest)."""


def redis_apply_step(label: str, at: int = 3) -> CrashPoint:
    """Crash at step ``label`` of the ``at``-th Redis apply (see ``watch_redis_apply``)."""

    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        def on_step(step: str, partial: Callable[[], None]) -> None:
            if step == label:
                trigger.tick(step, partial)

        watch_redis_apply(mp, meter, on_step)

    return CrashPoint(f"redis-apply-{label}", at, install, REDIS_ROLLUP_SET)


# -- overlapped batches (the apply of batch N runs while batch N+1 is read) -------------

OVERLAP_SET: Final = frozenset({OVERLAPPING})
WAIT_S: Final = 10.0  # bounded waits for the other thread; never reached when overlapping


class _Overlap:
    """Counts stream reads and applies of a meter, and lets a thread wait for them."""

    def __init__(self, mp: pytest.MonkeyPatch, meter: EventMeter) -> None:
        self.reads = self.started = 0
        self.changed = threading.Condition()
        self.fired = threading.Event()
        real_read = meter.stream.read

        def read(*args: Any) -> Any:
            batch = real_read(*args)
            with self.changed:
                self.reads += 1
                self.changed.notify_all()
            return batch

        mp.setattr(meter.stream, "read", read)

    def wait_reads(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.reads >= count, WAIT_S), "no overlap"


def _apply_with_next_read(*, after: bool) -> Install:
    """The at-th apply fires (before or after writing) once batch N+1 has been read."""

    def install(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
        overlap = _Overlap(mp, meter)
        real_apply = meter.rollups.apply

        def apply(*args: Any) -> None:
            with overlap.changed:
                overlap.started += 1
                number = overlap.started
            if number == trigger.at:
                overlap.wait_reads(number + 1)
            if not after:
                trigger.tick("apply")
            real_apply(*args)
            if after:
                trigger.tick("apply")

        mp.setattr(meter.rollups, "apply", apply)

    return install


def _read_while_applying(mp: pytest.MonkeyPatch, meter: EventMeter, trigger: Trigger) -> None:
    """The at-th read (at >= 2) fires in the reading thread while apply at-1 still runs:
    that apply waits until the point fired (a kill ends it; a failure lets it finish)."""
    overlap = _Overlap(mp, meter)
    real_apply, real_read = meter.rollups.apply, meter.stream.read

    def apply(*args: Any) -> None:
        with overlap.changed:
            overlap.started += 1
            number = overlap.started
        if number == trigger.at - 1:
            overlap.fired.wait(WAIT_S)
        real_apply(*args)

    def read(*args: Any) -> Any:
        batch = real_read(*args)
        try:
            trigger.tick("read", prelude=overlap.fired.set)
        except BaseException:  # a failing read claims nothing: give the rows back
            meter.stream.release(batch)
            raise
        return batch

    mp.setattr(meter.rollups, "apply", apply)
    mp.setattr(meter.stream, "read", read)


# Points with their occurrence; ``at`` is tuned so the crash lands mid-stream.
POINTS: Final = (
    CrashPoint("before-apply", 3, _before_apply),
    replace(apply_step(3, 1), name="after-journal-before-files"),
    CrashPoint("after-apply", 3, _after_apply),
    CrashPoint("after-delete-before-forget", 3, _after_delete),
    CrashPoint("delete-before-data-unlink", 3, _unlink_point(".jsonl"), FILE_STREAM_SET),
    CrashPoint("delete-before-offset-unlink", 1, _unlink_point(".offset"), FILE_STREAM_SET),
    CrashPoint("delete-before-offset-write", 2, _offset_write(torn=False), FILE_STREAM_SET),
    CrashPoint("delete-torn-offset-write", 2, _offset_write(torn=True), FILE_STREAM_SET),
    *(redis_apply_step(label) for label in REDIS_STEPS),
    CrashPoint("before-apply-next-batch-read", 3, _apply_with_next_read(after=False), OVERLAP_SET),
    CrashPoint("after-apply-next-batch-read", 3, _apply_with_next_read(after=True), OVERLAP_SET),
    CrashPoint("next-batch-read-while-applying", 3, _read_while_applying, OVERLAP_SET),
)


def point(name: str) -> CrashPoint:
    return next(p for p in POINTS if p.name == name)


@contextmanager
def armed(meter: EventMeter, crash: CrashPoint, fire: Callable[[], None]) -> Iterator[Trigger]:
    """Install ``crash`` on ``meter`` for the block; the patches are undone after it."""
    trigger = Trigger(crash.at, fire)
    with pytest.MonkeyPatch.context() as mp:
        crash.install(mp, meter, trigger)
        yield trigger
