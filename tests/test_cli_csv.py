"""``--csv`` of ``summary``, ``series`` and ``compare``: parsed back and checked against the API."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from event_meter import EventMeter, Report
from event_meter.cli import _commands, _render, main
from support import FakeClock

NAME = "invoice_delivery"
PAST = datetime(2025, 1, 6, 10, 15, 0, tzinfo=UTC)  # minute files long claimable by real time
INVOICES = Report(NAME).index_by("provider").measure_interval_by("customer_id")
WINDOW = ("--start", "2025-01-06T10:15:00Z", "--end", "2025-01-06T10:18:00Z")
Rows = list[list[str]]


def at(seconds: int) -> datetime:
    return PAST + timedelta(seconds=seconds)


@pytest.fixture
def meter(tmp_path: Path, namespace: str) -> Iterator[EventMeter]:
    """Seven events over 10:15-10:16 (10:17 stays empty), durations that do not divide evenly."""
    url = (tmp_path / "data").as_uri()
    clock = FakeClock(PAST)
    instance = EventMeter(stream_storage=url, rollup_storage=url, namespace=namespace, clock=clock)
    rows = [
        (5, "success", 100, "postmark", 44),
        (20, "success", 45, "postmark", 44),
        (30, "failure", 3001, "sendgrid", 7),
        (50, "success", 100, "postmark", 45),
        (70, "skipped", None, "ses", 7),
        (75, "success", 7, "postmark", 44),
        (100, "success", 1, "sendgrid", 45),
    ]
    for second, status, duration, provider, customer in rows:
        payload: dict[str, Any] = {
            "name": NAME,
            "status": status,
            "started_at": at(second).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "params": {"provider": provider, "customer_id": customer},
        }
        if duration is not None:
            payload["duration_ms"] = duration
        instance.stream.append(NAME, payload)
    clock.advance(minutes=2)  # past the file stream's claim grace
    assert instance.process_pending(INVOICES).processed == len(rows)
    yield instance
    instance.close()


def run_csv(capsys: pytest.CaptureFixture[str], meter: EventMeter, *argv: str) -> tuple[Rows, str]:
    """``main`` with ``--csv`` on the meter's storage; the parsed rows and the raw text."""
    storage = ["--rollups", str(meter.config.rollup_storage), "--namespace", meter.config.namespace]
    capsys.readouterr()
    code = main([*argv, *storage, "--csv"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    return list(csv.reader(io.StringIO(out, newline=""))), out


def cell(value: Any) -> str:
    """What SPEC asks for: None empty, floats unrounded, the rest as text."""
    if value is None:
        return ""
    assert not isinstance(value, bool)
    return repr(value) if isinstance(value, float) else str(value)


def assert_exact(text: str, value: Any) -> None:
    """The cell parses back to exactly the API's value."""
    if isinstance(value, float):
        assert float(text) == value
    elif isinstance(value, int):
        assert int(text) == value
    else:
        assert text == cell(value)


# -- summary -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "by", [None, {"provider": "postmark"}, {"provider": "ses"}], ids=["all", "postmark", "ses"]
)
def test_summary_is_one_header_and_one_value_row(
    capsys: pytest.CaptureFixture[str], meter: EventMeter, by: dict[str, str] | None
) -> None:
    flags = [arg for key, value in (by or {}).items() for arg in ("--by", f"{key}={value}")]
    rows, text = run_csv(capsys, meter, "summary", NAME, *WINDOW, *flags)
    expected = meter.summary(NAME, version=1, start=WINDOW[1], end=WINDOW[3], by=by)
    header, values = rows
    assert header == list(expected)  # SPEC order, absent keys omitted
    assert values == [cell(value) for value in expected.values()]
    for text_value, value in zip(values, expected.values(), strict=True):
        assert_exact(text_value, value)
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 2  # RFC 4180 line ends


def test_summary_floats_are_not_rounded(
    capsys: pytest.CaptureFixture[str], meter: EventMeter
) -> None:
    rows, _ = run_csv(capsys, meter, "summary", NAME, *WINDOW)
    summary = dict(zip(*rows, strict=True))
    assert summary["per_second"] == repr(7 / 180) == "0.03888888888888889"
    assert summary["duration_ms_avg"] == repr(3254 / 6)
    assert summary["rate_window_seconds"] == "180.0"


def test_summary_without_a_window(capsys: pytest.CaptureFixture[str], meter: EventMeter) -> None:
    rows, _ = run_csv(capsys, meter, "summary", NAME)
    expected = meter.summary(NAME, version=1)
    assert rows == [list(expected), [cell(value) for value in expected.values()]]


# -- series --------------------------------------------------------------------------------


def test_series_has_one_row_per_bucket_and_the_union_of_keys(
    capsys: pytest.CaptureFixture[str], meter: EventMeter
) -> None:
    rows, _ = run_csv(capsys, meter, "series", NAME, *WINDOW)
    expected = meter.series(NAME, version=1, start=WINDOW[1], end=WINDOW[3])
    header, *body = rows
    assert header[:5] == ["bucket", "count", "success_count", "failure_count", "skipped_count"]
    assert set(header) == {key for row in expected for key in row}
    for api_row in expected:  # every API row is in SPEC order; the header keeps it
        assert [key for key in header if key in api_row] == list(api_row)
    assert len(body) == len(expected) == 3
    for line, api_row in zip(body, expected, strict=True):
        assert line == [cell(api_row.get(key)) for key in header]
        for key, text_value in zip(header, line, strict=True):
            if key in api_row:
                assert_exact(text_value, api_row[key])
            else:
                assert text_value == ""
    empty = dict(zip(header, body[2], strict=True))
    assert (empty["bucket"], empty["count"], empty["started_at_min"]) == (
        "2025-01-06T10:17:00Z",
        "0",
        "",
    )


def test_series_hourly_and_filtered(capsys: pytest.CaptureFixture[str], meter: EventMeter) -> None:
    argv = ("series", NAME, *WINDOW, "--every", "hour", "--by", "provider=sendgrid")
    rows, _ = run_csv(capsys, meter, *argv)
    expected = meter.series(
        NAME, version=1, start=WINDOW[1], end=WINDOW[3], every="hour", by={"provider": "sendgrid"}
    )
    assert rows == [list(expected[0]), [cell(value) for value in expected[0].values()]]


# -- compare -------------------------------------------------------------------------------


COMPARE = (
    *("--before", "2025-01-06T10:15:00Z", "2025-01-06T10:16:00Z"),
    *("--after", "2025-01-06T10:16:00Z", "2025-01-06T10:18:00Z"),
)


@pytest.mark.parametrize("by", [None, {"provider": "ses"}], ids=["all", "ses"])
def test_compare_rows_are_the_change_metrics(
    capsys: pytest.CaptureFixture[str], meter: EventMeter, by: dict[str, str] | None
) -> None:
    flags = [arg for key, value in (by or {}).items() for arg in ("--by", f"{key}={value}")]
    rows, _ = run_csv(capsys, meter, "compare", NAME, *COMPARE, *flags)
    expected = meter.compare(NAME, version=1, before=COMPARE[1:3], after=COMPARE[4:6], by=by)
    header, *body = rows
    assert header == ["metric", "before", "after", "difference", "ratio"]
    assert [line[0] for line in body] == list(expected["change"])
    for metric, *values in body:
        change = expected["change"][metric]
        assert values == [cell(change[part]) for part in header[1:]]
        for text_value, part in zip(values, header[1:], strict=True):
            assert_exact(text_value, change[part])


def test_compare_values_and_empty_cells(
    capsys: pytest.CaptureFixture[str], meter: EventMeter
) -> None:
    rows, _ = run_csv(capsys, meter, "compare", NAME, *COMPARE)
    change = {line[0]: line[1:] for line in rows[1:]}
    assert change["count"] == ["4", "3", "-1", "0.75"]
    assert change["interval_ms_avg"] == [
        "15000.0",
        repr(145000 / 3),
        repr(145000 / 3 - 15000.0),
        repr(145000 / 3 / 15000.0),
    ]
    rows, _ = run_csv(capsys, meter, "compare", NAME, *COMPARE, "--by", "provider=ses")
    change = {line[0]: line[1:] for line in rows[1:]}
    assert change["count"] == ["0", "1", "1", ""]  # no ratio to 0
    assert change["duration_ms_avg"] == ["", "", "", ""]  # None on both sides


# -- usage and rendering -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["summary", NAME, "--csv", "--json"],
        ["series", NAME, "--json", "--csv"],
        ["series", NAME, "--csv", "--plot"],
        ["compare", NAME, "--before", "a", "b", "--after", "c", "d", "--csv", "--json"],
    ],
)
def test_csv_excludes_the_other_formats(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cells_quote_what_csv_must_quote() -> None:
    out = io.StringIO(newline="")
    data = [["a,b", 'say "hi"', "two\nlines", None, 1.5, 2, True]]
    _render.print_csv(data, out)
    assert out.getvalue() == '"a,b","say ""hi""","two\nlines",,1.5,2,true\r\n'
    assert list(csv.reader(io.StringIO(out.getvalue(), newline=""))) == [
        ["a,b", 'say "hi"', "two\nlines", "", "1.5", "2", "true"]
    ]


def test_columns_place_keys_a_newer_summary_adds_after_their_neighbour() -> None:
    rows: list[Mapping[str, Any]] = [
        {"count": 0, "duration_ms_count": 0, "interval_ms_count": 0},
        {"count": 2, "overflow_count": 1, "duration_ms_max": 9, "duration_ms_p50": 4.5},
    ]
    assert _render.summary_columns(rows) == [
        "count",
        "overflow_count",
        "duration_ms_count",
        "duration_ms_max",
        "duration_ms_p50",
        "interval_ms_count",
    ]


def test_summary_with_args_lacking_csv_prints_a_table(meter: EventMeter) -> None:
    """The Django ``event_meter_summary`` command builds args without ``--csv``."""
    args = argparse.Namespace(report=NAME, version=1, start=None, end=None, by=[], json=False)
    out = io.StringIO()
    assert _commands.summary_with(meter, args, out) == 0
    assert out.getvalue().splitlines()[0] == f"{NAME} v1 (all)"
