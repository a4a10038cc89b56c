"""``manage.py event_meter_process module:REPORT [--batch-size N] [--json]``."""

from __future__ import annotations

import argparse
from typing import Any

from event_meter._meter import EventMeter
from event_meter.cli import _commands, _parser
from event_meter.contrib.django._command import MeterCommand


class Command(MeterCommand):
    help = "Fold the pending events of a report into its rollups (the default meter)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("report", metavar="REPORT", help="module:attribute naming a Report")
        parser.add_argument("--batch-size", type=_parser.positive_int, default=10_000, metavar="N")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(self, meter: EventMeter, args: argparse.Namespace) -> None:
        report = _commands.load_report(args.report)
        _commands.process_with(meter, report, args, out=self.stdout)
