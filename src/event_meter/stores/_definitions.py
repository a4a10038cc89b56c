"""Stored report definitions as the SQL stores keep them: one JSON string per definition key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

import orjson

from event_meter.errors import StorageError

__all__ = ["definition_doc", "reports_of_keys"]


def definition_doc(raw: str | bytes, key: str, backend: str) -> dict[str, Any]:
    """The stored definition under ``key``; ``StorageError`` naming it when it is not an object."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StorageError(f"{backend}: definition {key!r} is not JSON") from exc
    if not isinstance(doc, dict):
        raise StorageError(f"{backend}: definition {key!r} is not a JSON object")
    return doc


def reports_of_keys(prefix: str, keys: Iterable[str]) -> list[tuple[str, int]]:
    """``(name, version)`` of the definition keys ``<prefix><esc(name)>:v<N>``, sorted."""
    found: set[tuple[str, int]] = set()
    for key in keys:
        name, sep, version = key[len(prefix) :].rpartition(":v")
        if sep and ":" not in name and version.isdigit():
            found.add((unquote_plus(name), int(version)))
    return sorted(found)
