"""The rollup contract and processing on a real Redis Cluster (``redis.cluster.RedisCluster``).

A module-scoped fixture starts three Debian ``redis-server`` processes with
``cluster-enabled yes`` on loopback ports (each at most 55535: the cluster bus
listens on port + 10000), joins them with ``redis-cli --cluster create
... --cluster-replicas 0 --cluster-yes`` and waits until every node reports
``cluster_state:ok`` (``servers.RedisClusterServers``).

Every test of ``test_rollup_contract`` runs again here, unchanged, with a
``RedisRollups`` whose client is a ``RedisCluster`` (the module overrides the
``rollup_store`` fixture). Every key of one report carries the report's hash
tag, so each Lua script and each multi-key command stays in one slot; ``SCAN``
goes through ``RedisCluster.scan_iter``, which visits every primary. Streams
stay on the session's plain server: stream keys have no tag and are used one
at a time, so a cluster adds nothing to test there.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from redis.cluster import ClusterNode, RedisCluster

from event_meter import EventMeter, Report
from event_meter.stores.redis._client import glob_escape
from event_meter.stores.redis.rollups import RedisRollups
from servers import RedisClusterServers, RedisServer
from stores.test_rollup_contract import *  # noqa: F403 - the whole contract, on a cluster
from support import FakeClock, past_minute_clock, random_namespace, record

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as servers:
        yield servers


def cluster_client(cluster: RedisClusterServers) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in cluster.nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes)


def drop_cluster_namespace(client: RedisCluster, namespace: str) -> None:
    """Delete the namespace's keys on every primary (one key per call: keys span slots)."""
    for key in list(client.scan_iter(match=f"{glob_escape(namespace)}:*", count=1_000)):
        client.delete(key)


@pytest.fixture
def rollup_store(
    cluster: RedisClusterServers, namespace: str, clock: FakeClock
) -> Iterator[RedisRollups]:
    """Overrides conftest: the contract's store, on the cluster."""
    client = cluster_client(cluster)
    store = RedisRollups(redis=client)
    store.bind(namespace=namespace, clock=clock)
    yield store
    store.close()
    drop_cluster_namespace(client, namespace)
    client.close()


def test_the_cluster_has_three_masters_and_reports_spread_over_them(
    cluster: RedisClusterServers,
) -> None:
    client = cluster_client(cluster)
    try:
        assert len(client.get_primaries()) == 3  # type: ignore[no-untyped-call]
        keys = [f"ns:rollup:{{report{i}:v1}}:hour:x:all" for i in range(30)]
        slots = {client.keyslot(key) for key in keys}  # type: ignore[no-untyped-call]
        nodes = {client.nodes_manager.get_node_from_slot(slot).port for slot in slots}
        assert len(nodes) == 3  # thirty reports land on every master
    finally:
        client.close()


@pytest.mark.parametrize("reports", [1, 12])
def test_processing_into_a_cluster_is_exact(
    cluster: RedisClusterServers, redis_server: RedisServer, clock: FakeClock, reports: int
) -> None:
    """Stream on a plain server, rollups on the cluster: several reports, intervals, cleanup."""
    namespace = random_namespace()
    client = cluster_client(cluster)
    meter = EventMeter(
        namespace=namespace,
        stream_storage=redis_server.url,
        rollup_storage=RedisRollups(redis=client),
        clock=clock,
    )
    try:
        names = [f"job_{n}" for n in range(reports)]
        for n, name in enumerate(names):
            for i in range(20 + n):
                record(meter, name, "success" if i % 4 else "failure", customer=i % 3)
                clock.advance(seconds=7)
        past_minute_clock(clock)
        for n, name in enumerate(names):
            report = Report(name).index_by("customer").measure_interval_by("customer")
            result = meter.process_pending(report, batch_size=6)
            assert (result.processed, result.complete, result.locked) == (20 + n, True, False)
            summary = meter.summary(report)
            assert (summary["count"], summary["failure_count"]) == (20 + n, 5 + (n + 3) // 4)
            assert summary["interval_ms_count"] == 20 + n - 3  # first event per customer: none
            by_customer = [meter.summary(report, by={"customer": c})["count"] for c in range(3)]
            assert sum(by_customer) == 20 + n
            again = meter.process_pending(report)
            assert (again.processed, again.skipped_already_processed) == (0, 0)
        assert sorted(name for name, _ in meter.rollups.list_reports(namespace)) == sorted(names)
        cleaned = meter.cleanup_history(clock.now() + timedelta(days=1))
        assert cleaned["rollup_keys_deleted"] > 0
        assert cleaned["interval_state_keys_deleted"] == 3 * reports
        assert list(client.scan_iter(match=f"{glob_escape(namespace)}:rollup:*")) == []
    finally:
        meter.close()
        drop_cluster_namespace(client, namespace)
        client.close()
