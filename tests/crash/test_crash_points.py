"""A crash at each point of processing, then retries, ends with exact rollups (SPEC 9).

Every case: record the workload, crash one processor at the point, retry, then
compare every minute and hour bucket with the truth, check the stream is empty
and that one more pass processes and skips nothing.

- ``test_kill_*``: the processor is a forked child killed by SIGKILL at the point
  (durable pairings only); the retry is one processor, or three competing ones
  some of which are killed again at seeded random points.
- ``test_exception_*``: the point raises instead, and the same process retries.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crash.pairings import DURABLE, OVERLAPPING, PAIRINGS, Pairing
from crash.points import POINTS, CrashPoint, apply_step
from crash.scenarios import (
    REPORTS,
    apply_writes,
    compete,
    crash_in_child,
    crash_in_process,
    finish_and_check,
    recorded,
)
from crash.workload import interval_report
from support import FakeClock


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``step``: every write of the busiest apply of the workload, from a dry run."""
    if "step" in metafunc.fixturenames:
        number, labels = apply_writes()
        metafunc.parametrize(
            "step",
            range(len(labels)),
            ids=[f"apply{number}-step{i:02d}-{label}" for i, label in enumerate(labels)],
        )


def _cases(pairings: tuple[Pairing, ...]) -> list[object]:
    return [
        pytest.param(pairing, crash, id=f"{pairing.name}-{crash.name}", marks=pairing.marks)
        for pairing in pairings
        for crash in POINTS
        if crash.runs_on(pairing)
    ]


def _step(step: int, *, torn: bool = False) -> CrashPoint:
    return apply_step(apply_writes()[0], step, torn=torn)


@pytest.mark.parametrize(("pairing", "crash"), _cases(DURABLE))
def test_kill_then_retry(
    pairing: Pairing, crash: CrashPoint, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = interval_report()
    with recorded(pairing, tmp_path, clock, namespace) as storage:
        assert crash_in_child(storage, report, crash) == "killed"
        finish_and_check(storage, report)


def test_kill_inside_apply_then_retry(
    step: int, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """Killed after ``step`` writes of one apply (journal, files, markers, unlink).

    On odd steps the kill lands inside the write: half a temp file is left.
    """
    report = interval_report()
    crash = _step(step, torn=step % 2 == 1)
    with recorded(DURABLE[0], tmp_path, clock, namespace) as storage:
        assert crash_in_child(storage, report, crash) == "killed"
        journals = [x for x in storage.leftovers(storage.meter()) if x.startswith("journal/")]
        # Before the journal write nothing is journaled; after it, until the unlink, it is.
        assert bool([j for j in journals if not j.split("/")[1].startswith(".")]) == (step > 0)
        finish_and_check(storage, report)


@pytest.mark.parametrize("report_kind", sorted(REPORTS))
@pytest.mark.parametrize(("pairing", "crash"), _cases(DURABLE))
def test_kill_then_competing_retries(
    pairing: Pairing,
    crash: CrashPoint,
    report_kind: str,
    tmp_path: Path,
    clock: FakeClock,
    namespace: str,
) -> None:
    report = REPORTS[report_kind]()
    with recorded(pairing, tmp_path, clock, namespace) as storage:
        assert crash_in_child(storage, report, crash) == "killed"
        compete(storage, report, seed=len(crash.name) * 31 + len(report_kind))
        finish_and_check(storage, report)


@pytest.mark.parametrize("report_kind", sorted(REPORTS))
@pytest.mark.parametrize("where", ["first", "second", "third", "middle", "last-but-one", "last"])
def test_kill_inside_apply_then_competing_retries(
    where: str, report_kind: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = REPORTS[report_kind]()
    number, labels = apply_writes(report_kind)
    last = len(labels) - 1
    step = {"first": 0, "second": 1, "third": 2, "middle": last // 2, "last-but-one": last - 1}.get(
        where, last
    )
    with recorded(DURABLE[0], tmp_path, clock, namespace) as storage:
        assert crash_in_child(storage, report, apply_step(number, step)) == "killed"
        compete(storage, report, seed=step)
        finish_and_check(storage, report)


@pytest.mark.parametrize(("pairing", "crash"), _cases(PAIRINGS))
def test_exception_then_retry(
    pairing: Pairing, crash: CrashPoint, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = interval_report()
    with recorded(pairing, tmp_path, clock, namespace) as storage:
        crash_in_process(storage, report, crash)
        finish_and_check(storage, report)


def test_exception_inside_apply_then_retry(
    step: int, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = interval_report()
    with recorded(DURABLE[0], tmp_path, clock, namespace) as storage:
        crash_in_process(storage, report, _step(step))
        finish_and_check(storage, report)


@pytest.mark.parametrize("pairing", [pytest.param(p, id=p.name, marks=p.marks) for p in PAIRINGS])
def test_the_overlapping_feature_is_what_the_stores_do(pairing: Pairing, tmp_path: Path) -> None:
    """The overlap crash points run exactly on the pairings whose stores overlap batches."""
    stream, rollups = pairing.open(tmp_path, {})
    try:
        overlapping = stream.overlapping_batches and rollups.background_apply
        assert (OVERLAPPING in pairing.features) == overlapping
    finally:
        stream.close()
        rollups.close()
