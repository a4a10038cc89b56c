"""Where the file stream keeps one event's rows, and what its file names mean.

``PATH/streams/<folder_name(event name)>/`` holds ``logs/`` (files being
written), ``processing/`` (claimed files and their ``.offset`` progress),
``quarantine/`` (copies of malformed rows) and ``claim_locks/`` (one ``flock``
file per data file).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Final, NamedTuple

from event_meter._keys import folder_name
from event_meter._time import parse_bucket_id

__all__ = [
    "DATA_SUFFIX",
    "LOCK_SUFFIX",
    "OFFSET_SUFFIX",
    "StreamDirs",
    "is_data_file",
    "minute_name",
    "minute_start",
    "sanitize_host",
]

DATA_SUFFIX: Final = ".jsonl"
OFFSET_SUFFIX: Final = ".offset"
LOCK_SUFFIX: Final = ".lock"
_HOST_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.]+")


class StreamDirs(NamedTuple):
    """The four folders of one event name's stream."""

    logs: Path
    processing: Path
    quarantine: Path
    claim_locks: Path

    @classmethod
    def of(cls, root: Path, name: str) -> StreamDirs:
        base = root / "streams" / folder_name(name)
        return cls(base / "logs", base / "processing", base / "quarantine", base / "claim_locks")

    def offset_path(self, file: str) -> Path:
        return self.processing / (file + OFFSET_SUFFIX)

    def lock_path(self, file: str) -> Path:
        return self.claim_locks / (file + LOCK_SUFFIX)


def sanitize_host(host: str) -> str:
    """A host name safe inside a file name; ``-`` is replaced so names split cleanly."""
    return _HOST_UNSAFE.sub("_", host).strip("_.")[:63] or "host"


def is_data_file(name: str) -> bool:
    """Stream data files end in ``.jsonl``; temp files of atomic writes start with a dot."""
    return name.endswith(DATA_SUFFIX) and not name.startswith(".")


def minute_name(start_s: int) -> str:
    """``YYYYMMDDHHMM`` of the UTC minute starting at ``start_s`` epoch seconds."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(start_s))


def minute_start(file: str) -> int | None:
    """Epoch seconds of the minute a data file is named after; None when unparseable."""
    start_ms = parse_bucket_id(file[:12], "minute")
    return None if start_ms is None else start_ms // 1000
