"""Report definitions: indexes, interval rules, canonical form (SPEC section 5)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["IntervalRule", "Report"]


@dataclass(frozen=True, slots=True, order=True)
class IntervalRule:
    """Time between starts of events with the same ``param`` value, per ``group_by``."""

    param: str
    group_by: tuple[str, ...] = ()


def _check_param(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-blank string, got {value!r}")
    return value


def _params_of(values: Sequence[Any], what: str) -> tuple[str, ...]:
    if len(values) == 1 and isinstance(values[0], list | tuple):
        values = values[0]
    return tuple(sorted({_check_param(v, what) for v in values}))


class Report:
    """A versioned report definition: which indexes to keep and which intervals.

    ``Report("invoice_delivery", version=1).index_by("provider")`` keeps the all
    index plus one index per provider value. Builders return the report, so they
    chain. Two reports with the same canonical form have the same fingerprint.

    Options (part of the definition, so changing one needs a new version):

    - ``max_values_per_index=N``: the cardinality guard. Each index keeps at most
      ``N`` distinct values per hour bucket (and so per minute bucket); the events
      of further values go to the overflow value ``__other__`` of that index, and
      the all index counts them in ``overflow_count``. Totals stay exact. Such a
      report is processed under the report lock, like one with interval rules.
    - ``percentiles=False``: keep no duration or interval histograms, so
      summaries carry no ``*_p50``.. ``*_p99`` and rollups stay small.
    """

    __slots__ = ("_indexes", "_intervals", "max_values_per_index", "name", "percentiles", "version")

    def __init__(
        self,
        name: str,
        version: int = 1,
        *,
        max_values_per_index: int | None = None,
        percentiles: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Report name must be a non-blank string, got {name!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(
                f"Report version must be a positive int, got {version!r}; "
                "bump it when the definition changes"
            )
        if max_values_per_index is not None and (
            isinstance(max_values_per_index, bool)
            or not isinstance(max_values_per_index, int)
            or max_values_per_index < 1
        ):
            raise ValueError(
                f"max_values_per_index must be a positive int or None, got {max_values_per_index!r}"
            )
        if not isinstance(percentiles, bool):
            raise TypeError(f"percentiles must be True or False, got {percentiles!r}")
        self.name = name
        self.version = version
        self.max_values_per_index = max_values_per_index
        self.percentiles = percentiles
        self._indexes: set[tuple[str, ...]] = {()}
        self._intervals: set[IntervalRule] = set()

    def index_by(self, *params: str | Sequence[str]) -> Report:
        """Keep rollups per value combination of ``params`` (order does not matter)."""
        if not params:
            raise ValueError("index_by needs at least one param name, got none")
        self._indexes.add(_params_of(params, "index_by param"))
        return self

    def measure_interval_by(self, param: str, group_by: str | Sequence[str] = ()) -> Report:
        """Measure ms between starts of events with the same ``param`` value.

        Samples go to the index of ``group_by`` (added automatically).
        """
        _check_param(param, "measure_interval_by param")
        if isinstance(group_by, str):
            group_by = (group_by,)
        elif not isinstance(group_by, list | tuple):
            raise ValueError(f"group_by must be a param name or a list of them, got {group_by!r}")
        groups = tuple(sorted({_check_param(g, "group_by param") for g in group_by}))
        self._intervals.add(IntervalRule(param, groups))
        self._indexes.add(groups)
        return self

    @property
    def indexes(self) -> list[tuple[str, ...]]:
        """Sorted indexes, the all index ``()`` first."""
        return sorted(self._indexes, key=lambda index: (len(index) > 0, list(index)))

    @property
    def intervals(self) -> list[IntervalRule]:
        return sorted(self._intervals)

    def canonical(self) -> dict[str, Any]:
        """SPEC 5's canonical form; options appear only when they differ from the default,
        so reports without them keep SPEC's fingerprints."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "indexes": [list(index) for index in self.indexes],
            "intervals": [
                {"param": rule.param, "group_by": list(rule.group_by)} for rule in self.intervals
            ],
        }
        if self.max_values_per_index is not None:
            out["max_values_per_index"] = self.max_values_per_index
        if not self.percentiles:
            out["percentiles"] = False
        return out

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.canonical())

    def definition(self) -> dict[str, Any]:
        """The canonical form plus its ``fingerprint`` (what ``report_definition`` returns)."""
        out = self.canonical()
        out["fingerprint"] = fingerprint_of(out)
        return out

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> Report:
        """Rebuild a report from a stored definition."""
        report = cls(
            definition["name"],
            definition["version"],
            max_values_per_index=definition.get("max_values_per_index"),
            percentiles=definition.get("percentiles", True),
        )
        for index in definition.get("indexes", []):
            if index:
                report.index_by(*index)
        for rule in definition.get("intervals", []):
            report.measure_interval_by(rule["param"], group_by=tuple(rule.get("group_by", ())))
        return report

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        options = "".join(
            f", {name}={value!r}"
            for name, value, default in (
                ("max_values_per_index", self.max_values_per_index, None),
                ("percentiles", self.percentiles, True),
            )
            if value != default
        )
        parts = [f"Report({self.name!r}, version={self.version}{options})"]
        parts += [f".index_by({', '.join(map(repr, i))})" for i in self.indexes if i]
        for rule in self.intervals:
            parts.append(f".measure_interval_by({rule.param!r}, group_by={list(rule.group_by)!r})")
        return "".join(parts)


def fingerprint_of(canonical: Mapping[str, Any]) -> str:
    """SHA-256 hex of the compact JSON of the canonical form (fingerprint left out)."""
    body = {k: v for k, v in canonical.items() if k != "fingerprint"}
    return hashlib.sha256(orjson.dumps(body)).hexdigest()
