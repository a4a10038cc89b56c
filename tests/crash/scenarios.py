"""The crash-safety scenarios as functions over a ``Storage`` (SPEC 9, the last MUST).

Each scenario records the workload, crashes somewhere, retries, and checks the
rollups against the truth folded by ``crash.workload``. Tests choose the pairing
and the crash point; nothing here knows which backend it runs on.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any

import pytest

from crash.pairings import DURABLE, Pairing, Storage, fork, harmless, wait
from crash.points import (
    POINTS,
    CrashError,
    CrashPoint,
    apply_step,
    armed,
    fail,
    kill,
    watch_apply_writes,
)
from crash.workload import (
    BATCH_SIZE,
    Truth,
    assert_exact,
    counts_report,
    fold,
    interval_report,
    record,
    workload,
)
from event_meter import EventMeter, Report
from event_meter.stores._lease import KeptLease
from support import FakeClock

REPORTS = {"intervals": interval_report, "counts": counts_report}


@contextmanager
def recorded(pairing: Pairing, root: Path, clock: FakeClock, namespace: str) -> Iterator[Storage]:
    """A storage place holding the whole workload, past the claim grace; closed after."""
    storage = Storage(pairing, root, clock, namespace)
    try:
        record(storage.meter(), workload(), clock)
        storage.close()  # the recording process is done: its log files are closed
        yield storage
    finally:
        storage.close()


def truth_of(report: Report) -> Truth:
    return fold(workload(), intervals=bool(report.intervals))


COMPETE_TIMEOUT_S = 15.0


def crash_in_child(storage: Storage, report: Report, crash: CrashPoint) -> str:
    """One processor that is SIGKILLed at ``crash``; its outcome (see ``wait``).

    It starts once the leases of earlier killed processors expired (``settle``).
    """
    storage.settle()

    def body() -> None:
        meter = storage.meter()
        with armed(meter, crash, kill):
            meter.process_pending(report, batch_size=BATCH_SIZE)

    return wait(fork(body))


def crash_in_process(storage: Storage, report: Report, crash: CrashPoint) -> None:
    """One processor that raises ``CrashError`` at ``crash`` and retries at once, in-process."""
    meter = storage.meter()
    with armed(meter, crash, fail) as trigger:
        try:
            meter.process_pending(report, batch_size=BATCH_SIZE)
        except CrashError:
            pass  # an error in delete or forget is logged and swallowed by design
    assert trigger.fired, f"{crash.name} was never reached ({trigger.count} ticks)"


def compete(storage: Storage, report: Report, seed: int, processors: int = 3) -> list[str]:
    """``processors`` children at once; all but the last die at a seeded random point.

    A child that finds the work locked tries again until it gets the lock (a
    killed holder's Redis lease expires after the pairing's short ``lock_ttl``),
    so the competitors take over from each other and the planned kills happen.
    """
    rng = random.Random(seed)
    plans = [random_point(rng, storage.pairing) for _ in range(processors - 1)] + [None]

    def until_not_locked(meter: EventMeter) -> None:
        deadline = time.monotonic() + COMPETE_TIMEOUT_S
        while meter.process_pending(report, batch_size=BATCH_SIZE).locked:
            assert time.monotonic() < deadline, "the lock was never free"
            time.sleep(0.01)  # polling for the lock, bounded by the deadline

    def body(crash: CrashPoint | None) -> None:
        meter = storage.meter()
        if crash is None:
            until_not_locked(meter)
            return
        with armed(meter, crash, kill):
            until_not_locked(meter)

    pids = [fork(partial(body, crash)) for crash in plans]
    outcomes = [wait(pid) for pid in pids]
    assert set(outcomes) <= {"killed", "exited"}, outcomes
    return outcomes


def random_point(rng: random.Random, pairing: Pairing, latest: int = 5) -> CrashPoint:
    """A crash point the pairing supports, at occurrence (or apply) 1 to ``latest``."""
    choices = [p for p in POINTS if p.runs_on(pairing)]
    step = apply_step(rng.randint(1, latest), rng.randint(0, 12), torn=rng.random() < 0.3)
    if step.runs_on(pairing):
        choices += [step, step]  # the most places to stop at: chosen more often
    crash = rng.choice(choices)
    return crash if crash is step else replace(crash, at=rng.randint(1, latest))


def crash_inside_apply(
    pairing: Pairing,
    report: Report,
    crash_at: Callable[[Path], CrashPoint],
    rolled_back: Callable[[Storage, Path], None],
    root: Path,
    clock: FakeClock,
    namespace: str,
    *,
    kill: bool,
    compete_seed: int | None = None,
) -> None:
    """Crash once at ``crash_at(snapshot)`` inside an apply transaction: SIGKILL in a
    child (``kill``) or an exception here. ``rolled_back(storage, snapshot)`` checks the
    committed state is the one saved just before; then one processor (or, with
    ``compete_seed``, three competing ones first) finishes, and the rollups are exact."""
    snapshot = root / "before-crash.json"
    with recorded(pairing, root / "data", clock, namespace) as storage:
        if kill:
            assert crash_in_child(storage, report, crash_at(snapshot)) == "killed"
        else:
            crash_in_process(storage, report, crash_at(snapshot))
        rolled_back(storage, snapshot)
        if compete_seed is not None:
            compete(storage, report, seed=compete_seed)
        finish_and_check(storage, report)


def finish_and_check(storage: Storage, report: Report) -> None:
    """A clean pass drains the stream; rollups equal the truth; a further pass finds nothing."""
    storage.settle()
    meter = storage.meter()
    result = meter.process_pending(report, batch_size=BATCH_SIZE)
    assert result.complete, result
    assert not result.locked, result
    assert_exact(meter, report, truth_of(report))
    again = meter.process_pending(report, batch_size=BATCH_SIZE)
    assert (again.processed, again.skipped_already_processed, again.malformed) == (0, 0, 0), again
    assert again.complete, again
    assert not again.locked, again
    left = storage.leftovers(meter)
    assert all(harmless(item) for item in left), f"left behind: {left}"


@cache
def apply_writes(report_kind: str = "intervals") -> tuple[int, tuple[str, ...]]:
    """The apply with the most file writes in a clean run, and the labels of its steps.

    A dry run of the workload on ``file->file``; the run is deterministic, so the
    same apply makes the same writes in every test.
    """
    seen: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        clock = FakeClock()
        with recorded(DURABLE[0], Path(folder), clock, "crash:dry-run") as storage:
            meter = storage.meter()
            with pytest.MonkeyPatch.context() as mp:
                watch_apply_writes(
                    mp, meter, lambda n, label, _: seen.setdefault(n, []).append(label)
                )
                meter.process_pending(REPORTS[report_kind](), batch_size=BATCH_SIZE)
    number = max(seen, key=lambda n: (len(seen[n]), -n))
    return number, tuple(seen[number])


def lose_lease_after_apply(
    mp: pytest.MonkeyPatch, meter: EventMeter, at: int, lose: Callable[[KeptLease], None]
) -> None:
    """Call ``lose(report lease)`` right after apply number ``at`` of ``meter`` returned."""
    store = meter.rollups
    leases: list[KeptLease] = []
    real_lock, real_apply = store.try_report_lock, store.apply
    applies = [0]

    def try_report_lock(*args: Any) -> Any:
        lease = real_lock(*args)
        if isinstance(lease, KeptLease):
            leases.append(lease)
        return lease

    def apply(*args: Any) -> None:
        real_apply(*args)
        applies[0] += 1
        if applies[0] == at:
            lose(leases[-1])

    mp.setattr(store, "try_report_lock", try_report_lock)
    mp.setattr(store, "apply", apply)
