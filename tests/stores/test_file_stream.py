"""Backend-specific behaviour of ``FileStream`` (layout, claims, offsets, quarantine)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from event_meter.errors import ConfigurationError, StorageError
from event_meter.stores.base import Entry, StreamBatch, Undecodable
from event_meter.stores.file import stream as stream_module
from event_meter.stores.file._fs import try_flock
from event_meter.stores.file._stream_layout import StreamDirs
from event_meter.stores.file.stream import FileStream

NAME = "invoice_delivery"
T0 = datetime(2026, 5, 6, 10, 15, 20, tzinfo=UTC)  # files of T0 are named 202605061015
AFTER_GRACE = datetime(2026, 5, 6, 10, 16, 10, tzinfo=UTC)
FILE_NAME = re.compile(r"^(\d{12})-testhost-(\d+)-([0-9a-f]{8})\.jsonl$")


class FakeClock:
    """A UTC clock that moves only when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


MakeStore = Callable[..., FileStream]


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def dirs(root: Path) -> StreamDirs:
    return StreamDirs.of(root, NAME)


@pytest.fixture
def make_store(root: Path, fake_clock: FakeClock) -> Iterator[MakeStore]:
    made: list[FileStream] = []

    def make(**options: Any) -> FileStream:
        options.setdefault("host", "testhost")
        store = FileStream(root, **options)
        store.bind(namespace="test", clock=fake_clock)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> FileStream:
    return make_store()


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A controllable stand-in for ``time.monotonic`` inside the store."""
    now = [1000.0]
    monkeypatch.setattr(stream_module, "_monotonic", lambda: now[0])
    return now


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def records(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_log(dirs: StreamDirs, file: str, content: bytes) -> Path:
    dirs.logs.mkdir(parents=True, exist_ok=True)
    path = dirs.logs / file
    path.write_bytes(content)
    return path


def ids(batch: StreamBatch) -> list[str]:
    return [entry.id for entry in batch.entries]


# -- constructor -----------------------------------------------------------


def test_invalid_sync_is_a_configuration_error(root: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'bogus'.*none, flush, fsync"):
        FileStream(root, sync="bogus")


def test_host_is_sanitized_for_file_names(make_store: MakeStore, dirs: StreamDirs) -> None:
    make_store(host="web-1.example/x").append(NAME, {"n": 1})
    (file,) = files_in(dirs.logs)
    assert file.split("-")[1] == "web_1.example_x"


# -- append ----------------------------------------------------------------


def test_line_format_and_seq(store: FileStream, dirs: StreamDirs) -> None:
    for n in range(3):
        store.append(NAME, {"n": n})
    (file,) = files_in(dirs.logs)
    match = FILE_NAME.match(file)
    assert match is not None
    assert match.group(1) == "202605061015"
    assert match.group(2) == str(os.getpid())
    assert (dirs.logs / file).read_bytes() == (
        b'{"id":1,"payload":{"n":0}}\n{"id":2,"payload":{"n":1}}\n{"id":3,"payload":{"n":2}}\n'
    )


def test_a_new_minute_starts_a_new_file(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    fake_clock.current = datetime(2026, 5, 6, 10, 15, 59, 999_000, tzinfo=UTC)
    store.append(NAME, {"n": 1})
    store.append(NAME, {"n": 2})
    fake_clock.advance(0.001)
    store.append(NAME, {"n": 3})
    first, second = files_in(dirs.logs)
    assert first.startswith("202605061015-")
    assert second.startswith("202605061016-")
    assert [r["id"] for r in records(dirs.logs / first)] == [1, 2]
    assert records(dirs.logs / second) == [{"id": 1, "payload": {"n": 3}}]


def test_each_event_name_has_its_own_folder(store: FileStream, root: Path) -> None:
    store.append("a", {"n": 1})
    store.append("b", {"n": 2})
    assert len(files_in(StreamDirs.of(root, "a").logs)) == 1
    assert len(files_in(StreamDirs.of(root, "b").logs)) == 1


def test_fork_child_appends_to_its_own_file(store: FileStream, dirs: StreamDirs) -> None:
    store.append(NAME, {"who": "parent"})
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            store.append(NAME, {"who": "child"})
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.append(NAME, {"who": "parent"})
    by_pid = {FILE_NAME.match(f).group(2): f for f in files_in(dirs.logs)}  # type: ignore[union-attr]
    assert set(by_pid) == {str(os.getpid()), str(child)}
    assert [r["id"] for r in records(dirs.logs / by_pid[str(os.getpid())])] == [1, 2]
    assert records(dirs.logs / by_pid[str(child)]) == [{"id": 1, "payload": {"who": "child"}}]


def test_fork_hook_starts_a_new_file_even_with_an_injected_pid(
    make_store: MakeStore, dirs: StreamDirs
) -> None:
    store = make_store(pid=lambda: 77)  # the pid backstop cannot notice this fork
    store.append(NAME, {"who": "parent"})
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            store.append(NAME, {"who": "child"})
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    files = files_in(dirs.logs)
    assert len(files) == 2
    assert all(FILE_NAME.match(f).group(2) == "77" for f in files)  # type: ignore[union-attr]
    assert sorted(len(records(dirs.logs / f)) for f in files) == [1, 1]


def test_a_changed_pid_starts_a_new_file(make_store: MakeStore, dirs: StreamDirs) -> None:
    pid = [100]
    store = make_store(pid=lambda: pid[0])
    store.append(NAME, {"n": 1})
    pid[0] = 200
    store.append(NAME, {"n": 2})
    pids = sorted(FILE_NAME.match(f).group(2) for f in files_in(dirs.logs))  # type: ignore[union-attr]
    assert pids == ["100", "200"]


def test_a_vanished_file_is_noticed_within_a_second(
    store: FileStream, dirs: StreamDirs, monotonic: list[float]
) -> None:
    store.append(NAME, {"n": 1})
    (first,) = files_in(dirs.logs)
    (dirs.logs / first).unlink()
    store.append(NAME, {"n": 2})  # within the second: no stat, still the old inode
    assert files_in(dirs.logs) == []
    monotonic[0] += 1.5
    store.append(NAME, {"n": 3})
    (second,) = files_in(dirs.logs)
    assert second != first
    assert records(dirs.logs / second) == [{"id": 1, "payload": {"n": 3}}]


def test_a_renamed_active_file_is_noticed(
    store: FileStream, dirs: StreamDirs, monotonic: list[float]
) -> None:
    store.append(NAME, {"n": 1})
    (first,) = files_in(dirs.logs)
    (dirs.logs / first).rename(dirs.logs.parent / "moved.jsonl")
    monotonic[0] += 1.5
    store.append(NAME, {"n": 2})
    assert records(dirs.logs.parent / "moved.jsonl") == [{"id": 1, "payload": {"n": 1}}]
    assert len(files_in(dirs.logs)) == 1


def test_threads_never_lose_or_interleave_lines(store: FileStream, dirs: StreamDirs) -> None:
    threads, per_thread = 8, 500
    barrier = threading.Barrier(threads)

    def work(worker: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            store.append(NAME, {"worker": worker, "n": n, "pad": "x" * (n % 97)})

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    (file,) = files_in(dirs.logs)
    rows = records(dirs.logs / file)  # raises if any line were interleaved
    assert [r["id"] for r in rows] == list(range(1, threads * per_thread + 1))
    seen = {(r["payload"]["worker"], r["payload"]["n"]) for r in rows}
    assert len(seen) == threads * per_thread


@pytest.mark.parametrize(("sync", "fsyncs"), [("none", 0), ("flush", 0), ("fsync", 3)])
def test_sync_modes(
    make_store: MakeStore,
    dirs: StreamDirs,
    monkeypatch: pytest.MonkeyPatch,
    sync: str,
    fsyncs: int,
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store = make_store(sync=sync)
    for n in range(3):
        store.append(NAME, {"n": n})
    assert len(calls) == fsyncs
    (file,) = files_in(dirs.logs)
    assert len(records(dirs.logs / file)) == 3  # visible without any flush or close


def test_write_failure_is_a_storage_error_naming_the_path(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    store = FileStream(blocker, host="testhost")
    store.bind(namespace="test", clock=fake_clock)
    try:
        with pytest.raises(StorageError, match="not-a-folder") as raised:
            store.append(NAME, {"n": 1})
        assert isinstance(raised.value.__cause__, OSError)
    finally:
        store.close()


# -- read, claims ----------------------------------------------------------


def test_grace_period(store: FileStream, dirs: StreamDirs, fake_clock: FakeClock) -> None:
    store.append(NAME, {"n": 1})
    fake_clock.current = AFTER_GRACE - timedelta(milliseconds=1)
    assert store.read(NAME, 10).entries == []
    assert len(files_in(dirs.logs)) == 1
    fake_clock.current = AFTER_GRACE
    batch = store.read(NAME, 10)
    (file,) = files_in(dirs.processing)
    assert batch.entries == [Entry(f"{file}:1", {"n": 1})]
    assert files_in(dirs.logs) == []
    store.delete(batch)
    assert files_in(dirs.processing) == []


def test_a_file_without_a_minute_is_claimable(store: FileStream, dirs: StreamDirs) -> None:
    write_log(dirs, "manual.jsonl", b'{"id":1,"payload":{"n":1}}\n')
    batch = store.read(NAME, 10)  # the clock is still inside the current minute
    assert batch.entries == [Entry("manual.jsonl:1", {"n": 1})]
    store.release(batch)


def test_other_files_and_temp_files_are_ignored(store: FileStream, dirs: StreamDirs) -> None:
    write_log(dirs, "notes.txt", b"x\n")
    write_log(dirs, ".202605061015-h-1-00000000.jsonl.tmp", b"x\n")
    write_log(dirs, ".hidden.jsonl", b"x\n")
    assert store.read(NAME, 10).entries == []
    assert files_in(dirs.logs) == sorted(
        ["notes.txt", ".202605061015-h-1-00000000.jsonl.tmp", ".hidden.jsonl"]
    )


def test_an_empty_finished_file_is_removed(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    write_log(dirs, "202605061015-h-1-00000000.jsonl", b"")
    write_log(dirs, "202605061015-h-1-00000001.jsonl", b'{"id":1,"payload":1}\n')
    fake_clock.current = AFTER_GRACE
    batch = store.read(NAME, 10)
    assert ids(batch) == ["202605061015-h-1-00000001.jsonl:1"]
    assert files_in(dirs.processing) == ["202605061015-h-1-00000001.jsonl"]
    store.delete(batch)
    assert files_in(dirs.processing) == []


def test_claims_are_exclusive(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    first, second = make_store(), make_store()
    first.append(NAME, {"minute": 15})
    fake_clock.advance(60)
    first.append(NAME, {"minute": 16})
    fake_clock.advance(60)
    batch = first.read(NAME, 1)
    assert [e.payload for e in batch.entries] == [{"minute": 15}]
    other = second.read(NAME, 10)  # only the file the first store does not hold
    assert [e.payload for e in other.entries] == [{"minute": 16}]
    assert second.read(NAME, 10).entries == []  # the held file is still out of reach
    first.release(batch)
    again = second.read(NAME, 10)
    assert ids(again) == ids(batch)
    second.release(other)
    second.release(again)


def test_release_makes_rows_readable_again(make_store: MakeStore, fake_clock: FakeClock) -> None:
    first, second = make_store(), make_store()
    first.append(NAME, {"n": 1})
    fake_clock.current = AFTER_GRACE
    batch = first.read(NAME, 10)
    first.release(batch)
    first.release(batch)  # twice is harmless
    again = second.read(NAME, 10)
    assert again.entries == batch.entries
    second.delete(again)
    assert first.read(NAME, 10).entries == []


def test_a_dead_processors_claim_is_taken_again(
    store: FileStream, make_store: MakeStore, fake_clock: FakeClock
) -> None:
    store.append(NAME, {"n": 1})
    fake_clock.current = AFTER_GRACE
    claimed_r, claimed_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            batch = store.read(NAME, 10)  # claims, then dies without release or delete
            os.write(claimed_w, str(len(batch.entries)).encode())
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(claimed_w)
    os.close(go_r)
    try:
        assert os.read(claimed_r, 16) == b"1"
        other = make_store()
        assert other.read(NAME, 10).entries == []  # held by the living child
        os.write(go_w, b"x")
    finally:
        os.close(claimed_r)
        os.close(go_w)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    batch = make_store().read(NAME, 10)
    assert [e.payload for e in batch.entries] == [{"n": 1}]


def test_partial_batches_resume_from_the_offset(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    writer = make_store()
    for n in range(1, 6):
        writer.append(NAME, {"n": n})
    fake_clock.current = AFTER_GRACE
    first = make_store()
    batch = first.read(NAME, 2)
    (file,) = files_in(dirs.logs.parent / "processing")
    assert ids(batch) == [f"{file}:1", f"{file}:2"]
    first.delete(batch)
    offset = dirs.processing / f"{file}.offset"
    assert orjson.loads(offset.read_bytes())["line"] == 2
    first.delete(batch)  # twice is harmless
    second = make_store()  # a new processor resumes where the first stopped
    batch = second.read(NAME, 2)
    assert [e.payload["n"] for e in batch.entries] == [3, 4]
    second.release(batch)
    batch = second.read(NAME, 2)
    assert ids(batch) == [f"{file}:3", f"{file}:4"]
    second.delete(batch)
    batch = second.read(NAME, 10)
    assert ids(batch) == [f"{file}:5"]
    second.delete(batch)
    assert files_in(dirs.processing) == []
    assert second.read(NAME, 10).entries == []


# -- overlapping batches: a read while an earlier batch of the file is held ---------


def _five_rows(make_store: MakeStore, fake_clock: FakeClock) -> None:
    writer = make_store()
    for n in range(1, 6):
        writer.append(NAME, {"n": n})
    fake_clock.current = AFTER_GRACE


def test_a_read_continues_a_file_an_earlier_batch_still_holds(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    _five_rows(make_store, fake_clock)
    store = make_store()
    first = store.read(NAME, 2)
    second = store.read(NAME, 2)  # the first is neither deleted nor released
    third = store.read(NAME, 2)
    (file,) = [f for f in files_in(dirs.processing) if f.endswith(".jsonl")]
    assert [ids(first), ids(second), ids(third)] == [
        [f"{file}:1", f"{file}:2"],
        [f"{file}:3", f"{file}:4"],
        [f"{file}:5"],
    ]
    assert store.read(NAME, 2).entries == []
    assert make_store().read(NAME, 10).entries == []  # still claimed: out of reach
    for batch in (first, second):
        store.delete(batch)
    assert orjson.loads(dirs.offset_path(file).read_bytes())["line"] == 4
    assert make_store().read(NAME, 10).entries == []  # the third batch keeps the claim
    store.delete(third)
    assert files_in(dirs.processing) == []


def test_a_released_continuation_is_read_again_after_the_earlier_batch_is_deleted(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    _five_rows(make_store, fake_clock)
    store = make_store()
    first = store.read(NAME, 2)
    second = store.read(NAME, 2)
    store.delete(first)
    store.release(second)
    again = make_store().read(NAME, 10)  # another processor, from the saved offset
    assert [e.payload["n"] for e in again.entries] == [3, 4, 5]
    assert ids(again)[0] == ids(second)[0]


def test_releasing_both_batches_gives_every_row_back(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    _five_rows(make_store, fake_clock)
    store = make_store()
    second_reader = make_store()
    first = store.read(NAME, 2)
    second = store.read(NAME, 2)
    store.release(second)
    assert second_reader.read(NAME, 10).entries == []  # the first batch holds the file
    store.release(first)
    again = second_reader.read(NAME, 10)
    assert [e.payload["n"] for e in again.entries] == [1, 2, 3, 4, 5]


def test_deleting_a_continuation_while_rows_before_it_are_pending_refuses_and_keeps_all(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    """Out of read order (the processor never does this): the file cannot say "rows 3-4
    pending, 5 deleted", so the delete fails and keeps every row; nothing is lost."""
    _five_rows(make_store, fake_clock)
    store = make_store()
    first, second, third = (store.read(NAME, 2) for _ in range(3))
    store.release(second)
    with pytest.raises(StorageError, match="still pending"):
        store.delete(third)
    store.release(third)
    store.delete(first)
    again = make_store().read(NAME, 10)
    assert [e.payload["n"] for e in again.entries] == [3, 4, 5]


def test_a_continuation_waiting_for_an_incomplete_line_leaves_the_file_alone(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    write_log(dirs, "202605061015-h-1-0000000a.jsonl", b'{"id":1,"payload":1}\n{"id":2,"pa')
    fake_clock.current = AFTER_GRACE
    first = store.read(NAME, 10)
    assert [e.payload for e in first.entries] == [1]
    assert store.read(NAME, 10).entries == []  # the young partial line waits
    store.delete(first)
    assert files_in(dirs.processing) == [
        "202605061015-h-1-0000000a.jsonl",
        "202605061015-h-1-0000000a.jsonl.offset",
    ]


def test_batches_of_files_moved_out_of_logs_are_fresh(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    _five_rows(make_store, fake_clock)
    store = make_store()
    first = store.read(NAME, 2)
    second = store.read(NAME, 2)  # continues a fresh claim: fresh too
    assert (first.fresh, second.fresh) == (True, True)
    store.delete(first)
    store.release(second)
    again = make_store().read(NAME, 10)  # taken from processing/: maybe read before
    assert (len(again.entries), again.fresh) == (3, False)


def test_reads_cross_files_oldest_first(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    for minute in (0, 1):
        for n in range(3):
            store.append(NAME, {"minute": minute, "n": n})
        fake_clock.advance(60)
    batch = store.read(NAME, 4)
    assert [(e.payload["minute"], e.payload["n"]) for e in batch.entries] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
    ]
    store.delete(batch)
    assert len(files_in(dirs.processing)) == 2  # the second file and its offset
    rest = store.read(NAME, 10)
    assert [e.payload["n"] for e in rest.entries] == [1, 2]
    store.delete(rest)
    assert files_in(dirs.processing) == []


def test_a_late_line_keeps_a_finished_file(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    path = write_log(dirs, "202605061015-h-1-0000000a.jsonl", b'{"id":1,"payload":1}\n')
    fake_clock.current = AFTER_GRACE
    batch = store.read(NAME, 10)
    with open(dirs.processing / path.name, "ab") as late:  # a writer whose clock lags
        late.write(b'{"id":2,"payload":2}\n')
    store.delete(batch)
    rest = store.read(NAME, 10)
    assert rest.entries == [Entry(f"{path.name}:2", 2)]
    store.delete(rest)


def test_undecodable_lines_keep_their_line_numbers(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    fake_clock.current = AFTER_GRACE
    file = "202605061015-h-1-0000000b.jsonl"
    write_log(
        dirs,
        file,
        b'{"id":1,"payload":{"n":1}}\nnot json\n[1,2]\n{"id":4}\n{"id":5,"payload":"text"}\n',
    )
    batch = store.read(NAME, 10)
    assert ids(batch) == [f"{file}:{n}" for n in range(1, 6)]
    payloads = [e.payload for e in batch.entries]
    assert payloads[0] == {"n": 1}
    assert payloads[4] == "text"
    assert payloads[1].raw == b"not json"
    assert payloads[1].reason.startswith("not JSON")
    assert payloads[2] == Undecodable(b"[1,2]", "not a JSON object")
    assert payloads[3] == Undecodable(b'{"id":4}', "no payload key")
    store.release(batch)


def test_a_young_incomplete_last_line_waits(
    store: FileStream, make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    file = "202605061015-h-1-0000000c.jsonl"
    write_log(dirs, file, b'{"id":1,"payload":1}\n{"id":2,"pay')
    fake_clock.current = AFTER_GRACE
    batch = store.read(NAME, 10)
    assert batch.entries == [Entry(f"{file}:1", 1)]
    store.delete(batch)
    assert store.read(NAME, 10).entries == []  # released at once, not stalling the loop
    lock = try_flock(dirs.lock_path(file))
    assert lock is not None  # nobody holds the file
    os.close(lock)
    with open(dirs.processing / file, "ab") as rest:  # the writer finishes its line
        rest.write(b'load":2}\n')
    batch = make_store().read(NAME, 10)
    assert batch.entries == [Entry(f"{file}:2", 2)]


def test_a_stale_incomplete_last_line_is_undecodable(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    file = "202605061015-h-1-0000000d.jsonl"
    write_log(dirs, file, b'{"id":1,"payload":1}\n{"id":2,"pay')
    fake_clock.current = datetime(2026, 5, 6, 10, 25, 59, tzinfo=UTC)
    batch = store.read(NAME, 10)
    assert ids(batch) == [f"{file}:1"]
    store.delete(batch)
    fake_clock.current = datetime(2026, 5, 6, 10, 26, 0, tzinfo=UTC)  # minute end + 10 min
    batch = store.read(NAME, 10)
    assert batch.entries == [
        Entry(f"{file}:2", Undecodable(b'{"id":2,"pay', "incomplete last line"))
    ]
    store.delete(batch)
    assert files_in(dirs.processing) == []


def test_a_corrupt_offset_stops_loudly(store: FileStream, dirs: StreamDirs) -> None:
    file = "202605061015-h-1-0000000e.jsonl"
    dirs.processing.mkdir(parents=True)
    (dirs.processing / file).write_bytes(b'{"id":1,"payload":1}\n')  # claimable at any time
    dirs.offset_path(file).write_bytes(b"[]")
    with pytest.raises(StorageError, match="offset"):
        store.read(NAME, 10)
    lock = try_flock(dirs.lock_path(file))
    assert lock is not None  # the failed read dropped its claim
    os.close(lock)


# -- quarantine and housekeeping -------------------------------------------


def test_quarantine_keeps_rows_with_line_numbers(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    fake_clock.current = AFTER_GRACE
    file = "202605061015-web-42-0000000f.jsonl"
    write_log(dirs, file, b'{"id":1,"payload":{"n":1}}\nbroken\n{"id":3,"payload":7}\n')
    batch = store.read(NAME, 10)
    bad = [(batch.entries[1], "not JSON"), (batch.entries[2], "payload is not an object")]
    store.quarantine(batch, bad)
    store.delete(batch)
    rows = records(dirs.quarantine / f"{file}.malformed.jsonl")
    assert rows == [
        {"line": 2, "id": f"{file}:2", "reason": "not JSON", "raw": "broken"},
        {"line": 3, "id": f"{file}:3", "reason": "payload is not an object", "payload": 7},
    ]
    meta = orjson.loads((dirs.quarantine / f"{file}.meta.json").read_bytes())
    assert meta["reason"] == "malformed lines"
    assert meta["original_name"] == file
    assert meta["time"] == "2026-05-06T10:16:10.000000Z"
    assert meta["pid"] == os.getpid()
    assert (meta["writer_host"], meta["writer_pid"]) == ("web", 42)


def test_quarantine_of_an_incomplete_line_says_so(
    store: FileStream, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    file = "202605061015-h-1-00000010.jsonl"
    write_log(dirs, file, b'{"id":1,"pay')
    fake_clock.current = datetime(2026, 5, 6, 11, 0, tzinfo=UTC)
    batch = store.read(NAME, 10)
    store.quarantine(batch, [(batch.entries[0], "incomplete last line")])
    meta = orjson.loads((dirs.quarantine / f"{file}.meta.json").read_bytes())
    assert meta["reason"] == "incomplete last line"
    store.delete(batch)


def test_quarantine_never_raises(
    store: FileStream, dirs: StreamDirs, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(dirs, "x.jsonl", b"broken\n")
    dirs.quarantine.parent.mkdir(parents=True, exist_ok=True)
    dirs.quarantine.write_bytes(b"")  # a file where the folder should be
    batch = store.read(NAME, 10)
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        store.quarantine(batch, [(batch.entries[0], "bad")])
    assert "could not quarantine" in caplog.text
    store.release(batch)


def test_old_quarantine_files_go_at_most_hourly(
    make_store: MakeStore, dirs: StreamDirs, monotonic: list[float]
) -> None:
    dirs.quarantine.mkdir(parents=True)
    old, fresh = dirs.quarantine / "old.meta.json", dirs.quarantine / "fresh.meta.json"
    for path in (old, fresh):
        path.write_bytes(b"{}")
    eight_days_ago = time.time() - 8 * 86_400
    os.utime(old, (eight_days_ago, eight_days_ago))
    store = make_store()
    store.read(NAME, 10)
    assert files_in(dirs.quarantine) == ["fresh.meta.json"]
    os.utime(fresh, (eight_days_ago, eight_days_ago))
    store.read(NAME, 10)
    assert files_in(dirs.quarantine) == ["fresh.meta.json"]  # not again within the hour
    monotonic[0] += 3_601
    store.read(NAME, 10)
    assert files_in(dirs.quarantine) == []


def test_stale_claim_locks_of_gone_files_are_removed(
    make_store: MakeStore, dirs: StreamDirs
) -> None:
    write_log(dirs, "202605061015-h-1-00000011.jsonl", b"")
    dirs.claim_locks.mkdir(parents=True)
    dirs.processing.mkdir(parents=True)
    gone, kept = dirs.lock_path("gone.jsonl"), dirs.lock_path("202605061015-h-1-00000011.jsonl")
    dirs.offset_path("gone.jsonl").write_bytes(b'{"offset":1,"line":1}')
    two_hours_ago = time.time() - 7_200
    for path in (gone, kept):
        path.write_bytes(b"")
        os.utime(path, (two_hours_ago, two_hours_ago))
    make_store().read(NAME, 10)  # inside the minute: the data file stays in logs/
    assert files_in(dirs.claim_locks) == [kept.name]
    assert files_in(dirs.processing) == []


def test_close_drops_claims_and_files(
    make_store: MakeStore, dirs: StreamDirs, fake_clock: FakeClock
) -> None:
    store = make_store()
    store.append(NAME, {"n": 1})
    fake_clock.current = AFTER_GRACE
    batch = store.read(NAME, 10)
    store.close()
    store.delete(batch)  # no longer ours: must not remove rows
    again = make_store().read(NAME, 10)
    assert again.entries == batch.entries
