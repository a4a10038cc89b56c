"""Every pairing under concurrent writers and repeatedly killed processors ends exact.

Per pairing: ``EVENT_METER_STRESS_COUNT`` events (default 2,000; seed
``EVENT_METER_STRESS_SEED``) written by several threads and, unless the stream
is in memory, several forked processes, across minute and hour boundaries,
with malformed rows among them; processors run while they write and are killed
at seeded moments (``EVENT_METER_STRESS_KILLS``, default 8 + count / 500); then
a clean pass runs and every minute and hour bucket, every index key and every
unwindowed summary of both reports equals the reference fold of
``crash.workload`` (see ``stress.plan`` for why the interval truth is exact).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from crash.pairings import Storage, harmless, wait
from crash.workload import assert_exact
from event_meter.stores.redis import _apply
from stress.plan import (
    Gatekeeper,
    Plan,
    Slots,
    WatermarkClock,
    WriterClock,
    events_per_pairing,
    make_plan,
    planned_kills,
    seed,
)
from stress.runner import (
    PROCESSES,
    RESULTS,
    THREADS,
    Figures,
    fork_writers,
    junk_files,
    pairing_of,
    reports,
    run_threads,
    supervise_processes,
    write,
)
from stress.threads import thread_processors
from support import PAIRINGS, SERVICES, drop_namespace, pairing_params

pytestmark = pytest.mark.stress


def final_check(storage: Storage, plan: Plan, figures: Figures) -> None:
    """A clean pass drains both streams; rollups equal the truth; nothing is left."""
    storage.settle()  # leases of killed processors expire (Redis, PostgreSQL)
    meter = storage.meter()
    for report in reports().values():
        result = meter.process_pending(report, batch_size=1_000)
        assert result.complete, result
        assert not result.locked, result
    for event, report in reports().items():
        truth = plan.truth(event)
        want = sum(
            f["count"] for (every, _, key), f in truth.items() if every == "hour" and not key
        )
        got = meter.summary(report)["count"]
        figures.lost += max(0, want - got)
        figures.double_counted += max(0, got - want)
        assert_exact(meter, report, truth)
        again = meter.process_pending(report)
        assert (again.processed, again.skipped_already_processed, again.malformed) == (0, 0, 0)
    if storage.pairing.name != "redis->postgres":  # ``leftovers`` takes Redis for the rollups
        left = storage.leftovers(meter)
        assert all(harmless(item) for item in left), f"left behind: {left}"


@pytest.mark.parametrize("kinds", pairing_params(PAIRINGS), ids=lambda p: f"{p[0]}->{p[1]}")
def test_stress(
    kinds: tuple[str, str],
    tmp_path: Path,
    namespace: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream_kind, rollup_kind = kinds
    for kind in dict.fromkeys(kinds):
        if kind in SERVICES:
            request.getfixturevalue(SERVICES[kind])
    if rollup_kind == "redis":
        # More chunk scripts per apply, so kills land between them (set before any fork).
        monkeypatch.setattr(_apply, "CHUNK_KEYS", 16)
    began = time.monotonic()
    count, kills = events_per_pairing(), planned_kills(events_per_pairing())
    plan = make_plan(count, PROCESSES + THREADS, seed())
    slots = Slots(len(plan.writers))
    gate = Gatekeeper(slots)  # closed at its first step before any writer starts
    shared: dict[str, Any] = {}
    if rollup_kind == "postgres":
        import pg_server

        shared["table_prefix"] = pg_server.new_table_prefix()  # one place for every process
    pairing = pairing_of(stream_kind, rollup_kind)
    storage = Storage(pairing, tmp_path, WatermarkClock(slots), namespace, _shared=shared)
    in_process = "memory" in kinds
    figures = Figures(
        pairing.name,
        events=plan.events,
        malformed=plan.malformed,
        kill_kind="exception" if in_process else "SIGKILL",
        writers=(
            f"{len(plan.writers)} threads"
            if stream_kind == "memory"
            else f"{PROCESSES} processes + {THREADS} threads"
        ),
    )
    deadline = began + 120 + count / 100
    try:
        if stream_kind == "file":
            figures.malformed += junk_files(tmp_path)
        writers = (
            []
            if stream_kind == "memory"
            else fork_writers(plan, stream_kind, tmp_path, namespace, slots)
        )
        if in_process:
            bodies = thread_processors(storage, slots, gate, figures, kills, seed(), deadline)
            if stream_kind == "memory":
                stream = storage.meter().stream  # the shared one
                bodies += [
                    partial(write, w, stream, WriterClock(slots, n))
                    for n, w in enumerate(plan.writers)
                ]
            errors = run_threads(bodies)
            outcomes = [wait(pid) for pid in writers]
            assert not errors, errors
            assert set(outcomes) <= {"exited"}, outcomes
        else:
            supervise_processes(storage, slots, gate, writers, figures, kills, seed(), deadline)
        assert not figures.failures, figures.failures
        final_check(storage, plan, figures)
    finally:
        storage.close()
        drop_namespace(list(kinds), namespace)
    figures.seconds = round(time.monotonic() - began, 2)
    RESULTS.append(dataclasses.asdict(figures))
    assert figures.kills > 0, figures
