"""Real faults under the file stores, part 2: damaged bytes on disk.

Stream files cut in the middle of a line, and garbage written over the rollup
store's own files (a rollup file, a marker file, a journal). Each case states
what the user sees and proves the counts of everything that could be kept.

| case | what the user sees | result |
| --- | --- | --- |
| cut mid last line | waits while young; stale: ``malformed=1``, quarantined | exact |
| two lines merged | ``malformed=1``, the merged line quarantined | exact |
| corrupt rollup file | a warning; read as empty; set aside on the next write | rest exact |
| corrupt marker file | ``StorageError`` naming it; nothing read or applied | exact |
| corrupt journal | an error log; set aside; its rows processed again | exact |

"Exact" means every event whose line is intact counted once, and nothing else
counted; each test's docstring tells the details.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Final

import pytest

from event_meter import EventMeter
from event_meter._keys import ReportRef
from event_meter.errors import StorageError
from event_meter.stores.file import _markers
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file._stream_layout import StreamDirs
from faults.disk import (
    data_files,
)
from faults.events import (
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

# -- 4. stream files cut in the middle of a line -----------------------------------------------


def test_a_file_cut_mid_last_line_waits_while_young_then_is_quarantined(
    tmp_path: Path, clock: FakeClock, file_meters: Callable[..., EventMeter]
) -> None:
    """User sees: while the file's minute ended less than 10 minutes ago, the cut
    line is just not processed yet (a writer may still finish it); once stale, the
    pass reports ``malformed=1`` and ``quarantine/`` holds the raw bytes with a
    ``.meta.json`` saying "incomplete last line". Nothing lost: the four intact
    lines are counted once and the cut one is accounted for, never counted.
    """
    clock.set(MINUTE)
    meter = file_meters(tmp_path / "stream", tmp_path / "rollups", clock)
    payloads = record(meter, clock, 5)
    meter.stream.close()  # the writer died
    dirs = StreamDirs.of(tmp_path / "stream", NAME)
    (file,) = data_files(dirs.logs)
    data = (dirs.logs / file).read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    os.truncate(dirs.logs / file, len(data) - len(last) // 2 - 1)

    clock.set(YOUNG)
    young = meter.process_pending(report())
    assert (young.processed, young.malformed) == (4, 0)
    assert data_files(dirs.processing) == [file]
    assert meter.process_pending(report()).processed == 0  # still waiting, not stalling

    clock.set(STALE)
    stale = meter.process_pending(report())
    assert (stale.processed, stale.malformed) == (1, 1)
    rows, meta = quarantined(dirs, file)
    assert (meta["reason"], meta["original_name"]) == ("incomplete last line", file)
    kept_half = last[: len(last) - len(last) // 2].decode()
    assert [(row["line"], row["raw"]) for row in rows] == [(5, kept_half)]
    assert data_files(dirs.processing) == []
    assert_counts(meter, payloads[:4])


@pytest.mark.parametrize("cut", ["truncated-under-a-live-writer", "newline-lost-mid-file"])
def test_a_line_cut_in_the_middle_merges_with_the_next_and_only_that_line_is_lost(
    tmp_path: Path, clock: FakeClock, file_meters: Callable[..., EventMeter], cut: str
) -> None:
    """User sees: ``malformed=1`` and the merged line (half of one line followed by
    the whole next one) in ``quarantine/`` with its line number. Nothing else is
    lost: every other line of the same file is counted once, including those
    written after the cut.
    """
    clock.set(MINUTE)
    meter = file_meters(tmp_path / "stream", tmp_path / "rollups", clock)
    dirs = StreamDirs.of(tmp_path / "stream", NAME)
    payloads = record(meter, clock, 5)
    (file,) = data_files(dirs.logs)
    path = dirs.logs / file
    lines = path.read_bytes().splitlines(keepends=True)
    if cut == "truncated-under-a-live-writer":
        # ``truncate -s`` of a live log: the writer (O_APPEND) carries on at the new end.
        os.truncate(path, sum(map(len, lines)) - len(lines[-1]) // 2)
        payloads += record(meter, clock, 5, first=5)
        lost = {4, 5}  # the cut line and the one glued to it
    else:
        middle = lines[2]
        lines[2] = middle[: len(middle) // 2]
        path.write_bytes(b"".join(lines))
        lost = {2, 3}
    meter.stream.close()

    clock.set(YOUNG)
    result = meter.process_pending(report())
    kept = [p for i, p in enumerate(payloads) if i not in lost]
    assert (result.processed, result.malformed) == (len(kept) + 1, 1)
    rows, meta = quarantined(dirs, file)
    assert meta["reason"] == "malformed lines"
    assert [row["line"] for row in rows] == [min(lost) + 1]
    assert rows[0]["raw"].count('{"id":') == 2
    assert_counts(meter, kept)


# -- 5. garbage in the rollup store's own files ------------------------------------------------


def _layout(meter: EventMeter, root: Path) -> ReportLayout:
    return ReportLayout(root, ReportRef(meter.config.namespace, NAME, 1))


GARBAGE: Final = b"\x00\xff garbage \x89PNG"


def test_a_corrupt_rollup_file_reads_as_empty_and_is_set_aside_on_its_next_write(
    tmp_path: Path,
    clock: FakeClock,
    file_meters: Callable[..., EventMeter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """User sees: a warning "ignoring corrupt rollup file <path>" on reads, the bucket
    of that one file shows zero; its next write logs "is corrupt; keeping it as
    <name>.corrupt-<ms>" and starts the file afresh. Kept: the hour buckets, the other
    minutes and the other indexes stay exact; the damaged bytes are kept aside.
    """
    clock.set(MINUTE)
    meter = file_meters(tmp_path / "stream", tmp_path / "rollups", clock)
    first = record(meter, clock, 3)
    clock.set(MINUTE + timedelta(minutes=1))
    second = record(meter, clock, 2, first=3)
    clock.set(YOUNG + timedelta(minutes=1))
    assert meter.process_pending(report()).processed == 5
    layout = _layout(meter, tmp_path / "rollups")
    damaged = layout.base / layout.rollup_rel("minute", "202605061015", ())
    damaged.write_bytes(GARBAGE)

    def minutes() -> list[int]:
        window = meter.series(report(), start=MINUTE, end=MINUTE + timedelta(minutes=2))
        return [row["count"] for row in window]

    with caplog.at_level(logging.WARNING, logger="event_meter"):
        assert minutes() == [0, 2]
    assert f"ignoring corrupt rollup file {damaged}" in caplog.text
    assert_counts(meter, first + second)  # hour buckets and the customer index are intact

    meter.stream.close()  # a late writer: its new file is named after 10:15 again
    clock.set(MINUTE + timedelta(seconds=30))
    third = record(meter, clock, 4, first=5)
    clock.set(YOUNG + timedelta(minutes=1))
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        assert meter.process_pending(report()).processed == 4
    (aside,) = damaged.parent.glob(f"{damaged.name}.corrupt-*")
    assert aside.read_bytes() == GARBAGE
    assert "is corrupt; keeping it as" in caplog.text
    assert minutes() == [4, 2]
    assert_counts(meter, first + second + third)


def test_a_corrupt_marker_file_stops_processing_loudly_and_loses_nothing(
    tmp_path: Path,
    clock: FakeClock,
    file_meters: Callable[..., EventMeter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """User sees: ``StorageError`` naming the marker file on every pass (treating it
    as empty could count its rows twice). Nothing lost or doubled: the failed pass
    reads, applies and deletes nothing; once the operator restores the file, the
    pass skips the already-applied rows and the counts are exact.
    """
    clock.set(MINUTE)
    meter = file_meters(tmp_path / "stream", tmp_path / "rollups", clock)
    payloads = record(meter, clock, 6)
    clock.set(YOUNG)
    # Applied and marked, but the delete fails: the markers stay beside the rows.
    with monkeypatch.context() as patch:
        patch.setattr(meter.stream, "delete", _raise_oserror)
        assert meter.process_pending(report()).complete is False
    (marker,) = (_layout(meter, tmp_path / "rollups").base / "processed").glob("*.json")
    good = marker.read_bytes()
    marker.write_bytes(GARBAGE)
    dirs = StreamDirs.of(tmp_path / "stream", NAME)

    for _ in range(2):
        with pytest.raises(StorageError, match=str(marker)):
            meter.process_pending(report())
    assert len(data_files(dirs.processing)) == 1  # the rows are still pending
    assert_counts(meter, payloads)  # and counted once

    marker.write_bytes(good)
    again = meter.process_pending(report())
    assert (again.processed, again.skipped_already_processed, again.complete) == (0, 6, True)
    assert data_files(dirs.processing) == []
    assert_counts(meter, payloads)


def _raise_oserror(*args: object) -> None:
    raise OSError(errno.EIO, "injected delete failure")


def test_a_corrupt_journal_is_set_aside_and_its_batch_counts_once(
    tmp_path: Path,
    clock: FakeClock,
    file_meters: Callable[..., EventMeter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """User sees: the pass that failed mid-apply raised ``StorageError``; the next
    one logs an error "setting aside unreadable journal <path>" and completes. Kept:
    the journal bytes (``.corrupt-<ms>``); the rows, unmarked, form the same batch
    again, and every file that already recorded its batch id skips it: exact.
    """
    clock.set(MINUTE)
    meter = file_meters(tmp_path / "stream", tmp_path / "rollups", clock)
    payloads = record(meter, clock, 6)
    clock.set(YOUNG)
    with monkeypatch.context() as patch:  # every data file written, then no markers
        patch.setattr(_markers, "mark", _raise_oserror)
        with pytest.raises(StorageError, match="injected"):
            meter.process_pending(report(), batch_size=3)
    (journal,) = _layout(meter, tmp_path / "rollups").journal_dir.glob("*.json")
    journal.write_bytes(GARBAGE)

    with caplog.at_level(logging.ERROR, logger="event_meter"):
        again = meter.process_pending(report(), batch_size=3)
    assert f"setting aside unreadable journal {journal}" in caplog.text
    assert (again.processed, again.complete) == (6, True)
    (aside,) = journal.parent.glob(f"{journal.name}.corrupt-*")
    assert aside.read_bytes() == GARBAGE
    assert_counts(meter, payloads)
