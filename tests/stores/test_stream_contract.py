"""The stream store contract (``StreamStore`` in ``stores/base.py``, SPEC 11).

Runs against every backend through the ``stream_store`` fixture. The only
backend knowledge used here is that rows become readable once the clock has
moved past the file stream's claim grace (``settle``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from event_meter.stores.base import Entry, StreamBatch, StreamStore
from support import FakeClock

PLAIN_NAME = "invoice_delivery"
ODD_NAME = "odd name/ä:%|=.{x}"


@pytest.fixture(params=[PLAIN_NAME, ODD_NAME], ids=["plain-name", "odd-name"])
def name(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def payload(i: int, name: str = PLAIN_NAME) -> dict[str, Any]:
    return {
        "name": name,
        "status": "success",
        "started_at": f"2026-05-06T10:15:{i % 60:02d}.000000Z",
        "duration_ms": i,
        "params": {"i": i},
    }


def settle(clock: FakeClock) -> None:
    """Move past the claim grace of everything appended so far."""
    clock.advance(minutes=2)


def drain(store: StreamStore, name: str, limit: int = 1_000) -> list[Entry]:
    """Read and delete until an empty batch; fails instead of looping forever."""
    out: list[Entry] = []
    for _ in range(10_000):
        batch = store.read(name, limit)
        if not batch.entries:
            store.release(batch)
            return out
        assert len(batch.entries) <= limit
        out.extend(batch.entries)
        store.delete(batch)
    raise AssertionError("read never returned an empty batch")


def payloads(entries: list[Entry]) -> list[Any]:
    return [entry.payload for entry in entries]


def append_all(store: StreamStore, name: str, count: int, first: int = 0) -> list[dict[str, Any]]:
    written = [payload(i, name) for i in range(first, first + count)]
    for item in written:
        store.append(name, item)
    return written


def test_empty_stream_reads_an_empty_batch(stream_store: StreamStore, name: str) -> None:
    batch = stream_store.read(name, 10)
    assert isinstance(batch, StreamBatch)
    assert batch.entries == []
    stream_store.release(batch)


def test_append_then_read_returns_the_payloads_in_order(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    written = append_all(stream_store, name, 5)
    settle(clock)
    batch = stream_store.read(name, 100)
    assert batch.name == name
    assert payloads(batch.entries) == written
    stream_store.delete(batch)
    assert drain(stream_store, name) == []


def test_payload_is_decoded_to_an_equal_dict(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    rich = {
        "name": name,
        "status": "failure",
        "started_at": "2026-05-06T10:15:20.123456Z",
        "duration_ms": 734,
        "params": {
            "customer_id": 42,
            "ratio": 0.25,
            "flag": True,
            "nothing": None,
            "empty": "",
            "text": 'héllo "quoted" \n ✓ 𝄞',
            "nested": {"list": [1, "two", {"three": 3.5}], "deep": {"x": []}},
            "big": 2**62,
            "negative": -7,
        },
    }
    stream_store.append(name, rich)
    settle(clock)
    (entry,) = drain(stream_store, name)
    assert entry.payload == rich
    assert type(entry.payload["params"]["customer_id"]) is int
    assert type(entry.payload["params"]["ratio"]) is float
    assert entry.payload["params"]["flag"] is True


def test_streams_of_different_names_are_separate(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    mine = append_all(stream_store, name, 3)
    other = append_all(stream_store, "other_event", 2, first=100)
    settle(clock)
    assert payloads(drain(stream_store, name)) == mine
    assert payloads(drain(stream_store, "other_event")) == [
        {**item, "name": "other_event"} for item in other
    ]


@pytest.mark.parametrize("limit", [1, 3, 7, 25])
def test_read_returns_at_most_limit_and_looping_reads_drain_everything_in_order(
    stream_store: StreamStore, clock: FakeClock, name: str, limit: int
) -> None:
    written = append_all(stream_store, name, 20)
    settle(clock)
    sizes: list[int] = []
    seen: list[Entry] = []
    while True:
        batch = stream_store.read(name, limit)
        if not batch.entries:
            stream_store.release(batch)
            break
        sizes.append(len(batch.entries))
        seen.extend(batch.entries)
        stream_store.delete(batch)
        assert len(sizes) <= 20, "looping reads must terminate"
    assert all(1 <= size <= limit for size in sizes)
    assert payloads(seen) == written


def test_claimed_rows_are_not_returned_by_another_read(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    append_all(stream_store, name, 6)
    settle(clock)
    first = stream_store.read(name, 100)
    assert len(first.entries) == 6
    second = stream_store.read(name, 100)
    assert second.entries == []
    stream_store.release(second)
    stream_store.release(first)


def test_a_partial_batch_claims_its_rows_and_other_reads_get_only_other_rows(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    written = append_all(stream_store, name, 6)
    settle(clock)
    first = stream_store.read(name, 2)
    assert 1 <= len(first.entries) <= 2
    second = stream_store.read(name, 100)
    first_ids = {entry.id for entry in first.entries}
    assert first_ids.isdisjoint(entry.id for entry in second.entries)
    stream_store.release(second)
    stream_store.release(first)
    assert payloads(drain(stream_store, name)) == written


def test_overlapping_batches_read_on_in_order_and_give_back_what_is_released(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    """Stores with ``overlapping_batches``: reads while earlier batches are held return
    the rows after them; batches settled in read order (as the processor does) delete
    and give back exactly their rows."""
    if not stream_store.overlapping_batches:
        pytest.skip("this store reads one batch at a time")
    written = append_all(stream_store, name, 9)
    settle(clock)
    first = stream_store.read(name, 3)
    second = stream_store.read(name, 3)
    third = stream_store.read(name, 3)
    held = [first, second, third]
    assert [payloads(batch.entries) for batch in held] == [written[:3], written[3:6], written[6:]]
    late = append_all(stream_store, name, 2, first=20)  # appended while batches are held
    settle(clock)
    fourth = stream_store.read(name, 100)
    assert payloads(fourth.entries) == late
    stream_store.delete(first)
    stream_store.release(second)
    stream_store.release(third)
    stream_store.delete(fourth)
    assert payloads(drain(stream_store, name)) == written[3:]


def test_release_makes_the_rows_readable_again_with_the_same_ids(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    written = append_all(stream_store, name, 4)
    settle(clock)
    first = stream_store.read(name, 100)
    ids = [entry.id for entry in first.entries]
    stream_store.release(first)
    again = stream_store.read(name, 100)
    assert [entry.id for entry in again.entries] == ids
    assert payloads(again.entries) == written
    stream_store.release(again)
    third = stream_store.read(name, 100)
    assert [entry.id for entry in third.entries] == ids
    stream_store.delete(third)
    assert drain(stream_store, name) == []


def test_delete_removes_exactly_the_rows_of_the_batch(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    early = append_all(stream_store, name, 3)
    settle(clock)
    batch = stream_store.read(name, 100)
    assert payloads(batch.entries) == early
    late = append_all(stream_store, name, 2, first=10)  # appended after the read
    settle(clock)
    stream_store.delete(batch)
    assert payloads(drain(stream_store, name)) == late


def test_delete_of_a_partial_batch_keeps_the_unread_rows(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    written = append_all(stream_store, name, 5)
    settle(clock)
    batch = stream_store.read(name, 2)
    taken = payloads(batch.entries)
    assert taken == written[: len(taken)]
    stream_store.delete(batch)
    assert payloads(drain(stream_store, name)) == written[len(taken) :]


def test_ids_are_unique_and_stable_across_release_and_reread(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    append_all(stream_store, name, 15)
    settle(clock)
    appended_later = append_all(stream_store, name, 5, first=40)
    settle(clock)
    first_pass: list[Entry] = []
    held: list[StreamBatch] = []  # keep every claim until all rows were seen once
    while True:
        batch = stream_store.read(name, 100)
        if not batch.entries:
            stream_store.release(batch)
            break
        first_pass.extend(batch.entries)
        held.append(batch)
        assert len(held) <= 20, "looping reads must terminate"
    for batch in held:
        stream_store.release(batch)
    ids = [entry.id for entry in first_pass]
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert all(isinstance(entry_id, str) and entry_id for entry_id in ids)
    second_pass = drain(stream_store, name, limit=6)
    assert [(e.id, e.payload) for e in second_pass] == [(e.id, e.payload) for e in first_pass]
    assert payloads(second_pass)[-5:] == appended_later


def test_try_read_lock_returns_a_usable_lease(stream_store: StreamStore, name: str) -> None:
    lease = stream_store.try_read_lock(name, 30_000)
    assert lease is not None
    lease.check()
    lease.release()
    again = stream_store.try_read_lock(name, 30_000)
    assert again is not None
    again.check()
    again.release()


def test_many_threads_appending_lose_nothing(
    stream_store: StreamStore, clock: FakeClock, name: str
) -> None:
    threads_count, per_thread = 8, 150
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                stream_store.append(name, {**payload(i, name), "params": {"t": thread, "i": i}})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    settle(clock)
    entries = drain(stream_store, name, limit=500)
    seen = [(e.payload["params"]["t"], e.payload["params"]["i"]) for e in entries]
    assert len(seen) == threads_count * per_thread
    assert set(seen) == {(t, i) for t in range(threads_count) for i in range(per_thread)}
    assert len({e.id for e in entries}) == len(entries)
    for writer_id in range(threads_count):  # each writer's rows keep their order
        mine = [i for t, i in seen if t == writer_id]
        assert mine == sorted(mine)
