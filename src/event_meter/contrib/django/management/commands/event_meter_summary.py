"""``manage.py event_meter_summary EVENT [--version N] [--start T --end T] [--by K=V] [--json]``."""

from __future__ import annotations

import argparse
from typing import Any

from event_meter._meter import EventMeter
from event_meter.cli import _commands, _parser
from event_meter.contrib.django._command import MeterCommand


class Command(MeterCommand):
    help = "Totals, rates and durations of a report (the default meter)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("report", metavar="EVENT", help="event name")
        _parser._add_version(parser)
        parser.add_argument("--start", metavar="T", help="window start (with --end)")
        parser.add_argument("--end", metavar="T", help="window end (with --start)")
        _parser._add_by(parser)
        _parser._add_json(parser)

    def run(self, meter: EventMeter, args: argparse.Namespace) -> None:
        _commands.summary_with(meter, args, out=self.stdout)
