"""The write-ahead journal of one apply: ``journal/<batch id>.json``.

It holds the whole ``BatchDelta`` and is written atomically before any data
file is touched, and unlinked after the last marker is written. So while it
exists the batch may be partly applied, and anyone replaying it finishes the
batch: each data file records the batch ids it applied, markers are idempotent.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from event_meter.stores.base import BatchDelta, RollupFile
from event_meter.stores.file._fs import fsync_dir
from event_meter.stores.file._layout import (
    CorruptFileError,
    ReportLayout,
    load_json,
    log,
    write_json,
)

__all__ = ["decode", "encode", "load", "pending", "remove", "write"]


def encode(delta: BatchDelta, now_ms: int) -> dict[str, Any]:
    """A JSON-ready form of ``delta``: tuple keys become lists."""
    return {
        "batch_id": delta.batch_id,
        "created_ms": now_ms,
        "entry_ids": list(delta.entry_ids),
        "rollups": [
            [file.granularity, file.bucket_id, list(file.params), keys]
            for file, keys in delta.rollups.items()
        ],
        "state": [[param, value, ms] for (param, value), ms in delta.state.items()],
    }


def decode(doc: Any) -> BatchDelta:
    """The ``BatchDelta`` of an ``encode``d journal; ``ValueError`` when malformed."""
    try:
        return BatchDelta(
            batch_id=str(doc["batch_id"]),
            entry_ids=[str(i) for i in doc["entry_ids"]],
            rollups={
                RollupFile(str(gran), str(bucket), tuple(index)): dict(keys)
                for gran, bucket, index, keys in doc["rollups"]
            },
            state={(str(param), str(value)): int(ms) for param, value, ms in doc["state"]},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed journal: {exc!r}") from None


def write(layout: ReportLayout, delta: BatchDelta, now_ms: int) -> None:
    """Durably record ``delta`` before any data file changes (atomic, fsynced)."""
    write_json(layout.journal(delta.batch_id), encode(delta, now_ms))


def pending(layout: ReportLayout) -> list[Path]:
    """The journals present now, oldest name first (temp files excluded)."""
    try:
        names = sorted(os.listdir(layout.journal_dir))
    except FileNotFoundError:
        return []
    return [layout.journal_dir / n for n in names if n.endswith(".json") and not n.startswith(".")]


def load(path: Path, now_ms: int) -> BatchDelta | None:
    """The delta of one journal; None when it vanished (another replayer finished it).

    A journal that cannot be decoded is renamed aside with an error log rather
    than blocking every later pass; its rows are unmarked, so they are processed
    again, and the per-file batch ids keep files it already changed from
    counting it twice when the same rows form the same batch.
    """
    try:
        doc = load_json(path)
        return None if doc is None else decode(doc)
    except (CorruptFileError, ValueError) as exc:
        log.error("event_meter: setting aside unreadable journal %s: %s", path, exc)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(f"{path.name}.corrupt-{now_ms}"))
        return None


def remove(layout: ReportLayout, batch_id: str) -> None:
    """Unlink the journal of ``batch_id`` (idempotent: a concurrent replayer may have)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.journal(batch_id))
        # Durable: files prune a batch's id once its journal is gone, so a
        # journal that came back after a power loss could be replayed twice.
        fsync_dir(layout.journal_dir)
