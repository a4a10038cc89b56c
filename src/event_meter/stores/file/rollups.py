"""``FileRollups``: the rollup store in plain files under ``PATH/rollups/`` (SPEC 11).

The folder layout is drawn in ``_layout``. How the contract is kept:

- **Definition**: created once by hard-linking a complete temp file to
  ``definition.json``; of concurrent creators exactly one wins, everyone gets
  the stored dict back.
- **Apply** is exactly-once per batch id through a write-ahead journal:
  (1) ``journal/<batch id>.json`` with the whole delta, written atomically;
  (2) each rollup file and state shard is merged under its lock unless it
  already records the batch id (or the journal is already gone, i.e. another
  replayer finished the batch), and records it; (3) the markers of every entry
  id are written; (4) the journal is unlinked. A crash before (1) loses
  nothing (the rows are still pending and unmarked); after it, ``recover``
  replays (2)-(4), safely alongside any other replayer thanks to the per-file
  batch ids, and the markers make the retried rows count as already processed.
  An apply whose entry ids are all marked already is a no-op. Batch-id records
  of finished batches are pruned on the file's next write (see ``_rollup_files``).
- **Reads** take no lock: every file is replaced by rename, so a reader sees a
  whole old or new file. Nothing is cached across calls (other processes write).
- **Leases** are ``flock``s: the kernel drops them when the holder dies, and
  they never expire while it lives, so ``ttl_ms`` is not used.

Every ``OSError`` (and unreadable definition, marker or journal) leaves a
public method as ``StorageError`` naming the path. A corrupt rollup or state
file is read as empty with a warning and set aside on its next write.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from event_meter._keys import ReportRef
from event_meter._time import now_ms
from event_meter.stores.base import BatchDelta, Fields, Lease, RollupStore
from event_meter.stores.file import _journal, _markers, _rollup_files, _state
from event_meter.stores.file._fs import (
    FlockLease,
    ensure_dir,
    fsync_dir,
    remove_stale_temp_files,
    try_flock,
)
from event_meter.stores.file._layout import (
    CorruptFileError,
    ReportLayout,
    create_once,
    load_json,
    log,
    namespace_dir,
    storage_errors,
    write_json,
)

__all__ = ["FileRollups"]

_WATERMARK = "auto_cleanup_last_run.json"
STALE_TEMP_SECONDS = 3_600.0


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder) if entry.is_dir()]
    except FileNotFoundError:
        return []


class FileRollups(RollupStore):
    """Rollups, interval state, markers, leases and the watermark in files under ``path``.

    Safe for many threads and processes on one host sharing ``path`` (``flock``
    does not reach across network file systems reliably).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileRollups({str(self.path)!r})"

    def _layout(self, ref: ReportRef) -> ReportLayout:
        return ReportLayout(self.path, ref)

    def _now(self) -> int:
        return now_ms(self.clock)

    # -- definitions -------------------------------------------------------

    def store_definition(self, ref: ReportRef, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``definition`` unless one is stored (atomic create-once); the stored dict."""
        layout = self._layout(ref)
        with storage_errors("store_definition", layout.definition):
            stored = self._load_definition(layout)
            if stored is not None:  # the common case: no write (works on a full disk too)
                return stored
            data = orjson.dumps(definition)
            if create_once(layout.definition, data):
                return dict(orjson.loads(data))
            stored = self._load_definition(layout)
            if stored is None:  # removed between our link attempt and the read
                raise CorruptFileError(layout.definition, "vanished while being read")
            return stored

    def load_definition(self, ref: ReportRef) -> dict[str, Any] | None:
        layout = self._layout(ref)
        with storage_errors("load_definition", layout.definition):
            return self._load_definition(layout)

    @staticmethod
    def _load_definition(layout: ReportLayout) -> dict[str, Any] | None:
        doc = load_json(layout.definition)
        if doc is not None and not isinstance(doc, dict):
            raise CorruptFileError(layout.definition, "not a JSON object")
        return doc

    def list_reports(self, namespace: str) -> list[tuple[str, int]]:
        """``(name, version)`` of every stored definition, from the files' contents."""
        folder = namespace_dir(self.path, namespace)
        found: set[tuple[str, int]] = set()
        with storage_errors("list_reports", folder):
            for path in folder.glob("*/v*/definition.json"):
                try:
                    doc = load_json(path)
                except CorruptFileError:
                    log.warning("event_meter: ignoring corrupt report definition %s", path)
                    continue
                if isinstance(doc, dict):
                    name, version = doc.get("name"), doc.get("version")
                    if isinstance(name, str) and type(version) is int:
                        found.add((name, version))
        return sorted(found)

    # -- apply and recovery -------------------------------------------------

    def apply(self, ref: ReportRef, delta: BatchDelta) -> None:
        """Apply ``delta`` exactly once per ``delta.batch_id`` (journal, then files, then markers).

        Not atomic across files, but idempotent: when this raises or the process
        dies after the journal was written, ``recover`` (or a retry with the same
        batch id) finishes the batch without counting any file twice.
        """
        layout = self._layout(ref)
        with storage_errors("apply", layout.base):
            if not (delta.rollups or delta.state or delta.entry_ids):
                return
            # Markers are written last, so marked ids mean every file already has
            # this batch. A delta never mixes marked and unmarked ids (the
            # processor drops marked ids first, and claims keep rows to one
            # processor), so its two ends stand for the whole batch.
            ends = {delta.entry_ids[0], delta.entry_ids[-1]} if delta.entry_ids else set()
            if ends and _markers.processed_ids(layout, ends) == ends:
                return
            layout.ensure()
            now = self._now()
            _journal.write(layout, delta, now)
            self._replay(layout, delta, now)

    def recover(self, ref: ReportRef, running: Collection[str] = ()) -> None:
        """Finish every journaled apply of this report (safe alongside other replayers),
        except the batches in ``running``."""
        layout = self._layout(ref)
        with storage_errors("recover", layout.base):
            journals = _journal.pending(layout)
            if not journals:
                return
            layout.ensure()
            for path in journals:
                now = self._now()
                delta = _journal.load(path, now)
                if delta is not None and delta.batch_id not in running:
                    log.info("event_meter: replaying interrupted apply %s", path)
                    self._replay(layout, delta, now)

    @staticmethod
    def _replay(layout: ReportLayout, delta: BatchDelta, now: int) -> None:
        """Steps 2-4 of an apply; each one is idempotent, so replays may overlap.

        Data files are fsynced one by one, their folders once per batch, and all
        of that before the markers: a power loss never keeps markers of rows
        whose rollups it lost.
        """
        folders: set[Path] = set()
        for file, keys in delta.rollups.items():
            rel = layout.rollup_rel(file.granularity, file.bucket_id, file.params)
            merge = _rollup_files.merge_rollups(keys)
            _rollup_files.update_guarded(
                layout, rel, "rollups", delta.batch_id, now, merge, folders
            )
        for rel, state_keys in _state.group_by_shard(delta.state).items():
            merge = _state.merge_state({key: delta.state[key] for key in state_keys})
            _rollup_files.update_guarded(layout, rel, "values", delta.batch_id, now, merge, folders)
        for folder in sorted(folders):
            fsync_dir(folder)
        _markers.mark(layout, delta.entry_ids, now)
        _journal.remove(layout, delta.batch_id)

    # -- markers and state ---------------------------------------------------

    def processed_ids(self, ref: ReportRef, entry_ids: Sequence[str]) -> set[str]:
        layout = self._layout(ref)
        with storage_errors("processed_ids", layout.base):
            return _markers.processed_ids(layout, entry_ids)

    def forget(self, ref: ReportRef, entry_ids: Sequence[str]) -> None:
        """Remove the markers of ``entry_ids`` (idempotent)."""
        layout = self._layout(ref)
        with storage_errors("forget", layout.base):
            if entry_ids:
                layout.ensure()
                _markers.forget(layout, entry_ids)

    def read_state(
        self, ref: ReportRef, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        layout = self._layout(ref)
        with storage_errors("read_state", layout.base):
            return _state.read_state(layout, keys)

    # -- rollups ---------------------------------------------------------------

    def read_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        bucket_ids: Sequence[str],
    ) -> list[Fields | None]:
        layout = self._layout(ref)
        with storage_errors("read_rollups", layout.base):
            return _rollup_files.read_rollup_keys(
                layout, granularity, index, index_key, list(bucket_ids)
            )

    def bucket_index_keys(
        self, ref: ReportRef, granularity: str, bucket_id: str, params: tuple[str, ...]
    ) -> set[str]:
        layout = self._layout(ref)
        with storage_errors("bucket_index_keys", layout.base):
            return _rollup_files.bucket_index_keys(layout, granularity, bucket_id, params)

    def scan_rollups(
        self,
        ref: ReportRef,
        granularity: str,
        index: tuple[str, ...],
        index_key: str,
        limit: int | None,
    ) -> list[tuple[str, Fields]]:
        layout = self._layout(ref)
        with storage_errors("scan_rollups", layout.base):
            return _rollup_files.scan_rollups(layout, granularity, index, index_key, limit)

    # -- leases ----------------------------------------------------------------

    def try_report_lock(self, ref: ReportRef, ttl_ms: int) -> Lease | None:
        """An ``flock`` on ``process.lock``, or None while another holder has it.

        ``ttl_ms`` is unused: the lease lasts while the holder lives, and the
        kernel releases it the moment the holder dies.
        """
        layout = self._layout(ref)
        with storage_errors("try_report_lock", layout.process_lock):
            ensure_dir(layout.base)
            fd = try_flock(layout.process_lock)
        return None if fd is None else FlockLease(fd)

    def try_cleanup_lock(self, namespace: str, ttl_ms: int) -> Lease | None:
        """An ``flock`` on the namespace's ``process.lock`` (``ttl_ms`` unused, as above)."""
        path = namespace_dir(self.path, namespace) / "process.lock"
        with storage_errors("try_cleanup_lock", path):
            ensure_dir(path.parent)
            fd = try_flock(path)
        return None if fd is None else FlockLease(fd)

    # -- cleanup ---------------------------------------------------------------

    def cleanup(self, ref: ReportRef, before_ms: int) -> dict[str, int]:
        """Delete buckets that ended by ``before_ms``, older state and older markers.

        Each deletion happens under the file's lock, so a concurrent apply is
        never lost: it either lands before (and is deleted as old) or recreates
        the file after.
        """
        layout = self._layout(ref)
        with storage_errors("cleanup", layout.base):
            if not layout.base.is_dir():
                return {
                    "rollup_keys_deleted": 0,
                    "interval_state_keys_deleted": 0,
                    "processed_entries_deleted": 0,
                }
            layout.ensure()
            # Temp files of killed writers in the small folders; those in day
            # folders go with their folder once it ages out.
            for folder in (layout.journal_dir, layout.base / "processed", layout.base):
                remove_stale_temp_files(folder, STALE_TEMP_SECONDS)
            for folder in _subfolders(layout.base / "state"):
                remove_stale_temp_files(folder, STALE_TEMP_SECONDS)
            return {
                "rollup_keys_deleted": _rollup_files.cleanup_rollups(layout, before_ms),
                "interval_state_keys_deleted": _state.cleanup_state(layout, before_ms, self._now()),
                "processed_entries_deleted": _markers.cleanup_markers(layout, before_ms),
            }

    def read_watermark(self, namespace: str) -> int | None:
        """The last automatic cleanup run (ms); None when never run or unreadable."""
        path = namespace_dir(self.path, namespace) / _WATERMARK
        with storage_errors("read_watermark", path):
            try:
                doc = load_json(path)
            except CorruptFileError:
                return None  # the next cleanup run rewrites it
        value = doc.get("last_run_ms") if isinstance(doc, dict) else None
        return value if type(value) is int else None

    def write_watermark(self, namespace: str, ms: int) -> None:
        """Atomically record the last automatic cleanup run."""
        path = namespace_dir(self.path, namespace) / _WATERMARK
        with storage_errors("write_watermark", path):
            write_json(path, {"last_run_ms": ms})
