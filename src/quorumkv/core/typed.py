"""Typed records: one place that decides what a replica keeps (``resolve``).

A record is *typed* when its version's ``ctx`` carries a type tag: ``{"t": kind,
"h": digest}``. ``kind`` is one of ``CAUSAL`` (a DVV set of siblings,
core/dvv.py), ``COUNTER``, ``SET``, ``MAP`` (core/crdt.py); the value is the
canonical encoding of that state; ``h`` is a 63-bit BLAKE2b digest of the value,
so two replicas whose states differ hash differently in anti-entropy's Merkle trees
even when their versions are equal (core/merkle.py). A record without ``ctx`` is a
plain last-writer-wins record, stored and compared exactly as before: the tag lives
in a field every engine and the wire format already carried (``Version.ctx``,
reserved for causal contexts), so no schema or wire change was needed.

``resolve(stored, incoming)`` is the rule every path that stores a record goes
through — replica writes, read repair, hinted handoff replay, anti-entropy,
ring-change streaming — because they all end in a storage engine's ``write``, and
every engine calls it (shell/storage.py, shell/storage_redis.py, sim/storage.py):

* both LWW, or of different types: the newer version wins, as before (changing a
  key's type — ``SET`` on a set, or a delete of a counter — is last-writer-wins);
* both of the same typed kind: the states are **merged**, never picked. The
  merged record carries the larger of the two versions.

Coordinators merge the R replies the same way (``read_result``) and read-repair
every replica whose state differs from the merge (``needs_repair``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Callable

import msgspec

from . import crdt, dvv
from .version import Record, Version, newest

LWW = 0
CAUSAL = 1
COUNTER = 2
SET = 3
MAP = 4
KIND_NAMES = {LWW: "lww", CAUSAL: "causal", COUNTER: "counter", SET: "set", MAP: "map"}
#: Redis TYPE names of each kind (RESP ``TYPE``): causal values are strings with siblings.
REDIS_TYPES = {LWW: "string", CAUSAL: "string", COUNTER: "string", SET: "set", MAP: "hash"}

#: A typed record's decoded state: a ``dvv.DVVSet``, ``crdt.PNCounter``, ``crdt.ORSet`` or
#: ``crdt.LWWMap`` by kind. ``Any``: which one is decided at run time by the kind tag.
State = Any

_TYPES: dict[int, type] = {CAUSAL: dvv.DVVSet, COUNTER: crdt.PNCounter, SET: crdt.ORSet, MAP: crdt.LWWMap}
_DECODERS: dict[int, msgspec.msgpack.Decoder[Any]] = {k: msgspec.msgpack.Decoder(t) for k, t in _TYPES.items()}
_MERGE: dict[int, Callable[[Any, Any], State]] = {CAUSAL: dvv.sync, COUNTER: crdt.counter_merge, SET: crdt.set_merge, MAP: crdt.map_merge}
_DIGEST_MASK = (1 << 63) - 1  # msgpack ints are int64: keep the digest positive


class WrongTypeError(ValueError):
    """An operation of one kind on a key holding another (Redis: WRONGTYPE)."""


def is_typed(version: Version | None) -> bool:
    """Whether a version is a typed record's. ``ctx`` alone does not say so: other
    protocols keep their own entries there (CASPaxos records name their parent)."""
    return version is not None and version.ctx is not None and "t" in version.ctx


def kind_of(rec: Record | None) -> int:
    if rec is None:
        return LWW
    ctx = rec.version.ctx
    return ctx.get("t", LWW) if ctx else LWW


def digest(value: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "big") & _DIGEST_MASK


def tag(kind: int, value: bytes) -> dict[str, int]:
    """The ``Version.ctx`` of a typed record holding ``value``."""
    return {"h": digest(value), "t": kind}


def empty(kind: int) -> State:
    return _TYPES[kind]()


def decode(kind: int, value: bytes) -> State:
    """The state in a typed record's value. ValueError when corrupt or of an unknown kind."""
    dec = _DECODERS.get(kind)
    if dec is None:
        raise ValueError(f"unknown record type {kind}")
    try:
        state = dec.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"corrupt {KIND_NAMES[kind]} state: {exc}") from None
    return dvv.decode(value) if kind == CAUSAL else state


def encode(kind: int, state: State) -> bytes:
    return dvv.encode(state) if kind == CAUSAL else crdt.encode(state)


def state_of(rec: Record | None, kind: int, now_ms: int) -> State:
    """The ``kind`` state a record holds: empty for no record, a tombstone or an expired
    value; WrongTypeError when it holds a live value of another type."""
    k = kind_of(rec)
    if k == kind and rec is not None and rec.value is not None:
        return decode(kind, rec.value)
    if rec is None or not rec.live_at(now_ms):
        return empty(kind)
    raise WrongTypeError(f"WRONGTYPE Operation against a key holding the wrong kind of value "
                         f"(it holds a {KIND_NAMES[k]} value, not a {KIND_NAMES[kind]})")


def typed_record(version: Version, kind: int, state: State) -> Record:
    value = encode(kind, state)
    return Record(Version(version.ts, version.node, tag(kind, value)), value)


def merge(a: Record, b: Record) -> Record:
    """Two records of the same typed kind merged; the larger version is kept."""
    kind = kind_of(a)
    assert a.value is not None and b.value is not None, "tombstones are not merged"
    state = _MERGE[kind](decode(kind, a.value), decode(kind, b.value))
    top = a.version if not b.version.newer_than(a.version) else b.version
    return typed_record(top, kind, state)


def _order(rec: Record) -> tuple[int, str, int, int]:
    """Total order across types: version, then (only on a tie, which distinct HLC
    stamps never produce) kind and digest, so every replica picks the same record."""
    ctx = rec.version.ctx or {}
    return (rec.version.ts, rec.version.node, ctx.get("t", LWW), ctx.get("h", 0))


def resolve(stored: Record | None, incoming: Record) -> tuple[Record | None, Version | None]:
    """What a replica holding ``stored`` keeps when ``incoming`` arrives.

    Returns ``(record, newer)``: ``record`` is what to store (None: keep ``stored``
    unchanged); ``newer`` is the stored version that kept an LWW ``incoming`` out
    (None when it was applied, merged, or was that very version: a retransmit) — the
    replica reports it to the coordinator (``RepWriteAck.newer``)."""
    if stored is None:
        return incoming, None
    ki, ks = kind_of(incoming), kind_of(stored)
    if ki != LWW and ki == ks and incoming.value is not None and stored.value is not None:
        assert incoming.version.ctx is not None and stored.version.ctx is not None  # typed: tagged
        if incoming.version.ctx.get("h") == stored.version.ctx.get("h"):  # same state
            return (incoming if incoming.version.newer_than(stored.version) else None), None
        merged = merge(stored, incoming)
        return (None if merged.version == stored.version else merged), None
    if _order(incoming) > _order(stored):
        return incoming, None
    if stored.version.key() == incoming.version.key():
        return None, None  # the same version again (a retransmit) counts as applied
    return None, Version(stored.version.ts, stored.version.node)  # as every engine reports it


def read_result(records: Iterable[Record | None]) -> Record | None:
    """What a read answers from the replicas' records: the newest, and when that is
    typed, the merge of every record of its kind that is newer than the newest record
    of another type (older ones were overwritten by it)."""
    recs = [r for r in records if r is not None]
    top = newest(recs)
    if top is None or not is_typed(top.version):
        return top
    kind = kind_of(top)
    if top.value is None:
        return top
    other = newest(r for r in recs if kind_of(r) != kind or r.value is None)
    out = top
    for r in recs:
        if r is not top and kind_of(r) == kind and r.value is not None and (
                other is None or r.version.newer_than(other.version)):
            try:
                out = merge(out, r)
            except ValueError:  # a replica sent a corrupt state: leave it out of the answer
                if out is top:
                    try:
                        decode(kind, top.value)
                    except ValueError:
                        out = r  # the newest itself is the corrupt one
    return out


def needs_repair(result: Record, rec: Record | None) -> bool:
    """Whether a replica that answered ``rec`` should be sent ``result``."""
    if rec is None:
        return True
    if is_typed(result.version) and kind_of(rec) == kind_of(result) and rec.value is not None:
        assert rec.version.ctx is not None and result.version.ctx is not None  # typed: tagged
        return rec.version.ctx.get("h") != result.version.ctx.get("h")
    return result.version.newer_than(rec.version)


# ------------------------------------------------------------------ updates
#: The operations each kind accepts (``Update.action``) and what their ``args`` are.
ACTIONS = {
    CAUSAL: {"put": "one value", "del": "nothing"},
    COUNTER: {"incr": "nothing (the amount is delta)"},
    SET: {"add": "one or more members", "rem": "one or more members"},
    MAP: {"hset": "field, value pairs", "hdel": "one or more fields"},
}
#: Members, fields or values one update may carry (Redis has no such limit; ours keeps
#: one update's work on the coordinator bounded — the state itself is bounded by
#: VALUE_BYTES_MAX).
UPDATE_ARGS_MAX = 1_024


def check_update(kind: int, action: str, args: list[bytes], ctx: bytes | None) -> dict[str, int]:
    """Validate an update; returns its decoded causal context. ValueError saying why."""
    if kind not in ACTIONS:
        raise ValueError(f"unknown type {kind} (causal=1, counter=2, set=3, map=4)")
    if action not in ACTIONS[kind]:
        raise ValueError(f"a {KIND_NAMES[kind]} takes {', '.join(sorted(ACTIONS[kind]))}, not {action!r}")
    if len(args) > UPDATE_ARGS_MAX:
        raise ValueError(f"{len(args)} arguments in one update (UPDATE_ARGS_MAX={UPDATE_ARGS_MAX})")
    need = {"put": len(args) == 1, "del": not args, "incr": not args, "add": bool(args), "rem": bool(args),
            "hset": bool(args) and len(args) % 2 == 0, "hdel": bool(args)}[action]
    if not need:
        raise ValueError(f"{KIND_NAMES[kind]} {action} takes {ACTIONS[kind][action]}")
    if ctx and kind != CAUSAL:
        raise ValueError("only causal-mode writes take a context")
    return dvv.decode_context(ctx) if kind == CAUSAL else {}


def apply_update(kind: int, state: State, action: str, args: list[bytes], delta: int, ctx: dict[str, int],
                 node: str, ts_floor: int) -> State:
    """The new state after ``node`` applies an update to its own local ``state``.

    ``ts_floor`` (the node's clock, an HLC reading) stamps map fields. Raises
    ValueError (SiblingLimitError, counter overflow) when refused."""
    if kind == CAUSAL:
        return dvv.update(state, ctx, args[0] if action == "put" else None, node)
    if kind == COUNTER:
        return crdt.counter_incr(state, node, delta)
    if kind == SET:
        return crdt.set_add(state, node, args) if action == "add" else crdt.set_remove(state, args)
    ts = crdt.map_next_ts(state, ts_floor)
    if action == "hset":
        return crdt.map_set(state, ts, node, dict(zip(args[::2], args[1::2])))
    return crdt.map_set(state, ts, node, dict.fromkeys(args))
