"""Backend pairings and the processes of the crash-safety suite.

A **pairing** opens a stream store and a rollup store on one storage place, as a
new process would. Durable pairings (whose data outlives the process) run the
kill scenarios; all of them run the exception scenarios. A later backend (Redis,
PostgreSQL) joins by adding one ``Pairing`` to ``PAIRINGS``, and, if its stream
or its journal can be inspected, a branch to ``Storage.leftovers``.

``file->sqlite`` keeps its rollups in ``<root>/rollups.db`` (no server). A
SIGKILLed processor leaves its lease rows there until they expire, so it runs
with a short ``lock_ttl`` too and ``Storage.settle`` polls the file until no
live lease is left (``settle_sqlite``); the next processor takes the expired row
over through the store's own take path.

Redis pairings (``file->redis``, ``redis->redis``) use the session's real
``redis-server`` and a short ``lock_ttl``: a SIGKILLed processor leaves its
leases in Redis until they expire (nothing releases them), so ``Storage.settle``
polls the namespace's lock keys until they are gone, with a bounded deadline,
before the next processor starts. Their leftovers are the stream's ``XLEN`` and
the entries of each report's journal hash.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from crash.postgres_pairing import POSTGRES_LOCK_TTL_MS, open_file_postgres, settle_postgres
from crash.workload import EVENT
from event_meter import EventMeter
from event_meter._keys import ReportRef
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file._stream_layout import StreamDirs
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from event_meter.stores.memory import MemoryRollups, MemoryStream
from event_meter.stores.redis.stream import RedisStream
from support import redis_url

FILE_STREAM: Final = "file_stream"
FILE_ROLLUPS: Final = "file_rollups"
REDIS_STREAM: Final = "redis_stream"
REDIS_ROLLUPS: Final = "redis_rollups"
POSTGRES_ROLLUPS: Final = "postgres_rollups"
SQLITE_ROLLUPS: Final = "sqlite_rollups"
OVERLAPPING: Final = "overlapping"
"""The stores overlap one batch's apply with the next batch's read (``overlapping_batches``
and ``background_apply``)."""
PARALLEL_READERS: Final = "parallel_readers"
"""Two processors may read rows of one event at the same time (no per-event read lease)."""
REDIS_LOCK_TTL_MS: Final = 500
"""Short, so a killed holder's leases expire soon; long enough for refreshes every 250 ms."""
SQLITE_LOCK_TTL_MS: Final = 1_000
"""Like PostgreSQL's: a refresh every 500 ms is never late, a killed holder's lease soon expires."""
SQLITE_FILE: Final = "rollups.db"
SETTLE_TIMEOUT_S: Final = 15.0
Opener = Callable[[Path, dict[str, Any]], tuple[StreamStore, RollupStore]]


@dataclass(frozen=True)
class Pairing:
    """A stream backend feeding a rollup backend."""

    name: str
    durable: bool
    features: frozenset[str]
    open: Opener
    services: tuple[str, ...] = ()
    lock_ttl_ms: int | None = None  # None: the default (leases die with their process)

    @property
    def marks(self) -> list[pytest.MarkDecorator]:
        """The service markers (``redis``) of this pairing's tests."""
        return [getattr(pytest.mark, service) for service in self.services]


def _redis_stream() -> StreamStore:
    return RedisStream(url=redis_url())


def _redis_rollups() -> RollupStore:
    from event_meter.stores.redis.rollups import RedisRollups

    return RedisRollups(url=redis_url())


def _file_sqlite(root: Path, shared: dict[str, Any]) -> tuple[StreamStore, RollupStore]:
    from event_meter.stores.sqlite import SQLiteRollups

    return FileStream(root), SQLiteRollups(root / SQLITE_FILE)


def live_sqlite_leases(database: Path) -> list[str]:
    """Lease keys in the file whose expiry (this host's real clock, ms) has not passed."""
    import sqlite3

    from event_meter.stores.sqlite.lock import parse_lease, wall_ms

    if not database.exists():
        return []
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT key, value FROM event_meter_strings WHERE key LIKE '%process_lock%'"
        ).fetchall()
    except sqlite3.OperationalError:  # no tables yet
        return []
    finally:
        conn.close()
    now = wall_ms()
    return [key for key, value in rows if (lease := parse_lease(value)) and lease[0] > now]


def settle_sqlite(database: Path) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while held := live_sqlite_leases(database):
        assert time.monotonic() < deadline, f"leases never expired: {held}"
        time.sleep(0.01)  # polling the lease rows, bounded by the deadline


def _shared(shared: dict[str, Any], key: str, make: Callable[[], Any]) -> Any:
    if key not in shared:
        shared[key] = make()
    return shared[key]


PAIRINGS: Final = (
    Pairing(
        "file->file",
        True,
        frozenset({FILE_STREAM, FILE_ROLLUPS, PARALLEL_READERS}),
        lambda root, shared: (FileStream(root), FileRollups(root)),
    ),
    Pairing(
        "file->redis",
        True,
        frozenset({FILE_STREAM, REDIS_ROLLUPS, PARALLEL_READERS, OVERLAPPING}),
        lambda root, shared: (FileStream(root), _redis_rollups()),
        services=("redis",),
        lock_ttl_ms=REDIS_LOCK_TTL_MS,
    ),
    Pairing(
        "redis->redis",
        True,
        frozenset({REDIS_STREAM, REDIS_ROLLUPS, OVERLAPPING}),
        lambda root, shared: (_redis_stream(), _redis_rollups()),
        services=("redis",),
        lock_ttl_ms=REDIS_LOCK_TTL_MS,
    ),
    Pairing(
        "file->postgres",
        True,
        frozenset({FILE_STREAM, POSTGRES_ROLLUPS, PARALLEL_READERS, OVERLAPPING}),
        open_file_postgres,
        services=("postgres",),
        lock_ttl_ms=POSTGRES_LOCK_TTL_MS,
    ),
    Pairing(
        "file->sqlite",
        True,
        frozenset({FILE_STREAM, SQLITE_ROLLUPS, PARALLEL_READERS}),
        _file_sqlite,
        lock_ttl_ms=SQLITE_LOCK_TTL_MS,
    ),
    Pairing(
        "file->memory",
        False,
        frozenset({FILE_STREAM, PARALLEL_READERS, OVERLAPPING}),
        lambda root, shared: (FileStream(root), _shared(shared, "rollups", MemoryRollups)),
    ),
    Pairing(
        "memory->memory",
        False,
        frozenset({PARALLEL_READERS, OVERLAPPING}),
        lambda root, shared: (
            _shared(shared, "stream", MemoryStream),
            _shared(shared, "rollups", MemoryRollups),
        ),
    ),
)
DURABLE: Final = tuple(p for p in PAIRINGS if p.durable)


@dataclass
class Storage:
    """One storage place of a pairing; ``meter()`` opens it as a fresh process would."""

    pairing: Pairing
    root: Path
    clock: Any
    namespace: str
    _shared: dict[str, Any] = field(default_factory=dict)
    _opened: list[StreamStore | RollupStore] = field(default_factory=list)

    def meter(self) -> EventMeter:
        stream, rollups = self.pairing.open(self.root, self._shared)
        self._opened += [stream, rollups]
        options: dict[str, Any] = {}
        if self.pairing.lock_ttl_ms is not None:
            options["lock_ttl"] = self.pairing.lock_ttl_ms / 1000
        return EventMeter(
            namespace=self.namespace,
            stream_storage=stream,
            rollup_storage=rollups,
            clock=self.clock,
            **options,
        )

    def settle(self) -> None:
        """Wait until no lease of the namespace is held (bounded; polls, never sleeps blind).

        Redis, PostgreSQL and SQLite leases outlive a killed holder: they stay
        until their short ``lock_ttl`` expires. File locks die with their process.
        """
        if "postgres" in self.pairing.services:
            settle_postgres(self._shared)  # see crash/postgres_pairing.py
        if SQLITE_ROLLUPS in self.pairing.features:
            settle_sqlite(self.root / SQLITE_FILE)
        if "redis" not in self.pairing.services:
            return
        import redis

        from event_meter.stores.redis._client import glob_escape

        pattern = f"{glob_escape(self.namespace)}:*_lock*"
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        with redis.Redis.from_url(redis_url()) as client:
            while held := list(client.scan_iter(match=pattern, count=1_000)):
                assert time.monotonic() < deadline, f"leases never expired: {held}"
                time.sleep(0.01)

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()

    def leftovers(self, meter: EventMeter) -> list[str]:
        """What is left of the stream (rows, claimed files, offsets) and of journals."""
        found: list[str] = []
        stream, rollups = meter.stream, meter.rollups
        if isinstance(stream, FileStream):
            dirs = StreamDirs.of(stream.path, EVENT)
            for folder in (dirs.logs, dirs.processing):
                if folder.is_dir():
                    found += [f"{folder.name}/{name}" for name in sorted(os.listdir(folder))]
        elif isinstance(stream, MemoryStream):
            found += [f"memory row {n}" for n in range(stream.pending(EVENT))]
        elif isinstance(stream, RedisStream):
            found += [f"redis row {n}" for n in range(stream.pending(EVENT))]  # XLEN
        if isinstance(rollups, FileRollups):
            for ref in _refs(meter):
                journals = ReportLayout(rollups.path, ref).journal_dir
                if journals.is_dir():
                    found += [f"journal/{name}" for name in sorted(os.listdir(journals))]
        elif "redis" in self.pairing.services:
            found += _redis_journal(rollups, _refs(meter))
        return found


def _redis_journal(rollups: RollupStore, refs: list[ReportRef]) -> list[str]:
    """The batch ids left in each report's journal hash (``HKEYS``)."""
    import redis

    from event_meter.stores.redis.rollups import RedisRollups

    assert isinstance(rollups, RedisRollups)
    with redis.Redis.from_url(redis_url(), decode_responses=True) as client:
        return [
            f"journal/{batch_id}"
            for ref in refs
            for batch_id in sorted(client.hkeys(rollups.keys(ref).journal()))
        ]


def _refs(meter: EventMeter) -> list[ReportRef]:
    return [
        ReportRef(meter.config.namespace, name, version)
        for name, version in meter.rollups.list_reports(meter.config.namespace)
    ]


def harmless(leftover: str) -> bool:
    """Leftovers a kill may leave for good and that never affect counts.

    An orphan ``.offset`` (killed between unlinking a finished data file and its
    offset; housekeeping drops it once its claim lock is an hour old) and the temp
    file of an atomic write that was killed half way (never read: names starting
    with a dot are skipped by every listing; nothing removes them either).
    """
    folder, _, name = leftover.rpartition("/")
    if name.startswith("."):
        return folder in ("processing", "journal")
    return folder == "processing" and name.endswith(".offset")


# -- processes ------------------------------------------------------------------------


def fork(body: Callable[[], None]) -> int:
    """Run ``body`` in a child that always leaves through ``os._exit`` (0, or 70 on error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            body()
            code = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(code)
    return pid


def wait(pid: int) -> str:
    """``killed`` (SIGKILL), ``exited`` (code 0) or a description of anything else."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "exited"
    return f"status {status:#x}"
