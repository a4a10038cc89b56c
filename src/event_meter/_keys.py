"""Logical keys, value text and folder names (SPEC section 6).

Every backend derives its names from these functions, so a rollup written by one
backend is addressed the same way by every other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

import orjson

__all__ = [
    "ALL_INDEX_KEY",
    "ReportRef",
    "esc",
    "esc_many",
    "folder_name",
    "index_key",
    "value_text",
]

ALL_INDEX_KEY = "all"

_FOLDER_RUN = re.compile(r"[^a-z0-9_-]+")
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)


_ESC_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ESC_ASCII = {
    code: "+" if code == 32 else f"%{code:02X}" for code in range(128) if chr(code) not in _ESC_SAFE
}
_ESC_FIRST = {ord("%"): 0, ord("+"): 1}
_ESC_KEPT_LINE_BYTES = "".join(sorted(_ESC_SAFE)).encode("ascii") + b"\n"


@lru_cache(maxsize=65536)
def esc(text: str) -> str:
    """``quote_plus`` with nothing safe: space -> ``+``, uppercase percent-escapes.

    ASCII text (entry ids, most names) takes a ``str.translate`` fast path with
    the same result, several times faster than ``quote_plus``: processing
    escapes every entry id of every batch.
    """
    if text.isascii():
        return text.translate(_ESC_ASCII)
    return quote_plus(text, safe="")


def esc_many(texts: list[str]) -> list[str]:
    """``[esc(text) for text in texts]``, with one ``str.translate`` for a batch of ASCII
    texts without newlines (every entry id of a batch, on the processing hot path)."""
    joined = "\n".join(texts)
    if texts and joined.isascii() and joined.count("\n") == len(texts) - 1:
        # Few distinct characters need escaping (a file stream id has one ":"): find
        # them with one bytes.translate, then replace each all at once (``str.translate``
        # would look up every character). "%" and "+" first: the others bring them in.
        unsafe = set(joined.encode("ascii").translate(None, _ESC_KEPT_LINE_BYTES))
        for code in sorted(unsafe, key=lambda c: _ESC_FIRST.get(c, 2)):
            joined = joined.replace(chr(code), _ESC_ASCII[code])
        return joined.split("\n")
    return [esc(text) for text in texts]


def value_text(value: Any) -> str:
    """The text of one param value in keys and queries.

    ``str`` as is, ``bool`` -> ``true``/``false``, ``int`` -> decimal, ``float`` ->
    ``repr``, anything else -> compact JSON with sorted keys.
    """
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def index_key(params: Sequence[str], values: Mapping[str, Any]) -> str:
    """The index key of sorted ``params`` for ``values`` (``all`` for no params)."""
    if not params:
        return ALL_INDEX_KEY
    return "|".join(f"{esc(param)}={esc(value_text(values[param]))}" for param in params)


@lru_cache(maxsize=4096)
def folder_name(text: str) -> str:
    """A safe, lowercase, collision-resistant folder name for any string."""
    slug = _FOLDER_RUN.sub("-", text.lower()).strip("-") or "event"
    if slug in _RESERVED:
        slug = f"event-{slug}"
    slug = slug[:80]
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{slug}-{digest}"


class ReportRef:
    """The identity of one report's stored data: namespace, event name, version.

    It renders the logical keys of SPEC section 6; backends that store strings
    use these, backends that store files use ``folder_name`` of the parts.
    """

    __slots__ = ("_prefix", "name", "namespace", "version")

    def __init__(self, namespace: str, name: str, version: int) -> None:
        self.namespace = namespace
        self.name = name
        self.version = version
        self._prefix = f"{esc(name)}:v{version}"

    def __repr__(self) -> str:
        return f"ReportRef({self.namespace!r}, {self.name!r}, {self.version})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReportRef):
            return NotImplemented
        return (self.namespace, self.name, self.version) == (
            other.namespace,
            other.name,
            other.version,
        )

    def __hash__(self) -> int:
        return hash((self.namespace, self.name, self.version))

    @property
    def report_part(self) -> str:
        """``esc(name):vN``, the part every key of this report shares."""
        return self._prefix

    def rollup_key(self, granularity: str, bucket_id: str, index: str) -> str:
        return f"{self.namespace}:rollup:{self._prefix}:{granularity}:{bucket_id}:{index}"

    def state_key(self, param: str, value: str) -> str:
        return f"{self.namespace}:state:{self._prefix}:interval:{esc(param)}:{esc(value)}"

    def definition_key(self) -> str:
        return f"{self.namespace}:definition:{self._prefix}"

    def processed_key(self, entry_id: str) -> str:
        return f"{self.namespace}:processed:{self._prefix}:{esc(entry_id)}"

    def process_lock_key(self) -> str:
        return f"{self.namespace}:process_lock:{self._prefix}"


def stream_key(namespace: str, name: str) -> str:
    return f"{namespace}:stream:{esc(name)}"


def stream_lock_key(namespace: str, name: str) -> str:
    return f"{namespace}:stream_lock:{esc(name)}"


def cleanup_lock_key(namespace: str) -> str:
    return f"{namespace}:process_lock"


def watermark_key(namespace: str) -> str:
    return f"{namespace}:auto_cleanup:history:last_run"
