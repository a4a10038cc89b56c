"""Temp files that a killed writer leaves behind are swept, live ones never."""

from __future__ import annotations

import os
import time
from pathlib import Path

from event_meter._keys import ReportRef
from event_meter.stores.file._fs import remove_stale_temp_files
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file.rollups import STALE_TEMP_SECONDS, FileRollups
from support import FakeClock


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_only_old_dot_tmp_files_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".bucket.json.abc123.tmp"
    fresh = tmp_path / ".bucket.json.def456.tmp"
    data = tmp_path / "bucket.json"
    visible_tmp = tmp_path / "notes.tmp"
    for path in (stale, fresh, data, visible_tmp):
        path.write_bytes(b"{}")
    for path in (stale, data, visible_tmp):
        _age(path, 7_200)
    assert remove_stale_temp_files(tmp_path, 3_600) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, data.name, visible_tmp.name]
    )
    assert remove_stale_temp_files(tmp_path / "missing", 3_600) == 0


def test_rollup_cleanup_sweeps_temp_files_of_killed_writers(tmp_path: Path) -> None:
    store = FileRollups(tmp_path)
    store.bind(namespace="ns:temp", clock=FakeClock())
    ref = ReportRef("ns:temp", "invoice_delivery", 1)
    layout = ReportLayout(tmp_path, ref)
    leftovers = []
    for folder in (layout.journal_dir, layout.base / "processed", layout.base / "state" / "p"):
        folder.mkdir(parents=True, exist_ok=True)
        leftover = folder / ".x.json.1234.tmp"
        leftover.write_bytes(b"{")
        _age(leftover, STALE_TEMP_SECONDS + 60)
        leftovers.append(leftover)
    live = layout.journal_dir / ".y.json.5678.tmp"
    live.write_bytes(b"{")
    store.cleanup(ref, 0)
    assert [p.exists() for p in leftovers] == [False, False, False]
    assert live.exists()
