"""Soak runner: append and process for a while, watch resources, check the counts.

``python -m event_meter.soak --seconds 600 --cleanup`` records ``--rate`` events
per second from a writer thread (public API) while the main thread processes
them, and prints JSON lines: ``soak_start`` (options, storage, namespace);
``soak_sample`` every ``--sample-every`` seconds (RSS kB, open descriptors from
``/proc/self/fd``, stream files under ``streams/`` or pending Redis rows, rollup
files under ``rollups/`` or the namespace's Redis keys or the PostgreSQL rows,
events written and processed); ``soak_finish`` (totals, count check, verdict).

Time is a fast-forward clock (``--speed`` simulated seconds per real second,
default 60): file-stream minutes end every real second (its real-time
housekeeping of claim locks is sped up alike); ``--cleanup`` turns automatic
cleanup on (every simulated minute, 30-minute retention), so it really deletes.
``--delete-failures P`` fails each stream delete with probability P (the rows
stay; a later pass skips them as already processed).

Count check, after a final drain: processed entries equal events written, and
every minute bucket of the checked window (the whole run, or with cleanup its
retained part) holds exactly the events written in it.

Growth rule: samples of the first ``--warmup`` seconds are ignored; of the rest,
the median of the last third is compared with that of the first third. The run
fails when RSS grew by more than 20 %, open descriptors by more than 10, stream
files by more than 2x + 10 (a growing backlog), or, with cleanup, rollup files by
more than 1.5x + 50. Fewer than 6 samples after warm-up are not judged.
Exit status: 0 ok, 1 counts differ, 2 resources grew.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from event_meter import EventMeter, Report
from event_meter.errors import StorageError
from event_meter.stores import store_from_url
from event_meter.stores.base import StreamBatch, StreamStore
from event_meter.stores.file.stream import FileStream

__all__ = ["FastForwardClock", "flaky_deletes", "main"]

EVENT = "soak_event"
RETENTION = timedelta(minutes=30)
INTERVAL = timedelta(minutes=1)
GROWTH = {"rss_kb": (1.2, 0), "open_fds": (1.0, 10), "stream_files": (2.0, 10)}


class FastForwardClock:
    """UTC time that runs ``speed`` times faster than the real clock."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin = datetime.now(UTC)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._origin + timedelta(seconds=(time.monotonic() - self._mono) * self.speed)


def flaky_deletes(stream: StreamStore, p: float, seed: int) -> list[int]:
    """Make ``stream.delete`` fail with probability ``p`` (rows stay); [failures so far]."""
    rng, failures, delete = random.Random(seed), [0], stream.delete

    def flaky(batch: StreamBatch) -> None:
        if rng.random() < p:
            failures[0] += 1
            raise StorageError("soak: simulated stream delete failure")
        delete(batch)

    stream.delete = flaky  # type: ignore[method-assign]
    return failures


def _files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmRSS:")).split()[1])


class Soak:
    """One run: the meter, the writer thread, the counters and the samples."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.clock = FastForwardClock(args.speed)
        stream: Any = store_from_url(args.stream or f"file://{root}", "stream")
        if isinstance(stream, FileStream):
            # Housekeeping ages claim locks by real time (file mtimes): scale it with
            # the clock, or a fast-forward run piles up an hour of locks per minute.
            stream.HOUSEKEEPING_INTERVAL_SECONDS = 3_600 / args.speed  # type: ignore[misc]
            stream.STALE_LOCK_SECONDS = 3_600 / args.speed  # type: ignore[misc]
        self.delete_failures = flaky_deletes(stream, args.delete_failures, args.seed)
        self.namespace = f"soak:{secrets.token_hex(4)}"
        self.meter = EventMeter(
            namespace=self.namespace,
            stream_storage=stream,
            rollup_storage=store_from_url(args.rollups or f"file://{root}", "rollups"),
            clock=self.clock,
            auto_cleanup_history=args.cleanup,
            cleanup_history_retention=RETENTION,
            cleanup_history_interval=INTERVAL,
        )
        self.report = Report(EVENT).measure_interval_by("customer", group_by="shard")
        self.written = Counter[str]()  # minute bucket (ISO) -> events recorded
        self.totals = Counter[str]()  # processed, skipped_already_processed, write_errors
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def write(self) -> None:
        rng, began, done = random.Random(self.args.seed), time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - began) * self.args.rate)
            for _ in range(due - done):
                customer = rng.randrange(200)
                event = self.meter.start(EVENT, customer=customer, shard=customer % 8)
                result = event.success() if rng.random() < 0.9 else event.failure("soak")
                if result.payload is None:
                    self.totals["write_errors"] += 1
                else:
                    self.written[result.payload["started_at"][:16] + ":00Z"] += 1
            done = max(done, due)
            self.stop.wait(0.005)

    def process(self) -> int:
        result = self.meter.process_pending(self.report, batch_size=self.args.batch_size)
        self.totals["processed"] += result.processed
        self.totals["skipped_already_processed"] += result.skipped_already_processed
        return result.processed + result.skipped_already_processed

    def counts(self) -> dict[str, int]:
        stream: Any = self.meter.stream
        path = getattr(stream, "path", None)
        stream_files = _files(path / "streams") if path else int(stream.pending(EVENT))
        rollups: Any = self.meter.rollups
        url = self.args.rollups or ""
        if (path := getattr(rollups, "path", None)) is not None:
            rollup_files = _files(path / "rollups")
        elif url.startswith(("redis", "unix")):  # keys of this namespace
            import redis

            with redis.Redis.from_url(url) as client:
                rollup_files = sum(1 for _ in client.scan_iter(f"{self.namespace}:*", 1_000))
        else:  # PostgreSQL: rows of the store's tables
            import psycopg

            rollup_files = 0
            with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
                for role in ("rollups", "strings", "processed"):
                    table = rollups.tables.table(role)
                    query: Any = conn.execute("SELECT to_regclass(%s)", [f'"{table}"'])
                    if query.fetchone()[0]:  # not before the first process_pending made it
                        query = conn.execute(f'SELECT count(*) FROM "{table}"')
                        rollup_files += query.fetchone()[0]
        return {"stream_files": stream_files, "rollup_files": rollup_files}

    def sample(self, began: float) -> None:
        row = {
            "event": "soak_sample",
            "t": round(time.monotonic() - began, 1),
            "rss_kb": _rss_kb(),
            "open_fds": len(os.listdir("/proc/self/fd")),
            **self.counts(),
            "written": self.written.total(),
            "processed": self.totals["processed"],
        }
        self.samples.append(row)
        emit(row)

    def verdict(self) -> list[str]:
        """What grew without bound (see the module docstring); empty when flat."""
        kept = [s for s in self.samples if s["t"] >= self.args.warmup]
        if len(kept) < 6:
            return []
        third = len(kept) // 3
        limits = dict(GROWTH)
        if self.args.cleanup:
            limits["rollup_files"] = (1.5, 50)
        grew = []
        for field, (factor, slack) in limits.items():
            first = statistics.median(s[field] for s in kept[:third])
            last = statistics.median(s[field] for s in kept[-third:])
            if last > first * factor + slack:
                grew.append(f"{field}: {first} -> {last}")
        return grew

    def check(self) -> dict[str, Any]:
        """Processed equals written, and every minute of the checked window matches."""
        minutes = sorted(self.written)
        start = datetime.fromisoformat(minutes[0]) if minutes else self.clock.now()
        if self.args.cleanup:  # only what cleanup keeps for sure
            start = max(start, self.clock.now() - RETENTION + 2 * INTERVAL)
            start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = self.clock.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        rows = self.meter.series(self.report, start=start, end=end, every="minute")
        wrong = [r["bucket"] for r in rows if r["count"] != self.written.get(r["bucket"], 0)]
        written = self.written.total()
        return {
            "written": written,
            "processed": self.totals["processed"],
            "window_buckets": len(rows),
            "window_count": sum(r["count"] for r in rows),
            "wrong_buckets": wrong[:10],
            "counts_ok": not wrong and self.totals["processed"] == written and written > 0,
        }


def emit(row: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(row).decode() + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, root: Path) -> int:
    soak = Soak(args, root)
    emit({"event": "soak_start", **vars(args), "root": str(root), "namespace": soak.namespace})
    writer = threading.Thread(target=soak.write, name="soak-writer", daemon=True)
    began = time.monotonic()
    next_sample = began
    writer.start()
    while (now := time.monotonic()) < began + args.seconds:
        if now >= next_sample:
            soak.sample(began)
            next_sample += args.sample_every
        if not soak.process():
            time.sleep(0.02)  # idle: the next file-stream minute ends within a second
    soak.stop.set()
    writer.join()
    deadline = time.monotonic() + 30 + 3 * 60 / args.speed
    while soak.totals["processed"] < soak.written.total() and time.monotonic() < deadline:
        if not soak.process():
            time.sleep(0.02)  # waiting for the last file-stream minute to end
    while soak.process():
        pass  # rows kept by a failed delete: read again, skipped as already processed
    soak.sample(began)
    checked, grew = soak.check(), soak.verdict()
    ok = checked["counts_ok"] and not grew
    emit(
        {"event": "soak_finish", **checked, **soak.totals, "grew": grew, "ok": ok}
        | {"delete_failures": soak.delete_failures[0]}
        | {"samples": len(soak.samples), "first": soak.samples[0], "last": soak.samples[-1]}
    )
    soak.meter.stream.close()
    soak.meter.rollups.close()
    return 0 if ok else 1 if not checked["counts_ok"] else 2


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m event_meter.soak", description=__doc__)
    add = parser.add_argument
    add("--seconds", type=float, default=60.0, help="how long to append (default 60)")
    add("--rate", type=float, default=200.0, help="events per second (default 200)")
    add("--stream", help="stream storage URL (default: file:// in a temp folder)")
    add("--rollups", help="rollup storage URL (default: file:// in a temp folder)")
    add("--cleanup", action="store_true", help="auto cleanup: 30 min retention, every minute")
    add("--delete-failures", type=float, default=0.0, metavar="P", help="fail deletes (0-1)")
    add("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    add("--warmup", type=float, help="seconds not judged (default min(60, seconds / 5))")
    add("--speed", type=float, default=60.0, help="simulated seconds per second (default 60)")
    add("--batch-size", type=int, default=1_000, help="rows per processing batch")
    add("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 <= args.delete_failures < 1:
        parser.error("--delete-failures must be at least 0 and below 1")
    if args.warmup is None:
        args.warmup = min(60.0, args.seconds / 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Failed deletes are logged as warnings by design; the runner counts them instead.
    logging.getLogger("event_meter").addHandler(logging.NullHandler())
    logging.getLogger("event_meter").propagate = False
    with tempfile.TemporaryDirectory(prefix="event-meter-soak-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
