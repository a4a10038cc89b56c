"""The ``event-meter`` command line, run in-process through ``main`` (SPEC section 13)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from event_meter import EventMeter
from event_meter.cli import _commands, main

PAST = datetime(2025, 1, 6, 10, 15, 0, tzinfo=UTC)  # minute files long claimable by real time
PIP_LINE = 'pip install "event-meter[cli]"'


@dataclass
class Cli:
    """Runs ``main`` with the storage flags of one test's data folder."""

    capsys: pytest.CaptureFixture[str]
    storage: list[str]

    def __call__(self, *argv: str, storage: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        args = [*argv, *self.storage] if storage else list(argv)
        code = main(args)
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert (code, err) == (0, ""), err
        return orjson.loads(out)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return (tmp_path / "data").as_uri()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], url: str, namespace: str) -> Cli:
    return Cli(capsys, ["--stream", url, "--rollups", url, "--namespace", namespace])


@pytest.fixture
def report_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``module:attribute`` of a Report in a fresh module of the current folder."""
    module = f"cli_reports_{secrets.token_hex(4)}"
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / f"{module}.py").write_text(
        "from event_meter import Report\n"
        "INVOICES = Report('invoice_delivery', 1).index_by('provider').index_by('customer_id')\n"
        "NOT_A_REPORT = 42\n"
    )
    monkeypatch.chdir(folder)  # process imports from the current folder, like python -m
    yield f"{module}:INVOICES"
    sys.modules.pop(module, None)


class StepClock:
    """A clock set by hand (``support.FakeClock`` is not imported: mypy flags support.py)."""

    def __init__(self) -> None:
        self.current = PAST

    def now(self) -> datetime:
        return self.current


def record_five(url: str, namespace: str) -> None:
    """3 postmark successes (customer 44), 1 sendgrid failure, 1 ses skip, 10:15-10:17."""
    clock = StepClock()
    meter = EventMeter(stream_storage=url, rollup_storage=url, namespace=namespace, clock=clock)
    events: list[tuple[int, str, str, int]] = [
        (5, "success", "postmark", 44),
        (20, "success", "postmark", 44),
        (70, "success", "postmark", 44),
        (90, "failure", "sendgrid", 7),
        (120, "skipped", "ses", 7),
    ]
    try:
        for second, status, provider, customer in events:
            clock.current = PAST + timedelta(seconds=second)
            event = meter.start("invoice_delivery", provider=provider, customer_id=customer)
            if status == "success":
                result = event.success()
            elif status == "failure":
                result = event.failure(TimeoutError("no answer"))
            else:
                result = event.skip("already_delivered")
            assert result.recorded, result.error
    finally:
        meter.close()


@pytest.fixture
def processed(cli: Cli, url: str, namespace: str, report_spec: str) -> Cli:
    record_five(url, namespace)
    code, _, err = cli("process", report_spec)
    assert (code, err) == (0, "")
    return cli


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("event-meter: error: ")
    return lines[0]


# -- usage -------------------------------------------------------------------------------


def test_help_exits_zero_and_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "process", "summary", "series", "compare", "cleanup"):
        assert command in out


def test_every_subcommand_accepts_the_storage_options(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "process", "summary", "series", "compare", "cleanup"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert all(flag in out for flag in ("--stream", "--rollups", "--namespace")), command


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["summary"],
        ["summary", "invoice_delivery", "--by", "provider"],
        ["summary", "invoice_delivery", "--version", "0"],
        ["series", "invoice_delivery", "--json", "--plot"],
        ["series", "invoice_delivery", "--every", "day"],
        ["compare", "invoice_delivery", "--before", "2025-01-06T10:00:00Z"],
        ["cleanup"],
        ["demo", "--events", "many"],
    ],
)
def test_usage_errors_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: event-meter" in capsys.readouterr().err


def test_python_m_event_meter_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "event_meter", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: event-meter")


# -- process ------------------------------------------------------------------------------


def test_process_prints_the_result_table(
    cli: Cli, url: str, namespace: str, report_spec: str
) -> None:
    record_five(url, namespace)
    code, out, err = cli("process", report_spec)
    assert (code, err) == (0, "")
    rows = dict(line.split()[:2] for line in out.splitlines()[3:])
    assert rows["event_name"] == "invoice_delivery"
    assert rows["processed"] == "5"
    assert rows["complete"] == "yes"


def test_process_json_and_progress_on_stderr(
    cli: Cli, url: str, namespace: str, report_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_five(url, namespace)
    monkeypatch.setattr(_commands, "PROGRESS_INTERVAL_SECONDS", 0.0)
    code, out, err = cli("process", report_spec, "--batch-size", "2", "--json")
    assert code == 0
    assert orjson.loads(out) == {
        "event_name": "invoice_delivery",
        "version": 1,
        "processed": 5,
        "skipped_already_processed": 0,
        "malformed": 0,
        "complete": True,
        "locked": False,
    }
    progress = err.splitlines()
    assert progress[-1] == "event-meter: invoice_delivery v1: processed 5"
    assert len(progress) >= 3  # one line per batch of at most 2 rows


def test_process_reads_storage_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    url: str,
    namespace: str,
    report_spec: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_five(url, namespace)
    monkeypatch.setenv("EVENT_METER_STREAM_URL", url)
    monkeypatch.setenv("EVENT_METER_ROLLUP_URL", url)
    monkeypatch.setenv("EVENT_METER_NAMESPACE", namespace)
    cli = Cli(capsys, [])
    assert cli.json("process", report_spec)["processed"] == 5
    assert cli.json("summary", "invoice_delivery")["count"] == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_for_cli_tests:R", "cannot import 'no_such_module_for_cli_tests'"),
        ("invoice_delivery", "REPORT must be module:attribute"),
        ("{module}:MISSING", "has no attribute 'MISSING'"),
        ("{module}:NOT_A_REPORT", "is a int, not an event_meter.Report"),
    ],
)
def test_process_bad_report_is_one_error_line(
    cli: Cli, report_spec: str, spec: str, message: str
) -> None:
    module = report_spec.partition(":")[0]
    code, out, err = cli("process", spec.format(module=module))
    assert (code, out) == (1, "")
    assert message in one_error_line(err)


# -- reads -------------------------------------------------------------------------------


def test_summary_json_with_by_values_as_strings(processed: Cli) -> None:
    overall = processed.json("summary", "invoice_delivery")
    assert overall["count"] == 5
    assert (overall["success_count"], overall["failure_count"], overall["skipped_count"]) == (
        3,
        1,
        1,
    )
    postmark = processed.json("summary", "invoice_delivery", "--by", "provider=postmark")
    assert postmark["count"] == 3
    # customer_id was recorded as the int 44; the CLI passes "44" and reads the same rollup.
    assert processed.json("summary", "invoice_delivery", "--by", "customer_id=44")["count"] == 3


def test_summary_window_and_table(processed: Cli) -> None:
    window = ("--start", "2025-01-06T10:16:00Z", "--end", "2025-01-06T10:17:00Z")
    assert processed.json("summary", "invoice_delivery", *window)["count"] == 2
    code, out, err = processed("summary", "invoice_delivery", "--version", "1", *window)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "invoice_delivery v1 (all)"
    rows = dict(line.split()[:2] for line in out.splitlines()[3:])
    assert rows["count"] == "2"
    assert rows["rate_window_seconds"] == "60"


def test_summary_table_uses_rich_on_a_terminal(
    processed: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = processed("summary", "invoice_delivery", "--by", "provider=postmark")
    assert code == 0
    assert "━" in out  # rich's table rule, not the plain "----" one
    assert "success_count" in out


def test_series_json_and_table(processed: Cli) -> None:
    window = ("--start", "2025-01-06T10:15:00Z", "--end", "2025-01-06T10:18:00Z")
    rows = processed.json("series", "invoice_delivery", *window)
    assert [(row["bucket"], row["count"]) for row in rows] == [
        ("2025-01-06T10:15:00Z", 2),
        ("2025-01-06T10:16:00Z", 2),
        ("2025-01-06T10:17:00Z", 1),
    ]
    hourly = processed.json("series", "invoice_delivery", *window, "--every", "hour")
    assert [(row["bucket"], row["count"]) for row in hourly] == [("2025-01-06T10:00:00Z", 5)]
    code, out, _ = processed("series", "invoice_delivery", *window, "--by", "provider=postmark")
    assert code == 0
    table = [line.split() for line in out.splitlines()[3:]]
    assert [(row[0], row[1]) for row in table] == [
        ("2025-01-06T10:15:00Z", "2"),
        ("2025-01-06T10:16:00Z", "1"),
        ("2025-01-06T10:17:00Z", "0"),
    ]


def test_series_plot_draws_a_chart(processed: Cli) -> None:
    window = ("--start", "2025-01-06T10:15:00Z", "--end", "2025-01-06T10:18:00Z")
    code, out, err = processed("series", "invoice_delivery", *window, "--plot")
    assert (code, err) == (0, "")
    assert "invoice_delivery v1 (all): count per minute" in out
    assert "10:15" in out
    assert "10:17" in out
    assert "\x1b[" not in out  # no colour codes when stdout is not a terminal


def test_series_plot_without_plotext_names_the_extra(
    processed: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotext", None)  # import plotext -> ImportError
    code, out, err = processed("series", "invoice_delivery", "--plot")
    assert (code, out) == (1, "")
    assert PIP_LINE in one_error_line(err)


def test_compare_json_and_table(processed: Cli) -> None:
    windows = (
        *("--before", "2025-01-06T10:15:00Z", "2025-01-06T10:16:00Z"),
        *("--after", "2025-01-06T10:16:00Z", "2025-01-06T10:18:00Z"),
    )
    result = processed.json("compare", "invoice_delivery", *windows)
    assert result["change"]["count"] == {"before": 2, "after": 3, "difference": 1, "ratio": 1.5}
    assert result["after"]["failure_count"] == 1
    code, out, _ = processed("compare", "invoice_delivery", *windows, "--by", "provider=postmark")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert rows["count"] == ["2", "1", "-1", "0.5"]


def test_cleanup_deletes_and_reports_counts(processed: Cli) -> None:
    result = processed.json(
        "cleanup", "--before", "2025-02-01T00:00:00Z", "--event", "invoice_delivery"
    )
    assert result["rollup_keys_deleted"] > 0
    assert processed.json("summary", "invoice_delivery")["count"] == 0
    code, out, _ = processed("cleanup", "--before", "2025-02-01T00:00:00Z")
    assert code == 0
    assert "rollup_keys_deleted" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["summary", "invoice_delivery", "--start", "yesterday", "--end", "2025-01-07"],
            "ISO-8601",
        ),
        (["summary", "invoice_delivery", "--start", "2025-01-06T10:00:00Z"], "both start and end"),
        (["summary", "invoice_delivery", "--by", "queue=mailers"], "no index on ['queue']"),
        (["summary", "invoice_delivery", "--version", "2"], "never been processed"),
        (["series", "invoice_delivery", "--by", "provider=a", "provider=b"], "given twice"),
        (["cleanup", "--before", "soon"], "ISO-8601"),
    ],
)
def test_library_errors_are_one_line_and_exit_one(
    processed: Cli, argv: list[str], message: str
) -> None:
    code, out, err = processed(*argv)
    assert (code, out) == (1, "")
    assert message in one_error_line(err)


def test_bad_storage_url_is_one_error_line(cli: Cli) -> None:
    code, _, err = cli("summary", "invoice_delivery", "--stream", "gopher://x", storage=False)
    assert code == 1
    assert "unknown storage URL scheme" in one_error_line(err)


# -- demo --------------------------------------------------------------------------------


def demo_counts(out: str) -> tuple[str, str]:
    """The ``count`` row of the demo's summary table: (all, provider=postmark)."""
    row = next(line.split() for line in out.splitlines() if line.startswith("count "))
    return row[1], row[2]


def test_demo_prints_summary_chart_and_next_steps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "demo"
    cli = Cli(capsys, [])
    code, out, err = cli("demo", "--path", str(folder), "--events", "300")
    assert (code, err) == (0, "")
    assert out.startswith("event-meter demo: recorded 300 invoice_delivery events")
    assert str(folder) in out.splitlines()[0]
    total, postmark = demo_counts(out)
    assert total == "300"
    assert 0 < int(postmark) < 300
    assert "events per minute" in out  # the chart's title
    assert "event-meter summary invoice_delivery" in out
    reads = ["--rollups", folder.as_uri(), "--namespace", "event_meter_demo:v1"]
    summary = Cli(capsys, reads).json("summary", "invoice_delivery", "--by", "provider=postmark")
    assert summary["count"] == int(postmark)
    assert summary["failure_count"] > 0
    assert summary["interval_ms_count"] > 0


def test_demo_rerun_adds_to_the_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cli = Cli(capsys, ["--path", str(tmp_path / "demo"), "--events", "120"])
    first = cli("demo")
    second = cli("demo")
    assert (first[0], second[0]) == (0, 0)
    assert demo_counts(first[1])[0] == "120"
    assert demo_counts(second[1])[0] == "240"


def test_demo_without_plotext_draws_block_bars(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotext", None)
    code, out, _ = Cli(capsys, [])("demo", "--path", str(tmp_path / "demo"), "--events", "200")
    assert code == 0
    bars = [line for line in out.splitlines() if "┤" in line]
    assert len(bars) == 8
    assert "█" in "".join(bars)
    assert "--every minute" in out  # no --plot suggestion without the extra


def test_demo_uses_the_embedded_default_and_its_own_stream_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = Cli(capsys, [])("demo", "--events", "50")
    embedded = tmp_path / "embedded"  # EVENT_METER_PATH, set by conftest
    assert code == 0
    assert str(embedded.resolve()) in out.splitlines()[0]
    assert (embedded / "demo" / "streams").is_dir()
    assert not (embedded / "streams").exists()  # an app's pending rows there are never consumed
    reads = Cli(capsys, ["--namespace", "event_meter_demo:v1"])
    assert reads.json("summary", "invoice_delivery")["count"] == 50
