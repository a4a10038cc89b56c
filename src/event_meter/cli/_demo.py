"""``event-meter demo``: a new user's first minute with the library.

Records a seeded, realistic hour of ``invoice_delivery`` events with past
timestamps, processes them and prints a summary table, a minute chart and
what to try next. Reruns add to the same namespace (the data just grows).

Why the demo writes its stream in its own folder: a file stream is shared by
every namespace using that folder, so processing ``invoice_delivery`` in the
embedded default would also consume an application's pending rows of that
name into the demo namespace. Rollups are namespaced, so they stay in the
embedded default and the printed read commands need no storage flags.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from event_meter._meter import EventMeter
from event_meter._payload import build_payload
from event_meter._time import iso_us
from event_meter.cli import _commands, _plot, _render
from event_meter.event import error_class_name
from event_meter.report import Report
from event_meter.stores import embedded_path
from event_meter.stores.file.stream import FileStream

__all__ = ["DEMO_NAMESPACE", "EVENT", "demo_report", "run"]

# Bump the namespace whenever demo_report() changes, so reruns never hit DefinitionChangedError.
DEMO_NAMESPACE: Final = "event_meter_demo:v1"
EVENT: Final = "invoice_delivery"
SEED: Final = 20260506
SPAN: Final = timedelta(minutes=60)
PROVIDERS: Final = {  # share of traffic, median duration ms, failure rate
    "postmark": (0.50, 140.0, 0.03),
    "sendgrid": (0.30, 260.0, 0.08),
    "ses": (0.20, 95.0, 0.05),
}
QUEUES: Final = {"mailers": 0.70, "mailers_bulk": 0.20, "critical": 0.10}
CUSTOMERS: Final = tuple(range(1001, 1049))
SKIP_RATE: Final = 0.03
SKIP_REASONS: Final = ("already_delivered", "customer_opted_out")


class DemoClock:
    """A UTC clock the demo moves by hand, so events get past timestamps."""

    def __init__(self, current: datetime) -> None:
        self.current = current

    def now(self) -> datetime:
        return self.current


def demo_report() -> Report:
    return (
        Report(EVENT, version=1)
        .index_by("provider")
        .index_by("provider", "queue")
        .index_by("customer_id")
        .measure_interval_by("customer_id", group_by="provider")
    )


def _failure(rng: random.Random, provider: str) -> tuple[BaseException, float]:
    """A real exception object and how long the attempt took (ms)."""
    kind = rng.random()
    if kind < 0.5:
        error: BaseException = TimeoutError(f"{provider} did not answer within 10 s")
        return error, 10_000 + rng.expovariate(1 / 40)
    if kind < 0.8:
        error = ConnectionResetError(104, "Connection reset by peer")
        return error, rng.lognormvariate(math.log(60), 0.6)
    error = ValueError("recipient address rejected: 550 5.1.1 mailbox unavailable")
    return error, rng.lognormvariate(math.log(120), 0.4)


Timed = list[tuple[datetime, dict[str, Any]]]


def make_events(rng: random.Random, count: int, end: datetime) -> Timed:
    """``count`` seeded events over the ``SPAN`` before ``end``: (start time, payload)."""
    customer_weights = [1 / rank for rank in range(1, len(CUSTOMERS) + 1)]  # a few big customers
    span_s = SPAN.total_seconds()
    events: Timed = []
    for _ in range(count):
        # Steady traffic plus the monthly invoice run: a burst 20 minutes ago.
        offset = rng.uniform(0, span_s) if rng.random() < 0.7 else rng.gauss(span_s * 2 / 3, 150)
        started = end - SPAN + timedelta(seconds=min(max(offset, 0.0), span_s - 0.001))
        provider = rng.choices(list(PROVIDERS), [p[0] for p in PROVIDERS.values()])[0]
        _, median_ms, failure_rate = PROVIDERS[provider]
        queue = rng.choices(list(QUEUES), list(QUEUES.values()))[0]
        params: dict[str, Any] = {
            "customer_id": rng.choices(CUSTOMERS, customer_weights)[0],
            "provider": provider,
            "queue": queue,
        }
        median_ms *= 1.3 if queue == "mailers_bulk" else 1.0
        duration = rng.lognormvariate(math.log(median_ms), 0.45)
        roll = rng.random()
        if roll < failure_rate:
            status = "failure"
            error, duration = _failure(rng, provider)
            params["error_class"] = error_class_name(type(error))
            params["error_message"] = str(error)
        elif roll < failure_rate + SKIP_RATE:
            status, duration = "skipped", rng.uniform(1, 5)
            params["skip_reason"] = rng.choice(SKIP_REASONS)
        else:
            status = "success"
            params["message_id"] = f"msg_{rng.getrandbits(48):012x}"
        payload = build_payload(EVENT, status, iso_us(started), max(0, round(duration)), params)
        events.append((started, payload))
    events.sort(key=lambda event: event[0])
    return events


def _storage(args: argparse.Namespace) -> tuple[dict[str, Any], str, list[str]]:
    """Meter options, where the data lives (for people), and the storage flags of reads."""
    if args.path:
        root = Path(args.path).resolve()
        url = root.as_uri()
        return {"stream_storage": url, "rollup_storage": url}, str(root), ["--rollups", url]
    if args.stream or args.rollups:
        options = {"stream_storage": args.stream, "rollup_storage": args.rollups}
        options = {key: url for key, url in options.items() if url}
        flags = ["--rollups", args.rollups] if args.rollups else []
        return options, " and ".join(options.values()), flags
    root = embedded_path().resolve()
    # An explicit rollup URL in the environment would send the suggested reads elsewhere.
    flags = ["--rollups", root.as_uri()] if os.environ.get(_commands.ENV_ROLLUPS) else []
    return {"stream_storage": (root / "demo").as_uri()}, str(root), flags


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _hints(flags: list[str], first: datetime, last: datetime) -> list[str]:
    middle = first + (last - first) / 2
    before, split, after = (t.strftime("%Y-%m-%dT%H:%M:00Z") for t in (first, middle, last))
    storage = shlex.join(flags)
    windows = f"--before {before} {split} --after {split} {after}"
    plot = "--plot" if _plot.load_plotext() is not None else "--every minute"
    return [
        "Try next:",
        f"  event-meter summary {EVENT} {storage} --by provider=postmark",
        f"  event-meter series {EVENT} {storage} --by provider=sendgrid {plot}",
        f"  event-meter compare {EVENT} {storage} {windows}",
    ]


def run(args: argparse.Namespace) -> int:
    options, where, flags = _storage(args)
    namespace = args.namespace or DEMO_NAMESPACE
    flags = [*flags, "--namespace", namespace]
    now = datetime.now(UTC)
    clock = DemoClock(now - SPAN)
    events = make_events(random.Random(SEED), args.events, now)
    # Storage from the environment is ignored on purpose: never write where an app is configured to.
    meter = EventMeter(**options, namespace=namespace, clock=clock)
    try:
        for started, payload in events:
            clock.current = started  # file stream rows land in the file of their own minute
            meter.stream.append(EVENT, payload)
        # Files become claimable CLAIM_GRACE_SECONDS after their minute ended.
        last_minute_end = _minute(events[-1][0]) + timedelta(minutes=1)
        clock.current = last_minute_end + timedelta(seconds=FileStream.CLAIM_GRACE_SECONDS + 1)
        report = demo_report()
        result = meter.process_pending(report)
        first, last = _minute(events[0][0]), last_minute_end
        overall = meter.summary(report, start=first, end=last)
        postmark = meter.summary(report, start=first, end=last, by={"provider": "postmark"})
        rows = meter.series(report, start=first, end=last, every="minute")
    finally:
        meter.close()
    out = sys.stdout
    out.write(
        f"event-meter demo: recorded {len(events):,} {EVENT} events of the past hour and processed "
        f"{result.processed:,} into namespace {namespace!r} under {where}\n\n"
    )
    if result.locked:
        out.write("(another processor held the lock; showing what was processed before)\n\n")
    window = f"{first:%Y-%m-%d %H:%M} to {last:%H:%M} UTC"
    table = _render.summaries_table({"all": overall, "provider=postmark": postmark})
    _render.print_table(table, title=f"{EVENT} v1, {window}")
    chart = _plot.series_chart(rows, f"{EVENT}: events per minute, {window}", color=out.isatty())
    out.write("\n" + chart)
    out.write("\n" + "\n".join(_hints(flags, first, last)) + "\n")
    return 0
