"""FileRollups specifics: layout, crash-safe apply, markers, cleanup, locks."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from event_meter._keys import ReportRef, folder_name
from event_meter._time import ms_to_datetime, parse_bucket_id
from event_meter.errors import StorageError
from event_meter.stores.base import BatchDelta, Fields, RollupFile
from event_meter.stores.file import _fs, _layout, _state
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file.rollups import FileRollups

NS = "ns:test"
REF = ReportRef(NS, "invoice_delivery", 1)
HOUR_MS = 3_600_000
REAL_ATOMIC_WRITE = _fs.atomic_write


def ms(bucket: str) -> int:
    start = parse_bucket_id(bucket, "minute" if len(bucket) == 12 else "hour")
    assert start is not None
    return start


T0 = ms("202605061015")


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, at_ms: int = T0) -> None:
        self.at_ms = at_ms

    def now(self) -> datetime:
        return ms_to_datetime(self.at_ms)


def make_store(path: Path, clock: Clock | None = None) -> FileRollups:
    store = FileRollups(path)
    store.bind(namespace=NS, clock=clock or Clock())
    return store


@pytest.fixture
def store(tmp_path: Path) -> FileRollups:
    return make_store(tmp_path)


def make_delta(
    entry_ids: list[str],
    rollups: dict[RollupFile, dict[str, Fields]] | None = None,
    state: dict[tuple[str, str], int] | None = None,
) -> BatchDelta:
    batch_id = hashlib.sha256("\n".join(sorted(entry_ids)).encode()).hexdigest()
    return BatchDelta(batch_id, list(entry_ids), rollups or {}, state or {})


def counts(count: int, duration: int) -> Fields:
    return {
        "count": count,
        "success_count": count,
        "duration_ms_count": count,
        "duration_ms_sum": duration * count,
        "duration_ms_min": duration,
        "duration_ms_max": duration,
    }


MINUTE = RollupFile("minute", "202605061015", ())
HOUR = RollupFile("hour", "2026050610", ())
BY_PROVIDER = RollupFile("hour", "2026050610", ("provider",))
BY_CUSTOMER = RollupFile("hour", "2026050610", ("customer_id",))


def rich_delta(tag: str = "a") -> BatchDelta:
    """A delta touching many files, two state params and two marker groups."""
    return make_delta(
        [f"202605061014-h-1-{tag}.jsonl:1", f"202605061014-h-1-{tag}.jsonl:2", "1714990000000-0"],
        {
            MINUTE: {"all": counts(2, 10)},
            HOUR: {"all": counts(2, 10)},
            BY_PROVIDER: {"provider=postmark": counts(1, 10), "provider=ses": counts(1, 10)},
            BY_CUSTOMER: {"customer_id=42": counts(2, 10)},
        },
        {("customer_id", "42"): T0, ("customer_id", "43"): T0 - 5, ("invoice", "7"): T0},
    )


def read_one(store: FileRollups, file: RollupFile, key: str) -> Fields | None:
    return store.read_rollups(REF, file.granularity, file.params, key, [file.bucket_id])[0]


# -- definitions -------------------------------------------------------------


def test_definition_is_created_once_and_listed(store: FileRollups) -> None:
    first = {"name": "invoice_delivery", "version": 1, "fingerprint": "aa"}
    assert store.load_definition(REF) is None
    assert store.store_definition(REF, first) == first
    assert store.store_definition(REF, {**first, "fingerprint": "bb"}) == first
    assert store.load_definition(REF) == first
    path = ReportLayout(store.path, REF).definition
    assert path.read_bytes() == orjson.dumps(first)
    other = ReportRef(NS, "other name", 3)
    store.store_definition(other, {"name": "other name", "version": 3})
    assert store.list_reports(NS) == [("invoice_delivery", 1), ("other name", 3)]
    assert store.list_reports("another ns") == []


def test_concurrent_definition_creators_get_the_same_stored_dict(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    results: list[dict[str, Any]] = []

    def create(n: int) -> None:
        own = make_store(tmp_path)
        barrier.wait()
        results.append(own.store_definition(REF, {"name": "invoice_delivery", "n": n}))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    assert make_store(tmp_path).load_definition(REF) == results[0]


# -- apply -------------------------------------------------------------------


def test_apply_then_read_merges_by_the_laws(store: FileRollups) -> None:
    store.apply(REF, make_delta(["f:1"], {MINUTE: {"all": counts(1, 30)}}))
    store.apply(REF, make_delta(["f:2", "f:3"], {MINUTE: {"all": counts(2, 10)}}))
    assert read_one(store, MINUTE, "all") == {
        "count": 3,
        "success_count": 3,
        "duration_ms_count": 3,
        "duration_ms_sum": 50,
        "duration_ms_min": 10,
        "duration_ms_max": 30,
    }
    assert read_one(store, MINUTE, "provider=x") is None
    got = store.read_rollups(REF, "minute", (), "all", ["202605061016", "not-a-bucket"])
    assert got == [None, None]


def test_the_same_delta_applied_twice_counts_once(store: FileRollups) -> None:
    delta = rich_delta()
    store.apply(REF, delta)
    store.apply(REF, delta)
    assert read_one(store, HOUR, "all") == counts(2, 10)
    assert read_one(store, BY_PROVIDER, "provider=ses") == counts(1, 10)
    assert store.processed_ids(REF, delta.entry_ids) == set(delta.entry_ids)
    assert not list(ReportLayout(store.path, REF).journal_dir.iterdir())


def assert_exactly_applied(store: FileRollups, delta: BatchDelta) -> None:
    for file, keys in delta.rollups.items():
        for key, fields in keys.items():
            assert read_one(store, file, key) == fields, (file, key)
    assert store.read_state(REF, delta.state) == delta.state
    assert store.processed_ids(REF, delta.entry_ids) == set(delta.entry_ids)
    assert not list(ReportLayout(store.path, REF).journal_dir.iterdir())


def failing_after(k: int) -> Callable[[Path, bytes], None]:
    real = REAL_ATOMIC_WRITE
    done = [0]

    def write(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
        if done[0] >= k:
            raise OSError(28, "No space left on device (simulated)", str(path))
        real(path, data, fsync=fsync, sync_dir=sync_dir)
        done[0] += 1  # counted once written (a missing folder makes the first try fail)

    return write


def count_writes(tmp_path: Path, delta: BatchDelta, monkeypatch: pytest.MonkeyPatch) -> int:
    writes = [0]
    real = REAL_ATOMIC_WRITE

    def counting(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
        real(path, data, fsync=fsync, sync_dir=sync_dir)
        writes[0] += 1

    with monkeypatch.context() as patch:
        patch.setattr(_layout, "atomic_write", counting)
        make_store(tmp_path / "count").apply(REF, delta)
    return writes[0]


def test_partial_apply_then_recover_is_exact_for_every_crash_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = rich_delta()
    total = count_writes(tmp_path, delta, monkeypatch)
    shards = len(_state.group_by_shard(delta.state))
    assert total == 1 + 4 + shards + 2  # journal, rollup files, state shards, marker files
    for k in range(total):
        crashed = make_store(tmp_path / f"k{k}")
        with monkeypatch.context() as patch:
            patch.setattr(_layout, "atomic_write", failing_after(k))
            with pytest.raises(StorageError, match="No space left"):
                crashed.apply(REF, delta)
        survivor = make_store(tmp_path / f"k{k}")  # a later processor
        survivor.recover(REF)
        if k == 0:  # nothing was journaled: the rows are still pending and unmarked
            assert survivor.processed_ids(REF, delta.entry_ids) == set()
            assert read_one(survivor, HOUR, "all") is None
            survivor.apply(REF, delta)
        assert_exactly_applied(survivor, delta)
        survivor.recover(REF)  # a second recovery changes nothing
        assert_exactly_applied(survivor, delta)


def test_retrying_a_partial_apply_applies_only_the_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = rich_delta()
    for k in (2, 5, 8):
        store = make_store(tmp_path / f"k{k}")
        with monkeypatch.context() as patch:
            patch.setattr(_layout, "atomic_write", failing_after(k))
            with pytest.raises(StorageError):
                store.apply(REF, delta)
        store.apply(REF, delta)
        assert_exactly_applied(store, delta)


def test_two_stores_replaying_one_journal_concurrently_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for round_ in range(5):
        path = tmp_path / str(round_)
        deltas = [rich_delta(tag) for tag in "abc"]
        with monkeypatch.context() as patch:
            for delta in deltas:  # three journals, no file applied yet
                patch.setattr(_layout, "atomic_write", failing_after(1))
                with pytest.raises(StorageError):
                    make_store(path).apply(REF, delta)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def replay(
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            replayer = make_store(path)
            barrier.wait()
            try:
                replayer.recover(REF)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=replay) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        check = make_store(path)
        assert read_one(check, HOUR, "all") == counts(6, 10)
        assert read_one(check, BY_CUSTOMER, "customer_id=42") == counts(6, 10)
        for delta in deltas:
            assert check.processed_ids(REF, delta.entry_ids) == set(delta.entry_ids)


def test_batch_records_are_pruned_once_their_journal_is_gone(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    layout = ReportLayout(store.path, REF)
    path = layout.base / layout.rollup_rel("hour", HOUR.bucket_id, ())
    first = make_delta(["f:1"], {HOUR: {"all": counts(1, 1)}})
    store.apply(REF, first)
    layout.journal(first.batch_id).write_bytes(b"{}")  # as if a replay were in flight
    second = make_delta(["f:2"], {HOUR: {"all": counts(1, 1)}})
    store.apply(REF, second)
    assert set(orjson.loads(path.read_bytes())["applied"]) == {first.batch_id, second.batch_id}
    layout.journal(first.batch_id).unlink()
    third = make_delta(["f:3"], {HOUR: {"all": counts(1, 1)}})
    store.apply(REF, third)
    assert set(orjson.loads(path.read_bytes())["applied"]) == {third.batch_id}
    # A stale replayer still holding the first batch in memory changes nothing:
    # its journal is gone, so some replayer finished every file of it.
    FileRollups._replay(layout, first, T0)
    store.apply(REF, first)  # and a retry of finished, still-marked entries is a no-op
    assert read_one(store, HOUR, "all") == counts(3, 1) | {"duration_ms_sum": 3}


# -- markers and state -------------------------------------------------------


def test_markers_processed_ids_and_forget(store: FileRollups) -> None:
    file_ids = [f"202605061014-h-1-x.jsonl:{n}" for n in range(1, 4)]
    other_ids = ["202605061014-h-2-y.jsonl:1", "1714990000000-0", "plain-id"]
    store.apply(REF, make_delta(file_ids + other_ids))
    layout = ReportLayout(store.path, REF)
    markers = layout.base / "processed"
    assert len(list(markers.iterdir())) == 4  # one per stream file, one redis minute, one hash
    asked = [*file_ids, "202605061014-h-1-x.jsonl:9", "unknown"]
    assert store.processed_ids(REF, asked) == set(file_ids)
    store.forget(REF, file_ids[:2])
    assert store.processed_ids(REF, file_ids + other_ids) == {file_ids[2], *other_ids}
    store.forget(REF, [file_ids[2], file_ids[2]])
    store.forget(REF, [file_ids[2]])  # idempotent
    group_file = layout.base / layout.marker_rel("stream:202605061014-h-1-x.jsonl")
    assert not group_file.exists()
    assert store.processed_ids(REF, other_ids) == set(other_ids)


def test_state_merges_by_max_and_reads_only_known_keys(store: FileRollups) -> None:
    store.apply(REF, make_delta(["f:1"], state={("customer_id", "a"): 100, ("queue", "q"): 5}))
    store.apply(REF, make_delta(["f:2"], state={("customer_id", "a"): 50, ("customer_id", "b"): 7}))
    wanted = [("customer_id", "a"), ("customer_id", "b"), ("customer_id", "zz"), ("queue", "q")]
    assert store.read_state(REF, wanted) == {
        ("customer_id", "a"): 100,
        ("customer_id", "b"): 7,
        ("queue", "q"): 5,
    }
    shards = ReportLayout(store.path, REF).base / "state" / folder_name("customer_id")
    assert 1 <= len(list(shards.iterdir())) <= 2


# -- corruption --------------------------------------------------------------


def bucket_path(store: FileRollups, file: RollupFile) -> Path:
    layout = ReportLayout(store.path, REF)
    return layout.base / layout.rollup_rel(file.granularity, file.bucket_id, file.params)


def test_corrupt_stored_numbers_are_treated_as_absent(store: FileRollups) -> None:
    path = bucket_path(store, MINUTE)
    path.parent.mkdir(parents=True)
    stored = {
        "count": "abc",
        "duration_ms_sum": "12",
        "duration_ms_max": 1.5,
        "skipped_count": True,
    }
    path.write_bytes(orjson.dumps({"rollups": {"all": stored}, "applied": {}}))
    assert read_one(store, MINUTE, "all") == {"duration_ms_sum": 12}
    store.apply(REF, make_delta(["f:1"], {MINUTE: {"all": counts(1, 5)}}))
    assert read_one(store, MINUTE, "all") == counts(1, 5) | {"duration_ms_sum": 17}


def test_a_corrupt_file_is_read_as_empty_and_set_aside_on_write(
    store: FileRollups, caplog: pytest.LogCaptureFixture
) -> None:
    store.apply(REF, make_delta(["f:1"], {HOUR: {"all": counts(1, 5)}}))
    path = bucket_path(store, HOUR)
    path.write_bytes(b'{"rollups": {"all": ')
    with caplog.at_level(logging.WARNING, logger="event_meter"):
        assert read_one(store, HOUR, "all") is None
        assert store.scan_rollups(REF, "hour", (), "all", None) == []
    assert str(path) in caplog.text
    store.apply(REF, make_delta(["f:2"], {HOUR: {"all": counts(1, 5)}}))
    assert read_one(store, HOUR, "all") == counts(1, 5)
    assert [p.name for p in path.parent.iterdir() if ".corrupt-" in p.name] == [
        f"{path.name}.corrupt-{T0}"
    ]


def test_storage_failures_are_storage_errors_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = make_store(blocker)
    with pytest.raises(StorageError, match="not-a-dir") as caught:
        store.apply(REF, rich_delta())
    assert isinstance(caught.value.__cause__, OSError)
    good = make_store(tmp_path / "ok")
    good.store_definition(REF, {"name": "x"})
    ReportLayout(good.path, REF).definition.write_bytes(b"{broken")
    with pytest.raises(StorageError, match=r"definition\.json"):
        good.load_definition(REF)


# -- scan ----------------------------------------------------------------------


def test_scan_is_oldest_first_limited_and_only_holds_the_key(store: FileRollups) -> None:
    buckets = ["2026050709", "2026050523", "2026050610", "2026050600", "2026050611"]
    for n, bucket in enumerate(buckets):
        key = "provider=ses" if bucket == "2026050600" else "provider=postmark"
        file = RollupFile("hour", bucket, ("provider",))
        store.apply(REF, make_delta([f"f:{n}"], {file: {key: counts(n + 1, 1)}}))
    scanned = store.scan_rollups(REF, "hour", ("provider",), "provider=postmark", None)
    assert [b for b, _ in scanned] == ["2026050523", "2026050610", "2026050611", "2026050709"]
    assert scanned[0][1]["count"] == 2
    limited = store.scan_rollups(REF, "hour", ("provider",), "provider=postmark", 2)
    assert [b for b, _ in limited] == ["2026050523", "2026050610"]
    assert store.scan_rollups(REF, "hour", ("provider",), "provider=postmark", 0) == []
    assert store.scan_rollups(REF, "hour", (), "all", None) == []


# -- cleanup -------------------------------------------------------------------


def test_cleanup_counts_and_keeps_later_data(tmp_path: Path) -> None:
    clock = Clock(ms("2026050500"))
    store = make_store(tmp_path, clock)
    two_keys = {"all": counts(1, 1), "extra": counts(1, 1)}
    old_day = [RollupFile("hour", "2026050501", ()), RollupFile("minute", "202605052359", ())]
    today = [
        RollupFile("hour", "2026050609", ()),  # ends 10:00 == before: deleted
        RollupFile("hour", "2026050610", ()),  # ends 11:00: kept
        RollupFile("minute", "202605060959", ()),  # ends 10:00: deleted
        RollupFile("minute", "202605061000", ()),  # kept
    ]
    store.apply(REF, make_delta(["old:1"], dict.fromkeys(old_day, two_keys)))
    store.apply(REF, make_delta(["a:1"], {file: {"all": counts(1, 1)} for file in today}))
    before = ms("2026050610")
    state = {("customer_id", "old"): before - 1, ("customer_id", "new"): before}
    clock.at_ms = before + 5
    store.apply(REF, make_delta(["b:1"], state=state))
    layout = ReportLayout(store.path, REF)
    result = store.cleanup(REF, before)
    assert result == {
        "rollup_keys_deleted": 2 * 2 + 2,
        "interval_state_keys_deleted": 1,
        "processed_entries_deleted": 2,
    }
    assert read_one(store, today[1], "all") == counts(1, 1)
    assert read_one(store, today[3], "all") == counts(1, 1)
    assert read_one(store, today[0], "all") is None
    assert read_one(store, today[2], "all") is None
    assert not (layout.granularity_dir("hour", ()) / "20260505").exists()
    assert not (layout.granularity_dir("minute", ()) / "20260505").exists()
    assert store.read_state(REF, state) == {("customer_id", "new"): before}
    assert store.processed_ids(REF, ["old:1", "a:1", "b:1"]) == {"b:1"}
    assert store.cleanup(REF, before) == dict.fromkeys(result, 0)


def test_cleanup_of_an_unknown_report_deletes_nothing(store: FileRollups) -> None:
    assert set(store.cleanup(REF, T0).values()) == {0}
    assert not ReportLayout(store.path, REF).base.exists()


def test_watermark_round_trip(store: FileRollups) -> None:
    assert store.read_watermark(NS) is None
    store.write_watermark(NS, 1234)
    assert store.read_watermark(NS) == 1234
    assert store.read_watermark("other") is None


# -- locks ---------------------------------------------------------------------


def test_report_and_cleanup_locks_are_exclusive_until_released(store: FileRollups) -> None:
    lease = store.try_report_lock(REF, 30_000)
    assert lease is not None
    assert store.try_report_lock(REF, 30_000) is None
    cleanup_lease = store.try_cleanup_lock(NS, 30_000)
    assert cleanup_lease is not None  # a different lock
    assert store.try_cleanup_lock(NS, 30_000) is None
    lease.check()
    lease.release()
    cleanup_lease.release()
    again = store.try_report_lock(REF, 30_000)
    assert again is not None
    again.release()
    assert store.try_cleanup_lock(NS, 30_000) is not None


@pytest.fixture
def child_holding_lock(store: FileRollups) -> Iterator[int]:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            held = store.try_report_lock(REF, 30_000)
            os.write(ready_w, b"1" if held is not None else b"0")
            signal.pause()
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        yield pid
    finally:
        os.close(ready_r)
        try:  # the test normally reaped it already
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_dead_childs_lock_is_released(store: FileRollups, child_holding_lock: int) -> None:
    assert store.try_report_lock(REF, 30_000) is None
    os.kill(child_holding_lock, signal.SIGKILL)
    os.waitpid(child_holding_lock, 0)
    lease = store.try_report_lock(REF, 30_000)
    assert lease is not None
    lease.release()


# -- layout --------------------------------------------------------------------


def test_each_index_lives_in_its_own_files(store: FileRollups) -> None:
    store.apply(REF, rich_delta())
    layout = ReportLayout(store.path, REF)
    assert layout.base == (
        store.path / "rollups" / folder_name(NS) / folder_name("invoice_delivery") / "v1"
    )
    hour_file = layout.granularity_dir("hour", ("provider",)) / "20260506" / "2026050610.json"
    assert set(orjson.loads(hour_file.read_bytes())["rollups"]) == {
        "provider=postmark",
        "provider=ses",
    }
    shutil.rmtree(layout.granularity_dir("hour", ("customer_id",)).parent)
    assert read_one(store, BY_PROVIDER, "provider=ses") == counts(1, 10)
    scanned = store.scan_rollups(REF, "hour", ("provider",), "provider=postmark", None)
    assert scanned == [("2026050610", counts(1, 10))]
    assert read_one(store, BY_CUSTOMER, "customer_id=42") is None


def test_index_keys_never_collide_with_metadata(store: FileRollups) -> None:
    odd = {"applied": counts(1, 1), "_applied": counts(2, 1), "rollups": counts(3, 1)}
    store.apply(REF, make_delta(["f:1"], {MINUTE: odd}))
    store.apply(REF, make_delta(["f:2"], {MINUTE: {"applied": counts(1, 1)}}))
    assert read_one(store, MINUTE, "applied") == counts(2, 1) | {"duration_ms_sum": 2}
    assert read_one(store, MINUTE, "_applied") == counts(2, 1)
    assert read_one(store, MINUTE, "rollups") == counts(3, 1)
