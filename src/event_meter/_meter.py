"""``EventMeter``: one configuration, its stores and clock, and every API method."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from event_meter import processor, reports
from event_meter._config import Config, build_config
from event_meter._keys import ReportRef
from event_meter._time import now_ms
from event_meter.cleanup import auto_cleanup, cleanup_history
from event_meter.errors import ConfigurationError, DefinitionNotFoundError
from event_meter.event import Event, measured
from event_meter.processor import DEFAULT_BATCH_SIZE, ProcessResult
from event_meter.report import Report
from event_meter.stores import embedded_path, store_from_url
from event_meter.stores.base import RollupStore, StreamStore

__all__ = ["EventMeter"]

F = TypeVar("F", bound=Callable[..., Any])
_STORE_OPTIONS = frozenset(
    ("stream_storage", "rollup_storage", "redis", "stream_sync", "redis_read_limit", "rollup_ttl")
)


def _redis_store(role: str, config: Config) -> Any:
    """A Redis store on ``config.redis``; the store calls a factory once per purpose."""
    if role == "stream":
        from event_meter.stores.redis.stream import RedisStream

        return RedisStream(config.redis, read_limit=config.redis_read_limit)
    from event_meter.stores.redis.rollups import RedisRollups

    return RedisRollups(config.redis, ttl_ms=config.rollup_ttl_ms)


def _store(value: Any, role: str, config: Config) -> Any:
    if value is None and config.redis is not None:
        return _redis_store(role, config)
    if value is None:
        path = embedded_path()
        from event_meter.stores.file.rollups import FileRollups
        from event_meter.stores.file.stream import FileStream

        return FileStream(path, sync=config.stream_sync) if role == "stream" else FileRollups(path)
    if isinstance(value, str):
        try:
            return store_from_url(
                value,
                "stream" if role == "stream" else "rollups",
                stream_sync=config.stream_sync,
                redis_read_limit=config.redis_read_limit,
                rollup_ttl_ms=config.rollup_ttl_ms,
            )
        except ConfigurationError as exc:  # name the option, as every config error does
            raise ConfigurationError(f"{role}_storage={value!r} is invalid: {exc}") from exc
    expected = StreamStore if role == "stream" else RollupStore
    if not isinstance(value, expected):
        raise ConfigurationError(
            f"{role}_storage={value!r} is not a {expected.__name__}; "
            "pass a storage URL or a store from event_meter.stores"
        )
    return value


class EventMeter:
    """Records events, processes them into rollups, and answers reports.

    Takes the options of ``event_meter.configure``. Thread-safe; stores reopen
    their files and connections lazily in a forked child.
    """

    def __init__(self, **options: Any) -> None:
        self._lock = threading.Lock()
        self._owned: list[Any] = []
        self._apply(build_config(None, options), options)

    def _apply(self, config: Config, options: Mapping[str, Any]) -> None:
        stream = _store(config.stream_storage, "stream", config)
        rollups = _store(config.rollup_storage, "rollup", config)
        for store, given in ((stream, config.stream_storage), (rollups, config.rollup_storage)):
            store.bind(namespace=config.namespace, clock=config.clock)
            if given is None or isinstance(given, str):
                self._owned.append(store)
        self.config = config
        self._clock = config.clock
        self.stream: StreamStore = stream
        self.rollups: RollupStore = rollups

    def configure(self, **options: Any) -> EventMeter:
        """Update options in place.

        Stores are rebuilt only when a storage option changes (so pending
        ``memory://`` data survives ``configure(auto_cleanup_history=True)``);
        a new namespace or clock is bound to the stores in use.
        """
        with self._lock:
            if _STORE_OPTIONS.isdisjoint(options):
                config = build_config(self.config, options)
                for store in (self.stream, self.rollups):
                    store.bind(namespace=config.namespace, clock=config.clock)
                self.config = config
                self._clock = config.clock
                return self
            # Validate and build the new stores first: a rejected configure
            # leaves the meter, and the stores it is using, as they were.
            config = build_config(self.config, options)
            previous, self._owned = self._owned, []
            try:
                self._apply(config, options)
            except BaseException:
                self._owned = previous
                raise
            for store in previous:
                store.close()
        return self

    def close(self) -> None:
        """Close the stores this meter created from URLs (never the ones it was given)."""
        owned, self._owned = self._owned, []
        for store in owned:
            store.close()

    def __repr__(self) -> str:
        return f"EventMeter(namespace={self.config.namespace!r})"

    # -- recording --------------------------------------------------------------------

    def start(self, name: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Event:
        """Start measuring one run of ``name``; never raises."""
        return Event(self, name, params, kw)

    def _append(self, name: str, payload: dict[str, Any]) -> None:
        self.stream.append(name, payload)

    def measure(
        self, name: str, params: Mapping[str, Any] | None = None, /, **kw: Any
    ) -> Callable[[F], F]:
        """Decorator: record each call of a sync or async function as one event."""
        return measured(lambda: self.start(name, params, **kw))

    # -- processing -------------------------------------------------------------------

    def _report(self, report: Report | str, version: int | None) -> Report:
        if isinstance(report, Report):
            if version is not None and version != report.version:
                raise ValueError(f"version={version!r} contradicts {report!r}; pass one of them")
            return report
        if isinstance(report, str):
            if version is None:
                raise ValueError(f"report {report!r} given by name needs version=, e.g. version=1")
            return Report(report, version)
        raise TypeError(
            f"report must be a Report or an event name, got {type(report).__name__} {report!r}"
        )

    def _ref(self, report: Report) -> ReportRef:
        return ReportRef(self.config.namespace, report.name, report.version)

    def process_pending(
        self,
        report: Report | str,
        *,
        version: int | None = None,
        define: Callable[[Report], Report | None] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Callable[[ProcessResult], None] | None = None,
    ) -> ProcessResult:
        """Fold pending events of the report's event into its rollups."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        target = self._report(report, version)
        if define is not None:
            if not callable(define):
                raise TypeError(f"define must be a callable taking the Report, got {define!r}")
            target = define(target) or target
        elif isinstance(report, str):
            stored = self.rollups.load_definition(self._ref(target))
            if stored is not None:
                target = Report.from_definition(stored)
        result = processor.process_report(
            self.stream,
            self.rollups,
            target,
            self.config.namespace,
            lock_ttl_ms=self.config.lock_ttl_ms,
            batch_size=batch_size,
            progress=progress,
        )
        if not result.locked and self.config.auto_cleanup_history:
            try:
                auto_cleanup(self.rollups, self.config)
            except Exception as exc:
                self.config.auto_cleanup_error_handler(exc)
        return result

    # -- reports ----------------------------------------------------------------------

    def report_definition(
        self, report: Report | str, *, version: int | None = None
    ) -> dict[str, Any]:
        """The stored definition (canonical form plus fingerprint)."""
        target = self._report(report, version)
        stored = self.rollups.load_definition(self._ref(target))
        if stored is None:
            raise DefinitionNotFoundError(
                f"{target.name} v{target.version} has never been processed in namespace "
                f"{self.config.namespace!r}; run process_pending first"
            )
        return stored

    def summary(
        self,
        report: Report | str,
        *,
        version: int | None = None,
        start: object = None,
        end: object = None,
        by: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        target = self._report(report, version)
        definition = self.report_definition(target)
        return reports.summary(
            self.rollups,
            self._ref(target),
            definition,
            start=start,
            end=end,
            by=by,
            key_limit=self.config.summary_key_limit,
        )

    def series(
        self,
        report: Report | str,
        *,
        version: int | None = None,
        start: object = None,
        end: object = None,
        every: str = "minute",
        by: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        target = self._report(report, version)
        definition = self.report_definition(target)
        return reports.series(
            self.rollups,
            self._ref(target),
            definition,
            now_ms=now_ms(self.config.clock),
            start=start,
            end=end,
            every=every,
            by=by,
        )

    def compare(
        self,
        report: Report | str,
        *,
        version: int | None = None,
        before: object,
        after: object,
        by: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        target = self._report(report, version)
        definition = self.report_definition(target)
        return reports.compare(
            self.rollups, self._ref(target), definition, before=before, after=after, by=by
        )

    def cleanup_history(
        self, before: object, events: Iterable[str] | str | None = None
    ) -> dict[str, int]:
        """Delete rollups, state and markers older than ``before``; returns counts."""
        return cleanup_history(self.rollups, self.config.namespace, before, events)

    # -- async twins: the sync logic in a worker thread -----------------------------------

    async def aprocess_pending(self, report: Report | str, **kwargs: Any) -> ProcessResult:
        return await _in_thread(self.process_pending, report, **kwargs)

    async def asummary(self, report: Report | str, **kwargs: Any) -> dict[str, Any]:
        return await _in_thread(self.summary, report, **kwargs)

    async def aseries(self, report: Report | str, **kwargs: Any) -> list[dict[str, Any]]:
        return await _in_thread(self.series, report, **kwargs)

    async def acompare(self, report: Report | str, **kwargs: Any) -> dict[str, Any]:
        return await _in_thread(self.compare, report, **kwargs)

    async def acleanup_history(
        self, before: object, events: Iterable[str] | str | None = None
    ) -> dict[str, int]:
        return await _in_thread(self.cleanup_history, before, events)


T = TypeVar("T")


def _in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    return asyncio.to_thread(func, *args, **kwargs)
