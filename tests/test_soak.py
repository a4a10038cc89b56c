"""The soak runner (``python -m event_meter.soak``): a short run in the default suite,
the long one (marker ``soak``) only with ``EVENT_METER_SOAK=1``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from event_meter._time import datetime_to_ms, iso_us


def soak(*args: str, timeout: float) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "event_meter.soak", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert done.stderr == b"", done.stderr.decode()
    return done.returncode, lines


def check_lines(lines: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = [line["event"] for line in lines]
    assert kinds[0] == "soak_start", kinds
    assert kinds[-1] == "soak_finish", kinds
    assert set(kinds[1:-1]) == {"soak_sample"}, kinds
    for sample in lines[1:-1]:
        assert sample["rss_kb"] > 0, sample
        assert sample["open_fds"] > 0, sample
        assert {"stream_files", "rollup_files", "written", "processed"} <= sample.keys()
    finish = lines[-1]
    assert finish["counts_ok"], finish
    assert finish["written"] == finish["processed"] > 0, finish
    assert finish["wrong_buckets"] == [], finish
    return finish


def test_a_short_soak_with_cleanup_and_failing_deletes() -> None:
    code, lines = soak(
        "--seconds", "3", "--sample-every", "0.5", "--cleanup", "--delete-failures", "0.2",
        timeout=60,
    )  # fmt: skip
    finish = check_lines(lines)
    assert code == 0, lines[-1]
    assert finish["delete_failures"] > 0, finish
    assert finish["skipped_already_processed"] > 0, finish  # rows kept by a failed delete
    assert len(lines) >= 6, lines


@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("EVENT_METER_SOAK") != "1", reason="set EVENT_METER_SOAK=1")
def test_ten_minutes_with_cleanup_stay_flat() -> None:
    code, lines = soak("--seconds", "600", "--cleanup", timeout=900)
    finish = check_lines(lines)
    assert code == 0, finish
    assert finish["grew"] == [], finish


def test_started_at_parse_caches_stay_small() -> None:
    """Regression: the started-at parse caches of ``_payload`` held up to 100,000
    seconds and 100,000 minutes (about 25 MB each when full), which a soak run
    showed as RSS growing for the first ~28 hours of events a process loads."""
    from event_meter import _payload

    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(20_000):  # 20,000 distinct seconds in 20,000 distinct minutes
        at = base + timedelta(seconds=61 * n, microseconds=123_000)
        loaded = _payload.load_payload({"name": "x", "status": "success", "started_at": iso_us(at)})
        assert not isinstance(loaded, str), loaded
        assert loaded.started_ms == datetime_to_ms(at)
    assert len(_payload._SECONDS) <= 5_000
    assert len(_payload._MINUTES) <= 5_000
