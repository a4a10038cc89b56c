"""Where one report's files live, how they are locked, read and written.

One folder per report, ``PATH/rollups/<folder(ns)>/<folder(name)>/v<N>/``::

    definition.json                                 created once, never rewritten
    process.lock                                    the report processing lease (flock)
    rollups/<index>/<granularity>/<YYYYMMDD>/<bucket id>.json
    state/<folder(param)>/<0-f>.json                interval state, 16 shards per param
    processed/<folder(group)>.json                  processed markers per stream file
    journal/<batch id>.json                         write-ahead journal of an apply
    locks/<0-63>.lock                               striped flock files

``<index>`` is ``all`` for the all index and ``folder_name("p1|p2")`` otherwise
(folder names always end in ``-<16 hex>``, so no index is ever called ``all``).

Every data file is changed by read-modify-write while holding the ``flock`` of
its stripe, and written with ``atomic_write`` (temp file, fsync, rename), so a
reader without the lock sees the old or the new content, never a part. The lock
is taken on a separate, never-unlinked file because a rename replaces the data
file's inode; 64 stripes per report keep the lock files few, and a caller holds
one stripe at a time, so no two callers can deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef, esc, folder_name
from event_meter.errors import StorageError
from event_meter.stores.file._fs import atomic_write, ensure_dir, exclusive

__all__ = [
    "LOCK_STRIPES",
    "CorruptFileError",
    "ReportLayout",
    "create_once",
    "load_json",
    "log",
    "namespace_dir",
    "set_aside",
    "storage_errors",
    "write_json",
]

LOCK_STRIPES: Final = 64
log = logging.getLogger("event_meter")


class CorruptFileError(ValueError):
    """A file that must be valid JSON of a known shape is not; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is corrupt: {reason}")
        self.path = path


def namespace_dir(root: Path, namespace: str) -> Path:
    """``PATH/rollups/<folder(ns)>``: the reports, cleanup lock and watermark of a namespace."""
    return root / "rollups" / folder_name(namespace)


def index_folder(index: tuple[str, ...]) -> str:
    """``all``, or a folder name of its own for every distinct tuple of params.

    The params are joined with ``|``. When a param holds a ``|`` itself that join
    is ambiguous (``("a|b",)`` and ``("a", "b")`` would share files, and a batch
    touching both would apply to the shared file once), so such an index hashes
    ``|`` followed by the ``esc`` of each param, joined with ``|``: a form no
    plain join can produce (params are non-blank, so a plain join never starts
    with ``|``).
    """
    if not index:
        return "all"
    if any("|" in param for param in index):
        return folder_name("|" + "|".join(esc(param) for param in index))
    return folder_name("|".join(index))


def valid_bucket_id(bucket_id: str) -> bool:
    """Bucket ids become file and day-folder names, so only plain digit ids are used."""
    return len(bucket_id) >= 8 and bucket_id.isascii() and bucket_id.isdigit()


class ReportLayout:
    """The paths of one report. Data paths are given relative to ``base`` (``rel``)."""

    __slots__ = ("base",)

    def __init__(self, root: Path, ref: ReportRef) -> None:
        self.base = namespace_dir(root, ref.namespace) / folder_name(ref.name) / f"v{ref.version}"

    @property
    def definition(self) -> Path:
        return self.base / "definition.json"

    @property
    def process_lock(self) -> Path:
        return self.base / "process.lock"

    @property
    def journal_dir(self) -> Path:
        return self.base / "journal"

    def journal(self, batch_id: str) -> Path:
        return self.base / "journal" / f"{batch_id}.json"

    def granularity_dir(self, granularity: str, index: tuple[str, ...]) -> Path:
        return self.base / "rollups" / index_folder(index) / granularity

    @staticmethod
    def rollup_rel(granularity: str, bucket_id: str, index: tuple[str, ...]) -> str:
        if not valid_bucket_id(bucket_id):
            raise ValueError(f"bucket id {bucket_id!r} is not a minute or hour bucket id")
        return f"rollups/{index_folder(index)}/{granularity}/{bucket_id[:8]}/{bucket_id}.json"

    @staticmethod
    def state_rel(param: str, shard: str) -> str:
        return f"state/{folder_name(param)}/{shard}.json"

    @staticmethod
    def marker_rel(group: str) -> str:
        return f"processed/{folder_name(group)}.json"

    def ensure(self) -> None:
        """Create the report folder and its lock folder (idempotent)."""
        ensure_dir(self.base / "locks")

    @contextlib.contextmanager
    def locked(self, rel: str) -> Iterator[Path]:
        """Hold the stripe lock of ``rel`` and yield its absolute path."""
        stripe = zlib.crc32(rel.encode("utf-8", "surrogatepass")) % LOCK_STRIPES
        with exclusive(self.base / "locks" / f"{stripe}.lock"):
            yield self.base / rel


@contextlib.contextmanager
def storage_errors(what: str, path: Path) -> Iterator[None]:
    """The one place where file-system and JSON failures become ``StorageError``."""
    try:
        yield
    except StorageError:
        raise
    except CorruptFileError as exc:
        raise StorageError(f"file rollups: {what}: {exc}") from exc
    except OSError as exc:
        where = exc.filename if exc.filename is not None else path
        raise StorageError(
            f"file rollups: {what} failed at {where}: {exc.strerror or exc}"
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise StorageError(f"file rollups: {what} read bad JSON under {path}: {exc}") from exc


def load_json(path: Path) -> Any:
    """The JSON value in ``path``; None when missing; ``CorruptFileError`` when not JSON."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptFileError(path, f"not JSON ({exc})") from None


def write_json(path: Path, value: object, *, sync_dir: bool = True) -> None:
    """Atomically replace ``path`` with compact JSON, creating its folder when missing.

    A missing folder is created on the first failure only (cleanup may remove an
    emptied day folder between our mkdir and our write, so the retry covers that race).
    ``sync_dir=False`` leaves the folder fsync to the caller (see ``atomic_write``).
    """
    data = orjson.dumps(value)
    try:
        atomic_write(path, data, sync_dir=sync_dir)
    except FileNotFoundError:
        ensure_dir(path.parent)
        atomic_write(path, data, sync_dir=sync_dir)


def set_aside(path: Path, now_ms: int) -> None:
    """Rename a corrupt data file to ``<name>.corrupt-<ms>`` so it is kept but never read."""
    log.warning("event_meter: %s is corrupt; keeping it as %s.corrupt-%d", path, path.name, now_ms)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(f"{path.name}.corrupt-{now_ms}"))


def create_once(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The bytes go to a complete, fsynced temp file that is then hard-linked to the
    final name: ``link`` fails with EEXIST instead of replacing, so of concurrent
    creators exactly one wins and nobody ever sees a partial file.
    """
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
