"""Output of the CLI: tables (``rich`` on a terminal, plain aligned text otherwise), JSON, CSV.

``rich`` is optional (the ``cli`` extra): without it, or when stdout is not a
terminal, tables are plain text that pipes and ``grep`` handle well. CSV is RFC
4180 (the stdlib ``csv`` module) with exact values: floats by ``repr``, None empty.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TextIO

import orjson

from event_meter.rollup import FIELDS, render_summary

__all__ = [
    "compare_csv",
    "compare_table",
    "csv_cell",
    "format_value",
    "mapping_table",
    "print_csv",
    "print_json",
    "print_table",
    "series_csv",
    "series_table",
    "summaries_table",
    "summary_columns",
    "summary_csv",
]

MISSING: Final = "-"
SERIES_COLUMNS: Final = (
    ("bucket", "bucket"),
    ("count", "count"),
    ("success_count", "success"),
    ("failure_count", "failure"),
    ("skipped_count", "skipped"),
    ("per_minute", "per_minute"),
    ("duration_ms_avg", "duration_ms_avg"),
    ("duration_ms_max", "duration_ms_max"),
)

# SPEC order of the summary keys: a summary with every stored field known.
_SUMMARY_ORDER: Final = tuple(render_summary(dict.fromkeys(FIELDS, 1), 60.0))
# Summary times have 6 fractional digits but millisecond precision: tables show 3.
_WHOLE_MS_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}000Z")

Table = tuple[list[str], list[list[str]]]


def print_json(data: Any, out: TextIO | None = None) -> None:
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    (out or sys.stdout).write(text + "\n")


def format_value(value: Any) -> str:
    """Integers with thousands separators, floats with up to 3 decimals, times to the ms."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    text = str(value)
    if _WHOLE_MS_TIME.fullmatch(text):
        return text[:-4] + "Z"
    return text


def _is_number(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or (text[0] == "-" and text[1:2].isdigit()))


def _use_rich(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(table: Table, *, title: str | None = None, out: TextIO | None = None) -> None:
    """Print ``(headers, rows)``; numbers are right-aligned."""
    stream = out or sys.stdout
    headers, rows = table
    if _use_rich(stream):
        _rich_table(stream, headers, rows, title)
        return
    stream.write(plain_table(headers, rows, title))


def _rich_table(out: TextIO, headers: list[str], rows: list[list[str]], title: str | None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    table = RichTable(title=title, title_justify="left", header_style="bold")
    for position, header in enumerate(headers):
        numeric = any(_is_number(row[position]) for row in rows) and position > 0
        table.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(file=out).print(table)


def plain_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    numeric = [
        position > 0 and any(_is_number(row[position]) for row in rows)
        for position in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [title] if title else []
    lines += [line(headers), "  ".join("-" * width for width in widths)]
    lines += [line(row) for row in rows]
    return "\n".join(lines) + "\n"


def mapping_table(data: Mapping[str, Any], value_header: str = "value") -> Table:
    """A two-column table of one flat mapping (a summary, a ProcessResult, cleanup counts)."""
    return ["field", value_header], [[key, format_value(value)] for key, value in data.items()]


def summaries_table(columns: Mapping[str, Mapping[str, Any]]) -> Table:
    """Summaries side by side, one column each, fields in SPEC order."""
    fields: list[str] = []
    for summary in columns.values():
        fields += [name for name in summary if name not in fields]
    rows = [[name, *(format_value(s.get(name)) for s in columns.values())] for name in fields]
    return ["field", *columns], rows


def series_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    headers = [header for _, header in SERIES_COLUMNS]
    body = [[format_value(row.get(key)) for key, _ in SERIES_COLUMNS] for row in rows]
    return headers, body


def compare_table(result: Mapping[str, Any]) -> Table:
    headers = ["metric", "before", "after", "difference", "ratio"]
    rows = [
        [metric, *(format_value(change.get(part)) for part in headers[1:])]
        for metric, change in result["change"].items()
    ]
    return headers, rows


# -- CSV ---------------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """None -> empty, floats by ``repr`` (no rounding), booleans true/false, the rest as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def print_csv(rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    """Write ``rows`` (the header first) as RFC 4180 CSV (CRLF line ends, minimal quoting)."""
    writer = csv.writer(out or sys.stdout)
    writer.writerows([csv_cell(value) for value in row] for row in rows)


def summary_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' summary keys, in SPEC order.

    Keys the SPEC order does not know yet (added by a newer summary) go right
    after the key that precedes them in the row that has them.
    """
    order = list(_SUMMARY_ORDER)
    present: set[str] = set()
    for row in rows:
        position = 0
        for key in row:
            present.add(key)
            if key in order:
                position = order.index(key) + 1
            else:
                order.insert(position, key)
                position += 1
    return [key for key in order if key in present]


def summary_csv(summary: Mapping[str, Any]) -> list[list[Any]]:
    return [list(summary), list(summary.values())]


def series_csv(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    fields = summary_columns({k: v for k, v in row.items() if k != "bucket"} for row in rows)
    body = [[row.get("bucket"), *(row.get(field) for field in fields)] for row in rows]
    return [["bucket", *fields], *body]


def compare_csv(result: Mapping[str, Any]) -> list[list[Any]]:
    headers = ["metric", "before", "after", "difference", "ratio"]
    rows = [
        [metric, *(change.get(part) for part in headers[1:])]
        for metric, change in result["change"].items()
    ]
    return [headers, *rows]
