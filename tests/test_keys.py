"""Keys and names (SPEC 6): escaping, value text, index keys, logical keys, folders."""

from __future__ import annotations

import hashlib
import string
from typing import Any
from urllib.parse import quote_plus

import pytest

from event_meter._keys import (
    ReportRef,
    cleanup_lock_key,
    esc,
    esc_many,
    folder_name,
    index_key,
    stream_key,
    stream_lock_key,
    value_text,
    watermark_key,
)

SAFE = string.ascii_letters + string.digits + "_.-~"


# -- esc --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invoice delivery", "invoice+delivery"),
        ("a+b", "a%2Bb"),
        ("a/b:c|d=e", "a%2Fb%3Ac%7Cd%3De"),
        ("%", "%25"),
        ("ä", "%C3%A4"),
        ("\n", "%0A"),
        ("{tag}", "%7Btag%7D"),
        ("", ""),
    ],
)
def test_esc(text: str, expected: str) -> None:
    assert esc(text) == expected


def test_esc_keeps_exactly_the_safe_set() -> None:
    assert esc(SAFE) == SAFE
    for code in range(128):
        char = chr(code)
        if char in SAFE:
            continue
        expected = "+" if char == " " else f"%{code:02X}"
        assert esc(char) == expected, char


@pytest.mark.parametrize(
    "texts",
    [
        [],
        [""],
        ["", ""],
        [f"202605061015-host-1-ab12cd34.jsonl:{n}" for n in range(50)],
        ["a+b c", "% +", "+%", " ", "%2B"],  # replacements that bring in "%" and "+"
        ["line\nbreak", "x"],  # a newline inside a text: the slow path
        ["ä:1", "b:2"],  # non-ASCII: the slow path
        ["".join(chr(code) for code in range(1, 128) if code != 10)],
    ],
)
def test_esc_many_is_esc_of_each(texts: list[str]) -> None:
    assert esc_many(texts) == [esc(text) for text in texts]


def test_esc_many_is_esc_of_each_for_random_ascii_batches() -> None:
    import random

    rng = random.Random(20261128)
    alphabet = string.printable
    for _ in range(3_000):
        texts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            for _ in range(rng.randint(1, 6))
        ]
        assert esc_many(texts) == [esc(text) for text in texts], texts


def test_esc_is_quote_plus_with_nothing_safe() -> None:
    """The ASCII fast path and the general path agree with ``quote_plus(safe="")``."""
    ascii_text = "".join(chr(code) for code in range(128))
    samples = [ascii_text, ascii_text[::-1], "202605061015-host-42-ab12cd34.jsonl:17", "a ä~b€"]
    samples += [chr(a) + chr(b) for a in range(32, 127, 3) for b in range(0, 128, 5)]
    for text in samples:
        assert esc(text) == quote_plus(text, safe=""), text


# -- value text and index keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postmark", "postmark"),
        ("", ""),
        ("44", "44"),
        (True, "true"),
        (False, "false"),
        (44, "44"),
        (-7, "-7"),
        (0, "0"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (1e20, "1e+20"),
        (None, "null"),
        ([1, "a", None], '[1,"a",null]'),
        ({"b": 1, "a": [True]}, '{"a":[true],"b":1}'),
        ({"z": {"y": 1, "x": 2}}, '{"z":{"x":2,"y":1}}'),
    ],
)
def test_value_text(value: Any, expected: str) -> None:
    assert value_text(value) == expected


def test_index_key_of_the_all_index() -> None:
    assert index_key((), {"provider": "postmark"}) == "all"


def test_index_key_spec_example() -> None:
    values = {
        "queue": "mailers",
        "provider": "postmark",
        "delivery_mode": "background_worker",
        "unused": "x",
    }
    key = index_key(("delivery_mode", "provider", "queue"), values)
    assert key == "delivery_mode=background_worker|provider=postmark|queue=mailers"


def test_index_key_escapes_params_and_values() -> None:
    key = index_key(("a b", "c|d"), {"a b": "x=y", "c|d": "p q|r"})
    assert key == "a+b=x%3Dy|c%7Cd=p+q%7Cr"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "flag=true"),
        (1.5, "flag=1.5"),
        ({"b": 2, "a": 1}, "flag=%7B%22a%22%3A1%2C%22b%22%3A2%7D"),
        (None, "flag=null"),
    ],
)
def test_index_key_uses_the_value_text(value: Any, expected: str) -> None:
    assert index_key(("flag",), {"flag": value}) == expected


def test_int_and_its_text_are_the_same_key() -> None:
    assert index_key(("customer_id",), {"customer_id": 44}) == index_key(
        ("customer_id",), {"customer_id": "44"}
    )
    assert index_key(("customer_id",), {"customer_id": 44}) == "customer_id=44"


# -- logical keys -----------------------------------------------------------------------

NS = "billing app:event_meter:v1"  # the namespace is never escaped


def test_report_ref_logical_keys() -> None:
    ref = ReportRef(NS, "invoice delivery", 3)
    assert ref.report_part == "invoice+delivery:v3"
    assert (
        ref.rollup_key("minute", "202605061015", "all")
        == "billing app:event_meter:v1:rollup:invoice+delivery:v3:minute:202605061015:all"
    )
    assert (
        ref.rollup_key("hour", "2026050610", "provider=postmark")
        == "billing app:event_meter:v1:rollup:invoice+delivery:v3:hour:2026050610:provider=postmark"
    )
    assert (
        ref.state_key("customer id", "42/7")
        == "billing app:event_meter:v1:state:invoice+delivery:v3:interval:customer+id:42%2F7"
    )
    assert ref.definition_key() == "billing app:event_meter:v1:definition:invoice+delivery:v3"
    assert (
        ref.processed_key("202605061015-host-12-0a1b2c3d.jsonl:7")
        == "billing app:event_meter:v1:processed:invoice+delivery:v3:"
        "202605061015-host-12-0a1b2c3d.jsonl%3A7"
    )
    assert ref.process_lock_key() == "billing app:event_meter:v1:process_lock:invoice+delivery:v3"


def test_namespace_level_keys() -> None:
    assert (
        stream_key(NS, "invoice delivery") == "billing app:event_meter:v1:stream:invoice+delivery"
    )
    assert (
        stream_lock_key(NS, "invoice delivery")
        == "billing app:event_meter:v1:stream_lock:invoice+delivery"
    )
    assert cleanup_lock_key(NS) == "billing app:event_meter:v1:process_lock"
    assert watermark_key(NS) == "billing app:event_meter:v1:auto_cleanup:history:last_run"


def test_report_refs_compare_by_identity_parts() -> None:
    assert ReportRef(NS, "job", 1) == ReportRef(NS, "job", 1)
    assert hash(ReportRef(NS, "job", 1)) == hash(ReportRef(NS, "job", 1))
    assert len({ReportRef(NS, "job", 1), ReportRef(NS, "job", 2), ReportRef("x", "job", 1)}) == 3


# -- folder names -----------------------------------------------------------------------


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invoice_delivery", "invoice_delivery-f2a49ce1aca9419c"),
        ("billing_app:event_meter:v1", "billing_app-event_meter-v1-ff44ee2453002022"),
        ("CON", "event-con-a3dbc4b644a9a2c5"),
        ("", "event-e3b0c44298fc1c14"),
    ],
)
def test_folder_name_spec_vectors(text: str, expected: str) -> None:
    assert folder_name(text) == expected


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Invoice Delivery", "invoice-delivery"),
        ("a  //  b", "a-b"),
        ("--x--", "x"),
        (":::", "event"),
        ("ünïcode", "n-code"),
        ("keep_under-score", "keep_under-score"),
        ("test ns:1a2b/ä%_|=", "test-ns-1a2b-_"),
    ],
)
def test_folder_name_slug_rules(text: str, slug: str) -> None:
    assert folder_name(text) == f"{slug}-{digest(text)}"


@pytest.mark.parametrize(
    "reserved",
    [
        "con",
        "PRN",
        "aux",
        "Nul",
        *(f"com{i}" for i in range(1, 10)),
        *(f"LPT{i}" for i in range(1, 10)),
    ],
)
def test_windows_reserved_names_get_a_prefix(reserved: str) -> None:
    assert folder_name(reserved) == f"event-{reserved.lower()}-{digest(reserved)}"


@pytest.mark.parametrize("text", ["com0", "com10", "console", "con-1", "lpt"])
def test_names_that_only_look_reserved_keep_their_slug(text: str) -> None:
    assert folder_name(text) == f"{text}-{digest(text)}"


def test_folder_name_is_cut_to_80_characters_before_the_digest() -> None:
    text = "A" * 100
    assert folder_name(text) == "a" * 80 + "-" + digest(text)
    assert folder_name("b" * 80) == "b" * 80 + "-" + digest("b" * 80)


def test_folder_names_of_colliding_slugs_differ_by_digest() -> None:
    assert folder_name("a:b") != folder_name("a/b")
    assert folder_name("a:b").rsplit("-", 1)[0] == folder_name("a/b").rsplit("-", 1)[0]
