"""Convergent replicated data types (state-based CRDTs), riak_dt style.

Written from Shapiro, Preguiça, Baquero, Zawirski, "A comprehensive study of
Convergent and Commutative Replicated Data Types" (2011) and Almeida et al., "Delta
State Replicated Data Types" (2018, for the dotted OR-set). Each type is a frozen
msgspec struct with a canonical encoding (equal states give equal bytes), a
``merge`` that is commutative, associative and idempotent (tests/core/test_core_crdt.py
checks all three with Hypothesis), and update functions that the *coordinating
replica* applies to its own local state (core/typed_coord.py): like Riak, an update
is made where the node's previous updates of the key already are, so per-node
entries only grow and a node's dots are contiguous.

* ``PNCounter`` — one increment total and one decrement total per coordinating
  node; value = sum(p) - sum(n); merge = pointwise max.
* ``ORSet`` — observed-remove, add-wins set with dots: each element carries the
  dots of the adds that put it there, ``vv`` is every dot the state has seen. A
  remove drops the element's dots that the coordinator's copy holds; an add
  concurrent with it (a dot the remover never saw) survives: add wins.
* ``LWWMap`` — a map of fields, each a last-writer-wins register stamped
  ``(ts, node)``; a removed field keeps a tombstone stamp so an older set of it
  arriving later cannot bring it back. Ties (impossible in practice: a node stamps
  one key's fields strictly increasingly) break on the value bytes, so merge stays
  commutative.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .dvv import join_vv

#: Redis's INCRBY range: a counter's value, and each per-node total, stays an int64.
INT64_MAX = (1 << 63) - 1


class PNCounter(msgspec.Struct, frozen=True, array_like=True):
    p: dict[str, int] = {}
    n: dict[str, int] = {}


class SetEntry(msgspec.Struct, frozen=True, array_like=True):
    elem: bytes
    dots: list[tuple[str, int]]  # sorted


class ORSet(msgspec.Struct, frozen=True, array_like=True):
    vv: dict[str, int] = {}
    entries: list[SetEntry] = []  # sorted by elem


class MapField(msgspec.Struct, frozen=True, array_like=True):
    field: bytes
    ts: int
    node: str
    value: bytes | None  # None: removed (a tombstone stamp)


class LWWMap(msgspec.Struct, frozen=True, array_like=True):
    fields: list[MapField] = []  # sorted by field


_encode = msgspec.msgpack.Encoder(order="deterministic").encode


def encode(state: object) -> bytes:
    """Canonical bytes of any state here (dicts sorted by key, lists kept sorted)."""
    return _encode(state)


# ---------------------------------------------------------------- PN-counter
def counter_value(c: PNCounter) -> int:
    return sum(c.p.values()) - sum(c.n.values())


def counter_incr(c: PNCounter, node: str, delta: int) -> PNCounter:
    """``delta`` added by ``node`` (negative: a decrement). ValueError on int64 overflow."""
    if delta == 0:
        return c  # no entry of 0: merge (pointwise max) must not depend on absent vs 0
    value = counter_value(c) + delta
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError("increment or decrement would overflow")
    p, n = dict(c.p), dict(c.n)
    side = p if delta >= 0 else n
    total = side.get(node, 0) + abs(delta)
    if total > INT64_MAX:
        raise ValueError("increment or decrement would overflow")
    side[node] = total
    return PNCounter(dict(sorted(p.items())), dict(sorted(n.items())))


def counter_merge(a: PNCounter, b: PNCounter) -> PNCounter:
    return PNCounter(dict(sorted(join_vv(a.p, b.p).items())), dict(sorted(join_vv(a.n, b.n).items())))


# ---------------------------------------------------------------- OR-set
def set_members(s: ORSet) -> list[bytes]:
    return [e.elem for e in s.entries]


def _set_make(vv: dict[str, int], entries: dict[bytes, set[tuple[str, int]]]) -> ORSet:
    return ORSet(dict(sorted(vv.items())),
                 [SetEntry(e, sorted(d)) for e, d in sorted(entries.items()) if d])


def set_add(s: ORSet, node: str, elems: Iterable[bytes]) -> ORSet:
    """Add ``elems`` under one fresh dot of ``node``; an element's older dots that
    this state holds are replaced (they are observed, and the dot supersedes them)."""
    counter = s.vv.get(node, 0) + 1
    entries = {e.elem: set(e.dots) for e in s.entries}
    for elem in elems:
        entries[elem] = {(node, counter)}
    vv = dict(s.vv)
    vv[node] = counter
    return _set_make(vv, entries)


def set_remove(s: ORSet, elems: Iterable[bytes]) -> ORSet:
    """Remove ``elems`` as this state sees them; their dots stay in ``vv`` (removed)."""
    drop = set(elems)
    return ORSet(s.vv, [e for e in s.entries if e.elem not in drop])


def set_merge(a: ORSet, b: ORSet) -> ORSet:
    ea = {e.elem: set(e.dots) for e in a.entries}
    eb = {e.elem: set(e.dots) for e in b.entries}
    out: dict[bytes, set[tuple[str, int]]] = {}
    for elem in ea.keys() | eb.keys():
        da, db = ea.get(elem, set()), eb.get(elem, set())
        out[elem] = ((da & db) | {d for d in da - db if d[1] > b.vv.get(d[0], 0)}
                     | {d for d in db - da if d[1] > a.vv.get(d[0], 0)})
    return _set_make(join_vv(a.vv, b.vv), out)


# ---------------------------------------------------------------- LWW-map
def _stamp(f: MapField) -> tuple[int, str, bool, bytes]:
    return (f.ts, f.node, f.value is not None, f.value or b"")


def map_items(mp: LWWMap) -> list[tuple[bytes, bytes]]:
    """The live fields, sorted."""
    return [(f.field, f.value) for f in mp.fields if f.value is not None]


def map_get(mp: LWWMap, field: bytes) -> bytes | None:
    for f in mp.fields:
        if f.field == field:
            return f.value
    return None


def map_next_ts(mp: LWWMap, ts_floor: int) -> int:
    """A stamp above every one in ``mp`` and at least ``ts_floor`` (the node's clock)."""
    return max([ts_floor] + [f.ts + 1 for f in mp.fields])


def map_set(mp: LWWMap, ts: int, node: str, updates: dict[bytes, bytes | None]) -> LWWMap:
    """Set (or, with value None, remove) fields, stamped ``(ts, node)``."""
    fields = {f.field: f for f in mp.fields}
    for field, value in updates.items():
        new = MapField(field, ts, node, value)
        cur = fields.get(field)
        if cur is None or _stamp(new) > _stamp(cur):
            fields[field] = new
    return LWWMap([fields[k] for k in sorted(fields)])


def map_merge(a: LWWMap, b: LWWMap) -> LWWMap:
    fields = {f.field: f for f in a.fields}
    for f in b.fields:
        cur = fields.get(f.field)
        if cur is None or _stamp(f) > _stamp(cur):
            fields[f.field] = f
    return LWWMap([fields[k] for k in sorted(fields)])
