"""Dotted version vector sets: siblings that never lose a concurrent write.

Written from Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version Vectors:
Logical Clocks for Optimistic Replication" (2010) and the later "causal context +
dot store" formulation of Almeida, Shoker, Baquero, "Delta State Replicated Data
Types" (2018). Riak's DVV sets are the same idea; nothing here is taken from its code.

A key in *causal* mode stores a ``DVVSet``:

* ``vv`` — the causal context: for each *coordinating node* the highest event
  counter whose effect this state includes. Every event of node ``r`` on this key
  was made by ``r`` itself, from its own local copy, one after another
  (core/typed_coord.py serialises them), so ``r``'s events are the contiguous range
  1..vv[r]: one integer per coordinating node describes them all. The vector is
  bounded by the number of nodes that ever coordinated a write of the key, never by
  the number of clients (the coordinator's dot, not the client's).
* ``siblings`` — the values still current, each tagged with the *dot*
  ``(node, counter)`` of the event that wrote it. Every dot is covered by ``vv``.

A value whose dot is covered by a context but absent from that state was
*superseded*: someone who had seen it wrote after it. That is the whole rule:

* ``update(state, ctx, value, coordinator)``: drop the siblings ``ctx`` covers,
  add ``value`` under a fresh dot of ``coordinator``. A client that read
  ``(values, ctx)`` and writes with that ``ctx`` replaces exactly what it read; a
  write with an empty (or stale) context adds a sibling.
* ``sync(a, b)``: a sibling survives if both hold it, or if the side lacking it has
  not seen its dot. Commutative, associative, idempotent (tests/core/test_core_dvv.py).
* A delete (``value=None``) is an update that adds no sibling: the context it
  carries stays in ``vv``, so a replica still holding a deleted value drops it on
  sync, while a write concurrent with the delete (a dot the delete never saw)
  survives as a sibling. No resurrection, no lost concurrent write.

**Sibling bound.** ``update`` refuses (``SiblingLimitError``) a write that would
leave more than ``SIBLINGS_MAX`` siblings: nothing is dropped silently, the writer
is told to read the siblings and write a resolution with their context (a resolving
write always passes: it removes what it saw). ``sync`` never drops a sibling, so a
key written concurrently through several coordinators can exceed the bound by the
writes in flight; the next write through any coordinator is then refused until
someone resolves. Riak's answer to "sibling explosion" is a warning at 25 and a
hard limit of 100 siblings; ours is one named limit, counted
(``typed_siblings_refused`` in the node's statistics).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

#: Siblings a causal-mode key may hold after a write (Riak: warns at 25, refuses at
#: 100). Each is a whole value shipped on every read and repair, so a key past a few
#: dozen is an application that never resolves; 64 leaves room for bursts.
SIBLINGS_MAX = 64


class SiblingLimitError(ValueError):
    """A causal write would leave more than SIBLINGS_MAX siblings: resolve first."""


class Sibling(msgspec.Struct, frozen=True, array_like=True):
    node: str  # the dot: (node, counter)
    counter: int
    value: bytes


class DVVSet(msgspec.Struct, frozen=True, array_like=True):
    vv: dict[str, int] = {}
    siblings: list[Sibling] = []  # sorted by dot, so equal states encode equally


EMPTY = DVVSet()
_encode = msgspec.msgpack.Encoder(order="deterministic").encode
_decode = msgspec.msgpack.Decoder(DVVSet).decode
_ctx_decode = msgspec.msgpack.Decoder(dict[str, int]).decode


def _covered(vv: dict[str, int], node: str, counter: int) -> bool:
    return counter <= vv.get(node, 0)


def join_vv(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Pointwise maximum of two version vectors."""
    out = dict(a)
    for node, c in b.items():
        if c > out.get(node, 0):
            out[node] = c
    return out


def _make(vv: dict[str, int], siblings: Iterable[Sibling]) -> DVVSet:
    return DVVSet(dict(sorted(vv.items())), sorted(siblings, key=lambda s: (s.node, s.counter)))


def sync(a: DVVSet, b: DVVSet) -> DVVSet:
    """The merge of two replicas' states (the join of the causal lattice)."""
    da = {(s.node, s.counter): s for s in a.siblings}
    db = {(s.node, s.counter): s for s in b.siblings}
    keep = [s for d, s in da.items() if d in db or not _covered(b.vv, *d)]
    keep += [s for d, s in db.items() if d not in da and not _covered(a.vv, *d)]
    return _make(join_vv(a.vv, b.vv), keep)


def update(state: DVVSet, ctx: dict[str, int], value: bytes | None, coordinator: str,
           siblings_max: int = SIBLINGS_MAX) -> DVVSet:
    """A write of ``value`` (None: delete) that saw ``ctx``, coordinated by
    ``coordinator`` from its local ``state``. Raises SiblingLimitError past the bound."""
    counter = max(state.vv.get(coordinator, 0), ctx.get(coordinator, 0)) + 1
    keep = [s for s in state.siblings if not _covered(ctx, s.node, s.counter)]
    if value is not None:
        keep.append(Sibling(coordinator, counter, value))
    if len(keep) > siblings_max:
        raise SiblingLimitError(
            f"key would hold {len(keep)} siblings (SIBLINGS_MAX={siblings_max}): read them with their "
            "context and write a resolution with that context")
    vv = join_vv(state.vv, ctx)
    vv[coordinator] = counter
    return _make(vv, keep)


def values(state: DVVSet) -> list[bytes]:
    """The current siblings' values, in dot order (empty: missing or deleted)."""
    return [s.value for s in state.siblings]


def context(state: DVVSet) -> dict[str, int]:
    """What a reader saw: pass it back with the next write to supersede these siblings."""
    return dict(state.vv)


def encode(state: DVVSet) -> bytes:
    """Canonical bytes: equal states give equal bytes (Merkle digests rely on it)."""
    return _encode(state)


def decode(data: bytes) -> DVVSet:
    state = _decode(data)
    for s in state.siblings:  # the invariant every rule above relies on
        if not _covered(state.vv, s.node, s.counter):
            raise ValueError(f"corrupt DVV set: sibling dot ({s.node}, {s.counter}) outside its context")
    return state


def encode_context(ctx: dict[str, int]) -> bytes:
    """The opaque context a client carries between a read and a write."""
    return _encode(dict(sorted(ctx.items())))


def decode_context(data: bytes | None) -> dict[str, int]:
    """Parse a client's context (None or empty: no context). ValueError when malformed."""
    if not data:
        return {}
    try:
        ctx = _ctx_decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed causal context: {exc}") from None
    if any(c < 0 for c in ctx.values()):
        raise ValueError("malformed causal context: negative counter")
    return ctx
