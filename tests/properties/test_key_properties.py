"""Keys, value text and folder names (SPEC section 6).

Injectivity is shown by decoding: every key or name is parsed back into what
it was made of, so two different inputs can never give the same output. Where
the SPEC makes two inputs share a key on purpose (a ``str`` and the value whose
text it equals: ``"1"`` and ``1``), the test pins exactly that rule. Folder
names are checked against the SPEC rule written out here, and the file stores
are driven with hostile names to show they write only inside their root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from event_meter import EventMeter, Report
from event_meter._keys import (
    ReportRef,
    cleanup_lock_key,
    esc,
    folder_name,
    index_key,
    stream_key,
    stream_lock_key,
    value_text,
    watermark_key,
)
from event_meter.stores.file._layout import index_folder
from event_meter.stores.file.rollups import FileRollups
from event_meter.stores.file.stream import FileStream
from properties.strategies import hostile_texts, io_examples, scratch_dir, surrogate_texts
from support import FakeClock

_ESCAPED = re.compile(r"[A-Za-z0-9_.~+%-]*")
_FOLDER = re.compile(r"[a-z0-9_-]{1,80}-[0-9a-f]{16}")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10))}
_RESERVED |= {f"lpt{i}" for i in range(1, 10)}

non_blank = st.text(min_size=1).filter(lambda s: bool(s.strip()))
# JSON values as a loaded payload holds them: finite floats, ints orjson can
# write (orjson.loads turns larger ones into floats), string keys.
loaded_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
loaded_values = st.recursive(
    loaded_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
separator_texts = st.text(st.sampled_from("ab|=:+% \x00/"), max_size=6)


# -- esc ------------------------------------------------------------------------------


# ASCII text too: esc has its own fast path for it, which must agree with quote_plus.
any_text = st.one_of(st.text(), st.text(st.characters(max_codepoint=127)))


@given(any_text, any_text)
@example("a b", "a+b")
@example("a|b", "a%7Cb")
@example("", "%")
def test_esc_is_the_spec_quote_plus_and_reversible(a: str, b: str) -> None:
    for text in (a, b):
        escaped = esc(text)
        assert escaped == quote_plus(text, safe="")
        assert _ESCAPED.fullmatch(escaped)  # no ":", "|" or "=": keys split on them
        assert unquote_plus(escaped) == text  # a left inverse: esc is injective
    assert (esc(a) == esc(b)) == (a == b)


# -- index keys -------------------------------------------------------------------------

index_params = st.lists(
    st.one_of(non_blank, separator_texts.filter(str.strip)), max_size=4, unique=True
)


def parse_index_key(key: str) -> list[tuple[str, str]]:
    """``esc(param)=esc(value)`` pairs joined by ``|`` back to ``(param, value text)``."""
    if key == "all":
        return []
    pairs = []
    for part in key.split("|"):
        param, value = part.split("=")
        pairs.append((unquote_plus(param), unquote_plus(value)))
    return pairs


@given(index_params, st.data())
def test_index_keys_decode_to_their_params_and_value_texts(
    params: list[str], data: st.DataObject
) -> None:
    ordered = tuple(sorted(params))
    values = {
        param: data.draw(st.one_of(separator_texts, loaded_values.filter(lambda v: v is not None)))
        for param in ordered
    }
    key = index_key(ordered, values)
    assert (key == "all") == (not ordered)
    assert parse_index_key(key) == [(param, value_text(values[param])) for param in ordered]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((("a",), {"a": "b|c=d"}), (("a", "c"), {"a": "b", "c": "d"})),
        ((("a|b",), {"a|b": "x"}), (("a", "b"), {"a": "x", "b": "x"})),
        ((("a",), {"a": "x=y"}), (("a=x",), {"a=x": "y"})),
        ((("a",), {"a": 1}), (("a",), {"a": 1.0})),
        ((("a",), {"a": True}), (("a",), {"a": 1})),
    ],
)
def test_separators_inside_names_and_values_never_collide(
    left: tuple[tuple[str, ...], dict[str, Any]], right: tuple[tuple[str, ...], dict[str, Any]]
) -> None:
    assert index_key(*left) != index_key(*right)


# -- value text -------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """A value with its JSON type made explicit: ``1``, ``1.0`` and ``True`` differ."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, dict):
        return ("dict", sorted((key, typed(item)) for key, item in value.items()))
    assert value is None
    return ("null",)


def decode_value_text(text: str) -> Any:
    """The typed value of a non-``str`` value's text (the SPEC rule read backwards)."""
    if text in ("true", "false"):
        return ("bool", text == "true")
    if re.fullmatch(r"-?[0-9]+", text):
        return ("int", int(text))
    if not text.startswith(("[", "{", "n")):
        return ("float", repr(float(text)))
    return typed(json.loads(text))  # the encoder writes every float with "." or "e"


def _has_float(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_float(item) for item in value)
    if isinstance(value, dict):
        return any(_has_float(item) for item in value.values())
    return isinstance(value, float)


@given(loaded_values)
@example(1)
@example(1.0)
@example(True)
@example(-0.0)
@example([1, 1.0, True, None])
@example({"b": 1, "a": [2.5]})
@example(1e16)
def test_value_text_of_non_strings_is_injective(value: Any) -> None:
    if isinstance(value, str):
        return
    text = value_text(value)
    assert decode_value_text(text) == typed(value)
    if isinstance(value, list | dict):
        assert json.loads(text) == value
        if not _has_float(value):  # float spelling inside JSON is the encoder's own
            compact = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
            assert text == compact


@given(st.text())
def test_value_text_of_a_str_is_the_str(text: str) -> None:
    assert value_text(text) == text


def test_value_text_follows_the_spec_rule_exactly() -> None:
    assert [value_text(v) for v in (1, 1.0, True, False, "1", None)] == [
        "1",
        "1.0",
        "true",
        "false",
        "1",
        "null",
    ]
    # SPEC: query values use the same rule, so an int and its decimal text read
    # the same rollup; likewise a str that spells another value's text.
    assert value_text(44) == value_text("44")
    assert value_text(True) == value_text("true")
    assert value_text([1, 2]) == value_text("[1,2]") == "[1,2]"
    assert value_text({"b": 1, "a": None}) == '{"a":null,"b":1}'
    # ... but the non-str types never share a text.
    assert len({value_text(v) for v in (1, 1.0, True, [1], {"1": 1})}) == 5


# -- logical keys -------------------------------------------------------------------------

refs = st.builds(ReportRef, st.text(min_size=1), st.text(min_size=1), st.integers(1, 10**6))
bucket_ids = st.sampled_from(["minute", "hour"]).flatmap(
    lambda g: st.tuples(
        st.just(g), st.from_regex(r"[0-9]{12}" if g == "minute" else r"[0-9]{10}", fullmatch=True)
    )
)


def _name_and_version(escaped_name: str, version: str) -> tuple[str, int]:
    assert version.startswith("v")
    return unquote_plus(escaped_name), int(version[1:])


@given(refs, bucket_ids, index_params, st.text(), st.text(), st.text(), st.data())
def test_logical_keys_decode_from_the_right(
    ref: ReportRef,
    bucket: tuple[str, str],
    params: list[str],
    param: str,
    value: str,
    entry_id: str,
    data: st.DataObject,
) -> None:
    """Every part after the namespace is colon-free, so each key parses from the
    right and gives back namespace, name, version and the rest: per kind of key,
    distinct inputs give distinct keys, whatever the (unescaped) namespace holds."""
    identity = (ref.namespace, ref.name, ref.version)
    granularity, bucket_id = bucket
    ordered = tuple(sorted(params))
    index = index_key(ordered, {p: data.draw(separator_texts) for p in ordered})

    ns, kind, name, version, g, b, i = ref.rollup_key(granularity, bucket_id, index).rsplit(":", 6)
    assert (ns, *_name_and_version(name, version)) == identity
    assert (kind, g, b, i) == ("rollup", granularity, bucket_id, index)

    ns, kind, name, version, word, p, v = ref.state_key(param, value).rsplit(":", 6)
    assert (ns, *_name_and_version(name, version)) == identity
    assert (kind, word, unquote_plus(p), unquote_plus(v)) == ("state", "interval", param, value)

    ns, kind, name, version = ref.definition_key().rsplit(":", 3)
    assert (ns, kind, *_name_and_version(name, version)) == (
        ref.namespace,
        "definition",
        *identity[1:],
    )

    ns, kind, name, version, e = ref.processed_key(entry_id).rsplit(":", 4)
    assert (ns, *_name_and_version(name, version)) == identity
    assert (kind, unquote_plus(e)) == ("processed", entry_id)

    ns, kind, name, version = ref.process_lock_key().rsplit(":", 3)
    assert (ns, kind, *_name_and_version(name, version)) == (
        ref.namespace,
        "process_lock",
        *identity[1:],
    )

    assert ref.report_part == f"{esc(ref.name)}:v{ref.version}"


@given(refs)
def test_keys_of_one_namespace_never_collide_across_kinds(ref: ReportRef) -> None:
    """After ``{ns}:`` each kind of key starts with its own word (or is that word)."""
    ns = ref.namespace
    keys = {
        "rollup": ref.rollup_key("minute", "202605061015", "all"),
        "state": ref.state_key("p", "v"),
        "definition": ref.definition_key(),
        "processed": ref.processed_key("file.jsonl:1"),
        "process_lock": ref.process_lock_key(),
        "stream": stream_key(ns, ref.name),
        "stream_lock": stream_lock_key(ns, ref.name),
        "cleanup_lock": cleanup_lock_key(ns),
        "watermark": watermark_key(ns),
    }
    words = {kind: key.removeprefix(f"{ns}:").split(":")[0] for kind, key in keys.items()}
    assert all(key.startswith(f"{ns}:") for key in keys.values())
    assert words == {
        "rollup": "rollup",
        "state": "state",
        "definition": "definition",
        "processed": "processed",
        "process_lock": "process_lock",
        "stream": "stream",
        "stream_lock": "stream_lock",
        "cleanup_lock": "process_lock",
        "watermark": "auto_cleanup",
    }
    # The two process locks share a word: the cleanup lock is the word alone.
    assert keys["cleanup_lock"] == f"{ns}:process_lock" != keys["process_lock"]
    assert len(set(keys.values())) == len(keys)


# -- folder names -------------------------------------------------------------------------


def spec_folder_name(text: str) -> str:
    """SPEC 6, step by step."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "event"
    if slug in _RESERVED:
        slug = "event-" + slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return slug[:80] + "-" + digest[:16]


@given(st.one_of(st.text(), surrogate_texts, hostile_texts), st.one_of(st.text(), hostile_texts))
@example("invoice_delivery", "billing_app:event_meter:v1")
@example("CON", "")
@example("a:b", "a/b")
@example("..", "../")
@example("x" * 79 + "-y", "\u212a")
def test_folder_names_are_safe_and_distinct(a: str, b: str) -> None:
    for text in (a, b):
        name = folder_name(text)
        assert name == spec_folder_name(text)
        assert _FOLDER.fullmatch(name)
        assert not name.startswith(("-", "."))
        assert name not in (".", "..")
        assert name.lower() not in _RESERVED
        assert not set(name) & {"/", "\\", "\x00", ":"}
    assert (folder_name(a) == folder_name(b)) == (a == b)


def test_folder_name_vectors() -> None:
    assert folder_name("invoice_delivery") == "invoice_delivery-f2a49ce1aca9419c"
    assert (
        folder_name("billing_app:event_meter:v1") == "billing_app-event_meter-v1-ff44ee2453002022"
    )
    assert folder_name("CON") == "event-con-a3dbc4b644a9a2c5"
    assert folder_name("") == "event-e3b0c44298fc1c14"


index_tuples = st.lists(
    st.one_of(st.sampled_from(["a", "b", "a|b", "|", "b|", "%7C", "a%7Cb", "all"]), non_blank),
    max_size=3,
    unique=True,
).map(lambda params: tuple(sorted(params)))


@st.composite
def regrouped(draw: st.DrawFn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two indexes made of the same characters split differently at ``|``:
    the inputs a join-based name confuses first."""
    pieces = draw(
        st.lists(st.sampled_from(["a", "b", "c d", "%7C", "a|b"]), min_size=1, max_size=4)
    )
    joined = "|".join(pieces)
    parts = [part for part in joined.split("|") if part]
    first = tuple(sorted(set(parts)))
    cut = draw(st.integers(1, len(parts)))
    second = tuple(sorted({"|".join(parts[:cut]), *parts[cut:]}))
    return first, second


@given(st.one_of(st.tuples(index_tuples, index_tuples), regrouped()))
@example(
    (("a|b",), ("a", "b"))
)  # found by hypothesis: see the regression test in test_merge_properties
@example((("|",), ("%7C",)))
@example(((), ("all",)))
def test_every_index_has_its_own_rollup_folder(
    pair: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    a, b = pair
    assert (index_folder(a) == index_folder(b)) == (a == b)
    for index in (a, b):
        assert index_folder(index) == "all" or _FOLDER.fullmatch(index_folder(index))


# -- hostile names on disk ------------------------------------------------------------------

# "{outside}" becomes the absolute path of a sibling of the stores' root.
escaping = st.sampled_from(
    ["{outside}", "{outside}/x", "../../outside", "/{outside}/../..", "..\\..\\outside"]
)
hostile_names = st.one_of(
    hostile_texts, escaping, st.tuples(hostile_texts, escaping).map("".join)
).filter(lambda s: bool(s.strip()))


# Fewer examples because each one is a whole meter on disk: a file stream and
# file rollups that record, process and read (dozens of files, folders, flocks
# and fsyncs), 10-50 ms an example on a disk against ~2 ms for the pure properties.
# 200 examples still draw every hostile fragment, escape and long name many
# times over, and keep this test to a few seconds.
@settings(max_examples=io_examples(200))
@given(
    namespace=hostile_names,
    name=hostile_names,
    params=st.lists(hostile_names, min_size=1, max_size=2, unique=True),
    values=st.lists(
        st.one_of(hostile_names, st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=3
    ),
)
@example(
    namespace="../../outside",
    name="{outside}",
    params=["/etc/passwd", "CON"],
    values=["\x00", "../"],
)
def test_file_stores_write_only_inside_their_root(
    namespace: str, name: str, params: list[str], values: list[Any]
) -> None:
    with scratch_dir() as folder:
        sandbox = Path(folder)
        root, outside = sandbox / "root", sandbox / "outside"
        root.mkdir()

        def place(text: Any) -> Any:
            return text.replace("{outside}", str(outside)) if isinstance(text, str) else text

        namespace, name = place(namespace), place(name)
        params = list(dict.fromkeys(place(p) for p in params))
        clock = FakeClock()
        stream, rollups = FileStream(root, sync="none"), FileRollups(root)
        meter = EventMeter(
            namespace=namespace, stream_storage=stream, rollup_storage=rollups, clock=clock
        )
        try:
            for value in values:
                result = meter.start(name, {param: place(value) for param in params}).success()
                assert result.recorded, result.error
                clock.advance(seconds=7)
            clock.advance(minutes=2)  # past the file stream's claim grace
            report = Report(name, version=1).index_by(*params).measure_interval_by(params[0])
            processed = meter.process_pending(report)
            assert (processed.processed, processed.malformed) == (len(values), 0)
            assert meter.summary(report)["count"] == len(values)
            by = {param: place(values[0]) for param in params}
            assert meter.summary(report, by=by)["count"] == sum(
                place(v) == by[params[0]] for v in values
            )
        finally:
            stream.close()
            rollups.close()

        assert sorted(os.listdir(sandbox)) == ["root"]
        real_root = os.path.realpath(root)
        for top, folders, files in os.walk(root):
            for entry in (*folders, *files):
                path = os.path.join(top, entry)
                assert not os.path.islink(path), path
                assert os.path.commonpath([real_root, os.path.realpath(path)]) == real_root, path
