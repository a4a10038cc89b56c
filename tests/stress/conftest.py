"""Fixtures and the figures line of the stress suite."""

from __future__ import annotations

import os

import orjson
import pytest

from stress.runner import RESULTS


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip ``fsync`` here too (forked children inherit it), as the crash suite does.

    A SIGKILLed process loses nothing that reached the page cache; ``fsync`` only
    guards against a machine crash, which this suite does not simulate.
    """
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One JSON line per pairing run (also appended to ``$EVENT_METER_STRESS_REPORT``)."""
    if not RESULTS:
        return
    terminalreporter.section("stress figures")
    lines = [orjson.dumps(figures).decode() for figures in RESULTS]
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("EVENT_METER_STRESS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
