"""One function per ``event-meter`` command; each takes the parsed args and returns the exit code.

Library errors (``EventMeterError``, ``ValueError``, ``TypeError``) and
``CommandError`` propagate to ``main``, which prints them as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TextIO

from event_meter._meter import EventMeter
from event_meter.cli import _plot, _render
from event_meter.processor import ProcessResult
from event_meter.report import Report

__all__ = [
    "CommandError",
    "build_meter",
    "cleanup_with",
    "load_report",
    "open_meter",
    "process_with",
    "summary_with",
]

ENV_STREAM: Final = "EVENT_METER_STREAM_URL"
ENV_ROLLUPS: Final = "EVENT_METER_ROLLUP_URL"
ENV_NAMESPACE: Final = "EVENT_METER_NAMESPACE"
PROGRESS_INTERVAL_SECONDS = 1.0  # processing shorter than this prints no progress


class CommandError(Exception):
    """A problem with the command line's input that is not a library error (exit 1)."""


def meter_options(args: argparse.Namespace) -> dict[str, Any]:
    """``EventMeter`` options from the flags, else the environment, else the embedded default."""
    options: dict[str, Any] = {}
    stream = args.stream or os.environ.get(ENV_STREAM)
    rollups = args.rollups or os.environ.get(ENV_ROLLUPS)
    namespace = args.namespace or os.environ.get(ENV_NAMESPACE)
    if stream:
        options["stream_storage"] = stream
    if rollups:
        options["rollup_storage"] = rollups
    if namespace:
        options["namespace"] = namespace
    return options


def build_meter(args: argparse.Namespace, **overrides: Any) -> EventMeter:
    return EventMeter(**{**meter_options(args), **overrides})


@contextmanager
def open_meter(args: argparse.Namespace) -> Iterator[EventMeter]:
    meter = build_meter(args)
    try:
        yield meter
    finally:
        meter.close()


def parse_by(pairs: Sequence[tuple[str, str]]) -> dict[str, str] | None:
    """``--by`` pairs as the ``by`` mapping (values stay strings: 44 and "44" read alike)."""
    by: dict[str, str] = {}
    for key, value in pairs:
        if key in by and by[key] != value:
            raise CommandError(f"--by {key} given twice ({by[key]!r} and {value!r}); pass it once")
        by[key] = value
    return by or None


def load_report(spec: str) -> Report:
    """Import ``module:attribute`` (the attribute may be dotted) and check it is a Report."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"REPORT must be module:attribute naming a Report, got {spec!r}")
    added = os.getcwd() not in sys.path  # like `python -m`, find modules of the current folder
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {module_name!r} for {spec!r}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if added:
            sys.path.remove(os.getcwd())
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(
                f"{module_name!r} has no attribute {attribute!r} (from {spec!r})"
            ) from None
    if not isinstance(target, Report):
        raise CommandError(f"{spec} is a {type(target).__name__}, not an event_meter.Report")
    return target


class Progress:
    """Prints the processed count on stderr once processing has taken a while."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_print = self.started
        self.tty = sys.stderr.isatty()
        self.printed = False

    def __call__(self, result: ProcessResult) -> None:
        now = time.monotonic()
        if now - self.last_print < PROGRESS_INTERVAL_SECONDS:
            return
        self.last_print = now
        self.printed = True
        line = f"event-meter: {result.event_name} v{result.version}: processed {result.processed:,}"
        sys.stderr.write(f"\r{line}" if self.tty else f"{line}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.printed and self.tty:
            sys.stderr.write("\n")


def process(args: argparse.Namespace) -> int:
    report = load_report(args.report)
    with open_meter(args) as meter:
        return process_with(meter, report, args)


def process_with(
    meter: EventMeter, report: Report, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    """``process`` on a given meter (also the Django ``event_meter_process`` command)."""
    progress = Progress()
    try:
        result = meter.process_pending(report, batch_size=args.batch_size, progress=progress)
    finally:
        progress.done()
    if args.json:
        _render.print_json(result.to_dict(), out)
    else:
        _render.print_table(
            _render.mapping_table(result.to_dict()), title=f"processed {report!r}", out=out
        )
    if result.locked:
        sys.stderr.write("event-meter: another processor holds the lock; nothing was read\n")
    return 0


def _title(args: argparse.Namespace, by: dict[str, str] | None) -> str:
    where = " ".join(f"{key}={value}" for key, value in (by or {}).items()) or "all"
    return f"{args.report} v{args.version} ({where})"


def summary(args: argparse.Namespace) -> int:
    parse_by(args.by)  # a contradictory --by fails before any storage is opened
    with open_meter(args) as meter:
        return summary_with(meter, args)


def summary_with(meter: EventMeter, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``summary`` on a given meter (also the Django ``event_meter_summary`` command)."""
    by = parse_by(args.by)
    result = meter.summary(args.report, version=args.version, start=args.start, end=args.end, by=by)
    if args.json:
        _render.print_json(result, out)
    elif getattr(args, "csv", False):  # the Django command has no --csv
        _render.print_csv(_render.summary_csv(result), out)
    else:
        _render.print_table(_render.mapping_table(result), title=_title(args, by), out=out)
    return 0


def series(args: argparse.Namespace) -> int:
    by = parse_by(args.by)
    plt = _plot.load_plotext() if args.plot else None
    if args.plot and plt is None:
        raise CommandError(f"--plot needs plotext: {_plot.PIP_LINE}")
    with open_meter(args) as meter:
        rows = meter.series(
            args.report,
            version=args.version,
            start=args.start,
            end=args.end,
            every=args.every,
            by=by,
        )
    title = f"{_title(args, by)}: count per {args.every}"
    if args.json:
        _render.print_json(rows)
    elif args.csv:
        _render.print_csv(_render.series_csv(rows))
    elif plt is not None:
        sys.stdout.write(_plot.plotext_chart(plt, rows, title, color=sys.stdout.isatty()) + "\n")
    else:
        _render.print_table(_render.series_table(rows), title=title)
    return 0


def compare(args: argparse.Namespace) -> int:
    by = parse_by(args.by)
    with open_meter(args) as meter:
        result = meter.compare(
            args.report,
            version=args.version,
            before=tuple(args.before),
            after=tuple(args.after),
            by=by,
        )
    if args.json:
        _render.print_json(result)
    elif args.csv:
        _render.print_csv(_render.compare_csv(result))
    else:
        _render.print_table(
            _render.compare_table(result), title=f"{_title(args, by)}: before -> after"
        )
    return 0


def cleanup(args: argparse.Namespace) -> int:
    with open_meter(args) as meter:
        return cleanup_with(meter, args)


def cleanup_with(meter: EventMeter, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``cleanup`` on a given meter (also the Django ``event_meter_cleanup`` command)."""
    result = meter.cleanup_history(args.before, args.events)
    if args.json:
        _render.print_json(result, out)
    else:
        _render.print_table(
            _render.mapping_table(result, "deleted"), title=f"cleanup before {args.before}", out=out
        )
    return 0


def demo(args: argparse.Namespace) -> int:
    from event_meter.cli import _demo  # the demo's data generator is only needed here

    return _demo.run(args)
