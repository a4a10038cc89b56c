"""The base of the management commands: the CLI's options and command bodies on Django.

Each command parses the options of its ``event-meter`` counterpart (the
same ``argparse`` helpers) and runs the CLI's command body on the default
meter that ``AppConfig.ready()`` configured from ``settings.EVENT_METER``.
Library and input errors become one-line ``CommandError`` s (exit 1).
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import event_meter
from event_meter._meter import EventMeter
from event_meter.cli._commands import CommandError as CliError
from event_meter.errors import EventMeterError

__all__ = ["MeterCommand"]


class MeterCommand(BaseCommand):  # type: ignore[misc]  # Django: untyped
    """Subclasses define ``add_arguments`` and ``run(meter, args)``."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        # ``--version`` is the report version, as in the CLI: it replaces
        # Django's own ``--version`` (which prints Django's release).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def run(self, meter: EventMeter, args: argparse.Namespace) -> None:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.run(event_meter.default_meter(), argparse.Namespace(**options))
        except (EventMeterError, CliError, ValueError, TypeError) as exc:
            raise CommandError(" ".join(str(exc).split()) or type(exc).__name__) from exc
