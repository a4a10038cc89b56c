"""``manage.py event_meter_sql [--table-prefix P]``: the DDL the migration runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from event_meter.cli import _postgres
from event_meter.errors import ConfigurationError


class Command(BaseCommand):  # type: ignore[misc]  # Django: untyped
    help = "Print the DDL of the event-meter PostgreSQL tables (idempotent)."

    requires_system_checks = ()  # prints text: needs no valid settings

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--table-prefix", metavar="P", help="prefix of the table names (default event_meter)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            text = _postgres.schema_text(options["table_prefix"])
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(text, ending="")
