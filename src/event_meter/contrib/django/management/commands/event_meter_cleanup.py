"""``manage.py event_meter_cleanup --before T [--event NAME ...] [--json]``."""

from __future__ import annotations

import argparse
from typing import Any

from event_meter._meter import EventMeter
from event_meter.cli import _commands
from event_meter.contrib.django._command import MeterCommand


class Command(MeterCommand):
    help = "Delete rollups, interval state and markers older than a time (the default meter)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--before", required=True, metavar="T", help="delete what ended before T"
        )
        parser.add_argument(
            "--event",
            action="append",
            metavar="NAME",
            dest="events",
            help="only this event (repeatable)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(self, meter: EventMeter, args: argparse.Namespace) -> None:
        _commands.cleanup_with(meter, args, out=self.stdout)
