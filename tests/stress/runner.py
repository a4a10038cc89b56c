"""Writers, processors and their supervisors for the stress suite.

Durable pairings (no ``memory`` store) run everything in forked processes:
writer processes, one process hosting writer threads, and processor processes
that the supervisor (the test process, which has no threads of its own) keeps
``PROCESSORS`` of alive. Each processor is armed with a seeded crash point of
``crash.points`` (``random_point``: before/after apply, inside a file-rollups
apply, torn writes, inside the file stream's delete, Redis apply steps, and for
``file->sqlite`` half the time a statement inside the apply transaction:
``crash.sqlite_points``) and is SIGKILLed when it reaches it; a killed processor
is replaced at once, the next ones armed until ``kills`` processors died, then
unarmed ones drain the rest.
The "moment" is a count of hook calls, never a timer.

Pairings with a ``memory`` store live in one process: their processors are
threads (``stress.threads``). Writers of the memory stream are threads too;
writers of the file stream are processes and threads as above.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from crash.pairings import (
    FILE_ROLLUPS,
    PARALLEL_READERS,
    POSTGRES_ROLLUPS,
    REDIS_STREAM,
    SQLITE_ROLLUPS,
    Pairing,
    Storage,
    fork,
)
from crash.pairings import PAIRINGS as CRASH_PAIRINGS
from crash.points import CrashPoint, armed, kill
from crash.postgres_pairing import POSTGRES_LOCK_TTL_MS
from crash.scenarios import random_point
from crash.sqlite_points import WHERE as SQLITE_WHERE
from crash.sqlite_points import in_apply as sqlite_in_apply
from crash.workload import counts_report, interval_report
from event_meter import EventMeter, LockLostError, Report
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file._stream_layout import StreamDirs, minute_name
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.memory import MemoryStream
from stress.plan import (
    COUNTS_EVENT,
    END,
    INTERVAL_EVENT,
    START,
    Gatekeeper,
    Plan,
    Slots,
    Writer,
    WriterClock,
    epoch_us,
)
from support import make_stream, redis_url

PROCESSES: Final = 3
"""Writer processes, plus one process hosting ``THREADS`` writer threads."""
THREADS: Final = 3
PROCESSORS: Final = 2
"""Processors alive at once (processes, or threads for in-process pairings)."""
RESULTS: Final[list[dict[str, Any]]] = []
"""The figures of every pairing run in this session (printed by the conftest)."""
POLL_S: Final = 0.002
"""Polling period while waiting for writers, a lease or a child (bounded by a deadline)."""


def reports() -> dict[str, Report]:
    """Event name -> its report: intervals (serial, locked) and counts (parallel)."""
    counts = Report(COUNTS_EVENT)  # the crash suite's counts report, on its own event
    for index in counts_report().indexes:
        if index:
            counts.index_by(*index)
    return {INTERVAL_EVENT: interval_report(), COUNTS_EVENT: counts}


def _memory_file(root: Path, shared: dict[str, Any]) -> tuple[StreamStore, RollupStore]:
    if "stream" not in shared:
        shared["stream"] = MemoryStream()
    return shared["stream"], FileRollups(root)


def _redis_postgres(root: Path, shared: dict[str, Any]) -> tuple[StreamStore, RollupStore]:
    import pg_server
    from event_meter.stores.postgres import PostgresRollups
    from event_meter.stores.redis.stream import RedisStream

    dsn = pg_server.session_server().dsn
    rollups = PostgresRollups(url=dsn, table_prefix=shared["table_prefix"])
    return RedisStream(url=redis_url()), rollups


_EXTRA: Final = (
    Pairing("memory->file", False, frozenset({FILE_ROLLUPS, PARALLEL_READERS}), _memory_file),
    Pairing(
        "redis->postgres",
        True,
        frozenset({REDIS_STREAM, POSTGRES_ROLLUPS}),
        _redis_postgres,
        services=("redis", "postgres"),
        lock_ttl_ms=POSTGRES_LOCK_TTL_MS,
    ),
)


def pairing_of(stream_kind: str, rollup_kind: str) -> Pairing:
    """The crash suite's pairing of that name, or one of the two it does not run."""
    name = f"{stream_kind}->{rollup_kind}"
    return next(p for p in (*CRASH_PAIRINGS, *_EXTRA) if p.name == name)


@dataclass
class Figures:
    """What one pairing's run did (printed as one JSON line per pairing)."""

    pairing: str
    events: int = 0
    writers: str = ""
    kills: int = 0
    kills_while_writing: int = 0
    kill_kind: str = "SIGKILL"
    malformed: int = 0
    lost: int = 0
    double_counted: int = 0
    seconds: float = 0.0
    processors_started: int = 0
    failures: list[str] = field(default_factory=list)


# -- writers ----------------------------------------------------------------------------


def write(writer: Writer, stream: StreamStore, clock: WriterClock) -> None:
    """Append the writer's rows in order, ``clock`` at each row's finish time.

    ``clock`` must be the clock ``stream`` is bound to (a file stream names its
    files after it), except for the shared memory stream, which has no clock.
    """
    for at, event, body, _ in writer.appends:
        clock.slots.wait_gate(at)
        clock.set_us(at)
        stream.append(event, body)
    clock.slots.finish(clock.slot)


def write_own(plan: Plan, kind: str, root: Path, namespace: str, slots: Slots, slot: int) -> None:
    """``write`` through a stream store of the writer's own (file names, connection)."""
    stream = make_stream(kind, root)
    clock = WriterClock(slots, slot)
    stream.bind(namespace=namespace, clock=clock)
    try:
        write(plan.writers[slot], stream, clock)
    finally:
        stream.close()


def run_threads(bodies: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def fork_writers(
    plan: Plan, stream_kind: str, root: Path, namespace: str, slots: Slots
) -> list[int]:
    """``PROCESSES`` writer processes and one process running ``THREADS`` writer threads."""
    own = partial(write_own, plan, stream_kind, root, namespace, slots)
    pids = [fork(partial(own, slot)) for slot in range(PROCESSES)]

    def host() -> None:
        errors = run_threads([partial(own, slot) for slot in range(PROCESSES, len(slots))])
        if errors:
            raise errors[0]

    pids.append(fork(host))
    return pids


def junk_files(root: Path) -> int:
    """A hand-written log file per event with three undecodable lines; the row count."""
    start = epoch_us(START) // 1_000_000 + 60
    lines = b'not json\n{"id": 2}\n[1, 2]\n'
    for event in reports():
        logs = StreamDirs.of(root, event).logs
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{minute_name(start)}-junk-1-0badf00d.jsonl").write_bytes(lines)
    return 3 * len(reports())


# -- processing ---------------------------------------------------------------------------


def writers_done(slots: Slots) -> bool:
    return bool(min(slots.values) >= epoch_us(END))


def drain(meter: EventMeter, batch: int, slots: Slots, stop: Callable[[], bool]) -> None:
    """Process both reports until the writers are done and nothing is left (or ``stop``).

    A lease lost on a busy machine (a refresh came too late) stops that pass with
    ``LockLostError`` and releases its rows, by design: this loop goes on, as a
    worker would.
    """
    while not stop():
        progress = locked = False
        for report in reports().values():
            try:
                result = meter.process_pending(report, batch_size=batch)
            except LockLostError:
                locked = True
                continue
            progress = progress or bool(result.processed or result.skipped_already_processed)
            locked = locked or result.locked
        if not progress and not locked and writers_done(slots):
            return
        if not progress:
            time.sleep(POLL_S)  # waiting for a writer's minute or a lease: polling


def batch_sizes(count: int) -> tuple[int, ...]:
    scale = max(1, count // 10_000)
    return tuple(n * scale for n in (10, 30, 100))


def kill_point(rng: random.Random, pairing: Pairing) -> CrashPoint:
    """A seeded crash point for a processor of ``pairing`` (an apply number or tick 1-3)."""
    if SQLITE_ROLLUPS in pairing.features and rng.random() < 0.5:
        return sqlite_in_apply(rng.choice(SQLITE_WHERE), None, rng.randint(1, 3))
    return random_point(rng, pairing, latest=3)


def supervise_processes(
    storage: Storage,
    slots: Slots,
    gate: Gatekeeper,
    writers: list[int],
    figures: Figures,
    kills: int,
    seed: int,
    deadline: float,
) -> None:
    """Keep ``PROCESSORS`` processors alive; arm them until ``kills`` were killed."""
    rng = random.Random(seed)
    sizes = batch_sizes(figures.events)
    live: dict[int, bool] = {}  # pid -> armed

    def spawn() -> None:
        crash = kill_point(rng, storage.pairing) if figures.kills < kills else None
        batch = rng.choice(sizes)
        live[fork(partial(_processor, storage, crash, batch, slots))] = crash is not None
        figures.processors_started += 1

    pending = set(writers)
    try:
        for _ in range(PROCESSORS):
            spawn()
        while live or pending:
            assert time.monotonic() < deadline, f"stress run timed out: {figures}"
            gate.tick(figures.kills)
            reaped = False
            for pid in [*pending, *live]:
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                reaped = True
                outcome = _outcome(status)
                if pid in pending:
                    pending.discard(pid)
                    # Its clock would hold the watermark back for good: stop here.
                    assert outcome == "exited", f"a writer ended with {outcome}"
                    continue
                del live[pid]
                if outcome == "killed":
                    figures.kills += 1
                    figures.kills_while_writing += not writers_done(slots)
                    spawn()  # there was work where it died
                elif outcome != "exited":
                    figures.failures.append(f"processor {outcome}")
                    spawn()
            if not reaped:
                time.sleep(POLL_S)  # children run on their own; polling their exit
    finally:
        for pid in [*pending, *live]:  # only after a failure: our own children
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _processor(storage: Storage, crash: CrashPoint | None, batch: int, slots: Slots) -> None:
    meter = storage.meter()
    if crash is None:
        drain(meter, batch, slots, lambda: False)
        return
    with armed(meter, crash, kill):
        drain(meter, batch, slots, lambda: False)


def _outcome(status: int) -> str:
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "exited"
    return f"status {status:#x}"
