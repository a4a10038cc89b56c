"""``sqlite:///relative.db`` and ``sqlite:////abs/path.db`` URLs (SQLAlchemy's convention).

Three slashes then a relative path, four for an absolute one; an optional
``?table_prefix=NAME``. In-memory databases are refused: every thread and
every process opens its own connection, and each connection to ``:memory:``
is a separate, empty database, so processors could never see each other's
rollups (nor a report process the processor's).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from event_meter.errors import ConfigurationError

__all__ = ["parse_url", "refuse_memory"]

_OPTIONS = ("table_prefix",)


def refuse_memory(given: str, path: str) -> None:
    """``ConfigurationError`` unless ``path`` names a database file (not ``:memory:``)."""
    if path in ("", ":memory:") or path.startswith("file:") or "mode=memory" in path:
        raise ConfigurationError(
            f"{given} names no database file; SQLite rollups need a file that every "
            "processor opens (an in-memory database is private to one connection; URI "
            "filenames are not supported): use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )


def parse_url(url: str) -> tuple[Path, str | None]:
    """``(database path, table_prefix or None)`` of a ``sqlite://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"storage URL {url!r} is not a sqlite:// URL")
    if parts.netloc:
        refuse_memory(f"storage URL {url!r}", unquote(parts.netloc))
        raise ConfigurationError(
            f"storage URL {url!r} names host {parts.netloc!r}; SQLite databases are local "
            "files: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    refuse_memory(f"storage URL {url!r}", path)
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"storage URL {url!r} has a malformed query: {exc}") from exc
    unknown = sorted(set(query) - set(_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"storage URL {url!r} has unknown options {unknown}; known: {', '.join(_OPTIONS)}"
        )
    prefixes = query.get("table_prefix")
    if prefixes is not None and len(prefixes) != 1:
        raise ConfigurationError(f"storage URL {url!r} gives table_prefix more than once")
    return Path(path), None if prefixes is None else prefixes[0]
