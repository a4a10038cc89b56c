"""Real servers for backend tests: throwaway ``redis-server`` processes on loopback ports.

``RedisServer`` runs Debian's ``redis-server`` in a temp dir, with persistence
off unless ``persistent=True`` (``appendonly yes`` + ``appendfsync always``: a
restart keeps every acknowledged write). It can be stopped and started again on
the same port, so fault tests can take the server away under a live client and
bring it back. ``DEBUG`` is enabled for loopback clients (``DEBUG SLEEP``).

``RedisClusterServers`` starts three such servers with ``cluster-enabled yes``
and joins them with ``redis-cli --cluster create`` (three masters, no replicas).

A missing binary skips the test locally and fails it when ``CI`` is set, so a
CI run can never pass by silently not testing Redis.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["RedisClusterServers", "RedisServer", "free_port", "require_binary"]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def require_binary(name: str) -> str:
    """The path of ``name``; skips the test locally, fails it under ``CI``."""
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    if found is None:
        message = f"{name} is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the Redis tests")
        pytest.skip(message)
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cluster_port() -> int:
    """A free port ``p`` whose cluster bus port ``p + 10000`` is free too (``p`` <= 55535)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 55_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; ``stop``/``start`` keep the port."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        *,
        persistent: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary or require_binary("redis-server")
        self.port = port or free_port()
        self.persistent = persistent
        self.extra = dict(extra or {})
        self.dir = Path(tempfile.mkdtemp(prefix="event-meter-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def options(self) -> dict[str, str]:
        """Command-line options: loopback only, files in a temp dir, AOF when persistent."""
        return {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--save": "",
            "--appendonly": "yes" if self.persistent else "no",
            "--appendfsync": "always",
            "--dir": str(self.dir),
            "--daemonize": "no",
            "--enable-debug-command": "local",
            **self.extra,
        }

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers ``PING``."""
        if self.running:
            return self
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child process
        try:
            self._process = subprocess.Popen(
                [self.binary, *(arg for pair in self.options().items() for arg in pair)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        finally:
            log.close()
        atexit.register(self.stop)  # never leave a server behind, even if close() is skipped
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _pong(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited on start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING:\n{self.log_tail()}")
            time.sleep(0.02)  # polling readiness, not waiting for time to pass
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "redis.log").read_text().splitlines()[-lines:])
        return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RedisClusterServers:
    """Three ``cluster-enabled`` servers joined into one cluster (three masters, no replicas).

    ``start`` waits (bounded) until every node reports ``cluster_state:ok``;
    ``nodes`` are ``(host, port)`` pairs for ``redis.cluster.RedisCluster``.
    """

    def __init__(self, masters: int = 3) -> None:
        self.cli = require_binary("redis-cli")
        self.servers = [RedisServer(port=cluster_port()) for _ in range(masters)]
        for server in self.servers:
            server.extra.update(
                {
                    "--cluster-enabled": "yes",
                    "--cluster-config-file": str(server.dir / "nodes.conf"),
                    "--cluster-node-timeout": "5000",
                }
            )

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", server.port) for server in self.servers]

    def start(self) -> RedisClusterServers:
        for server in self.servers:
            server.start()
        done = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"{host}:{port}" for host, port in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(self._state_ok(port) for _, port in self.nodes):
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the cluster never reached cluster_state:ok")
            time.sleep(0.05)  # polling readiness, not waiting for time to pass
        return self

    def _state_ok(self, port: int) -> bool:
        done = subprocess.run(
            [self.cli, "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT_S,
            check=False,
        )
        return "cluster_state:ok" in done.stdout

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
