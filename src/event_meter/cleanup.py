"""History cleanup and the automatic cleanup watermark (SPEC section 12)."""

from __future__ import annotations

from collections.abc import Iterable

from event_meter._config import Config
from event_meter._keys import ReportRef
from event_meter._time import now_ms, parse_time
from event_meter.stores.base import RollupStore

__all__ = ["auto_cleanup", "cleanup_history"]

COUNT_KEYS = ("rollup_keys_deleted", "interval_state_keys_deleted", "processed_entries_deleted")


def _event_names(events: Iterable[str] | str | None) -> set[str] | None:
    if events is None:
        return None
    if isinstance(events, str):
        return {events}
    names = set()
    for name in events:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"events must be event names (non-blank strings), got {name!r}")
        names.add(name)
    return names


def cleanup_history(
    rollups: RollupStore,
    namespace: str,
    before: object,
    events: Iterable[str] | str | None = None,
) -> dict[str, int]:
    """Delete rollups that ended at or before ``before``, older state and markers."""
    return _cleanup(rollups, namespace, parse_time(before, "before"), _event_names(events))


def _cleanup(
    rollups: RollupStore, namespace: str, before_ms: int, names: set[str] | None
) -> dict[str, int]:
    totals = dict.fromkeys(COUNT_KEYS, 0)
    for name, version in rollups.list_reports(namespace):
        if names is not None and name not in names:
            continue
        counts = rollups.cleanup(ReportRef(namespace, name, version), before_ms)
        for key in COUNT_KEYS:
            totals[key] += counts.get(key, 0)
    return totals


def auto_cleanup(rollups: RollupStore, config: Config) -> dict[str, int] | None:
    """Run cleanup when the watermark is missing or older than the interval.

    Runs under the namespace cleanup lock; returns None when it did not run.
    """
    now = now_ms(config.clock)
    last = rollups.read_watermark(config.namespace)
    if last is not None and now - last < config.cleanup_history_interval_ms:
        return None
    lease = rollups.try_cleanup_lock(config.namespace, config.lock_ttl_ms)
    if lease is None:
        return None
    try:
        last = rollups.read_watermark(config.namespace)  # another holder may just have run
        if last is not None and now - last < config.cleanup_history_interval_ms:
            return None
        before = now - config.cleanup_history_retention_ms
        counts = _cleanup(rollups, config.namespace, before, None)
        lease.check()
        rollups.write_watermark(config.namespace, now)
        return counts
    finally:
        lease.release()
