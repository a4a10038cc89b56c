"""Report definitions (SPEC 5): validation, builders, canonical form, fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from event_meter import Report

ALL_ONLY = "750aff41b3c8553c94eb7392190650a5337db05d6f13c67bf1f74d7dfad0025d"
WITH_PROVIDER = "d8947c432268933af693dd5322c9fa4aa3272ea403bb5c494c14eb421fb18e33"


def spec_fingerprint(canonical: dict[str, Any]) -> str:
    body = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   ", None, 42, b"job"])
def test_name_must_be_non_blank(name: Any) -> None:
    with pytest.raises(ValueError, match="name") as caught:
        Report(name)
    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("version", [0, -1, True, False, 1.0, "1", None])
def test_version_must_be_a_positive_int(version: Any) -> None:
    with pytest.raises(ValueError, match="version") as caught:
        Report("job", version=version)
    assert repr(version) in str(caught.value)


def test_defaults_to_version_one_and_the_all_index() -> None:
    report = Report("job")
    assert (report.name, report.version) == ("job", 1)
    assert report.canonical()["indexes"] == [[]]


@pytest.mark.parametrize("param", ["", "  ", None, 3])
def test_index_params_must_be_non_blank_strings(param: Any) -> None:
    with pytest.raises(ValueError, match="index_by") as caught:
        Report("job").index_by("provider", param)
    assert repr(param) in str(caught.value)


def test_index_by_needs_a_param() -> None:
    with pytest.raises(ValueError, match="index_by"):
        Report("job").index_by()


@pytest.mark.parametrize("param", ["", None])
def test_interval_params_must_be_non_blank_strings(param: Any) -> None:
    with pytest.raises(ValueError, match="measure_interval_by"):
        Report("job").measure_interval_by(param)
    with pytest.raises(ValueError, match="group_by"):
        Report("job").measure_interval_by("customer_id", group_by=["provider", param])


def test_group_by_of_another_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="group_by"):
        Report("job").measure_interval_by("customer_id", group_by=42)  # type: ignore[arg-type]


# -- builders ---------------------------------------------------------------------------


def test_builders_return_the_report() -> None:
    report = Report("job")
    assert report.index_by("a") is report
    assert report.measure_interval_by("b") is report


@pytest.mark.parametrize(
    "build",
    [
        lambda r: r.index_by("queue", "provider"),
        lambda r: r.index_by("provider", "queue"),
        lambda r: r.index_by(["queue", "provider"]),
        lambda r: r.index_by(("provider", "queue", "provider")),
        lambda r: r.index_by("queue", "provider").index_by("provider", "queue"),
    ],
)
def test_index_params_are_deduplicated_and_sorted(build: Any) -> None:
    report = build(Report("job"))
    assert report.canonical()["indexes"] == [[], ["provider", "queue"]]


def test_indexes_are_sorted_with_the_all_index_first() -> None:
    report = Report("job").index_by("queue").index_by("provider", "queue").index_by("customer_id")
    assert report.canonical()["indexes"] == [
        [],
        ["customer_id"],
        ["provider", "queue"],
        ["queue"],
    ]


def test_measure_interval_by_adds_the_group_index() -> None:
    report = Report("job").measure_interval_by("customer_id", group_by="provider")
    canonical = report.canonical()
    assert canonical["indexes"] == [[], ["provider"]]
    assert canonical["intervals"] == [{"param": "customer_id", "group_by": ["provider"]}]


def test_measure_interval_by_sorts_and_dedupes_group_by() -> None:
    report = Report("job").measure_interval_by(
        "customer_id", group_by=["queue", "provider", "queue"]
    )
    canonical = report.canonical()
    assert canonical["indexes"] == [[], ["provider", "queue"]]
    assert canonical["intervals"] == [{"param": "customer_id", "group_by": ["provider", "queue"]}]


def test_measure_interval_without_group_by_uses_the_all_index() -> None:
    canonical = Report("job").measure_interval_by("customer_id").canonical()
    assert canonical["indexes"] == [[]]
    assert canonical["intervals"] == [{"param": "customer_id", "group_by": []}]


def test_canonical_form_key_order_and_interval_sorting() -> None:
    report = (
        Report("invoice_delivery", version=2)
        .measure_interval_by("customer_id", group_by="provider")
        .measure_interval_by("account_id")
        .measure_interval_by("customer_id")
        .measure_interval_by("customer_id", group_by="provider")
    )
    canonical = report.canonical()
    assert list(canonical) == ["name", "version", "indexes", "intervals"]
    assert canonical["intervals"] == [
        {"param": "account_id", "group_by": []},
        {"param": "customer_id", "group_by": []},
        {"param": "customer_id", "group_by": ["provider"]},
    ]
    definition = report.definition()
    assert list(definition) == ["name", "version", "indexes", "intervals", "fingerprint"]


# -- fingerprint ------------------------------------------------------------------------


def test_fingerprint_vectors() -> None:
    plain = Report("invoice_delivery", version=1)
    assert plain.fingerprint == ALL_ONLY
    assert plain.definition()["fingerprint"] == ALL_ONLY
    assert plain.index_by("provider").fingerprint == WITH_PROVIDER


def test_fingerprint_is_sha256_of_compact_json_without_ascii_escapes() -> None:
    report = (
        Report("rechnung_zustellung_ü", version=3)
        .index_by("anbieter", "warteschlange")
        .measure_interval_by("kunde", group_by="anbieter")
    )
    assert report.fingerprint == spec_fingerprint(report.canonical())


def test_equal_definitions_share_a_fingerprint_and_differences_change_it() -> None:
    first = Report("job").index_by("queue", "provider")
    second = Report("job").index_by("provider").index_by("provider", "queue")
    second_again = Report("job").index_by("provider", "queue")
    assert first == second_again
    assert first.fingerprint == second_again.fingerprint
    assert first.fingerprint != second.fingerprint
    assert Report("job", version=2).fingerprint != Report("job", version=1).fingerprint
    assert Report("job").fingerprint != Report("other").fingerprint


# -- from_definition --------------------------------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        Report("invoice_delivery"),
        Report("invoice_delivery", version=4).index_by("provider"),
        Report("x y", version=2)
        .index_by("customer_id")
        .index_by("provider", "queue")
        .measure_interval_by("customer_id", group_by="provider")
        .measure_interval_by("account_id"),
    ],
    ids=["all-only", "one-index", "full"],
)
def test_from_definition_round_trips(report: Report) -> None:
    definition = json.loads(json.dumps(report.definition()))
    rebuilt = Report.from_definition(definition)
    assert rebuilt == report
    assert rebuilt.definition() == report.definition()
    assert rebuilt.fingerprint == definition["fingerprint"]
