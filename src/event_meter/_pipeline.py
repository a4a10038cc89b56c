"""Runs ``BatchSteps`` batch after batch, overlapping applies with reads when it may.

When both stores allow it (``StreamStore.overlapping_batches`` and
``RollupStore.background_apply``), the apply of batch N runs in one worker thread
while this thread reads and prepares batch N+1, so the rollup server works while
Python aggregates. At most one apply is in flight, and batch N is settled
(deleted) before batch N+1 is applied, so every crash point of the sequential
order still means the same thing:

- rows of batch N+1 are claimed but unapplied while N is applied: a crash gives
  them back unapplied, exactly like a crash right after a read;
- ``prepare`` of N+1 knows N is in flight (see ``_batches``);
- a batch whose apply is running is never given back before it ends: another
  processor could otherwise count its rows under another batch id;
- markers of a deleted batch are forgotten in the worker, before the next apply.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from event_meter._batches import BatchSteps, Prepared
from event_meter.stores.base import StreamBatch

__all__ = ["Pipeline"]


class Pipeline:
    """Runs ``BatchSteps`` for each batch, with at most one apply in flight.

    ``overlap=False``: prepare, apply and settle one batch after another, in this
    thread. ``overlap=True``: applies run in one worker thread. Use it as a
    context manager: leaving it waits for an apply still running (an error
    elsewhere) and gives its rows back.
    """

    def __init__(self, steps: BatchSteps, *, overlap: bool) -> None:
        self.steps = steps
        self._worker = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-meter-apply")
            if overlap
            else None
        )
        self._in_flight: Prepared | None = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            prepared, self._in_flight = self._in_flight, None
            if prepared is not None:  # an error escaped while an apply was running
                if prepared.future is not None:
                    wait([prepared.future])  # its outcome is not ours to raise
                self.steps.stream.release(prepared.batch)
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)

    def push(self, batch: StreamBatch) -> bool:
        """Prepare ``batch`` and start its apply, settling the one before it first.

        False when a batch could not be deleted: the caller stops reading.
        """
        steps = self.steps
        try:
            prepared = steps.prepare(batch, self._in_flight)
            if self._in_flight is not None and not self._settle():
                steps.stream.release(batch)
                return False
            steps.check_leases()
            if self._worker is None:
                steps.apply(prepared)
            elif prepared.delta is not None:
                prepared.future = self._submit(steps.apply, prepared)
        except BaseException:
            steps.stream.release(batch)
            raise
        self._in_flight = prepared
        if self._worker is None:
            return self._settle()
        return True

    def drain(self) -> bool:
        """Settle the batch still in flight; False when it could not be deleted."""
        return self._settle() if self._in_flight is not None else True

    def _settle(self) -> bool:
        prepared = self._in_flight
        assert prepared is not None
        if prepared.future is not None:
            try:
                prepared.future.result()
            except BaseException:
                self._in_flight = None
                wait([prepared.future])  # an interrupt may come while it still runs
                self.steps.stream.release(prepared.batch)
                raise
        self._in_flight = None
        if not self.steps.settle(prepared):
            return False
        if self._worker is None:
            self.steps.forget(prepared)
        else:  # before the next apply, in the worker: this thread goes on reading
            self._submit(self.steps.forget, prepared)
        return True

    def _submit(self, step: Callable[[Prepared], None], prepared: Prepared) -> Future[None]:
        """Run ``step`` in the worker with this thread's context variables (so what
        the caller set, a tracing span say, holds in the worker too)."""
        assert self._worker is not None
        return self._worker.submit(contextvars.copy_context().run, step, prepared)
