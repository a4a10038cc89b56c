"""Minimal Django settings for ``test_django.py``, which runs Django in subprocesses.

Read from the environment, so each scenario picks its database and settings:
``EVENT_METER_TEST_PG_PORT`` / ``EVENT_METER_TEST_PG_DB`` (the session's
PostgreSQL server and a database of the test), ``EVENT_METER_TEST_STREAM``
(the file stream folder), ``EVENT_METER_TEST_NAMESPACE`` and
``EVENT_METER_TEST_SETTINGS`` (JSON that replaces ``EVENT_METER``).
``EVENT_METER_TEST_NOW`` is the meter's clock, read at every call, so one
process records in one minute and another processes it minutes later.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from event_meter import Report

SECRET_KEY = "event-meter-tests"
USE_TZ = True
INSTALLED_APPS = ["event_meter.contrib.django"]
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("EVENT_METER_TEST_PG_DB", "postgres"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": os.environ.get("EVENT_METER_TEST_PG_PORT", "5432"),
    },
    "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}


class EnvironmentClock:
    """``now()`` is ``$EVENT_METER_TEST_NOW`` (ISO-8601 UTC), else the real time."""

    def now(self) -> datetime:
        text = os.environ.get("EVENT_METER_TEST_NOW")
        return datetime.fromisoformat(text) if text else datetime.now(UTC)


EVENT_METER: Any = {
    "namespace": os.environ.get("EVENT_METER_TEST_NAMESPACE", "tests:event_meter:v1"),
    "stream_storage": "file://" + os.environ.get("EVENT_METER_TEST_STREAM", "/nonexistent"),
    "database": "default",
    "clock": EnvironmentClock(),
}
if "EVENT_METER_TEST_SETTINGS" in os.environ:
    EVENT_METER = json.loads(os.environ["EVENT_METER_TEST_SETTINGS"])

# The report that `event_meter_process contrib.django_settings:INVOICES` processes.
INVOICES = Report("invoice_delivery").index_by("provider")
