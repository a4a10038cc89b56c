"""Crash sequences: repeated kills, a kill inside a partly consumed file, and a
processor that picks up the rows of one that failed half way through an apply."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from crash.pairings import DURABLE, FILE_ROLLUPS, PAIRINGS, PARALLEL_READERS, REDIS_ROLLUPS, Pairing
from crash.points import (
    REDIS_STEPS,
    CrashError,
    CrashPoint,
    apply_step,
    armed,
    fail,
    point,
    redis_apply_step,
)
from crash.scenarios import (
    REPORTS,
    compete,
    crash_in_child,
    finish_and_check,
    random_point,
    recorded,
)
from crash.workload import BATCH_SIZE, interval_report
from support import FakeClock

_REPEATED = [
    pytest.param(pairing, id=pairing.name, marks=pairing.marks)
    for pairing in DURABLE
    if pairing.name in ("file->file", "redis->redis")
]


@pytest.mark.parametrize("report_kind", sorted(REPORTS))
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("pairing", _REPEATED)
def test_repeated_kills(
    pairing: Pairing, seed: int, report_kind: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """Kill at point N, the retry at point M, ... (seeded), then competing and clean passes."""
    rng = random.Random(seed)
    report = REPORTS[report_kind]()
    with recorded(pairing, tmp_path, clock, namespace) as storage:
        outcomes = [
            crash_in_child(storage, report, random_point(rng, storage.pairing, latest=2))
            for _ in range(6)
        ]
        # Each kill stops within two batches, so several rounds find rows left to crash on.
        assert set(outcomes) <= {"killed", "exited"}, outcomes
        assert outcomes[:4] == ["killed"] * 4, outcomes
        compete(storage, report, seed=seed)
        finish_and_check(storage, report)


def _offsets(storage: Any) -> list[str]:
    return [x for x in storage.leftovers(storage.meter()) if x.endswith(".offset")]


@pytest.mark.parametrize(
    "crash",
    ["after-delete-before-forget", "delete-before-offset-write", "delete-torn-offset-write"],
)
def test_kill_inside_a_partly_consumed_file(
    crash: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """The kill leaves a file in ``processing/`` with rows before and after the offset."""
    report = interval_report()
    with recorded(DURABLE[0], tmp_path, clock, namespace) as storage:
        assert crash_in_child(storage, report, point(crash)) == "killed"
        processing = [x for x in storage.leftovers(storage.meter()) if x.endswith(".jsonl")]
        assert any(x.startswith("processing/") for x in processing), processing
        if crash == "after-delete-before-forget":
            assert _offsets(storage), "the batch should have ended inside a file"
        finish_and_check(storage, report)


def _overlap_crashes(pairing: Pairing) -> list[CrashPoint]:
    if FILE_ROLLUPS in pairing.features:
        return [apply_step(1, s) for s in (1, 2, 5)]
    if REDIS_ROLLUPS in pairing.features:
        return [redis_apply_step(label, at=1) for label in REDIS_STEPS]
    return [point("after-apply")]


def _overlap_cases() -> list[Any]:
    """Only pairings whose stream lets two processors read one event's rows at once.

    The Redis stream does not: its per-event read lease admits one reader at a
    time by design, so processor B would hold the lease and A could not start
    (``redis->redis`` is left out; its failed applies are replayed by the kill
    and exception scenarios instead). ``file->redis`` runs it.
    """
    cases = []
    for pairing in PAIRINGS:
        if PARALLEL_READERS not in pairing.features:
            continue
        for crash in _overlap_crashes(pairing):
            for later_batch in (BATCH_SIZE, 10):
                name = f"{pairing.name}-{crash.name}-then-batch{later_batch}"
                cases.append(
                    pytest.param(pairing, crash, later_batch, id=name, marks=pairing.marks)
                )
    return cases


@pytest.mark.parametrize(("pairing", "failing", "later_batch"), _overlap_cases())
def test_rows_of_a_failed_apply_read_by_a_running_processor(
    pairing: Pairing,
    failing: CrashPoint,
    later_batch: int,
    tmp_path: Path,
    clock: FakeClock,
    namespace: str,
) -> None:
    """Two overlapping passes of a report without interval rules (no report lock).

    Processor B has started (its ``recover`` found nothing) when processor A fails
    inside an apply (after its journal and some files) and releases its rows. B's
    next read takes them, in a batch that may differ from A's. B must not count
    rows that A's journal counts again when it is replayed.
    """
    report = REPORTS["counts"]()
    with recorded(pairing, tmp_path, clock, namespace) as storage:
        first, second = storage.meter(), storage.meter()
        original_read = second.stream.read
        calls = [0]

        def read(name: str, limit: int) -> Any:
            calls[0] += 1
            if calls[0] == 1:  # B is past its recover: now A fails half way
                with armed(first, failing, fail) as trigger, pytest.raises(CrashError):
                    first.process_pending(report, batch_size=BATCH_SIZE)
                assert trigger.fired
            return original_read(name, limit)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(second.stream, "read", read)
            second.process_pending(report, batch_size=later_batch)
        finish_and_check(storage, report)
