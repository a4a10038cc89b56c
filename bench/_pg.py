"""A throwaway PostgreSQL server for the benchmarks.

Minimal launch code, duplicated on purpose from ``tests/pg_server.py`` (bench
must not import tests, tests must not import bench, and a server launcher does
not belong in the library): Debian's PostgreSQL (``/usr/lib/postgresql/N/bin``
or ``$PG_BINDIR``) in a temp dir on a free loopback port, trust auth, run as
the ``postgres`` OS user when we are root (PostgreSQL refuses root).

Unlike the test server it keeps PostgreSQL's durability defaults (``fsync``,
``synchronous_commit`` on): the figures include real commits.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BenchPostgres"]

START_TIMEOUT_S = 60.0


def _bindir() -> Path:
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )[::-1]
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").is_file():
            return Path(candidate)
    raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BenchPostgres:
    """``with BenchPostgres() as server:`` -> a running server at ``server.dsn``."""

    def __init__(self, *settings: str) -> None:
        self.bindir = _bindir()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="event-meter-bench-pg-"))
        self.settings = settings
        self._as_root = os.geteuid() == 0
        if self._as_root:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, cwd=self.dir, capture_output=True, text=True, check=check, timeout=120
        )

    def __enter__(self) -> BenchPostgres:
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust")
        options = " ".join(
            [
                f"-c listen_addresses=127.0.0.1 -c port={self.port}",
                f"-c unix_socket_directories={self.dir}",
                *(f"-c {setting}" for setting in self.settings),
            ]
        )
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", data, "-l", log, "-o", options, "-W", "start")
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._run(
            "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False
        ).returncode:
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("PostgreSQL did not become ready")
            time.sleep(0.05)  # polling readiness
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
