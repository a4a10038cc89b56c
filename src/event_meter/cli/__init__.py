"""The ``event-meter`` command line (SPEC section 13); ``main`` is the console script.

Exit codes: 0 on success, 1 on an error of the library or of the input (one
``event-meter: error: ...`` line on stderr), 2 on a usage error (argparse).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from event_meter.cli._commands import CommandError
from event_meter.cli._parser import build_parser
from event_meter.errors import EventMeterError

__all__ = ["main"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``event-meter`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except (EventMeterError, CommandError, ValueError, TypeError) as exc:
        sys.stderr.write(f"event-meter: error: {_one_line(exc)}\n")
        return 1
    except BrokenPipeError:
        _silence_stdout()  # `event-meter ... | head`: the reader left, which is not an error
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("event-meter: interrupted\n")
        return 130
    return code
