"""Fixtures of the crash-safety suite."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip ``fsync`` (forked children inherit this too).

    A killed process loses nothing that reached the page cache; ``fsync`` only
    guards against a machine crash, which this suite does not simulate, and on a
    real disk it is two thirds of the run time.
    """
    monkeypatch.setattr(os, "fsync", lambda fd: None)
