"""``event-meter dashboard``: flags, storage options, a busy port, and Ctrl-C."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from dashboard.conftest import Recorded, fetch
from event_meter.cli import _dashboard, main
from event_meter.cli._parser import build_parser
from event_meter.dashboard import server
from event_meter.dashboard.server import DashboardServer

STARTUP_SECONDS = 60  # a fresh interpreter on two busy cores


def storage_flags(recorded: Recorded) -> list[str]:
    return ["--stream", recorded.url, "--rollups", recorded.url, "--namespace", recorded.namespace]


def test_defaults_are_the_servers_and_loopback_only() -> None:
    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port) == (server.DEFAULT_HOST, server.DEFAULT_PORT)
    assert (_dashboard.DEFAULT_HOST, _dashboard.DEFAULT_PORT) == ("127.0.0.1", 8765)
    assert args.handler is _dashboard.dashboard


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dashboard", "--port", port])
    assert exit_info.value.code == 2
    assert "expected a port number" in capsys.readouterr().err


def test_serves_the_storage_of_the_flags_until_interrupted(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = DashboardServer.serve_forever
    answers: list[Any] = []

    def serve_then_interrupt(self: DashboardServer, poll_interval: float = 0.5) -> None:
        thread = threading.Thread(target=serve, args=(self,), kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            answers.append(fetch(self.url + "api/reports").json())
        finally:
            self.shutdown()
            thread.join()
        raise KeyboardInterrupt

    monkeypatch.setattr(DashboardServer, "serve_forever", serve_then_interrupt)
    code = main(["dashboard", "--port", "0", *storage_flags(recorded)])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("event-meter dashboard: http://127.0.0.1:")
    assert out.endswith("/ (Ctrl-C to stop)\n")
    assert err == "event-meter: dashboard stopped\n"
    assert answers[0]["namespace"] == recorded.namespace
    assert {"name": "invoice_delivery", "version": 1} in answers[0]["reports"]


def test_a_busy_port_is_one_error_line(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--port", str(port), *storage_flags(recorded)])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"event-meter: error: cannot listen on 127.0.0.1:{port}: ")
    assert len(err.splitlines()) == 1


def test_ctrl_c_stops_the_real_command_cleanly(recorded: Recorded) -> None:
    command = [sys.executable, "-m", "event_meter", "dashboard", "--port", "0"]
    process = subprocess.Popen(
        [*command, *storage_flags(recorded)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(STARTUP_SECONDS), "the dashboard printed no URL"
        line = process.stdout.readline()
        url = line.split()[2]
        assert fetch(url + "api/reports").json()["namespace"] == recorded.namespace
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=STARTUP_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert err == "event-meter: dashboard stopped\n"
