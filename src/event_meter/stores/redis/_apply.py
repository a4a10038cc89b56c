"""Exactly-once apply of a ``BatchDelta`` to Redis in a few round trips.

One apply is several Lua script calls, which Redis does not run atomically
together, so it is made exactly-once the way the file store does it:

1. ``apply_begin`` (one round trip): unless every entry id is already marked
   processed, store the whole delta as JSON in the report's journal hash
   ``{ns}:journal:{tag}`` under its batch id.
2. One pipelined ``ZADD`` per bucket index (``{ns}:buckets:{tag}:{granularity}:
   {index key}``, the bucket ids this delta writes; ``PEXPIRE`` with the rollup
   TTL), so ``scan_rollups`` lists buckets without a ``SCAN`` of the keyspace.
   Set semantics make it idempotent, and it precedes the chunks, so every
   bucket holding data is indexed; a bucket indexed by an apply that died
   before its chunk reads as missing.
   Then ``apply_chunk`` (one pipelined round trip): the rollup and state keys,
   sorted, cut into chunks of at most ``CHUNK_KEYS`` keys / ``CHUNK_ARGS``
   arguments. Each chunk script atomically checks that the batch is still
   journaled, sets its guard ``{ns}:applied:{tag}:<batch id>:<chunk no>``
   (``SET NX``, with the rollup TTL) and only then merges, so a chunk is
   applied at most once however many replayers run it.
3. ``apply_markers`` (one pipelined round trip): the processed markers, last,
   only while the batch is journaled.
4. One pipelined ``HDEL`` of the journal entry and ``DEL`` of the guards.

A crash or error after step 1 leaves the journal entry: ``recover`` replays
steps 2-4 from it (the processor calls it before its first read and after each
read, so rows released by a failed apply are marked before they are counted
again), and concurrent replayers are safe thanks to the guards. Keeping the
journal in one hash per report makes ``recover`` one ``HGETALL`` when nothing
is pending, instead of a ``SCAN`` of the keyspace on every batch. Once the entry is gone every chunk
script is a no-op, so deleting the guards with it is safe. The journal hash has
no TTL (an entry lives until replayed); guards expire after the rollup TTL,
which only matters if a journal entry is not replayed for that long.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final

import orjson

from event_meter.stores.base import BatchDelta
from event_meter.stores.file._journal import decode, encode
from event_meter.stores.redis._client import mapping
from event_meter.stores.redis._names import ReportKeys
from event_meter.stores.redis._scripts import LuaScript, run_pipeline

__all__ = ["CHUNK_ARGS", "CHUNK_KEYS", "apply_delta", "chunks", "recover_journal"]

log = logging.getLogger("event_meter")

CHUNK_KEYS: Final = 256
CHUNK_ARGS: Final = 4_096
MARKER_CHUNK: Final = 500

BEGIN: Final = LuaScript("apply_begin")
CHUNK: Final = LuaScript("apply_chunk")
MARKERS: Final = LuaScript("apply_markers")

Chunk = tuple[list[str], int, list[Any]]
"""One script call's keys (rollup keys, then state keys), rollup key count and args."""
Chunking = tuple[int, int]
"""(max keys, max args) of one chunk; journaled with the delta, so a replay after an
upgrade that changed the limits cuts the chunks (and guards) of the first try."""


def current_chunking() -> Chunking:
    return CHUNK_KEYS, CHUNK_ARGS


def _journal_entry(delta: BatchDelta, now_ms: int, chunking: Chunking) -> bytes:
    doc = encode(delta, now_ms)
    doc["chunking"] = list(chunking)
    return orjson.dumps(doc)


def _load_entry(raw: Any) -> tuple[BatchDelta, Chunking]:
    """The delta and chunking of a journal entry; ``ValueError`` when malformed."""
    doc = orjson.loads(raw)
    delta = decode(doc)
    chunking = doc.get("chunking") if isinstance(doc, dict) else None
    if chunking is None:
        return delta, current_chunking()
    if not (
        isinstance(chunking, list)
        and len(chunking) == 2
        and all(type(x) is int and x > 0 for x in chunking)
    ):
        raise ValueError(f"malformed journal chunking {chunking!r}")
    return delta, (chunking[0], chunking[1])


def chunks(keys: ReportKeys, delta: BatchDelta, chunking: Chunking | None = None) -> list[Chunk]:
    """The chunks of ``delta``, in an order that depends only on its content.

    So a replay from the journal cuts exactly the chunks of the first try. Only
    integer values are sent: anything else is left out, as a stored non-integer
    would be ignored on read.
    """
    rollups: list[tuple[str, list[Any]]] = []
    for file, values in delta.rollups.items():
        for index_key, fields in values.items():
            pairs = [
                x for name, value in fields.items() if type(value) is int for x in (name, value)
            ]
            if pairs:
                key = keys.rollup(file.granularity, file.bucket_id, index_key)
                rollups.append((key, [len(pairs) // 2, *pairs]))
    rollups.sort(key=lambda item: item[0])
    states = sorted(
        (keys.state(p, v), [ms]) for (p, v), ms in delta.state.items() if type(ms) is int
    )
    max_keys, max_args = chunking or current_chunking()
    out: list[Chunk] = []
    part_keys: list[str] = []
    part_args: list[Any] = []
    rollup_count = 0
    for number, (key, args) in enumerate([*rollups, *states]):
        full = len(part_keys) >= max_keys or len(part_args) + len(args) > max_args
        if part_keys and full:
            out.append((part_keys, rollup_count, part_args))
            part_keys, part_args, rollup_count = [], [], 0
        part_keys.append(key)
        part_args.extend(args)
        if number < len(rollups):
            rollup_count += 1
    if part_keys:
        out.append((part_keys, rollup_count, part_args))
    return out


def index_buckets(client: Any, keys: ReportKeys, delta: BatchDelta, ttl_ms: int) -> None:
    """Step 2's ``ZADD`` of every bucket id the delta writes, per bucket index."""
    wanted: dict[str, set[str]] = {}
    for file, values in delta.rollups.items():
        for index_key in values:
            wanted.setdefault(keys.buckets(file.granularity, index_key), set()).add(file.bucket_id)
    if not wanted:
        return
    pipe = client.pipeline(transaction=False)
    for key in sorted(wanted):
        pipe.zadd(key, dict.fromkeys(sorted(wanted[key]), 0))
        pipe.pexpire(key, ttl_ms)
    pipe.execute()


def _slices(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def apply_delta(
    client: Any, keys: ReportKeys, delta: BatchDelta, now_ms: int, iso: str, ttl_ms: int
) -> None:
    """Steps 1-4 of the module docstring."""
    chunking = current_chunking()
    journal = _journal_entry(delta, now_ms, chunking)
    markers = [keys.processed(i) for i in dict.fromkeys(delta.entry_ids)]
    status = BEGIN(client, [keys.journal(), *markers], [delta.batch_id, journal])
    if status == 0:
        return
    if status == 2:  # a retry of a journaled batch: finish what the journal says
        stored = client.hget(keys.journal(), delta.batch_id)
        if stored is None:
            return  # a concurrent replayer finished it in between
        delta, chunking = _load_entry(stored)
        markers = [keys.processed(i) for i in dict.fromkeys(delta.entry_ids)]
    replay(client, keys, delta, iso, ttl_ms, markers, chunking)


def replay(
    client: Any,
    keys: ReportKeys,
    delta: BatchDelta,
    iso: str,
    ttl_ms: int,
    markers: list[str] | None = None,
    chunking: Chunking | None = None,
) -> None:
    """Steps 2-4; each is idempotent, so replays may overlap. ``markers``: the
    marker keys of ``delta.entry_ids`` when the caller built them already."""
    journal, batch = keys.journal(), delta.batch_id
    index_buckets(client, keys, delta, ttl_ms)
    parts = chunks(keys, delta, chunking)
    if parts:
        run_pipeline(
            client,
            [
                (
                    CHUNK,
                    [journal, keys.guard(batch, n), *part_keys],
                    [batch, ttl_ms, rollups, *args],
                )
                for n, (part_keys, rollups, args) in enumerate(parts)
            ],
        )
    if markers is None:
        markers = [keys.processed(i) for i in dict.fromkeys(delta.entry_ids)]
    if markers:
        run_pipeline(
            client,
            [
                (MARKERS, [journal, *part], [batch, ttl_ms, iso])
                for part in _slices(markers, MARKER_CHUNK)
            ],
        )
    pipe = client.pipeline(transaction=False)
    pipe.hdel(journal, batch)
    for part in _slices([keys.guard(batch, n) for n in range(len(parts))], MARKER_CHUNK):
        pipe.execute_command("DEL", *part)  # raw: see ``_commands``
    pipe.execute()


def recover_journal(client: Any, keys: ReportKeys, iso: str, ttl_ms: int) -> int:
    """Replay every journaled apply of the report; the number replayed."""
    pending = mapping(client.hgetall(keys.journal()))
    replayed = 0
    for batch_id in sorted(pending):
        raw = pending[batch_id]
        try:
            delta, chunking = _load_entry(raw)
        except (orjson.JSONDecodeError, ValueError) as exc:
            # Set aside rather than block every later pass; its rows are unmarked and
            # are processed again (the guards keep chunks it applied from counting twice
            # when the same rows form the same batch).
            log.error("event_meter: setting aside unreadable journal entry %s: %s", batch_id, exc)
            pipe = client.pipeline(transaction=False)
            pipe.hset(f"{keys.journal()}:corrupt", batch_id, raw)
            pipe.hdel(keys.journal(), batch_id)
            pipe.execute()
            continue
        log.info("event_meter: replaying interrupted apply %s of %r", batch_id, keys.ref)
        replay(client, keys, delta, iso, ttl_ms, chunking=chunking)
        replayed += 1
    return replayed
