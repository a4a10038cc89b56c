"""The public surface: ``__all__``, the errors tree, ``py.typed``, lazy store imports."""

from __future__ import annotations

import importlib
import importlib.resources
import inspect

import pytest

import event_meter
from event_meter import errors

EXPECTED_ALL = [
    "AlreadyRecordedError",
    "ConfigurationError",
    "DefinitionChangedError",
    "DefinitionNotFoundError",
    "Event",
    "EventMeter",
    "EventMeterError",
    "LockLostError",
    "ProcessResult",
    "Report",
    "StorageError",
    "UnsupportedQueryError",
    "ValidationError",
    "WriteResult",
    "acompare",
    "aprocess_pending",
    "aseries",
    "asummary",
    "cleanup_history",
    "compare",
    "configure",
    "default_meter",
    "errors",
    "measure",
    "process_pending",
    "report_definition",
    "reset",
    "series",
    "start",
    "summary",
]


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    assert event_meter.__all__ == sorted(event_meter.__all__)
    assert event_meter.__all__ == EXPECTED_ALL


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from event_meter import {name}", namespace)
    assert namespace[name] is getattr(event_meter, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from event_meter import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED_ALL


@pytest.mark.parametrize("name", ["aprocess_pending", "asummary", "aseries", "acompare"])
def test_async_twins_are_coroutine_functions(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(event_meter, name))


ERRORS = {
    "ConfigurationError": (),
    "ValidationError": (ValueError,),
    "AlreadyRecordedError": (),
    "DefinitionChangedError": (),
    "DefinitionNotFoundError": (LookupError,),
    "UnsupportedQueryError": (ValueError,),
    "StorageError": (),
    "LockLostError": (),
}


@pytest.mark.parametrize(("name", "builtins"), ERRORS.items())
def test_errors_tree(name: str, builtins: tuple[type[Exception], ...]) -> None:
    error = getattr(event_meter, name)
    assert error is getattr(errors, name)
    assert issubclass(error, errors.EventMeterError)
    for base in builtins:
        assert issubclass(error, base)
    instance = error("message")
    assert isinstance(instance, event_meter.EventMeterError)
    assert str(instance) == "message"


def test_errors_module_exports_the_whole_tree() -> None:
    assert sorted(errors.__all__) == sorted([*ERRORS, "EventMeterError"])
    assert issubclass(errors.EventMeterError, Exception)
    assert not issubclass(errors.EventMeterError, ValueError)


def test_errors_without_a_builtin_meaning_are_not_value_errors() -> None:
    for name in ("ConfigurationError", "StorageError", "LockLostError", "AlreadyRecordedError"):
        assert not issubclass(getattr(errors, name), ValueError | LookupError)


def test_py_typed_marker_is_shipped() -> None:
    assert importlib.resources.files("event_meter").joinpath("py.typed").is_file()


@pytest.mark.parametrize("name", ["MemoryStream", "MemoryRollups", "FileStream", "FileRollups"])
def test_store_classes_are_importable_from_event_meter_stores(name: str) -> None:
    stores = importlib.import_module("event_meter.stores")
    cls = getattr(stores, name)
    assert inspect.isclass(cls)
    assert cls.__name__ == name


def test_unknown_store_attribute_is_an_attribute_error() -> None:
    stores = importlib.import_module("event_meter.stores")
    with pytest.raises(AttributeError, match="NoSuchStore"):
        stores.NoSuchStore  # noqa: B018


def test_version_is_exposed() -> None:
    assert isinstance(event_meter.__version__, str)
    assert event_meter.__version__.count(".") >= 1
