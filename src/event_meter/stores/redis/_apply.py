"""Exactly-once apply of a ``BatchDelta`` to Redis in a few round trips.

One apply is several Lua script calls, which Redis does not run atomically
together, so it is made exactly-once the way the file store does it:

1. ``apply_begin`` (one round trip): unless every entry id is already marked
   processed, store the whole delta as JSON in the report's journal hash
   ``{ns}:journal:{tag}`` under its batch id. (It is first asked about the
   first entry id only; only when that one is marked are all of them sent.)
2. ``apply_chunk`` (one pipelined round trip): the rollup and state keys,
   sorted, cut into chunks of at most ``CHUNK_KEYS`` keys / ``CHUNK_ARGS``
   arguments, each chunk's deltas sent as one JSON argument. Each chunk script
   atomically checks that the batch is still journaled, sets its guard
   ``{ns}:applied:{tag}:<batch id>:<chunk no>`` (``SET NX``, with the rollup
   TTL) and only then merges, so a chunk is applied at most once however many
   replayers run it. In the same script it adds the hour bucket ids it wrote to
   their bucket index (``{ns}:buckets:{tag}:hour:{index key}``, a ZSET read by
   ``scan_rollups``; minute buckets are found by ``SCAN``, which only tests and
   tools ask for) and the index keys to their bucket's member SET
   (``{ns}:bucket_keys:{tag}:{granularity}:{bucket id}:{params}``, read by
   ``bucket_index_keys``), both with the rollup TTL: a bucket is indexed exactly
   when a chunk wrote it, whatever crashes.
3. ``apply_markers`` (one pipelined round trip): the processed markers, last,
   only while the batch is journaled; each call gets ``MARKERS_PER_CALL`` escaped
   entry ids as one argument and builds the key names itself.
4. One pipelined ``HDEL`` of the journal entry and ``DEL`` of the guards.

A crash or error after step 1 leaves the journal entry: ``recover`` replays
steps 2-4 from it (the processor calls it before its first read and after each
read, so rows released by a failed apply are marked before they are counted
again), and concurrent replayers are safe thanks to the guards. Keeping the
journal in one hash per report makes ``recover`` one ``HGETALL`` when nothing
is pending, instead of a ``SCAN`` of the keyspace on every batch. Once the entry
is gone every chunk script is a no-op, so deleting the guards with it is safe.
The journal hash has no TTL (an entry lives until replayed); guards expire after
the rollup TTL, which only matters if a journal entry is not replayed for that long.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import orjson

from event_meter._keys import ReportRef, esc_many
from event_meter.stores.base import BatchDelta, Fields, RollupFile
from event_meter.stores.file._journal import decode, encode
from event_meter.stores.redis._client import mapping, text
from event_meter.stores.redis._names import ReportKeys
from event_meter.stores.redis._scripts import LuaScript, run_pipeline

__all__ = [
    "CHUNK_ARGS",
    "CHUNK_KEYS",
    "MARKERS_PER_CALL",
    "apply_delta",
    "chunks",
    "forget_markers",
    "recover_journal",
]

log = logging.getLogger("event_meter")

CHUNK_KEYS: Final = 256
CHUNK_ARGS: Final = 4_096
MARKERS_PER_CALL: Final = 2_000
_EXACT: Final = 1 << 53  # Lua numbers (doubles) hold smaller integers exactly
_INT_ONLY: Final = frozenset((int,))
_DECIMAL: Final = re.compile(r"-?[0-9]+")

BEGIN: Final = LuaScript("apply_begin")
CHUNK: Final = LuaScript("apply_chunk")
MARKERS: Final = LuaScript("apply_markers")
FORGET: Final = LuaScript("forget_markers")

Chunk = tuple[list[str], bytes]
"""One script call's keys (rollup, state, then index keys) and its JSON argument."""
Chunking = tuple[int, int, int]
"""(max keys, max args, order) of one chunk; journaled with the delta, so a replay after
an upgrade that changed the limits or the order cuts the chunks (and guards) of the
first try. Order 1 (journals of earlier releases): rollup keys by name; order 2: by
granularity, index key and bucket id, so one chunk writes several buckets of an index
key and indexes them with one ``ZADD``."""
BY_NAME: Final = 1
BY_INDEX_KEY: Final = 2
_Rollup = tuple[str, RollupFile, str, Fields]


def current_chunking() -> Chunking:
    return CHUNK_KEYS, CHUNK_ARGS, BY_INDEX_KEY


def _by_name(item: _Rollup) -> Any:
    return item[0]


def _by_index_key(item: _Rollup) -> Any:
    return item[1].granularity, item[2], item[1].bucket_id


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
        return delta, (CHUNK_KEYS, CHUNK_ARGS, BY_NAME)
    if not (
        isinstance(chunking, list)
        and len(chunking) in (2, 3)
        and all(type(x) is int and x > 0 for x in chunking)
        and chunking[2:] in ([], [BY_NAME], [BY_INDEX_KEY])
    ):
        raise ValueError(f"malformed journal chunking {chunking!r}")
    return delta, (chunking[0], chunking[1], chunking[2] if len(chunking) == 3 else BY_NAME)


def chunks(keys: ReportKeys, delta: BatchDelta, chunking: Chunking | None = None) -> list[Chunk]:
    """The chunks of ``delta``, in an order that depends only on its content.

    So a replay from the journal cuts exactly the chunks of the first try. The
    cut counts one argument per key plus two per field, as releases that sent
    every field as its own argument did, so their journals replay exactly too.
    Values that are neither ints nor decimal text are left out (a stored
    non-integer would be ignored on read).
    """
    rollup = keys.rollup
    rollups: list[_Rollup] = [
        (rollup(file.granularity, file.bucket_id, index_key), file, index_key, fields)
        for file, values in _storable(delta.rollups).items()
        for index_key, fields in values.items()
        if fields
    ]
    max_keys, max_args, order = chunking or current_chunking()
    rollups.sort(key=_by_name if order == BY_NAME else _by_index_key)
    states = sorted((keys.state(p, v), ms) for (p, v), ms in delta.state.items() if type(ms) is int)
    sizes = [1 + 2 * len(item[3]) for item in rollups] + [1] * len(states)
    n = len(rollups)
    return [
        _chunk(keys, rollups[first:last], states[max(first - n, 0) : max(last - n, 0)])
        for first, last in _cuts(sizes, max_keys, max_args)
    ]


def _cuts(sizes: list[int], max_keys: int, max_args: int) -> list[tuple[int, int]]:
    """``[first, last)`` of each chunk: at most ``max_keys`` items, and at most
    ``max_args`` arguments unless one item alone has more."""
    cuts: list[tuple[int, int]] = []
    first = size = 0
    for number, args in enumerate(sizes):
        if number > first and (number - first >= max_keys or size + args > max_args):
            cuts.append((first, number))
            first, size = number, 0
        size += args
    if len(sizes) > first:
        cuts.append((first, len(sizes)))
    return cuts


def _chunk(keys: ReportKeys, rollups: list[_Rollup], states: list[tuple[str, int]]) -> Chunk:
    """One chunk: its keys and its JSON argument (see ``lua/apply_chunk.lua``)."""
    names = [item[0] for item in rollups]
    names += [key for key, _ in states]
    indexes: dict[str, list[str]] = {}
    members: dict[RollupFile, list[str]] = {}
    for _, file, index_key, _ in rollups:
        if file.granularity == "hour":  # minute buckets are listed by SCAN (rarely read)
            indexes.setdefault(index_key, []).append(file.bucket_id)
        if file.params:
            members.setdefault(file, []).append(index_key)
    position = len(names) + 3  # Lua's 1-based KEYS: journal, guard, then ``names``
    zsets: list[list[Any]] = []
    for index_key, bucket_ids in indexes.items():
        names.append(keys.buckets("hour", index_key))
        zsets.append([position, *bucket_ids])
        position += 1
    sets: list[list[Any]] = []
    for file, index_keys in members.items():
        names.append(keys.bucket_keys(file.granularity, file.bucket_id, file.params))
        sets.append([position, *index_keys])
        position += 1
    fields = [item[3] for item in rollups]
    started = [ms for _, ms in states]
    try:
        payload = orjson.dumps([fields, started, zsets, sets], option=orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:  # an integer beyond 53 bits: sent as decimal text
        fields = [{k: _wide(v) for k, v in item.items()} for item in fields]
        payload = orjson.dumps([fields, [_wide(v) for v in started], zsets, sets])
    return names, payload


def _storable(rollups: dict[RollupFile, dict[str, Fields]]) -> dict[RollupFile, dict[str, Fields]]:
    """``rollups`` with only the values worth storing: ints (not bools) and decimal text.

    Anything else (only a corrupt journal or a careless caller holds it) is left out,
    as a stored non-integer would read as absent. One C-level type scan of every
    value decides; the rollups of the processor always pass it unchanged.
    """
    values = chain.from_iterable(f.values() for keyed in rollups.values() for f in keyed.values())
    if _INT_ONLY.issuperset(map(type, values)):
        return rollups
    return {
        file: {
            key: {k: v for k, v in fields.items() if type(v) is int or _is_decimal(v)}
            for key, fields in keyed.items()
        }
        for file, keyed in rollups.items()
    }


def _is_decimal(value: Any) -> bool:
    return type(value) is str and _DECIMAL.fullmatch(value) is not None


def _wide(value: Any) -> Any:
    return str(value) if type(value) is int and not -_EXACT < value < _EXACT else value


def _slices(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _begin(client: Any, keys: ReportKeys, batch_id: str, journal: bytes, ids: list[str]) -> Any:
    """Step 1 (``ids``: escaped entry ids): asks about the first marker only, unless
    that one exists."""
    prefix = keys.processed_prefix()
    args = [batch_id, journal]
    status = BEGIN(client, [keys.journal(), *(prefix + i for i in ids[:1])], args)
    if status == 0 and len(ids) > 1:
        status = BEGIN(client, [keys.journal(), *(prefix + i for i in ids)], args)
    return status


@dataclass(frozen=True, slots=True)
class Encoded:
    """What one apply sends, encoded ahead (``RedisRollups.prepare_apply``)."""

    ref: ReportRef
    journal: bytes
    ids: list[str]
    parts: list[Chunk]
    chunking: Chunking


def encode_apply(keys: ReportKeys, delta: BatchDelta, now_ms: int) -> Encoded:
    chunking = current_chunking()
    return Encoded(
        keys.ref,
        _journal_entry(delta, now_ms, chunking),
        esc_many(list(dict.fromkeys(delta.entry_ids))),
        chunks(keys, delta, chunking),
        chunking,
    )


def apply_delta(
    client: Any,
    keys: ReportKeys,
    delta: BatchDelta,
    now_ms: int,
    iso: str,
    ttl_ms: int,
    encoded: Encoded | None = None,
) -> None:
    """Steps 1-4 of the module docstring; ``encoded``: ``encode_apply`` of ``delta``,
    when made ahead (for another report it is made again)."""
    if encoded is None or encoded.ref != keys.ref:
        encoded = encode_apply(keys, delta, now_ms)
    chunking, ids = encoded.chunking, encoded.ids
    status = _begin(client, keys, delta.batch_id, encoded.journal, ids)
    if status == 0:
        return
    if status == 2:  # a retry of a journaled batch: finish what the journal says
        stored = client.hget(keys.journal(), delta.batch_id)
        if stored is None:
            return  # a concurrent replayer finished it in between
        delta, chunking = _load_entry(stored)
        replay(client, keys, delta, iso, ttl_ms, chunking=chunking)
        return
    replay(client, keys, delta, iso, ttl_ms, ids, chunking, encoded.parts)


def replay(
    client: Any,
    keys: ReportKeys,
    delta: BatchDelta,
    iso: str,
    ttl_ms: int,
    ids: list[str] | None = None,
    chunking: Chunking | None = None,
    parts: list[Chunk] | None = None,
) -> None:
    """Steps 2-4; each is idempotent, so replays may overlap. ``ids`` and ``parts``:
    the escaped entry ids and the chunks of ``delta`` when the caller has them."""
    journal, batch = keys.journal(), delta.batch_id
    if parts is None:
        parts = chunks(keys, delta, chunking)
    if parts:
        run_pipeline(
            client,
            [
                (CHUNK, [journal, keys.guard(batch, n), *names], [batch, ttl_ms, payload])
                for n, (names, payload) in enumerate(parts)
            ],
        )
    if ids is None:
        ids = esc_many(list(dict.fromkeys(delta.entry_ids)))
    if ids:
        prefix = keys.processed_prefix()
        run_pipeline(
            client,
            [
                (MARKERS, [journal], [batch, ttl_ms, iso, prefix, "\n".join(part)])
                for part in _slices(ids, MARKERS_PER_CALL)
            ],
        )
    pipe = client.pipeline(transaction=False)
    pipe.hdel(journal, batch)
    for part in _slices([keys.guard(batch, n) for n in range(len(parts))], MARKERS_PER_CALL):
        pipe.execute_command("DEL", *part)  # raw: see ``_commands``
    pipe.execute()


def forget_markers(client: Any, keys: ReportKeys, entry_ids: Sequence[str]) -> None:
    """Delete the markers of ``entry_ids`` (idempotent), ``MARKERS_PER_CALL`` per call."""
    ids = esc_many(list(dict.fromkeys(entry_ids)))
    if ids:
        prefix = keys.processed_prefix()
        run_pipeline(
            client,
            [
                (FORGET, [keys.journal()], [prefix, "\n".join(part)])
                for part in _slices(ids, MARKERS_PER_CALL)
            ],
        )


def recover_journal(
    client: Any, keys: ReportKeys, iso: str, ttl_ms: int, running: Collection[str] = ()
) -> int:
    """Replay every journaled apply of the report but ``running``; the number replayed.

    ``HGETALL`` when nothing runs here; else ``HKEYS`` and ``HMGET`` of the others, so
    the entry of the batch being applied is not sent back on every read.
    """
    journal = keys.journal()
    if not running:
        pending = mapping(client.hgetall(journal))
    else:
        names = (text(name) or "" for name in client.hkeys(journal))
        others = [name for name in names if name not in running]
        values = client.hmget(journal, others) if others else []
        pending = {
            name: value for name, value in zip(others, values, strict=True) if value is not None
        }
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
