"""``settings.EVENT_METER``: validation (as system check problems) and ``configure`` options.

``EVENT_METER`` is one dict with the options of ``event_meter.configure``
(SPEC section 2) plus ``"database": ALIAS``, which stands for
``rollup_storage=PostgresRollups(database=ALIAS, install_schema=False)``:
rollups in that Django database, in the tables the app's migrations create
(default prefix ``event_meter``). Without ``EVENT_METER`` the default meter is
left as it is (the embedded default).

Each problem has the id of the system check error that reports it:

- ``event_meter.E001``: ``EVENT_METER`` is not a dict.
- ``event_meter.E002``: an unknown option.
- ``event_meter.E003``: an invalid value (the message of ``configure``).
- ``event_meter.E004``: ``database`` names no entry of ``DATABASES``.
- ``event_meter.E005``: ``database`` is not PostgreSQL on psycopg 3.
- ``event_meter.E006``: both ``database`` and ``rollup_storage``.
- ``event_meter.E007``: ``AppConfig.ready()`` could not configure the meter
  (a store failed to build, e.g. an unknown URL scheme or a missing driver).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import event_meter
from event_meter._config import build_config, option_names
from event_meter._meter import EventMeter
from event_meter.errors import ConfigurationError

__all__ = [
    "DATABASE",
    "SETTING",
    "Problem",
    "apply_settings",
    "configure_options",
    "find_problems",
    "read_setting",
]

SETTING: Final = "EVENT_METER"
DATABASE: Final = "database"
HINT: Final = (
    "EVENT_METER takes the options of event_meter.configure() plus 'database' "
    "(a DATABASES alias of a PostgreSQL database for the rollups)"
)

NOT_A_DICT: Final = "event_meter.E001"
UNKNOWN_OPTION: Final = "event_meter.E002"
INVALID_VALUE: Final = "event_meter.E003"
UNKNOWN_DATABASE: Final = "event_meter.E004"
NOT_POSTGRESQL: Final = "event_meter.E005"
DATABASE_AND_ROLLUP_STORAGE: Final = "event_meter.E006"
NOT_APPLIED: Final = "event_meter.E007"


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad setting; ``id`` is the system check error id, ``message`` names the option."""

    id: str
    message: str
    hint: str = HINT


def read_setting() -> Any:
    """``settings.EVENT_METER``, or None when it is not set."""
    from django.conf import settings

    return getattr(settings, SETTING, None)


def _database_problem(alias: Any) -> Problem | None:
    from django.conf import settings
    from django.db import connections

    if not isinstance(alias, str) or alias not in settings.DATABASES:
        known = ", ".join(map(repr, settings.DATABASES)) or "none"
        return Problem(
            UNKNOWN_DATABASE,
            f"EVENT_METER['database']={alias!r} is not a database alias of DATABASES "
            f"(configured: {known})",
        )
    wrapper = connections[alias]  # the wrapper only; nothing connects here
    driver = getattr(getattr(wrapper, "Database", None), "__name__", "")
    if wrapper.vendor != "postgresql" or driver != "psycopg":
        return Problem(
            NOT_POSTGRESQL,
            f"EVENT_METER['database']={alias!r} is a {wrapper.vendor} database "
            f"(driver {driver or 'unknown'}); the rollups need PostgreSQL with psycopg 3",
            'use a PostgreSQL database alias and pip install "event-meter[django]"',
        )
    return None


def find_problems(value: Any) -> list[Problem]:
    """Every problem of the ``EVENT_METER`` value ``value`` (None: not set, no problem)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [Problem(NOT_A_DICT, f"EVENT_METER must be a dict, got {type(value).__name__}")]
    known = (*option_names(), DATABASE)
    problems: list[Problem] = []
    for option, option_value in value.items():
        if option not in known:
            problems.append(
                Problem(
                    UNKNOWN_OPTION,
                    f"EVENT_METER[{option!r}] is not an option; known options: "
                    f"{', '.join(sorted(map(str, known)))}",
                )
            )
        elif option == DATABASE:
            found = _database_problem(option_value)
            if found is not None:
                problems.append(found)
        else:
            try:
                build_config(None, {option: option_value})
            except ConfigurationError as exc:
                problems.append(Problem(INVALID_VALUE, f"EVENT_METER[{option!r}]: {exc}"))
    if DATABASE in value and value.get("rollup_storage") is not None:
        problems.append(
            Problem(
                DATABASE_AND_ROLLUP_STORAGE,
                "EVENT_METER sets both 'database' and 'rollup_storage'; "
                "'database' already chooses the rollup storage, so give one of them",
            )
        )
    return problems


def configure_options(value: Mapping[str, Any]) -> dict[str, Any]:
    """The ``configure`` keyword arguments of a valid ``EVENT_METER`` value."""
    options = dict(value)
    alias = options.pop(DATABASE, None)
    if alias is not None:
        from event_meter.stores.postgres.rollups import PostgresRollups

        # The app's migrations create the tables, so the store never runs DDL itself.
        options["rollup_storage"] = PostgresRollups(database=alias, install_schema=False)
    return options


def apply_settings() -> EventMeter | None:
    """Configure the default meter from ``EVENT_METER``; None when it is not set.

    ``ConfigurationError`` listing the problems when the setting is invalid;
    whatever ``configure`` raises when a store cannot be built.
    """
    value = read_setting()
    if value is None:
        return None
    problems = find_problems(value)
    if problems:
        raise ConfigurationError("; ".join(problem.message for problem in problems))
    return event_meter.configure(**configure_options(value))
