"""The rollup store contract (``RollupStore`` in ``stores/base.py``, SPEC 8, 11, 12).

Runs against every backend through the ``rollup_store`` fixture, once with a
plain namespace and once with a namespace full of odd characters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from event_meter._keys import ReportRef
from event_meter._time import datetime_to_ms
from event_meter.errors import EventMeterError
from event_meter.rollup import merge_all
from event_meter.stores.base import BatchDelta, Fields, RollupFile, RollupStore
from support import FakeClock, random_namespace

NAME = "invoice_delivery"
PROVIDER = ("provider",)
P_KEY = "provider=postmark"


@pytest.fixture(params=[False, True], ids=["plain-ns", "odd-ns"])
def namespace(request: pytest.FixtureRequest) -> str:
    """Overrides conftest: the whole contract runs with an odd namespace too."""
    return random_namespace(odd=request.param)


@pytest.fixture
def ref(rollup_store: RollupStore) -> ReportRef:
    return ReportRef(rollup_store.namespace, NAME, 1)


def ms(hour: int, minute: int = 0, second: int = 0) -> int:
    return datetime_to_ms(datetime(2026, 5, 6, hour, minute, second, tzinfo=UTC))


def minute(hhmm: str, index: tuple[str, ...] = ()) -> RollupFile:
    return RollupFile("minute", f"20260506{hhmm}", index)


def hour(hh: str, index: tuple[str, ...] = ()) -> RollupFile:
    return RollupFile("hour", f"20260506{hh}", index)


_batch_numbers = iter(range(1, 1_000_000))


def delta(
    rollups: dict[RollupFile, dict[str, Fields]] | None = None,
    state: dict[tuple[str, str], int] | None = None,
    entry_ids: list[str] | None = None,
) -> BatchDelta:
    number = next(_batch_numbers)
    return BatchDelta(
        batch_id=f"{number:064x}",
        entry_ids=entry_ids if entry_ids is not None else [f"batch{number}:1"],
        rollups=rollups or {},
        state=state or {},
    )


def fields(count: int, **more: int) -> Fields:
    return {"count": count, "success_count": count, **more}


def definition(*indexes: list[str], name: str = NAME, version: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "indexes": [[], *indexes],
        "intervals": [],
        "fingerprint": f"fp-{len(indexes)}",
    }


# -- definitions ---------------------------------------------------------------------------


def test_load_definition_is_none_before_any_store(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    assert rollup_store.load_definition(ref) is None


def test_definition_is_stored_once_and_the_first_one_wins(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    first = definition(["provider"])
    second = definition(["queue"], ["provider"])
    assert rollup_store.store_definition(ref, first) == first
    assert rollup_store.store_definition(ref, second) == first
    assert rollup_store.load_definition(ref) == first
    assert list(rollup_store.load_definition(ref) or {}) == list(first)


def test_definitions_of_other_versions_and_namespaces_are_separate(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    rollup_store.store_definition(ref, definition())
    assert rollup_store.load_definition(ReportRef(ref.namespace, NAME, 2)) is None
    assert rollup_store.load_definition(ReportRef(random_namespace(), NAME, 1)) is None
    assert rollup_store.load_definition(ReportRef(ref.namespace, "other", 1)) is None


def test_list_reports_lists_stored_definitions_of_the_namespace(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    assert rollup_store.list_reports(ref.namespace) == []
    for namespace, name, version in [
        (ref.namespace, "zeta", 2),
        (ref.namespace, "alpha job", 1),
        (ref.namespace, "alpha job", 3),
        (random_namespace(), "elsewhere", 1),
    ]:
        rollup_store.store_definition(
            ReportRef(namespace, name, version), definition(name=name, version=version)
        )
    assert rollup_store.list_reports(ref.namespace) == [
        ("alpha job", 1),
        ("alpha job", 3),
        ("zeta", 2),
    ]


# -- apply and read ------------------------------------------------------------------------


def test_read_rollups_is_none_before_any_apply(rollup_store: RollupStore, ref: ReportRef) -> None:
    assert rollup_store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [None]
    assert rollup_store.scan_rollups(ref, "hour", (), "all", None) == []


def test_apply_then_read_and_scan_round_trip(rollup_store: RollupStore, ref: ReportRef) -> None:
    every = {
        "count": 3,
        "success_count": 1,
        "failure_count": 1,
        "skipped_count": 1,
        "started_at_ms_min": ms(10, 15, 1),
        "started_at_ms_max": ms(10, 15, 59),
        "duration_ms_count": 2,
        "duration_ms_sum": 900,
        "duration_ms_min": 100,
        "duration_ms_max": 800,
        "interval_ms_count": 1,
        "interval_ms_sum": 5_000,
        "interval_ms_min": 5_000,
        "interval_ms_max": 5_000,
    }
    rollup_store.apply(
        ref,
        delta(
            {
                minute("1015"): {"all": every},
                minute("1015", PROVIDER): {P_KEY: fields(2), "provider=mailgun": fields(1)},
                hour("10"): {"all": every},
                hour("10", PROVIDER): {P_KEY: fields(2)},
            }
        ),
    )
    assert rollup_store.read_rollups(
        ref, "minute", (), "all", ["202605061014", "202605061015", "202605061016"]
    ) == [None, every, None]
    assert rollup_store.read_rollups(ref, "minute", PROVIDER, P_KEY, ["202605061015"]) == [
        fields(2)
    ]
    assert rollup_store.read_rollups(
        ref, "minute", PROVIDER, "provider=mailgun", ["202605061015"]
    ) == [fields(1)]
    assert rollup_store.read_rollups(
        ref, "minute", PROVIDER, "provider=nobody", ["202605061015"]
    ) == [None]
    assert rollup_store.read_rollups(ref, "hour", (), "all", ["2026050610"]) == [every]
    assert rollup_store.scan_rollups(ref, "hour", (), "all", None) == [("2026050610", every)]
    assert rollup_store.scan_rollups(ref, "hour", PROVIDER, P_KEY, None) == [
        ("2026050610", fields(2))
    ]
    assert rollup_store.scan_rollups(ref, "minute", PROVIDER, "provider=mailgun", None) == [
        ("202605061015", fields(1))
    ]
    other = ReportRef(ref.namespace, NAME, 2)
    assert rollup_store.read_rollups(other, "hour", (), "all", ["2026050610"]) == [None]


def test_index_keys_with_odd_characters_round_trip(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    index = ("provider", "queue")
    odd_keys = [
        "provider=a%2Fb|queue=%C3%A4+x",
        "provider=_applied|queue=all",
        "provider=%7B%7D|queue=",
    ]
    rollup_store.apply(
        ref, delta({minute("1015", index): {k: fields(i + 1) for i, k in enumerate(odd_keys)}})
    )
    for i, key in enumerate(odd_keys):
        assert rollup_store.read_rollups(ref, "minute", index, key, ["202605061015"]) == [
            fields(i + 1)
        ]


def test_applies_merge_by_the_laws(rollup_store: RollupStore, ref: ReportRef) -> None:
    file = minute("1015")
    rollup_store.apply(
        ref,
        delta(
            {
                file: {
                    "all": {
                        "count": 2,
                        "success_count": 2,
                        "started_at_ms_min": ms(10, 15, 20),
                        "started_at_ms_max": ms(10, 15, 30),
                        "duration_ms_count": 2,
                        "duration_ms_sum": 300,
                        "duration_ms_min": 100,
                        "duration_ms_max": 200,
                    }
                }
            }
        ),
    )
    rollup_store.apply(
        ref,
        delta(
            {
                file: {
                    "all": {
                        "count": 3,
                        "failure_count": 3,
                        "started_at_ms_min": ms(10, 15, 5),
                        "started_at_ms_max": ms(10, 15, 25),
                        "duration_ms_count": 1,
                        "duration_ms_sum": 50,
                        "duration_ms_min": 50,
                        "duration_ms_max": 50,
                        "interval_ms_count": 1,
                        "interval_ms_sum": 7,
                        "interval_ms_min": 7,
                        "interval_ms_max": 7,
                    }
                }
            }
        ),
    )
    rollup_store.apply(
        ref,
        delta(
            {
                file: {
                    "all": {
                        "count": 1,
                        "skipped_count": 1,
                        "duration_ms_count": 1,
                        "duration_ms_sum": 900,
                        "duration_ms_min": 900,
                        "duration_ms_max": 900,
                    }
                }
            }
        ),
    )
    assert rollup_store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [
        {
            "count": 6,
            "success_count": 2,
            "failure_count": 3,
            "skipped_count": 1,
            "started_at_ms_min": ms(10, 15, 5),
            "started_at_ms_max": ms(10, 15, 30),
            "duration_ms_count": 4,
            "duration_ms_sum": 1_250,
            "duration_ms_min": 50,
            "duration_ms_max": 900,
            "interval_ms_count": 1,
            "interval_ms_sum": 7,
            "interval_ms_min": 7,
            "interval_ms_max": 7,
        }
    ]


def test_keys_of_one_bucket_merge_independently(rollup_store: RollupStore, ref: ReportRef) -> None:
    file = minute("1015", PROVIDER)
    rollup_store.apply(ref, delta({file: {P_KEY: fields(1)}}))
    rollup_store.apply(ref, delta({file: {"provider=mailgun": fields(4)}}))
    rollup_store.apply(ref, delta({file: {P_KEY: fields(2)}}))
    assert rollup_store.read_rollups(ref, "minute", PROVIDER, P_KEY, ["202605061015"]) == [
        fields(3)
    ]
    assert rollup_store.read_rollups(
        ref, "minute", PROVIDER, "provider=mailgun", ["202605061015"]
    ) == [fields(4)]


def test_prepare_apply_then_apply_is_apply(rollup_store: RollupStore, ref: ReportRef) -> None:
    """What a store encodes ahead is what it writes; a delta prepared for one report
    and applied to another is written from scratch for the other."""
    other = ReportRef(ref.namespace, NAME, 2)
    prepared = delta(
        {minute("1015"): {"all": fields(2, duration_ms_max=9)}, hour("10"): {"all": fields(2)}},
        {("customer_id", "42"): ms(10, 15)},
    )
    rollup_store.prepare_apply(ref, prepared)
    rollup_store.apply(ref, prepared)
    moved = delta({minute("1016"): {"all": fields(3)}}, {("customer_id", "7"): ms(10, 16)})
    rollup_store.prepare_apply(ref, moved)
    rollup_store.apply(other, moved)
    assert rollup_store.read_rollups(
        ref, "minute", (), "all", ["202605061015", "202605061016"]
    ) == [
        fields(2, duration_ms_max=9),
        None,
    ]
    assert rollup_store.read_rollups(ref, "hour", (), "all", ["2026050610"]) == [fields(2)]
    assert rollup_store.read_rollups(other, "minute", (), "all", ["202605061016"]) == [fields(3)]
    assert rollup_store.read_state(ref, [("customer_id", "42"), ("customer_id", "7")]) == {
        ("customer_id", "42"): ms(10, 15)
    }
    assert rollup_store.read_state(other, [("customer_id", "7")]) == {
        ("customer_id", "7"): ms(10, 16)
    }
    assert rollup_store.processed_ids(ref, prepared.entry_ids) == set(prepared.entry_ids)
    assert rollup_store.processed_ids(other, moved.entry_ids) == set(moved.entry_ids)
    assert rollup_store.processed_ids(ref, moved.entry_ids) == set()


def test_a_stored_number_that_is_not_a_decimal_integer_reads_as_absent(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    corrupt: Any = {"count": 2, "duration_ms_sum": "12x", "duration_ms_max": "3.5"}
    try:
        rollup_store.apply(ref, delta({minute("1015"): {"all": corrupt}}))
    except (TypeError, ValueError, EventMeterError):
        pytest.skip("this backend refuses to store a corrupt number, so none can be injected")
    assert rollup_store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [{"count": 2}]
    assert rollup_store.scan_rollups(ref, "minute", (), "all", None) == [
        ("202605061015", {"count": 2})
    ]
    assert rollup_store.summarize(ref, "minute", (), "all", None) == (1, {"count": 2})


# -- processed markers ---------------------------------------------------------------------


def test_processed_ids_reports_every_entry_id_after_apply(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    ids = ["f1.jsonl:1", "f1.jsonl:2", "1778062500000-0", "plain id é"]
    assert rollup_store.processed_ids(ref, ids) == set()
    rollup_store.apply(ref, delta({minute("1015"): {"all": fields(4)}}, entry_ids=ids))
    assert rollup_store.processed_ids(ref, ids) == set(ids)
    assert rollup_store.processed_ids(ref, ["f1.jsonl:2", "f1.jsonl:3", "other"]) == {"f1.jsonl:2"}
    assert rollup_store.processed_ids(ReportRef(ref.namespace, NAME, 2), ids) == set()


ODD_ENTRY_IDS = ("", ":", "a:b:c", "line\nbreak:1", "tab\t:2", "é:1", "a b:1", "a%:1", "日本:語")


def test_markers_of_odd_and_many_entry_ids_are_set_and_forgotten_exactly(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    """Odd ids, and more ids than a backend sends in one call, in one batch."""
    ids = [*ODD_ENTRY_IDS, *(f"202605061015-host-1-ab12cd34.jsonl:{n}" for n in range(4_500))]
    rollup_store.apply(ref, delta({minute("1015"): {"all": fields(len(ids))}}, entry_ids=ids))
    assert rollup_store.processed_ids(ref, ids) == set(ids)
    assert rollup_store.processed_ids(ref, ["a:b", "line", "break:1", "日本"]) == set()
    kept = {ids[0], ids[3], ids[-1]}
    rollup_store.forget(ref, [entry_id for entry_id in ids if entry_id not in kept])
    assert rollup_store.processed_ids(ref, ids) == kept


def test_an_apply_with_only_entry_ids_marks_them(rollup_store: RollupStore, ref: ReportRef) -> None:
    """A batch of malformed rows changes no rollup but must still be marked."""
    rollup_store.apply(ref, delta(entry_ids=["bad.jsonl:1", "bad.jsonl:2"]))
    assert rollup_store.processed_ids(ref, ["bad.jsonl:1", "bad.jsonl:2"]) == {
        "bad.jsonl:1",
        "bad.jsonl:2",
    }


def test_forget_removes_exactly_the_given_markers(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    ids = ["f1.jsonl:1", "f1.jsonl:2", "f2.jsonl:1"]
    rollup_store.apply(ref, delta({minute("1015"): {"all": fields(3)}}, entry_ids=ids))
    rollup_store.forget(ref, ["f1.jsonl:1", "f2.jsonl:1", "never.jsonl:9"])
    assert rollup_store.processed_ids(ref, ids) == {"f1.jsonl:2"}
    rollup_store.forget(ref, ["f1.jsonl:1"])  # idempotent
    rollup_store.forget(ref, ["f1.jsonl:2"])
    assert rollup_store.processed_ids(ref, ids) == set()
    assert rollup_store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [fields(3)]


def test_recover_after_a_finished_apply_changes_nothing(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    applied = delta(
        {minute("1015"): {"all": fields(2)}}, {("customer_id", "42"): ms(10)}, ["r:1", "r:2"]
    )
    rollup_store.apply(ref, applied)
    rollup_store.recover(ref)
    rollup_store.recover(ref)
    assert rollup_store.processed_ids(ref, ["r:1", "r:2"]) == {"r:1", "r:2"}
    assert rollup_store.read_rollups(ref, "minute", (), "all", ["202605061015"]) == [fields(2)]
    assert rollup_store.read_state(ref, [("customer_id", "42")]) == {("customer_id", "42"): ms(10)}


def test_recover_on_an_untouched_report_is_harmless(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    rollup_store.recover(ref)
    assert rollup_store.load_definition(ref) is None


# -- interval state ------------------------------------------------------------------------


def test_read_state_returns_only_known_keys(rollup_store: RollupStore, ref: ReportRef) -> None:
    assert rollup_store.read_state(ref, [("customer_id", "42")]) == {}
    rollup_store.apply(
        ref, delta(state={("customer_id", "42"): ms(10), ("customer_id", "a b/ä"): ms(11)})
    )
    assert rollup_store.read_state(
        ref,
        [("customer_id", "42"), ("customer_id", "a b/ä"), ("customer_id", "7"), ("queue", "42")],
    ) == {("customer_id", "42"): ms(10), ("customer_id", "a b/ä"): ms(11)}


def test_state_merges_by_max_and_never_moves_backwards(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    key = ("customer_id", "42")
    rollup_store.apply(ref, delta(state={key: ms(10, 15)}))
    rollup_store.apply(ref, delta(state={key: ms(10, 5)}))
    assert rollup_store.read_state(ref, [key]) == {key: ms(10, 15)}
    rollup_store.apply(ref, delta(state={key: ms(10, 15)}))
    assert rollup_store.read_state(ref, [key]) == {key: ms(10, 15)}
    rollup_store.apply(ref, delta(state={key: ms(10, 20)}))
    assert rollup_store.read_state(ref, [key]) == {key: ms(10, 20)}


# -- scans ---------------------------------------------------------------------------------


def test_scan_is_oldest_first_and_honours_the_limit(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    for hh in ("12", "09", "23", "10"):
        rollup_store.apply(ref, delta({hour(hh): {"all": fields(int(hh))}}))
    rollup_store.apply(
        ref, delta({RollupFile("hour", "2026050523", ()): {"all": fields(1)}})
    )  # the day before
    rollup_store.apply(ref, delta({hour("11", PROVIDER): {P_KEY: fields(5)}}))
    everything = rollup_store.scan_rollups(ref, "hour", (), "all", None)
    assert everything == [
        ("2026050523", fields(1)),
        ("2026050609", fields(9)),
        ("2026050610", fields(10)),
        ("2026050612", fields(12)),
        ("2026050623", fields(23)),
    ]
    assert rollup_store.scan_rollups(ref, "hour", (), "all", 2) == everything[:2]
    assert rollup_store.scan_rollups(ref, "hour", (), "all", 5) == everything
    assert rollup_store.scan_rollups(ref, "hour", (), "all", 50) == everything
    assert rollup_store.scan_rollups(ref, "minute", (), "all", None) == []
    assert rollup_store.scan_rollups(ref, "hour", PROVIDER, P_KEY, None) == [
        ("2026050611", fields(5))
    ]


def test_bucket_index_keys_lists_one_bucket_of_one_index(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    pair = ("provider", "queue")
    odd = "provider=a%7Cb+%25_%00%C3%A9"  # escaped |, space, %, _, NUL and a non-ASCII value
    rollup_store.apply(
        ref,
        delta(
            {
                minute("1014", PROVIDER): {P_KEY: fields(2), odd: fields(1)},
                minute("1015", PROVIDER): {"provider=ses": fields(1)},
                minute("1014", pair): {"provider=x|queue=y": fields(1)},
                hour("10", PROVIDER): {P_KEY: fields(2), odd: fields(1), "provider=ses": fields(1)},
                minute("1014"): {"all": fields(3)},
            }
        ),
    )
    keys = rollup_store.bucket_index_keys
    assert keys(ref, "minute", "202605061014", PROVIDER) == {P_KEY, odd}
    assert keys(ref, "minute", "202605061015", PROVIDER) == {"provider=ses"}
    assert keys(ref, "hour", "2026050610", PROVIDER) == {P_KEY, odd, "provider=ses"}
    assert keys(ref, "minute", "202605061014", pair) == {"provider=x|queue=y"}
    assert keys(ref, "minute", "202605061016", PROVIDER) == set()
    assert keys(ref, "hour", "2026050611", pair) == set()
    rollup_store.cleanup(ref, ms(10, 15))
    assert keys(ref, "minute", "202605061014", PROVIDER) == set()
    assert keys(ref, "minute", "202605061015", PROVIDER) == {"provider=ses"}


def test_summarize_is_the_merge_of_what_scan_returns(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    """A store's own ``summarize`` (server-side in PostgreSQL) agrees with scan + merge."""
    for hh, low, high in (("09", 7, 90), ("10", 3, 40), ("12", 11, 500), ("23", 5, 6)):
        rollup_store.apply(
            ref,
            delta(
                {
                    hour(hh): {
                        "all": fields(
                            int(hh),
                            duration_ms_count=2,
                            duration_ms_sum=low + high,
                            duration_ms_min=low,
                            duration_ms_max=high,
                            started_at_ms_min=1_000 * int(hh),
                            started_at_ms_max=2_000 * int(hh),
                        )
                    }
                }
            ),
        )
    for limit in (None, 1, 3, 10):
        scanned = rollup_store.scan_rollups(ref, "hour", (), "all", limit)
        assert rollup_store.summarize(ref, "hour", (), "all", limit) == (
            len(scanned),
            merge_all(found for _, found in scanned),
        )
    assert rollup_store.summarize(ref, "hour", (), "all", None) == (
        4,
        {
            "count": 54,
            "success_count": 54,
            "started_at_ms_min": 9_000,
            "started_at_ms_max": 46_000,
            "duration_ms_count": 8,
            "duration_ms_sum": 662,
            "duration_ms_min": 3,
            "duration_ms_max": 500,
        },
    )
    assert rollup_store.summarize(ref, "hour", PROVIDER, P_KEY, None) == (0, {})


# -- leases --------------------------------------------------------------------------------


def test_report_lock_is_exclusive_until_released(rollup_store: RollupStore, ref: ReportRef) -> None:
    lease = rollup_store.try_report_lock(ref, 30_000)
    assert lease is not None
    lease.check()
    assert rollup_store.try_report_lock(ref, 30_000) is None
    lease.check()  # still held after a refused attempt
    other = rollup_store.try_report_lock(ReportRef(ref.namespace, NAME, 2), 30_000)
    assert other is not None, "another report version has its own lock"
    cleanup = rollup_store.try_cleanup_lock(ref.namespace, 30_000)
    assert cleanup is not None, "the cleanup lock is not a report lock"
    lease.release()
    again = rollup_store.try_report_lock(ref, 30_000)
    assert again is not None
    again.check()
    for held in (again, other, cleanup):
        held.release()


def test_cleanup_lock_is_exclusive_until_released(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    lease = rollup_store.try_cleanup_lock(ref.namespace, 30_000)
    assert lease is not None
    lease.check()
    assert rollup_store.try_cleanup_lock(ref.namespace, 30_000) is None
    lease.check()
    elsewhere = rollup_store.try_cleanup_lock(random_namespace(), 30_000)
    assert elsewhere is not None, "each namespace has its own cleanup lock"
    report = rollup_store.try_report_lock(ref, 30_000)
    assert report is not None
    lease.release()
    again = rollup_store.try_cleanup_lock(ref.namespace, 30_000)
    assert again is not None
    for held in (again, elsewhere, report):
        held.release()


def test_releasing_a_lease_twice_does_not_free_a_later_holders_lock(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    lease = rollup_store.try_report_lock(ref, 30_000)
    assert lease is not None
    lease.release()
    taken = rollup_store.try_report_lock(ref, 30_000)
    assert taken is not None
    lease.release()
    assert rollup_store.try_report_lock(ref, 30_000) is None
    taken.check()
    taken.release()


# -- cleanup -------------------------------------------------------------------------------


def test_cleanup_deletes_buckets_that_ended_by_before_and_keeps_newer(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    rollup_store.apply(
        ref,
        delta(
            {
                minute("1013"): {"all": fields(1)},
                minute("1014"): {"all": fields(2)},
                minute("1014", PROVIDER): {P_KEY: fields(2), "provider=mailgun": fields(1)},
                minute("1015"): {"all": fields(3)},
                hour("09"): {"all": fields(4)},
                hour("10"): {"all": fields(5)},
            }
        ),
    )
    counts = rollup_store.cleanup(ref, ms(10, 15))
    # minute 10:13 (1 key), 10:14 (all + 2 provider keys) and hour 09 (1 key) ended by 10:15.
    assert counts == {
        "rollup_keys_deleted": 5,
        "interval_state_keys_deleted": 0,
        "processed_entries_deleted": 0,
    }
    assert rollup_store.read_rollups(
        ref, "minute", (), "all", ["202605061013", "202605061014", "202605061015"]
    ) == [None, None, fields(3)]
    assert rollup_store.read_rollups(ref, "minute", PROVIDER, P_KEY, ["202605061014"]) == [None]
    assert rollup_store.scan_rollups(ref, "hour", (), "all", None) == [("2026050610", fields(5))]
    assert rollup_store.cleanup(ref, ms(10, 15))["rollup_keys_deleted"] == 0


def test_cleanup_deletes_older_state_and_keeps_newer(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    old, edge, new = ("customer_id", "1"), ("customer_id", "2"), ("customer_id", "3")
    rollup_store.apply(ref, delta(state={old: ms(9, 59), edge: ms(10), new: ms(10, 30)}))
    counts = rollup_store.cleanup(ref, ms(10))
    assert counts["interval_state_keys_deleted"] == 1
    assert rollup_store.read_state(ref, [old, edge, new]) == {edge: ms(10), new: ms(10, 30)}


def test_cleanup_deletes_older_markers_and_keeps_newer(
    rollup_store: RollupStore, ref: ReportRef, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 5, 6, 9, 0, tzinfo=UTC))
    rollup_store.apply(ref, delta(entry_ids=["old.jsonl:1", "old.jsonl:2", "1778058000000-0"]))
    clock.set(datetime(2026, 5, 6, 11, 0, tzinfo=UTC))
    rollup_store.apply(ref, delta(entry_ids=["new.jsonl:1", "1778065200000-0"]))
    counts = rollup_store.cleanup(ref, ms(10))
    assert counts["processed_entries_deleted"] == 3
    every = ["old.jsonl:1", "old.jsonl:2", "1778058000000-0", "new.jsonl:1", "1778065200000-0"]
    assert rollup_store.processed_ids(ref, every) == {"new.jsonl:1", "1778065200000-0"}


def test_cleanup_keeps_a_newer_marker_beside_an_older_one_of_the_same_stream_file(
    rollup_store: RollupStore, ref: ReportRef, clock: FakeClock
) -> None:
    """Rows of one stream file can be applied at different times (bounded batches)."""
    clock.set(datetime(2026, 5, 6, 9, 0, tzinfo=UTC))
    rollup_store.apply(ref, delta(entry_ids=["shared.jsonl:1"]))
    clock.set(datetime(2026, 5, 6, 11, 0, tzinfo=UTC))
    rollup_store.apply(ref, delta(entry_ids=["shared.jsonl:2"]))
    rollup_store.cleanup(ref, ms(10))
    assert "shared.jsonl:2" in rollup_store.processed_ids(ref, ["shared.jsonl:1", "shared.jsonl:2"])


def test_cleanup_of_a_report_without_data_counts_nothing(
    rollup_store: RollupStore, ref: ReportRef
) -> None:
    assert rollup_store.cleanup(ref, ms(23)) == {
        "rollup_keys_deleted": 0,
        "interval_state_keys_deleted": 0,
        "processed_entries_deleted": 0,
    }


def test_cleanup_touches_only_its_own_report(rollup_store: RollupStore, ref: ReportRef) -> None:
    other = ReportRef(ref.namespace, NAME, 2)
    for target in (ref, other):
        rollup_store.apply(target, delta({minute("1014"): {"all": fields(1)}}, {("c", "1"): ms(9)}))
    rollup_store.cleanup(ref, ms(11))
    assert rollup_store.read_rollups(other, "minute", (), "all", ["202605061014"]) == [fields(1)]
    assert rollup_store.read_state(other, [("c", "1")]) == {("c", "1"): ms(9)}


def test_definition_survives_cleanup(rollup_store: RollupStore, ref: ReportRef) -> None:
    rollup_store.store_definition(ref, definition())
    rollup_store.cleanup(ref, ms(23))
    assert rollup_store.load_definition(ref) == definition()
    assert rollup_store.list_reports(ref.namespace) == [(NAME, 1)]


# -- watermark -----------------------------------------------------------------------------


def test_watermark_round_trip(rollup_store: RollupStore, ref: ReportRef) -> None:
    assert rollup_store.read_watermark(ref.namespace) is None
    rollup_store.write_watermark(ref.namespace, ms(10))
    assert rollup_store.read_watermark(ref.namespace) == ms(10)
    rollup_store.write_watermark(ref.namespace, ms(11, 30))
    assert rollup_store.read_watermark(ref.namespace) == ms(11, 30)
    assert rollup_store.read_watermark(random_namespace()) is None
