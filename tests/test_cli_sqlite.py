"""``event-meter`` on SQLite rollups: ``--rollups sqlite:///...`` or ``$EVENT_METER_ROLLUP_URL``."""

from __future__ import annotations

import secrets
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from event_meter.cli import main
from test_cli import record_five


@pytest.fixture
def report_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``module:attribute`` of a Report in a fresh module of the (new) current folder."""
    module = f"cli_sqlite_reports_{secrets.token_hex(4)}"
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / f"{module}.py").write_text(
        "from event_meter import Report\n"
        "INVOICES = Report('invoice_delivery', 1).index_by('provider').index_by('customer_id')\n"
    )
    monkeypatch.chdir(folder)
    yield f"{module}:INVOICES"
    sys.modules.pop(module, None)


@pytest.mark.parametrize("given_as", ["flag", "environment"])
def test_process_summary_and_cleanup_on_a_relative_sqlite_url(
    given_as: str,
    tmp_path: Path,
    namespace: str,
    report_spec: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = (tmp_path / "stream").as_uri()
    rollups = "sqlite:///data/rollups.db?table_prefix=cli"  # relative to the current folder
    record_five(stream, namespace)
    storage = ["--stream", stream, "--namespace", namespace]
    if given_as == "flag":
        storage += ["--rollups", rollups]
    else:
        monkeypatch.setenv("EVENT_METER_ROLLUP_URL", rollups)

    def run(*argv: str) -> dict[str, object]:
        capsys.readouterr()
        code = main([*argv, *storage, "--json"])
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        result: dict[str, object] = orjson.loads(out)
        return result

    assert run("process", report_spec)["processed"] == 5
    assert run("summary", "invoice_delivery")["count"] == 5
    assert run("summary", "invoice_delivery", "--by", "provider=postmark")["count"] == 3
    database = tmp_path / "app" / "data" / "rollups.db"
    conn = sqlite3.connect(database)  # SQL-queryable: the rollups of the run are rows
    try:
        assert conn.execute("SELECT count(*) FROM cli_rollups").fetchone()[0] > 0
    finally:
        conn.close()
    deleted = run("cleanup", "--before", "2025-02-01T00:00:00Z")["rollup_keys_deleted"]
    assert isinstance(deleted, int)
    assert deleted > 0
    assert run("summary", "invoice_delivery")["count"] == 0
