"""A ``prometheus_client`` collector that exposes stored summaries at scrape time.

Any one process (a web worker, the processor, a small sidecar) registers it;
each scrape reads the rollups of the chosen reports, nothing is kept in memory
between scrapes and nothing is recorded or processed::

    from datetime import timedelta

    import prometheus_client
    from event_meter.contrib.prometheus import EventMeterCollector

    collector = EventMeterCollector(
        meter,                                   # an EventMeter, or None for the default one
        reports=[invoices, "feed_refresh", ("invoice_delivery", 2)],  # Report, name (v1), pair
        by=[None, {"provider": "postmark"}],     # None: all events; a mapping: one stored index
        window=timedelta(minutes=5),             # whole minutes; None: every retained hour
        prefix="event_meter",
    )
    prometheus_client.REGISTRY.register(collector)

Metric families (``{prefix}`` is ``event_meter`` by default); every series has the
labels ``report`` and ``version`` plus one label per ``by`` key in use (sorted;
``""`` on series whose filter does not have that key):

- ``{prefix}_events`` (gauge, extra label ``status`` = success|failure|skipped):
  events started in the window. ``sum without (status)`` is the summary's ``count``.
- ``{prefix}_per_minute`` (gauge): the summary's ``per_minute`` (absent when the
  summary has none: no window and no events).
- ``{prefix}_duration_ms`` and ``{prefix}_interval_ms`` (summaries): ``_count`` and
  ``_sum`` are the stored counts and sums (``_sum / _count`` is the average);
  ``quantile="0"`` is the minimum and ``quantile="1"`` the maximum (as in Go's
  ``go_gc_duration_seconds``), both only when known; percentiles a summary
  carries as ``duration_ms_p50`` ... ``_p99`` appear as ``quantile="0.5"`` ...
  ``"0.99"``. Milliseconds, like every event-meter figure, so values equal the
  summary's.
- ``{prefix}_scrape_error`` (gauge): 0, or 1 when reading that report and filter
  failed (storage error, report never processed, too many hour buckets without a
  window). The error is logged on the ``event_meter`` logger; a scrape never raises.

The window is the last ``window`` of **complete** minutes by the meter's clock
(the current minute is still filling), so ``per_minute`` is not diluted by it;
processing lag shows as a low last minute. A ``by`` filter whose keys the stored
definition of a report does not index is skipped for that report (logged once),
so one filter list can serve reports with different indexes.

``describe()`` returns the metric names without reading storage, so registering
does not touch storage, and two collectors with the same prefix are rejected by
the registry (their series would collide). Needs the ``prometheus`` extra:
``pip install "event-meter[prometheus]"``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from event_meter import default_meter
from event_meter._keys import value_text
from event_meter._meter import EventMeter
from event_meter._time import GRANULARITIES, ms_to_datetime, now_ms
from event_meter.errors import ConfigurationError, EventMeterError, UnsupportedQueryError
from event_meter.report import Report

if TYPE_CHECKING:
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric, SummaryMetricFamily

__all__ = ["PIP_INSTALL", "EventMeterCollector"]

PIP_INSTALL: Final = 'pip install "event-meter[prometheus]"'
STATUSES: Final = ("success", "failure", "skipped")
MEASURES: Final = {
    "duration_ms": "event-meter event durations in milliseconds",
    "interval_ms": "event-meter intervals between starts in milliseconds",
}

_logger = logging.getLogger("event_meter")
_METRIC_PREFIX: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_LABELS: Final = frozenset(("report", "version", "status", "quantile"))
_PERCENTILE: Final = re.compile(r"p([0-9]{2})\Z")

ReportSpec = Report | str | tuple[str, int]


def import_prometheus_client() -> ModuleType:
    """The ``prometheus_client`` module; ``ConfigurationError`` naming the extra when missing."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            f"the Prometheus collector needs prometheus_client; install it with: {PIP_INSTALL}"
        ) from exc
    return prometheus_client


def _report_refs(reports: Sequence[ReportSpec] | ReportSpec) -> tuple[tuple[str, int], ...]:
    if isinstance(reports, Report | str):
        reports = [reports]
    refs: list[tuple[str, int]] = []
    for spec in reports:
        if isinstance(spec, Report):
            ref = (spec.name, spec.version)
        elif isinstance(spec, str):
            ref = (Report(spec).name, 1)
        elif isinstance(spec, tuple) and len(spec) == 2:
            checked = Report(*spec)  # validates the name and the version
            ref = (checked.name, checked.version)
        else:
            raise TypeError(
                "each report must be a Report, an event name (version 1) or a "
                f"(name, version) pair, got {type(spec).__name__} {spec!r}"
            )
        if ref in refs:
            raise ValueError(f"report {ref[0]} v{ref[1]} is listed twice; its series would clash")
        refs.append(ref)
    if not refs:
        raise ValueError("pass at least one report to expose")
    return tuple(refs)


def _filters(by: Sequence[Mapping[str, Any] | None]) -> tuple[dict[str, Any] | None, ...]:
    if by is None or isinstance(by, Mapping):
        raise TypeError(f"by must be a list of filters (None or a mapping), got {by!r}")
    filters: list[dict[str, Any] | None] = []
    for item in by:
        if item is not None and not isinstance(item, Mapping):
            raise TypeError(f"each by filter must be None or a mapping, got {item!r}")
        current = dict(item) if item else None  # {} filters nothing, like None
        for key, value in (current or {}).items():
            if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"by key {key!r} is not a valid Prometheus label name")
            if key in _RESERVED_LABELS:
                raise ValueError(f"by key {key!r} clashes with the collector's own label")
            if value is None:
                raise ValueError(f"by[{key!r}] is None; filter on a value, or leave the key out")
        if current in filters:
            raise ValueError(f"by filter {item!r} is listed twice; its series would clash")
        filters.append(current)
    if not filters:
        raise ValueError("by needs at least one filter; [None] exposes every event")
    return tuple(filters)


def _window_ms(window: timedelta | None) -> int | None:
    if window is None:
        return None
    if not isinstance(window, timedelta):
        raise TypeError(f"window must be a timedelta or None, got {type(window).__name__}")
    if window <= timedelta(0) or window % timedelta(minutes=1):
        raise ValueError(f"window must be a positive whole number of minutes, got {window}")
    return window // timedelta(milliseconds=1)


def _quantiles(summary: Mapping[str, Any], measure: str) -> list[tuple[str, float]]:
    """``(quantile label, value)`` pairs in quantile order: min, percentiles, max."""
    found: list[tuple[float, str, float]] = []
    prefix = f"{measure}_"
    for key, value in summary.items():
        if not key.startswith(prefix) or value is None:
            continue
        suffix = key[len(prefix) :]
        if suffix == "min":
            found.append((0.0, "0", float(value)))
        elif suffix == "max":
            found.append((1.0, "1", float(value)))
        elif match := _PERCENTILE.match(suffix):
            quantile = int(match.group(1)) / 100
            found.append((quantile, repr(quantile), float(value)))
    return [(label, value) for _, label, value in sorted(found)]


@dataclass(slots=True)
class _Families:
    """The metric families of one scrape, filled series by series."""

    events: GaugeMetricFamily
    per_minute: GaugeMetricFamily
    measures: dict[str, SummaryMetricFamily]
    scrape_error: GaugeMetricFamily

    def __iter__(self) -> Iterator[Metric]:
        yield self.events
        yield self.per_minute
        yield from self.measures.values()
        yield self.scrape_error

    def add(self, labels: dict[str, str], summary: Mapping[str, Any]) -> None:
        from prometheus_client.core import Sample

        values = list(labels.values())
        for status in STATUSES:
            self.events.add_metric([*values, status], summary[f"{status}_count"])
        if summary.get("per_minute") is not None:
            self.per_minute.add_metric(values, summary["per_minute"])
        for measure, family in self.measures.items():
            for quantile, value in _quantiles(summary, measure):
                family.samples.append(Sample(family.name, {**labels, "quantile": quantile}, value))
            family.add_metric(values, summary[f"{measure}_count"], summary[f"{measure}_sum"])


class EventMeterCollector:
    """Exposes the stored summaries of ``reports`` to Prometheus (see the module docstring).

    Arguments are checked here (``TypeError``/``ValueError``; ``ConfigurationError``
    without ``prometheus_client``); ``collect`` never raises.
    """

    def __init__(
        self,
        meter: EventMeter | None = None,
        reports: Sequence[ReportSpec] | ReportSpec = (),
        *,
        by: Sequence[Mapping[str, Any] | None] = (None,),
        window: timedelta | None = timedelta(minutes=5),
        prefix: str = "event_meter",
    ) -> None:
        import_prometheus_client()
        if meter is not None and not isinstance(meter, EventMeter):
            raise TypeError(f"meter must be an EventMeter or None (the default), got {meter!r}")
        if not isinstance(prefix, str) or not _METRIC_PREFIX.match(prefix):
            raise ValueError(f"prefix {prefix!r} is not a valid Prometheus metric name")
        self._meter = meter
        self._reports = _report_refs(reports)
        self._filters = _filters(by)
        self._by_labels = tuple(sorted({key for f in self._filters for key in f or {}}))
        self._window_ms = _window_ms(window)
        self._prefix = prefix
        self._skipped: set[tuple[str, int, tuple[str, ...]]] = set()
        self._skipped_lock = threading.Lock()

    def __repr__(self) -> str:
        names = ", ".join(f"{name} v{version}" for name, version in self._reports)
        return f"EventMeterCollector({names}, prefix={self._prefix!r})"

    def _families(self) -> _Families:
        from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

        labels = ["report", "version", *self._by_labels]
        where = "in the window" if self._window_ms else "in every retained hour"
        name = self._prefix
        return _Families(
            events=GaugeMetricFamily(
                f"{name}_events",
                f"event-meter events started {where}, by status",
                labels=[*labels, "status"],
            ),
            per_minute=GaugeMetricFamily(
                f"{name}_per_minute", f"event-meter events per minute {where}", labels=labels
            ),
            measures={
                measure: SummaryMetricFamily(
                    f"{name}_{measure}",
                    f'{what} {where}; quantile="0" is the minimum, quantile="1" the maximum',
                    labels=labels,
                )
                for measure, what in MEASURES.items()
            },
            scrape_error=GaugeMetricFamily(
                f"{name}_scrape_error",
                "1 when reading this event-meter report failed at this scrape (see the logs)",
                labels=labels,
            ),
        )

    def describe(self) -> list[Metric]:
        """The metric families, empty: registering reads no storage."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """Read every report and filter once; failures become ``scrape_error`` 1 and a log line."""
        families = self._families()
        try:
            meter = self._meter if self._meter is not None else default_meter()
            start, end = self._window(meter)
        except Exception as exc:
            for name, version in self._reports:
                for by in self._filters:
                    self._failed(families, name, version, by, exc)
            yield from families
            return
        for name, version in self._reports:
            for by in self._filters:
                self._read(families, meter, name, version, by, start, end)
        yield from families

    def _window(self, meter: EventMeter) -> tuple[datetime | None, datetime | None]:
        if self._window_ms is None:
            return None, None
        now = now_ms(meter.config.clock)
        end = now - now % GRANULARITIES["minute"]
        return ms_to_datetime(end - self._window_ms), ms_to_datetime(end)

    def _labels(self, name: str, version: int, by: Mapping[str, Any] | None) -> dict[str, str]:
        values = by or {}
        labels = {"report": name, "version": str(version)}
        labels.update(
            {key: value_text(values[key]) if key in values else "" for key in self._by_labels}
        )
        return labels

    def _read(
        self,
        families: _Families,
        meter: EventMeter,
        name: str,
        version: int,
        by: dict[str, Any] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> None:
        labels = self._labels(name, version, by)
        try:
            summary = meter.summary(name, version=version, start=start, end=end, by=by)
            families.add(labels, summary)
        except UnsupportedQueryError as exc:
            self._skip(name, version, by, exc)
            return
        except Exception as exc:
            self._failed(families, name, version, by, exc)
            return
        families.scrape_error.add_metric(list(labels.values()), 0)

    def _failed(
        self,
        families: _Families,
        name: str,
        version: int,
        by: Mapping[str, Any] | None,
        exc: Exception,
    ) -> None:
        labels = self._labels(name, version, by)
        families.scrape_error.add_metric(list(labels.values()), 1)
        # Library errors carry a complete message; anything else is worth a traceback.
        expected = isinstance(exc, EventMeterError | ValueError | TypeError)
        _logger.warning(
            "event_meter: Prometheus scrape of %s v%d (by=%r) failed: %s: %s",
            name,
            version,
            by,
            type(exc).__name__,
            exc,
            exc_info=None if expected else exc,
        )

    def _skip(self, name: str, version: int, by: Mapping[str, Any] | None, exc: Exception) -> None:
        key = (name, version, tuple(sorted(by or {})))
        with self._skipped_lock:
            if key in self._skipped:
                return
            self._skipped.add(key)
        _logger.warning(
            "event_meter: the Prometheus collector skips by=%r for %s v%d (logged once): %s",
            by,
            name,
            version,
            exc,
        )
