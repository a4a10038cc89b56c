"""Crash safety of ``file->sqlite`` inside the apply transaction and around its lease.

The generic points (before apply, after apply, after delete before forget, and the
file stream's own) already run on ``file->sqlite`` through ``PAIRINGS``. This
module adds the points inside the ONE ``BEGIN IMMEDIATE`` transaction of an apply:

- ``before-rollups``: the write lock is held, nothing is written yet;
- ``before-state``: the rollup rows are upserted, the interval state is not;
- ``before-markers``: rollups and state are written, the markers are not;
- ``before-commit``: every statement ran, COMMIT has not.

At each one the processor is SIGKILLed (a forked child) or raises. Just before,
the committed state of the three tables is saved (read on a separate connection:
WAL readers see the last commit); right after, it must be identical (the WAL
frames of the killed transaction are ignored by the next opener). Then one
processor or three competing ones retry, and every bucket must equal the truth.

A lease taken over mid-pass ends the pass in ``LockLostError``; the retries count
exactly.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

import pytest

from crash.pairings import PAIRINGS, SQLITE_FILE, Pairing, Storage
from crash.points import CrashPoint
from crash.scenarios import (
    REPORTS,
    compete,
    crash_in_child,
    crash_inside_apply,
    finish_and_check,
    lose_lease_after_apply,
    recorded,
)
from crash.sqlite_points import WHERE, committed
from crash.sqlite_points import in_apply as in_apply_at
from crash.workload import BATCH_SIZE, EVENT, interval_report
from event_meter._keys import ReportRef
from event_meter.errors import LockLostError
from support import FakeClock

SQLITE: Final = next(p for p in PAIRINGS if p.name == "file->sqlite")
AT: Final = 3  # the third apply: rows before it are applied, rows after it are pending

pytestmark = pytest.mark.parametrize("pairing", [pytest.param(SQLITE, id=SQLITE.name)])


def in_apply(where: str, snapshot: Path, at: int = AT) -> CrashPoint:
    return in_apply_at(where, snapshot, at)


def _jsonable(state: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(state)))


def assert_rolled_back(storage: Storage, snapshot: Path) -> None:
    """The committed state equals the one saved just before the crash inside the apply."""
    assert snapshot.exists(), "the crash point was never reached"
    before = json.loads(snapshot.read_text())
    assert before["rollups"], "the crash should follow applied batches"
    assert _jsonable(committed(storage.root / SQLITE_FILE)) == before


# -- killed or failed inside the apply transaction ---------------------------------------------


@pytest.mark.parametrize("where", WHERE)
def test_kill_inside_the_apply_transaction_then_retry(
    pairing: Pairing, where: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    crash_inside_apply(
        pairing,
        interval_report(),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=True,
    )


@pytest.mark.parametrize("report_kind", sorted(REPORTS))
@pytest.mark.parametrize("where", ["before-rollups", "before-markers", "before-commit"])
def test_kill_inside_the_apply_transaction_then_competing_retries(
    pairing: Pairing,
    where: str,
    report_kind: str,
    tmp_path: Path,
    clock: FakeClock,
    namespace: str,
) -> None:
    crash_inside_apply(
        pairing,
        REPORTS[report_kind](),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=True,
        compete_seed=len(where) * 7 + len(report_kind),
    )


@pytest.mark.parametrize("where", WHERE)
def test_exception_inside_the_apply_transaction_then_retry(
    pairing: Pairing, where: str, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    crash_inside_apply(
        pairing,
        interval_report(),
        partial(in_apply, where),
        assert_rolled_back,
        tmp_path,
        clock,
        namespace,
        kill=False,
    )


def test_a_transaction_killed_in_the_first_apply_leaves_no_row(
    pairing: Pairing, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """Killed just before the first COMMIT: no rollup, state or marker row exists."""
    report = interval_report()
    crash = in_apply("before-commit", tmp_path / "before-crash.json", at=1)
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        assert crash_in_child(storage, report, crash) == "killed"
        after = committed(storage.root / SQLITE_FILE)
        assert (after["rollups"], after["markers"]) == ([], [])
        assert [key for key, _ in after["strings"]] == [
            ReportRef(namespace, EVENT, 1).definition_key()
        ]
        finish_and_check(storage, report)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_repeated_kills_inside_and_around_the_transaction(
    pairing: Pairing, seed: int, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    """Kill at a seeded place of a seeded apply, again and again, then compete and finish."""
    rng = random.Random(seed)
    report = interval_report()
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        for round_no in range(4):
            where = rng.choice(WHERE)
            crash = in_apply(where, tmp_path / f"snapshot-{round_no}.json", at=rng.randint(1, 2))
            assert crash_in_child(storage, report, crash) in ("killed", "exited")
        compete(storage, report, seed=seed)
        finish_and_check(storage, report)


# -- a lease lost mid-pass ---------------------------------------------------------------------


def _set_lease_row(storage: Storage, namespace: str, value: str | None) -> None:
    key = ReportRef(namespace, EVENT, 1).process_lock_key()
    conn = sqlite3.connect(storage.root / SQLITE_FILE, isolation_level=None, timeout=10)
    try:
        if value is None:
            conn.execute("DELETE FROM event_meter_strings WHERE key = ?", (key,))
        else:
            conn.execute("UPDATE event_meter_strings SET value = ? WHERE key = ?", (value, key))
    finally:
        conn.close()


def test_a_lease_taken_over_mid_pass_raises_and_the_retries_count_exactly(
    pairing: Pairing, tmp_path: Path, clock: FakeClock, namespace: str
) -> None:
    report = interval_report()
    with recorded(pairing, tmp_path / "data", clock, namespace) as storage:
        meter = storage.meter()
        thief = f"{int(time.time() * 1000) + 600_000}:thief"
        with pytest.MonkeyPatch.context() as mp:
            lose_lease_after_apply(
                mp, meter, 2, lambda _: _set_lease_row(storage, namespace, thief)
            )
            with pytest.raises(LockLostError):
                meter.process_pending(report, batch_size=BATCH_SIZE)
        assert meter.process_pending(report, batch_size=BATCH_SIZE).locked  # the thief holds it
        _set_lease_row(storage, namespace, None)  # the thief finished and released it
        compete(storage, report, seed=5)
        finish_and_check(storage, report)
