"""Processed-entry markers, one file per stream file: ``processed/<folder(group)>.json``.

The group of an entry id is what it shares with the other rows of its stream file:

- ``<stream file name>:<seq>`` (file stream) -> ``stream:<stream file name>``;
- ``<ms>-<seq>`` (Redis stream) -> ``minute:<ms // 60000>``;
- anything else -> ``hash:<first 2 hex of SHA-256>``.

A marker file is ``{"group": ..., "runs": [[first, last, marked_ms], ...],
"ids": {id: marked_ms}}``. A file-stream batch is a contiguous range of line
numbers, so its markers are one run of integers, not ten thousand id strings:
testing, marking and forgetting a batch touch a few small lists. Ids whose
member part is not a canonical decimal (Redis ids, anything else) are kept
whole in ``ids``. Every run and id keeps the time it was marked, so cleanup
drops only markers older than ``before``.

Testing a batch reads only its groups' files, and forgetting the rows of a
deleted stream file unlinks its marker file. Writes are read-modify-write
under the stripe lock and atomic; marking and forgetting are idempotent.
A corrupt marker file raises ``CorruptFileError``: treating it as empty could
count rows twice, so it is left for an operator (the error names the path).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from event_meter.stores.file._layout import CorruptFileError, ReportLayout, load_json, write_json

__all__ = ["cleanup_markers", "forget", "mark", "marker_group", "processed_ids"]

Run = list[int]  # [first, last, marked_ms], first <= last, inclusive


class _Group:
    """The ids of one batch that share a marker file: integer members and whole ids."""

    __slots__ = ("head", "numbers", "others")

    def __init__(self, head: str) -> None:
        self.head = head  # "<stream file name>:" for stream groups, "" otherwise
        self.numbers: set[int] = set()
        self.others: set[str] = set()

    def ids_of(self, numbers: Iterable[int]) -> set[str]:
        head = self.head
        return {f"{head}{n}" for n in numbers}


def marker_group(entry_id: str) -> str:
    """The marker group of an entry id (see the module docstring)."""
    head, sep, _ = entry_id.rpartition(":")
    if sep:
        return f"stream:{head}"
    ms, dash, seq = entry_id.partition("-")
    if dash and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit():
        return f"minute:{int(ms) // 60_000}"
    return f"hash:{hashlib.sha256(entry_id.encode('utf-8', 'surrogatepass')).hexdigest()[:2]}"


# The processor asks about the same ids three times per batch (test, mark,
# forget); grouping them is the costly part, so the last result is kept.
_last: tuple[list[str], dict[str, _Group]] = ([], {})


def _by_group(entry_ids: Iterable[str]) -> dict[str, _Group]:
    """The groups of ``entry_ids`` (never mutated by callers, so safe to share)."""
    global _last
    ids = list(entry_ids)
    last_ids, last_groups = _last  # one read: safe against a concurrent update
    if ids == last_ids:
        return last_groups
    groups = _group(ids)
    if len(ids) > 16:  # small asks (a batch's two ends) must not evict a batch
        _last = (ids, groups)
    return groups


def _group(entry_ids: list[str]) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    by_head: dict[str, _Group] = {}  # file stream ids of one batch share few heads
    for entry_id in entry_ids:
        head, sep, tail = entry_id.rpartition(":")
        if sep:
            group = by_head.get(head)
            if group is None:
                name = f"stream:{head}"
                group = groups.get(name) or groups.setdefault(name, _Group(f"{head}:"))
                by_head[head] = group
            # A canonical decimal (no sign, no leading zero) round-trips through int.
            if tail.isdigit() and tail.isascii() and (tail[0] != "0" or tail == "0"):
                group.numbers.add(int(tail))
            else:
                group.others.add(entry_id)
        else:
            name = marker_group(entry_id)
            group = groups.get(name) or groups.setdefault(name, _Group(""))
            group.others.add(entry_id)
    return groups


def _runs_of(numbers: Iterable[int], marked_ms: int) -> list[Run]:
    runs: list[Run] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n, marked_ms])
    return runs


def _valid_run(run: object) -> bool:
    return isinstance(run, list) and len(run) == 3 and all(type(x) is int for x in run)


def _load(layout: ReportLayout, rel: str) -> dict[str, Any] | None:
    path = layout.base / rel
    doc = load_json(path)
    if doc is None:
        return None
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("runs"), list)
        and all(_valid_run(run) for run in doc["runs"])
        and isinstance(doc.get("ids"), dict)
    ):
        raise CorruptFileError(path, "not a processed-marker file")
    return doc


def _covered(numbers: set[int], runs: list[Run]) -> set[int]:
    """The members of ``numbers`` inside some run (cost grows with runs, not members)."""
    if not numbers or not runs:
        return set()
    low, high = min(numbers), max(numbers)
    found: set[int] = set()
    for first, last, _ in runs:
        if last < low or first > high:
            continue
        if first <= low and high <= last:
            return set(numbers)
        found.update(n for n in numbers if first <= n <= last)
    return found


def processed_ids(layout: ReportLayout, entry_ids: Iterable[str]) -> set[str]:
    """The ids among ``entry_ids`` that are marked; reads only their groups' files."""
    done: set[str] = set()
    for name, group in _by_group(entry_ids).items():
        doc = _load(layout, ReportLayout.marker_rel(name))
        if doc is None:
            continue
        done |= group.ids_of(_covered(group.numbers, doc["runs"]))
        done |= group.others.intersection(doc["ids"])
    return done


def mark(layout: ReportLayout, entry_ids: Iterable[str], now_ms: int) -> None:
    """Mark ``entry_ids`` processed (idempotent; a file already holding them is not rewritten)."""
    for name, group in _by_group(entry_ids).items():
        rel = ReportLayout.marker_rel(name)
        with layout.locked(rel) as path:
            doc = _load(layout, rel) or {"group": name, "runs": [], "ids": {}}
            new_numbers = group.numbers - _covered(group.numbers, doc["runs"])
            new_others = group.others.difference(doc["ids"])
            if not new_numbers and not new_others:
                continue
            # Runs keep their own times (rows of one file are marked batch by batch).
            doc["runs"] = sorted(doc["runs"] + _runs_of(new_numbers, now_ms))
            doc["ids"].update(dict.fromkeys(new_others, now_ms))
            write_json(path, doc)


def _without(runs: list[Run], numbers: set[int]) -> list[Run]:
    """``runs`` minus ``numbers``, splitting runs around the removed members."""
    out: list[Run] = []
    for first, last, ms in runs:
        removed = sorted(_covered(numbers, [[first, last, ms]]))
        if not removed:
            out.append([first, last, ms])
            continue
        start = first
        for n in removed:
            if n > start:
                out.append([start, n - 1, ms])
            start = n + 1
        if start <= last:
            out.append([start, last, ms])
    return out


def _store(path: Any, doc: dict[str, Any]) -> None:
    """Write ``doc``, or unlink the file when it holds no marker any more."""
    if doc["runs"] or doc["ids"]:
        write_json(path, doc)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def forget(layout: ReportLayout, entry_ids: Iterable[str]) -> None:
    """Remove the markers of ``entry_ids``; a file left empty is unlinked (idempotent)."""
    for name, group in _by_group(entry_ids).items():
        rel = ReportLayout.marker_rel(name)
        with layout.locked(rel) as path:
            doc = _load(layout, rel)
            if doc is None:
                continue
            runs = _without(doc["runs"], group.numbers)
            ids = {i: ms for i, ms in doc["ids"].items() if i not in group.others}
            if runs == doc["runs"] and len(ids) == len(doc["ids"]):
                continue
            doc["runs"], doc["ids"] = runs, ids
            _store(path, doc)


def cleanup_markers(layout: ReportLayout, before_ms: int) -> int:
    """Delete markers made before ``before_ms`` (files left empty go); the number deleted."""
    deleted = 0
    try:
        names = sorted(n for n in os.listdir(layout.base / "processed") if n.endswith(".json"))
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith("."):
            continue
        rel = f"processed/{name}"
        with layout.locked(rel) as path:
            doc = _load(layout, rel)
            if doc is None:
                continue
            runs = [run for run in doc["runs"] if run[2] >= before_ms]
            ids = {i: ms for i, ms in doc["ids"].items() if type(ms) is int and ms >= before_ms}
            removed = sum(last - first + 1 for first, last, ms in doc["runs"] if ms < before_ms)
            removed += len(doc["ids"]) - len(ids)
            if not removed:
                continue
            deleted += removed
            doc["runs"], doc["ids"] = runs, ids
            _store(path, doc)
    return deleted
