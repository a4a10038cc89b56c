"""Strategies and helpers shared by the property suites."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

__all__ = [
    "HOSTILE_FRAGMENTS",
    "hostile_texts",
    "io_examples",
    "json_scalars",
    "json_values",
    "scratch_dir",
    "surrogate_texts",
]


def io_examples(wanted: int) -> int:
    """``wanted`` examples for a test doing file I/O per example, never more than the profile."""
    return min(wanted, settings().max_examples)


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temp folder for one example, in memory (``/dev/shm``) where there is one.

    The file stores fsync every write; on tmpfs that costs nothing, and what
    these tests check (paths and merged numbers) does not depend on durability.
    """
    memory = "/dev/shm"
    where = memory if os.path.isdir(memory) and os.access(memory, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="event-meter-props-", dir=where)


json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: a payload is any Python value
    st.text(),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

# Text with lone surrogates mixed in (Python strings hold them, UTF-8 cannot);
# drawn on purpose, as they are 2,048 of 1.1 million code points.
surrogate_texts = st.text(st.one_of(st.characters(categories=["Cs"]), st.characters()), max_size=8)

# Pieces of names that have hurt file-based stores elsewhere: traversal, absolute
# paths, separators of both platforms, NUL and control characters, Windows
# device names, dots, non-ASCII (incl. a Kelvin sign that lowercases to ASCII
# "k" and a dotted capital I that lowercases to two code points), key separators.
HOSTILE_FRAGMENTS = (
    "../",
    "..",
    ".",
    "/",
    "\\",
    "..\\",
    "/etc/passwd",
    "C:\\Windows\\",
    "\x00",
    "\n",
    "\x7f",
    "CON",
    "nul",
    "com1",
    "LPT9",
    "aux.txt",
    "ä",
    "İ",
    "\u212a",
    "名前",
    "🙂",
    ":",
    "|",
    "=",
    "%2F",
    "*",
    "?",
    " ",
    "-",
    "_",
    "event",
)
hostile_texts = st.one_of(
    st.lists(st.sampled_from(HOSTILE_FRAGMENTS), min_size=1, max_size=6).map("".join),
    st.text(min_size=1, max_size=20),
    st.text(st.sampled_from("./\\\x00aZ-_ "), min_size=1, max_size=12),
    st.integers(81, 300).map(lambda n: "x/" * n),  # long: cut to 80 in folder names
)
