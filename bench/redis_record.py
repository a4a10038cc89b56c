"""Recording cost on Redis: ``start()`` + ``success()`` (one ``XADD``) against a bare ``XADD``.

Baseline, measured in the same run on the same server: build the same payload
dict, ``orjson.dumps`` it and send ``XADD {key} * payload <json>`` with a bare
redis-py client (same URL, same hiredis parser). Both sides pay one loopback
round trip per event, which dominates; the ratio shows what event-meter adds.
Target: at most 1.3x. The script starts its own ``redis-server``.

    python bench/redis_record.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import orjson
import redis

from _servers import BenchRedis
from event_meter import EventMeter
from event_meter._time import iso_us
from event_meter.stores import MemoryRollups
from event_meter.stores.redis.stream import RedisStream

TARGET_RATIO = 1.3


def baseline(url: str, events: int) -> float:
    """Seconds for ``events`` bare ``XADD`` calls of the same payload shape."""
    client = redis.Redis.from_url(url)
    key = "bench:baseline:stream:invoice_delivery"
    try:
        started = time.perf_counter()
        for i in range(events):
            payload = {
                "name": "invoice_delivery",
                "status": "success",
                "started_at": iso_us(datetime.now(UTC)),
                "duration_ms": 0,
                "params": {"customer_id": i, "provider": "postmark"},
            }
            client.xadd(key, {"payload": orjson.dumps(payload)})
        return time.perf_counter() - started
    finally:
        client.delete(key)
        client.close()


def event_meter_run(url: str, events: int) -> float:
    meter = EventMeter(
        namespace="bench:meter", stream_storage=RedisStream(url=url), rollup_storage=MemoryRollups()
    )
    start = meter.start
    try:
        start("invoice_delivery").success()  # connect and load nothing else before timing
        started = time.perf_counter()
        for i in range(events):
            result = start("invoice_delivery", customer_id=i, provider="postmark").success()
        seconds = time.perf_counter() - started
        if not result:
            raise RuntimeError(f"recording failed: {result.error!r}")
        return seconds
    finally:
        meter.stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    base_times: list[float] = []
    ours_times: list[float] = []
    with BenchRedis() as server:
        baseline(server.url, 1_000)  # warm up the server and the interpreter
        for _ in range(args.repeat):  # interleaved, best of R: least noise
            base_times.append(baseline(server.url, args.events))
            ours_times.append(event_meter_run(server.url, args.events))
    base_us = min(base_times) / args.events * 1e6
    ours_us = min(ours_times) / args.events * 1e6
    print(f"events per run:                 {args.events:,} (best of {args.repeat})")
    print(f"baseline (dict+dumps+XADD):     {base_us:7.2f} us/event")
    print(f"event-meter start+success:      {ours_us:7.2f} us/event")
    print(f"ratio:                          {ours_us / base_us:7.2f}x  (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
