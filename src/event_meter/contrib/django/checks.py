"""System checks of ``settings.EVENT_METER`` (ids ``event_meter.E001`` ... in ``settings``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, register

from event_meter.contrib.django import settings

__all__ = ["check_settings"]

LABEL = "event_meter"


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """One error per problem of ``EVENT_METER``, and E007 when ``ready()`` could not apply it."""
    if app_configs is not None and all(config.label != LABEL for config in app_configs):
        return []
    problems = settings.find_problems(settings.read_setting())
    errors = [
        Error(problem.message, hint=problem.hint, obj="settings.EVENT_METER", id=problem.id)
        for problem in problems
    ]
    failure = apps.get_app_config(LABEL).configure_error  # set by ready()
    if not problems and failure is not None:  # problems are what ready() failed on, if any
        errors.append(
            Error(
                f"EVENT_METER could not be applied to the default meter: {failure}",
                hint=settings.HINT,
                obj="settings.EVENT_METER",
                id=settings.NOT_APPLIED,
            )
        )
    return errors


register(check_settings)
