"""``event-meter postgres schema|install`` (SPEC section 13), run in-process through ``main``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from event_meter.cli import main
from event_meter.stores.postgres import schema_sql
from pg_server import PostgresServer, drop_test_tables, new_table_prefix

PIP_LINE = 'pip install "event-meter[postgres]"'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("event-meter: error: ")
    return lines[0]


@pytest.fixture
def server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    yield postgres_server
    drop_test_tables()


def tables_of(server: PostgresServer, prefix: str) -> list[str]:
    conn: psycopg.Connection[Any]
    with server.connect() as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE %s ORDER BY 1",
            [prefix.replace("_", r"\_") + r"\_%"],
        ).fetchall()
    return [row[0] for row in rows]


def expected_tables(prefix: str) -> list[str]:
    return [f"{prefix}_processed_entries", f"{prefix}_rollups", f"{prefix}_strings"]


# -- schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [None, "billing_v2"])
def test_schema_prints_schema_sql(capsys: pytest.CaptureFixture[str], prefix: str | None) -> None:
    argv = ["postgres", "schema"] + (["--table-prefix", prefix] if prefix else [])
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    expected = schema_sql(prefix or "event_meter")
    assert out.rstrip("\n") == expected.rstrip("\n")
    assert out.endswith(";\n")


def test_schema_with_an_invalid_prefix_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "postgres", "schema", "--table-prefix", "bad-prefix")
    assert (code, out) == (1, "")
    assert "'bad-prefix'" in one_error_line(err)


def test_python_dash_m_schema_and_usage_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "event_meter", "postgres", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.rstrip("\n") == schema_sql().rstrip("\n")
    for argv in (["postgres"], ["postgres", "drop"], ["postgres", "schema", "--url", "x"]):
        usage = subprocess.run(
            [sys.executable, "-m", "event_meter", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert usage.returncode == 2, argv
        assert "usage:" in usage.stderr


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["postgres", "--help"], ["schema", "install"]),
        (["postgres", "install", "--help"], ["--url", "--table-prefix", "DATABASE_URL"]),
    ],
)
def test_help_exits_0(
    capsys: pytest.CaptureFixture[str], argv: list[str], shown: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for text in shown:
        assert text in out


# -- install: errors -------------------------------------------------------------------------


def test_install_without_a_url_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, out, err = run(capsys, "postgres", "install")
    assert (code, out) == (1, "")
    line = one_error_line(err)
    assert "--url" in line
    assert "DATABASE_URL" in line


@pytest.mark.parametrize("prefix", ["bad-prefix", "1st", "x" * 60, "a'; DROP TABLE t; --"])
def test_install_with_an_invalid_prefix_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, out, err = run(capsys, "postgres", "install", "--table-prefix", prefix)
    assert (code, out) == (1, "")
    assert repr(prefix) in one_error_line(err)


def test_install_with_an_invalid_prefix_in_the_url_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://nobody@127.0.0.1:1/db?table_prefix=no-dash"
    code, _, err = run(capsys, "postgres", "install", "--url", url)
    assert code == 1
    assert "'no-dash'" in one_error_line(err)


def test_install_without_the_driver_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    code, out, err = run(
        capsys, "postgres", "install", "--url", "postgresql://nobody@127.0.0.1:1/db"
    )
    assert (code, out) == (1, "")
    assert PIP_LINE in one_error_line(err)


def test_install_with_a_url_that_is_not_postgresql_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "postgres", "install", "--url", "mysql://localhost/db")
    assert code == 1
    assert "postgresql://" in one_error_line(err)


@pytest.mark.postgres
def test_install_when_the_server_refuses_is_one_line(
    capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/no_such_database"
    code, _, err = run(capsys, "postgres", "install", "--url", url)
    assert code == 1
    assert "no_such_database" in one_error_line(err)


# -- install: tables -------------------------------------------------------------------------


@pytest.mark.postgres
def test_install_creates_the_tables_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], server: PostgresServer
) -> None:
    prefix = new_table_prefix()
    code, out, err = run(
        capsys, "postgres", "install", "--url", server.dsn, "--table-prefix", prefix
    )
    assert (code, err) == (0, "")
    assert f"{prefix}_rollups" in out
    assert tables_of(server, prefix) == expected_tables(prefix)
    again = run(capsys, "postgres", "install", "--url", server.dsn, "--table-prefix", prefix)
    assert again[0] == 0
    assert tables_of(server, prefix) == expected_tables(prefix)


@pytest.mark.postgres
def test_install_reads_database_url_and_its_table_prefix(
    capsys: pytest.CaptureFixture[str], server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = new_table_prefix()
    monkeypatch.setenv("DATABASE_URL", f"{server.dsn}?table_prefix={prefix}")
    code, _, err = run(capsys, "postgres", "install")
    assert (code, err) == (0, "")
    assert tables_of(server, prefix) == expected_tables(prefix)

    flag = new_table_prefix()  # --table-prefix wins over the URL's
    code, _, err = run(capsys, "postgres", "install", "--table-prefix", flag)
    assert (code, err) == (0, "")
    assert tables_of(server, flag) == expected_tables(flag)
