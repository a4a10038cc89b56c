"""The argparse tree of ``event-meter`` (SPEC section 13).

Each subcommand is one ``_add_*`` function listed in ``SUBCOMMANDS``; a new
command or a command group (``postgres schema|install``, with its own nested
subparsers) joins by adding one function to that tuple. Every subcommand on
events gets the storage options of ``_storage_options`` and sets ``handler``
to its function in ``_commands`` (``_postgres`` for the ``postgres`` group).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Final

from event_meter.cli import _commands, _dashboard, _postgres

__all__ = ["SUBCOMMANDS", "build_parser", "key_value"]

Subparsers = Any  # argparse's _SubParsersAction is private; its type is not worth importing

DESCRIPTION: Final = (
    "Record runtime events, roll them up in storage you own, and answer operational "
    "questions. Start with `event-meter demo`."
)
STORAGE_EPILOG: Final = (
    "Storage: --stream/--rollups/--namespace, else $EVENT_METER_STREAM_URL, "
    "$EVENT_METER_ROLLUP_URL, $EVENT_METER_NAMESPACE, else the embedded default "
    "(file storage under $EVENT_METER_PATH or ./.event_meter). "
    "Times are ISO-8601 UTC, e.g. 2026-05-06T10:00:00Z."
)


def key_value(text: str) -> tuple[str, str]:
    """``provider=postmark`` -> ``("provider", "postmark")`` (an argparse ``type``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _storage_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("storage")
    group.add_argument(
        "--stream", metavar="URL", help="stream storage URL ($EVENT_METER_STREAM_URL)"
    )
    group.add_argument(
        "--rollups", metavar="URL", help="rollup storage URL ($EVENT_METER_ROLLUP_URL)"
    )
    group.add_argument("--namespace", metavar="NS", help="namespace ($EVENT_METER_NAMESPACE)")
    return parent


def _command(
    subparsers: Subparsers, name: str, handler: Callable[..., int], help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=STORAGE_EPILOG,
        parents=[_storage_options()],
    )
    parser.set_defaults(handler=handler)
    return parser


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", type=positive_int, default=1, metavar="N", help="report version (default 1)"
    )


def _add_by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        type=key_value,
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="filter on an index of the report, e.g. --by provider=postmark queue=mailers",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_output(parser: argparse.ArgumentParser, *, plot: bool = False) -> None:
    """The mutually exclusive output formats of a report command: ``--json``, ``--csv``."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--csv", action="store_true", help="print RFC 4180 CSV (floats unrounded, None empty)"
    )
    if plot:
        output.add_argument(
            "--plot", action="store_true", help='chart the count (needs "event-meter[cli]")'
        )


def _add_demo(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "demo", _commands.demo, "record, process and show a demo report")
    parser.add_argument("--path", metavar="DIR", help="keep the demo's stream and rollups in DIR")
    parser.add_argument(
        "--events",
        type=positive_int,
        default=2_000,
        metavar="N",
        help="events to record (default 2000)",
    )


def _add_process(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "process", _commands.process, "fold pending events into rollups")
    parser.add_argument("report", metavar="REPORT", help="module:attribute naming a Report")
    parser.add_argument("--batch-size", type=positive_int, default=10_000, metavar="N")
    _add_json(parser)


def _add_summary(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "summary", _commands.summary, "totals, rates and durations")
    parser.add_argument("report", metavar="REPORT", help="event name")
    _add_version(parser)
    parser.add_argument("--start", metavar="T", help="window start (with --end)")
    parser.add_argument("--end", metavar="T", help="window end (with --start)")
    _add_by(parser)
    _add_output(parser)


def _add_series(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "series", _commands.series, "one row per minute or hour bucket")
    parser.add_argument("report", metavar="REPORT", help="event name")
    _add_version(parser)
    parser.add_argument("--start", metavar="T", help="first bucket (default: end - 1 hour)")
    parser.add_argument("--end", metavar="T", help="end (default: end of the current bucket)")
    parser.add_argument("--every", choices=("minute", "hour"), default="minute")
    _add_by(parser)
    _add_output(parser, plot=True)


def _add_compare(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "compare", _commands.compare, "compare two time windows")
    parser.add_argument("report", metavar="REPORT", help="event name")
    _add_version(parser)
    parser.add_argument("--before", nargs=2, required=True, metavar=("START", "END"))
    parser.add_argument("--after", nargs=2, required=True, metavar=("START", "END"))
    _add_by(parser)
    _add_output(parser)


def _add_cleanup(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "cleanup", _commands.cleanup, "delete rollups older than a time")
    parser.add_argument("--before", required=True, metavar="T", help="delete what ended before T")
    parser.add_argument(
        "--event",
        action="append",
        metavar="NAME",
        dest="events",
        help="only this event (repeatable)",
    )
    _add_json(parser)


def _add_table_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table-prefix",
        metavar="P",
        help="prefix of the table names (default event_meter, or the URL's ?table_prefix=)",
    )


def _add_postgres(subparsers: Subparsers) -> None:
    help_text = "PostgreSQL rollup tables: print or install their schema"
    group: argparse.ArgumentParser = subparsers.add_parser(
        "postgres", help=help_text, description=help_text
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    help_text = "print the DDL of the rollup tables (idempotent CREATE ... IF NOT EXISTS)"
    schema = commands.add_parser("schema", help=help_text, description=help_text)
    _add_table_prefix(schema)
    schema.set_defaults(handler=_postgres.schema)
    help_text = "create the rollup tables and indexes that are missing"
    install = commands.add_parser("install", help=help_text, description=help_text)
    install.add_argument("--url", metavar="URL", help="postgresql:// URL ($DATABASE_URL)")
    _add_table_prefix(install)
    install.set_defaults(handler=_postgres.install)


def _add_dashboard(subparsers: Subparsers) -> None:
    parser = _command(subparsers, "dashboard", _dashboard.dashboard, _dashboard.HELP)
    _dashboard.add_arguments(parser)


SUBCOMMANDS: Final[tuple[Callable[[Subparsers], None], ...]] = (
    _add_demo,
    _add_process,
    _add_summary,
    _add_series,
    _add_compare,
    _add_cleanup,
    _add_postgres,
    _add_dashboard,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="event-meter", description=DESCRIPTION)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser
