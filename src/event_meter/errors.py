"""Every error event-meter raises or reports.

The tree::

    EventMeterError
    ├── ConfigurationError            bad option, unknown storage URL, missing driver
    ├── ValidationError (ValueError)  an event that cannot be recorded (bad name or params)
    ├── AlreadyRecordedError          a second finish of a recorded event
    ├── DefinitionChangedError        a report definition differs from the stored one
    ├── DefinitionNotFoundError (LookupError)
    │                                 a report read before it was ever processed
    ├── UnsupportedQueryError (ValueError)
    │                                 ``by`` keys that no stored index answers
    ├── StorageError                  a storage backend failed (driver errors wrapped here)
    └── LockLostError                 a processing lease expired or was taken over

Argument errors of the report API that SPEC names as built-ins stay built-ins:
``ValueError`` (bad window, bad ``every``) and ``TypeError`` (a time of the wrong
type). Recording never raises any of these: it returns them on a ``WriteResult``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRecordedError",
    "ConfigurationError",
    "DefinitionChangedError",
    "DefinitionNotFoundError",
    "EventMeterError",
    "LockLostError",
    "StorageError",
    "UnsupportedQueryError",
    "ValidationError",
]


class EventMeterError(Exception):
    """Base class of every event-meter error."""


class ConfigurationError(EventMeterError):
    """An option, storage URL or store object cannot be used."""


class ValidationError(EventMeterError, ValueError):
    """An event cannot be recorded as given (name, params, payload)."""


class AlreadyRecordedError(EventMeterError):
    """The event was already recorded; an event finishes exactly once."""


class DefinitionChangedError(EventMeterError):
    """The report definition differs from the one stored for its version."""


class DefinitionNotFoundError(EventMeterError, LookupError):
    """No definition is stored for this report name and version."""


class UnsupportedQueryError(EventMeterError, ValueError):
    """The ``by`` filter matches no index of the stored report definition."""


class StorageError(EventMeterError):
    """A storage backend failed; the driver's exception is the ``__cause__``."""


class LockLostError(EventMeterError):
    """A processing lease was lost before the next write; nothing more was written."""
