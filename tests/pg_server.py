"""A throwaway PostgreSQL server for backend tests, and per-test table prefixes.

``PostgresServer`` runs Debian's PostgreSQL (``/usr/lib/postgresql/*/bin``) in
a temp dir on a free loopback port, with trust auth and ``fsync=off`` (test
speed only). PostgreSQL refuses to run as root, so as root every server
command runs as the ``postgres`` OS user (``runuser``) in a folder it owns.
Readiness is polled with ``pg_isready`` under a bounded deadline.

One server serves the whole session (``session_server()``, stopped by the
session fixture in ``conftest.py`` and at exit). Tests get isolation from a
random ``table_prefix`` per store (``new_table_prefix()``); ``drop_test_tables()``
drops every table made under those prefixes after each test.

Missing binaries skip the test locally and fail it when ``CI`` is set, so a CI
run can never pass by silently not testing PostgreSQL.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from servers import free_port

__all__ = [
    "PostgresServer",
    "count_backends",
    "drop_test_tables",
    "new_table_prefix",
    "session_server",
]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
OS_USER = "postgres"


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` (or ``$PG_BINDIR``); skip or fail without."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )[::-1]
    found = next((c for c in candidates if c and (Path(c) / "postgres").is_file()), None)
    if found is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(found)


def unavailable(message: str) -> NoReturn:
    """Skip the test locally; fail it under ``CI``, which must run the PostgreSQL tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the PostgreSQL tests")
    pytest.skip(message)


class PostgresServer:
    """One PostgreSQL server on ``127.0.0.1:port`` with a ``postgres`` trust superuser."""

    def __init__(self, bindir: Path | None = None, port: int | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="event-meter-pg-"))
        self.data = self.dir / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                entry = pwd.getpwnam(OS_USER)
            except KeyError:
                unavailable(f"running as root needs the OS user {OS_USER!r} to run PostgreSQL")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        return subprocess.run(
            command, cwd=self.dir, capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> PostgresServer:
        """initdb (first time), start, and wait (bounded) until ``pg_isready`` says yes."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-o",
            options,
            "-W",
            "start",
        )
        self.started = True
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            ready = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if ready.returncode == 0:
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"PostgreSQL did not become ready:\n{tail}")
            time.sleep(0.05)  # polling readiness, not waiting for time to pass

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(STOP_TIMEOUT_S)),
                "stop",
                check=False,
            )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "server.log").read_text().splitlines()[-lines:])
        return ""

    def connect(self, **kwargs: Any) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, **kwargs)


_SESSION: PostgresServer | None = None
_PREFIXES: list[str] = []


def session_server() -> PostgresServer:
    """The session's server, started on first use."""
    global _SESSION
    if _SESSION is None:
        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        _SESSION = server
        atexit.register(stop_session_server)
    return _SESSION


def stop_session_server() -> None:
    global _SESSION
    server, _SESSION = _SESSION, None
    if server is not None:
        server.close()


def new_table_prefix() -> str:
    """A random table prefix whose tables ``drop_test_tables`` drops after the test."""
    prefix = f"t_{secrets.token_hex(6)}"
    _PREFIXES.append(prefix)
    return prefix


def drop_test_tables() -> None:
    """Drop the tables of every prefix handed out since the last call."""
    if not _PREFIXES or _SESSION is None:
        _PREFIXES.clear()
        return
    from psycopg import sql

    prefixes, _PREFIXES[:] = list(_PREFIXES), []
    with _SESSION.connect() as conn:
        for prefix in prefixes:
            for suffix in ("_rollups", "_strings", "_processed_entries"):
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(prefix + suffix))
                )


def count_backends(conn: Any) -> int:
    """Client backends connected to the server's database, other than ``conn`` itself."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0])
