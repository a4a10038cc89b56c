"""Real faults under the file stores, part 1: a full disk and an unreadable file.

Each case records known events, injects the fault with the real file system (a
tmpfs mounted by the test, an unprivileged child for permissions), and then
proves the counts: every event whose line is intact is counted exactly once, and
everything else is accounted for. Damaged bytes are in ``test_file_damage``.

| case | what the user sees | result |
| --- | --- | --- |
| disk full, recording | failed ``WriteResult`` (``StorageError``, ENOSPC); no raise | exact |
| disk full, processing | ``StorageError`` "No space left on device" | next pass exact |
| unreadable stream file | a warning naming it; every other file processed | exact later |

"Exact" means every event whose line is intact counted once, and nothing else
counted; each test's docstring tells the details.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from crash.workload import BATCH_SIZE, assert_exact, fold, interval_report, workload
from crash.workload import record as record_workload
from event_meter import EventMeter, WriteResult
from event_meter._keys import ReportRef
from event_meter.errors import StorageError
from event_meter.event import Event
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file._stream_layout import StreamDirs
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from faults.disk import (
    PAGE,
    as_unprivileged,
    data_files,
    fill,
    give_to_unprivileged,
    resize,
    shared_dir,
    tmpfs,
)
from faults.events import (
    CUSTOMERS,
    MINUTE,
    NAME,
    STALE,
    YOUNG,
    assert_counts,
    quarantined,
    record,
    report,
)
from support import FakeClock

FAILED_WRITES: Final = 25


# -- 1. the stream's disk fills up while the application records -------------------------------


def test_a_full_disk_fails_writes_without_raising_and_loses_nothing(
    tmp_path: Path, clock: FakeClock, file_meters: Callable[..., EventMeter]
) -> None:
    """User sees: ``success()`` returns a falsy ``WriteResult`` carrying ``StorageError``
    (first "wrote a partial line", then ENOSPC), never an exception, and the event
    stays unrecorded so it can be finished again. Nothing lost: after the disk grows,
    the failed events are finished again and new ones recorded; processing counts
    every recorded event once, and the single partial line (the short write) waits
    while young and is quarantined as malformed once stale, so it is accounted for
    without being counted.
    """
    with tmpfs(tmp_path / "disk", "256k") as disk:
        meter = file_meters(disk, tmp_path / "rollups", clock)
        recorded: list[dict[str, Any]] = []
        failed: list[tuple[Event, WriteResult]] = []
        for i in itertools.count():
            assert i < 20_000, "a 256k disk never filled up"
            event = meter.start(NAME, customer=i % CUSTOMERS, n=f"{i:06d}")
            result = event.success()  # must never raise
            if result:
                assert result.payload is not None
                recorded.append(result.payload)
            else:
                failed.append((event, result))
                if len(failed) == FAILED_WRITES:
                    break

        assert "partial line" in str(failed[0][1].error)
        for event, result in failed:
            assert isinstance(result.error, StorageError)
            assert result.payload is None
            assert not event.recorded
        for _, result in failed[1:]:
            cause = result.error.__cause__ if result.error else None
            assert isinstance(cause, OSError)
            assert cause.errno == errno.ENOSPC
        dirs = StreamDirs.of(disk, NAME)
        # The file with the partial line, and one clean file kept for the next write:
        # a full disk must not leave an empty file behind for every failed write.
        assert len(data_files(dirs.logs)) == 2

        resize(disk, "4m")
        later: list[dict[str, Any]] = []  # into the kept file
        for event, _ in failed:
            retried = event.success()
            assert retried.recorded, retried.error
            assert retried.payload is not None
            later.append(retried.payload)
        later += record(meter, clock, 10, first=100_000)
        meter.stream.close()
        named_in_error = str(failed[0][1].error)
        partial, kept = sorted(data_files(dirs.logs), key=lambda f: f not in named_in_error)
        # One batch reads files in name order, which their random part decides.
        in_order = recorded + later if partial < kept else later + recorded

        clock.set(YOUNG)
        young = meter.process_pending(report())
        assert (young.processed, young.malformed) == (len(recorded) + len(later), 0)
        assert data_files(dirs.processing) == [partial]  # the partial line keeps its file

        clock.set(STALE)
        stale = meter.process_pending(report())
        assert (stale.processed, stale.malformed) == (1, 1)
        rows, meta = quarantined(dirs, partial)
        assert meta["reason"] == "incomplete last line"
        assert [row["reason"] for row in rows] == ["incomplete last line"]
        assert rows[0]["raw"].startswith('{"id":')
        assert data_files(dirs.logs) == data_files(dirs.processing) == []
        assert_counts(meter, in_order)


# -- 2. the rollups' disk fills up while a processor applies ------------------------------------


def _pass_on_a_full_disk(
    stream: Path, rollups: Path, disk: Path, pages: int, make: Callable[..., EventMeter]
) -> str:
    """Record the crash workload, fill ``disk`` up to ``pages`` free pages, process.

    Then free the space, process again and check every bucket against the truth.
    Returns where the first pass stopped: ``complete``, ``before-journal`` (nothing applied) or
    ``after-journal`` (a journaled apply stopped part way).
    """
    clock = FakeClock()
    meter = make(stream, rollups, clock)
    record_workload(meter, workload(), clock)
    meter.stream.close()
    ballast = fill(disk, pages * PAGE)
    layout = ReportLayout(rollups, ReportRef(meter.config.namespace, NAME, 1))
    error: StorageError | None = None
    try:
        meter.process_pending(interval_report(), batch_size=BATCH_SIZE)
    except StorageError as exc:
        error = exc
    outcome = "complete"
    if error is not None:
        assert "No space left on device" in str(error)
        assert str(disk) in str(error)
        journals = list(layout.journal_dir.glob("*.json")) if layout.base.exists() else []
        outcome = "after-journal" if journals else "before-journal"
    ballast.unlink()
    again = meter.process_pending(interval_report(), batch_size=BATCH_SIZE)
    assert (again.complete, again.locked) == (True, False)
    dirs = StreamDirs.of(stream, NAME)
    assert data_files(dirs.logs) == data_files(dirs.processing) == []
    assert_exact(meter, interval_report(), fold(workload(), intervals=True))
    return outcome


def test_a_full_disk_fails_processing_and_the_next_pass_is_exact(
    tmp_path: Path, file_meters: Callable[..., EventMeter]
) -> None:
    """User sees: ``process_pending`` raises ``StorageError`` saying "No space left on
    device" and naming the path, wherever the space ran out (the definition's temp
    file, the journal, a rollup or state file, a marker file). Nothing lost: the pass
    is repeated with 0, 1, 2, ... free pages until it fits; after each failure the
    space is freed, the next pass completes, the stream is empty and every minute
    and hour bucket, duration sum and interval sample equals the truth.
    """
    outcomes: list[str] = []
    with tmpfs(tmp_path / "disk", "1m") as disk:
        for pages in itertools.count():
            assert pages < 250, "the workload never fitted"
            rollups = disk / f"rollups-{pages}"
            outcome = _pass_on_a_full_disk(
                tmp_path / f"stream-{pages}", rollups, disk, pages, file_meters
            )
            shutil.rmtree(rollups)
            if outcome == "complete":
                break
            outcomes.append(outcome)
    assert {"before-journal", "after-journal"} <= set(outcomes), outcomes


# -- 3. a stream file the processor cannot read ------------------------------------------------


def _process_and_capture(stream: Path, rollups: Path, clock: FakeClock, namespace: str) -> Any:
    """One pass; its result and the warnings it logged (runs in the unprivileged child)."""
    warnings: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    handler = Capture()
    logging.getLogger("event_meter").addHandler(handler)
    meter = EventMeter(
        namespace=namespace,
        stream_storage=FileStream(stream, host="h"),
        rollup_storage=FileRollups(rollups),
        clock=clock,
    )
    try:
        return {"result": meter.process_pending(report()).to_dict(), "warnings": warnings}
    finally:
        logging.getLogger("event_meter").removeHandler(handler)
        meter.stream.close()


def test_an_unreadable_stream_file_does_not_block_the_others(
    namespace: str, file_meters: Callable[..., EventMeter]
) -> None:
    """User sees: a warning naming the file and "Permission denied" on every pass;
    the pass itself returns normally after processing every other file. Nothing
    lost: the file waits in ``processing/`` and is processed once readable.

    Root reads any file, so the processor runs in a child that dropped root for
    ``nobody``; the oldest file is ``chmod 000`` (a real ``EACCES`` from the kernel,
    as when a file was written by another user with a private mode).
    """
    with shared_dir() as root:
        stream, rollups = root / "stream", root / "rollups"
        clock = FakeClock(MINUTE)
        meter = file_meters(stream, rollups, clock)
        payloads: list[dict[str, Any]] = []
        for minute, count in enumerate((3, 4, 5)):  # one file per minute, oldest first
            clock.set(MINUTE + timedelta(minutes=minute))
            payloads += record(meter, clock, count, first=len(payloads))
        meter.stream.close()
        dirs = StreamDirs.of(stream, NAME)
        oldest = data_files(dirs.logs)[0]
        give_to_unprivileged(root)
        os.chmod(dirs.logs / oldest, 0)
        clock.set(MINUTE + timedelta(minutes=5))

        def process() -> Any:
            return _process_and_capture(stream, rollups, clock, namespace)

        for processed in (9, 0):  # skipped on every pass, never blocking the others
            outcome = as_unprivileged(process)
            assert outcome["result"]["processed"] == processed
            assert any(oldest in w and "Permission denied" in w for w in outcome["warnings"])
        assert data_files(dirs.processing) == [oldest]
        assert_counts(meter, payloads[3:])

        os.chmod(dirs.processing / oldest, 0o644)
        outcome = as_unprivileged(process)
        assert (outcome["result"]["processed"], outcome["warnings"]) == (3, [])
        assert data_files(dirs.logs) == data_files(dirs.processing) == []
        assert_counts(meter, payloads[3:] + payloads[:3])  # the oldest file came last
