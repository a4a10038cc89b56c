"""``event-meter dashboard``: serve the local web page until Ctrl-C.

The server lives in ``event_meter.dashboard`` and is imported only when this
command runs; the other commands never load it.
"""

from __future__ import annotations

import argparse
import sys

from event_meter.cli._commands import CommandError, open_meter

__all__ = ["add_arguments", "dashboard"]

HELP = "serve a local web page with the stored reports: tiles, charts and compare"
# The same defaults as event_meter.dashboard.server (a test checks), without importing it.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535 (an argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )


def dashboard(args: argparse.Namespace) -> int:
    from event_meter.dashboard.server import make_server

    with open_meter(args) as meter:
        try:
            server = make_server(meter, args.host, args.port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
        with server:
            sys.stdout.write(f"event-meter dashboard: {server.url} (Ctrl-C to stop)\n")
            sys.stdout.flush()
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                sys.stderr.write("event-meter: dashboard stopped\n")
    return 0
