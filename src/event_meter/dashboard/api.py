"""The dashboard's JSON API: one function per endpoint over an ``EventMeter``.

Endpoints, their query parameters (``by`` and the compare windows repeat)
and what they return::

    reports                                      {"namespace", "reports": [{"name", "version"}]}
    definition  name [version]                   EventMeter.report_definition
    summary     name [version] [start end] [by]...               EventMeter.summary
    series      name [version] [start] [end] [every] [by]...     EventMeter.series
    compare     name [version] before before after after [by]... EventMeter.compare

``version`` defaults to 1 as in the CLI; ``by`` is ``param=value``, e.g.
``by=provider=postmark``; ``before``/``after`` are given twice (start, then
end), like ``--before T0 T1``. Each endpoint returns exactly what the
``EventMeter`` method returns, so the page shows what the library answers.

A query the API cannot map onto a call raises ``QueryError`` (a
``ValueError``); the library raises its own errors for the values it checks
(times, windows, ``every``, unknown indexes). The server maps both to HTTP 400.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from event_meter._meter import EventMeter

__all__ = ["ENDPOINTS", "QueryError", "UnknownEndpointError", "call"]

DEFAULT_VERSION: Final = 1


class QueryError(ValueError):
    """A query string that does not name a valid call (unknown, repeated or missing params)."""


class UnknownEndpointError(LookupError):
    """No endpoint has this name."""


class Query:
    """The ``(param, value)`` pairs of one request, checked against the params an endpoint takes."""

    def __init__(self, endpoint: str, pairs: Sequence[tuple[str, str]], allowed: Sequence[str]):
        self.endpoint = endpoint
        self.pairs = list(pairs)
        unknown = sorted({param for param, _ in self.pairs} - set(allowed))
        if unknown:
            takes = ", ".join(allowed) or "no parameters"
            raise QueryError(
                f"unknown parameter {unknown[0]!r} for /api/{endpoint}; it takes {takes}"
            )

    def all(self, param: str) -> list[str]:
        return [value for name, value in self.pairs if name == param]

    def one(self, param: str) -> str | None:
        """The value of ``param`` given at most once (None when absent)."""
        values = self.all(param)
        if len(values) > 1:
            raise QueryError(f"{param} is given {len(values)} times for /api/{self.endpoint}")
        return values[0] if values else None

    def report(self) -> tuple[str, int]:
        """``name`` (required) and ``version`` (a positive integer, default 1)."""
        name = self.one("name")
        if name is None or not name.strip():
            raise QueryError(f"/api/{self.endpoint} needs name=EVENT_NAME")
        text = self.one("version")
        if text is None:
            return name, DEFAULT_VERSION
        if not text.isascii() or not text.isdigit() or int(text) < 1:
            raise QueryError(f"version must be a positive integer, got {text!r}")
        return name, int(text)

    def by(self) -> dict[str, str] | None:
        """``by=param=value`` pairs as the ``by`` mapping (None when there are none)."""
        by: dict[str, str] = {}
        for pair in self.all("by"):
            param, sep, value = pair.partition("=")
            param = param.strip()
            if not sep or not param:
                raise QueryError(f"by must be param=value, e.g. by=provider=postmark; got {pair!r}")
            if param in by and by[param] != value:
                raise QueryError(f"by {param} is given twice ({by[param]!r} and {value!r})")
            by[param] = value
        return by or None


def reports(meter: EventMeter, query: Query) -> dict[str, Any]:
    namespace = meter.config.namespace
    found = meter.rollups.list_reports(namespace)
    return {
        "namespace": namespace,
        "reports": [{"name": name, "version": version} for name, version in found],
    }


def definition(meter: EventMeter, query: Query) -> dict[str, Any]:
    name, version = query.report()
    return meter.report_definition(name, version=version)


def summary(meter: EventMeter, query: Query) -> dict[str, Any]:
    name, version = query.report()
    return meter.summary(
        name, version=version, start=query.one("start"), end=query.one("end"), by=query.by()
    )


def series(meter: EventMeter, query: Query) -> list[dict[str, Any]]:
    name, version = query.report()
    return meter.series(
        name,
        version=version,
        start=query.one("start"),
        end=query.one("end"),
        every=query.one("every") or "minute",
        by=query.by(),
    )


def compare(meter: EventMeter, query: Query) -> dict[str, Any]:
    name, version = query.report()
    # Tuples of whatever was given: the library names a window that is not a pair.
    before, after = tuple(query.all("before")), tuple(query.all("after"))
    return meter.compare(name, version=version, before=before, after=after, by=query.by())


Endpoint = Callable[[EventMeter, Query], Any]

ENDPOINTS: Final[dict[str, tuple[Endpoint, tuple[str, ...]]]] = {
    "reports": (reports, ()),
    "definition": (definition, ("name", "version")),
    "summary": (summary, ("name", "version", "start", "end", "by")),
    "series": (series, ("name", "version", "start", "end", "every", "by")),
    "compare": (compare, ("name", "version", "before", "after", "by")),
}


def call(meter: EventMeter, endpoint: str, pairs: Sequence[tuple[str, str]]) -> Any:
    """Answer ``/api/<endpoint>`` for the query ``pairs`` (JSON-ready data)."""
    try:
        function, allowed = ENDPOINTS[endpoint]
    except KeyError:
        raise UnknownEndpointError(
            f"no API endpoint {endpoint!r}; try one of {', '.join(ENDPOINTS)}"
        ) from None
    return function(meter, Query(endpoint, pairs, allowed))
