"""The stress workload: who writes which rows when, the shared clocks, and the truth.

Rows are ``crash.workload.Row`` values and the truth is ``crash.workload.fold``,
the suite's independent reference fold; nothing here uses the library's
aggregator. Two event names, each with its own stream:

- ``invoice_delivery`` (``INTERVAL_EVENT``) under ``crash.workload.interval_report()``:
  its processors take the report lock, one at a time;
- ``invoice_delivery_counts`` (``COUNTS_EVENT``) under ``counts_report()``: no lock,
  so processors read different rows of it in parallel.

Why the interval truth is exact with many writers: an interval sample depends on
the order in which one customer's rows are read (SPEC 9 step 7: the state only
moves forward; a row not later than the state gives no sample). So every
customer belongs to exactly one writer, which appends that customer's rows in
one order (the order they *finished*, so a long-running row lands after rows
that started later and is a late row that gives no sample), and every stream
delivers one writer's rows in append order:

- file stream: each writer has its own ``FileStream`` (one file per writer per
  minute of its clock); files are read oldest minute first and a file front to
  back, including after a killed processor's claim is taken over; and a minute's
  file is claimable only when the *watermark* (the slowest writer's clock) is
  past it, so no writer appends to a file that may already be read;
- Redis stream: ``XADD`` order; memory stream: append order;

and the interval report's processors take turns under its lock, each starting
where the last one stopped (rows of a killed one are read again, in order).
The fold then runs over the writers' rows writer after writer, which keeps each
customer's read order. Counts, durations and started-at bounds do not depend on
order at all. (Folding all rows in start order instead makes the interval
checks fail: the truth really depends on this.)

Time: each writer has its own fake clock and sets it to a row's finish time
before appending it (no sleeping); it publishes that time in a shared-memory
slot (``Slots``, inherited by forked children), and processors use
``WatermarkClock``: the minimum of the slots, ``END`` once every writer is done.
A *gate* in the same memory holds writers back in steps (``Gatekeeper``), so
processors run, and are killed, while the writers are still writing.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.sharedctypes import RawArray
from typing import Any, Final

from crash.workload import CUSTOMERS, EVENT, PROVIDERS, Row, Truth, fold

INTERVAL_EVENT: Final = EVENT
COUNTS_EVENT: Final = "invoice_delivery_counts"
START: Final = datetime(2026, 5, 6, 10, 55, tzinfo=UTC)
END: Final = datetime(2026, 5, 6, 12, 35, tzinfo=UTC)
"""Past every finish time by more than a minute and the claim grace."""
# Burst minutes (offsets from START): across the 11:00 and 12:00 hour boundaries.
_BURSTS: Final = (0, 1, 2, 4, 5, 6, 20, 37, 50, 64, 65, 66, 80, 88)
_INTERVAL_SHARE: Final = 0.6
GATE_STEPS: Final = 10
GATE_STEP_S: Final = 0.3
GATE_TIMEOUT_S: Final = 120.0


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def events_per_pairing() -> int:
    return env_int("EVENT_METER_STRESS_COUNT", 2_000)


def seed() -> int:
    return env_int("EVENT_METER_STRESS_SEED", 1)


def planned_kills(count: int) -> int:
    """Processor kills (or injected crashes) per pairing: more for a bigger load."""
    return env_int("EVENT_METER_STRESS_KILLS", 8 + count // 500)


def epoch_us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


# -- shared clocks --------------------------------------------------------------------


class Slots:
    """Anonymous shared memory (inherited by forked children): one int64 per writer,
    the writer's clock (epoch µs), and the *gate*: writers append only rows that
    finished before it (see ``Gatekeeper``)."""

    def __init__(self, writers: int) -> None:
        self.values: Any = RawArray("q", [epoch_us(START)] * writers)
        self.gate: Any = RawArray("q", [epoch_us(END) + 1])

    def __len__(self) -> int:
        return len(self.values)

    def finish(self, slot: int) -> None:
        self.values[slot] = epoch_us(END)

    def wait_gate(self, at_us: int) -> None:
        """Block (polling, bounded) until the gate is past ``at_us``."""
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while at_us >= self.gate[0]:
            assert time.monotonic() < deadline, "the gate never opened"
            time.sleep(0.001)  # the gatekeeper moves it on a kill or after GATE_STEP_S


class Gatekeeper:
    """Lets writers go on in ``GATE_STEPS`` steps, so processors run (and die) while
    they write: the gate moves one step when a processor was killed since the last
    step, or after ``GATE_STEP_S`` at the latest (a bounded wait, not a fixed one)."""

    def __init__(self, slots: Slots) -> None:
        span = epoch_us(END) - epoch_us(START)
        self.steps = [epoch_us(START) + span * k // GATE_STEPS for k in range(1, GATE_STEPS)]
        self.steps.append(epoch_us(END) + 1)
        self.slots, self.kills, self.at = slots, 0, time.monotonic()
        slots.gate[0] = self.steps.pop(0)

    @property
    def open(self) -> bool:
        return not self.steps

    def tick(self, kills: int) -> None:
        if self.steps and (kills > self.kills or time.monotonic() - self.at >= GATE_STEP_S):
            self.slots.gate[0] = self.steps.pop(0)
            self.kills, self.at = kills, time.monotonic()


class WriterClock:
    """A writer's fake clock; every move is published in its slot first."""

    def __init__(self, slots: Slots, slot: int) -> None:
        self.slots, self.slot = slots, slot
        self.current = START

    def now(self) -> datetime:
        return self.current

    def set_us(self, value: int) -> None:
        self.slots.values[self.slot] = value
        self.current = from_us(value)


class WatermarkClock:
    """The processors' clock: the slowest writer's time (never moves back)."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots

    def now(self) -> datetime:
        return from_us(min(self.slots.values))


# -- the workload ---------------------------------------------------------------------

Payload = dict[str, Any]
_BAD: Final[tuple[Callable[[Payload], Payload], ...]] = (
    lambda p: {**p, "status": "unknown"},
    lambda p: {**p, "duration_ms": -5},
    lambda p: {k: v for k, v in p.items() if k != "started_at"},
    lambda p: {**p, "started_at": "not a time"},
    lambda p: {**p, "params": [1, 2]},
    lambda p: {**p, "name": "someone_else"},
)


Append = tuple[int, str, Payload, Row | None]
"""(finish µs, event name, payload, the row it was made from; None when malformed)."""


@dataclass
class Writer:
    """One writer's appends, in the order it makes them."""

    appends: list[Append] = field(default_factory=list)

    def rows(self, event: str) -> list[Row]:
        return [row for _, name, _, row in self.appends if name == event and row is not None]


@dataclass
class Plan:
    writers: list[Writer]
    malformed: int

    def truth(self, event: str) -> Truth:
        """The reference fold, writer after writer (see the module docstring)."""
        rows = [row for writer in self.writers for row in writer.rows(event)]
        return fold(rows, intervals=event == INTERVAL_EVENT)

    @property
    def events(self) -> int:
        return sum(row is not None for w in self.writers for *_, row in w.appends)


def payload(event: str, row: Row) -> Payload:
    return {**row.payload(), "name": event}


def _row(rng: random.Random, customer: int | None) -> Row:
    minute = rng.choice(_BURSTS)
    started = epoch_us(START) + minute * 60_000_000 + rng.randrange(60_000_000)
    status = rng.choices(("success", "failure", "skipped"), (70, 20, 10))[0]
    duration: int | None = None if rng.random() < 0.12 else rng.randrange(4_000)
    if rng.random() < 0.08:
        duration = rng.randrange(65_000, 130_000)  # finishes minutes later: a late row
    provider = None if rng.random() < 0.06 else rng.choice(PROVIDERS)
    finished = started + (duration if duration is not None else rng.randrange(900)) * 1000
    return Row(started, finished, status, duration, customer, provider)


def make_plan(count: int, writers: int, seed: int) -> Plan:
    """``count`` valid events (a few of them same-millisecond twins) over ``writers``
    writers, plus one malformed row per writer and event name; customer ``c``
    belongs to writer ``(c - 1) % writers``."""
    rng = random.Random(seed)
    out = [Writer() for _ in range(writers)]
    for n in range(count):
        customer = None if rng.random() < 0.06 else rng.choice(CUSTOMERS)
        event = INTERVAL_EVENT if rng.random() < _INTERVAL_SHARE else COUNTS_EVENT
        row = _row(rng, customer)
        owner = out[rng.randrange(writers) if customer is None else (customer - 1) % writers]
        if n % 400 == 7 and customer is not None:  # a twin in the same millisecond
            started = row.started_us - row.started_us % 1000
            twin = replace(row, started_us=started, finished_us=row.finished_us + 5_000)
            row = replace(row, started_us=started + 1)
            owner.appends.append((twin.finished_us, event, payload(event, twin), twin))
        owner.appends.append((row.finished_us, event, payload(event, row), row))
    malformed = 0
    for writer in out:
        writer.appends.sort(key=lambda a: a[0])  # stable: ties keep generation order
        for event in (INTERVAL_EVENT, COUNTS_EVENT):
            at, _, good, _ = writer.appends[rng.randrange(len(writer.appends))]
            bad = rng.choice(_BAD)({**good, "name": event})
            position = next(i for i, a in enumerate(writer.appends) if a[0] >= at)
            writer.appends.insert(position, (at, event, bad, None))
            malformed += 1
    return Plan(out, malformed)
