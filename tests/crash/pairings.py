"""Backend pairings and the processes of the crash-safety suite.

A **pairing** opens a stream store and a rollup store on one storage place, as a
new process would. Durable pairings (whose data outlives the process) run the
kill scenarios; all of them run the exception scenarios. A later backend (Redis,
PostgreSQL) joins by adding one ``Pairing`` to ``PAIRINGS``, and, if its stream
or its journal can be inspected, a branch to ``Storage.leftovers``.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crash.workload import EVENT
from event_meter import EventMeter
from event_meter._keys import ReportRef
from event_meter.stores.base import RollupStore, StreamStore
from event_meter.stores.file._layout import ReportLayout
from event_meter.stores.file._stream_layout import StreamDirs
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from event_meter.stores.memory import MemoryRollups, MemoryStream

FILE_STREAM: Final = "file_stream"
FILE_ROLLUPS: Final = "file_rollups"
Opener = Callable[[Path, dict[str, Any]], tuple[StreamStore, RollupStore]]


@dataclass(frozen=True)
class Pairing:
    """A stream backend feeding a rollup backend."""

    name: str
    durable: bool
    features: frozenset[str]
    open: Opener


def _shared(shared: dict[str, Any], key: str, make: Callable[[], Any]) -> Any:
    if key not in shared:
        shared[key] = make()
    return shared[key]


PAIRINGS: Final = (
    Pairing(
        "file->file",
        True,
        frozenset({FILE_STREAM, FILE_ROLLUPS}),
        lambda root, shared: (FileStream(root), FileRollups(root)),
    ),
    Pairing(
        "file->memory",
        False,
        frozenset({FILE_STREAM}),
        lambda root, shared: (FileStream(root), _shared(shared, "rollups", MemoryRollups)),
    ),
    Pairing(
        "memory->memory",
        False,
        frozenset(),
        lambda root, shared: (
            _shared(shared, "stream", MemoryStream),
            _shared(shared, "rollups", MemoryRollups),
        ),
    ),
)
DURABLE: Final = tuple(p for p in PAIRINGS if p.durable)


@dataclass
class Storage:
    """One storage place of a pairing; ``meter()`` opens it as a fresh process would."""

    pairing: Pairing
    root: Path
    clock: Any
    namespace: str
    _shared: dict[str, Any] = field(default_factory=dict)
    _opened: list[StreamStore | RollupStore] = field(default_factory=list)

    def meter(self) -> EventMeter:
        stream, rollups = self.pairing.open(self.root, self._shared)
        self._opened += [stream, rollups]
        return EventMeter(
            namespace=self.namespace,
            stream_storage=stream,
            rollup_storage=rollups,
            clock=self.clock,
        )

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()

    def leftovers(self, meter: EventMeter) -> list[str]:
        """What is left of the stream (rows, claimed files, offsets) and of journals."""
        found: list[str] = []
        stream, rollups = meter.stream, meter.rollups
        if isinstance(stream, FileStream):
            dirs = StreamDirs.of(stream.path, EVENT)
            for folder in (dirs.logs, dirs.processing):
                if folder.is_dir():
                    found += [f"{folder.name}/{name}" for name in sorted(os.listdir(folder))]
        elif isinstance(stream, MemoryStream):
            found += [f"memory row {n}" for n in range(stream.pending(EVENT))]
        if isinstance(rollups, FileRollups):
            for ref in _refs(meter):
                journals = ReportLayout(rollups.path, ref).journal_dir
                if journals.is_dir():
                    found += [f"journal/{name}" for name in sorted(os.listdir(journals))]
        return found


def _refs(meter: EventMeter) -> list[ReportRef]:
    return [
        ReportRef(meter.config.namespace, name, version)
        for name, version in meter.rollups.list_reports(meter.config.namespace)
    ]


def harmless(leftover: str) -> bool:
    """Leftovers a kill may leave for good and that never affect counts.

    An orphan ``.offset`` (killed between unlinking a finished data file and its
    offset; housekeeping drops it once its claim lock is an hour old) and the temp
    file of an atomic write that was killed half way (never read: names starting
    with a dot are skipped by every listing; nothing removes them either).
    """
    folder, _, name = leftover.rpartition("/")
    if name.startswith("."):
        return folder in ("processing", "journal")
    return folder == "processing" and name.endswith(".offset")


# -- processes ------------------------------------------------------------------------


def fork(body: Callable[[], None]) -> int:
    """Run ``body`` in a child that always leaves through ``os._exit`` (0, or 70 on error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            body()
            code = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(code)
    return pid


def wait(pid: int) -> str:
    """``killed`` (SIGKILL), ``exited`` (code 0) or a description of anything else."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "exited"
    return f"status {status:#x}"
