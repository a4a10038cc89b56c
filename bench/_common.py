"""Helpers shared by the benchmark scripts: a fake clock, the report, child runs, RSS."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from event_meter import Report

__all__ = ["T0", "FakeClock", "invoice_report", "peak_rss_mib", "run_child"]

T0 = datetime(2026, 5, 6, 9, 0, 0, tzinfo=UTC)


class FakeClock:
    """A UTC clock that moves only when told to (``current`` is public)."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def invoice_report() -> Report:
    """The report of SPEC section 1."""
    return (
        Report("invoice_delivery")
        .index_by("customer_id")
        .index_by("provider")
        .index_by("provider", "queue")
        .measure_interval_by("customer_id", group_by="provider")
    )


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --child ...`` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, script, "--child", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
