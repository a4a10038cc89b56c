"""The Django app config: label ``event_meter``; ``ready()`` configures the default meter."""

from __future__ import annotations

import logging

from django.apps import AppConfig

from event_meter.contrib.django import settings

__all__ = ["EventMeterConfig"]

logger = logging.getLogger("event_meter")


class EventMeterConfig(AppConfig):  # type: ignore[misc]  # Django: untyped
    """``ready()`` applies ``settings.EVENT_METER`` to the default meter and never raises.

    Invalid settings leave the default meter as it was; the system checks of
    ``checks.py`` report them (``event_meter.E001`` ...), and a warning is
    logged for processes that never run the checks (a WSGI worker).
    """

    name = "event_meter.contrib.django"
    label = "event_meter"
    verbose_name = "event-meter"

    configure_error: Exception | None = None

    def ready(self) -> None:
        from event_meter.contrib.django import checks  # noqa: F401  (registers the checks)

        self.configure_error = None
        try:
            settings.apply_settings()
        except Exception as exc:  # the checks report it (E001-E007); the project still starts
            self.configure_error = exc
            logger.warning(
                "event_meter: settings.EVENT_METER was not applied (run `manage.py check`): %s",
                exc,
            )
