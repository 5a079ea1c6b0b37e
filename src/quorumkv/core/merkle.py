"""Merkle trees over a replica pair's shared keys, and the diff between two of them.

Pure and deterministic. A tree has ``2**leaf_bits`` leaves; a key falls in the leaf
given by the top ``leaf_bits`` bits of its ring token (so a leaf is a contiguous
slice of the ring, as in Cassandra's repair trees). A leaf's hash is the XOR of
``entry_hash(key, version)`` over its keys: order-free, so a replica can fold keys
in while it scans storage in any order, and updatable in place. Inner nodes hash
their two children with BLAKE2b-64; the root is level ``leaf_bits``.

Tombstones take part through their version; expiry travels with the version, so
an expired value is compared like any other. Two replicas whose leaves are equal
hold the same (key, version) pairs there, up to a 64-bit hash collision.

Typed records (counters, sets, maps, causal sibling sets: core/typed.py) merge
instead of replacing, so two replicas can hold different states under the same
version. Their version's ``ctx`` carries a digest of the state (``"h"``), which the
entry hash covers; ``compare_entries`` moves such a key both ways when the digests
differ, whichever version is newer (each side then merges the other's state).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .version import Version

#: Leaves per tree = 2**LEAF_BITS (Cassandra's repair trees: 2**15 leaves max; ours
#: travel whole in one message, 8 bytes a leaf, so 1024 leaves = 8 KiB).
LEAF_BITS_DEFAULT = 10
LEAF_BITS_MAX = 16
_MASK64 = (1 << 64) - 1


def leaf_of(token: int, leaf_bits: int) -> int:
    """The leaf of a 64-bit ring token: its top ``leaf_bits`` bits."""
    return token >> (64 - leaf_bits)


def entry_hash(key: bytes, version: Version) -> int:
    data = key + b"\x00" + version.ts.to_bytes(8, "big") + version.node.encode()
    if version.ctx and "h" in version.ctx:  # a typed record: its state's digest too
        data += b"\x00" + version.ctx["h"].to_bytes(8, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _inner(left: int, right: int) -> int:
    if not left and not right:
        return 0  # empty subtrees hash to 0: two empty trees agree at the root
    data = left.to_bytes(8, "big") + right.to_bytes(8, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class MerkleTree:
    """Leaves filled by ``add``; ``levels()`` computes the inner hashes on demand."""

    __slots__ = ("leaf_bits", "leaves", "keys", "_levels")

    def __init__(self, leaf_bits: int = LEAF_BITS_DEFAULT, leaves: list[int] | None = None) -> None:
        if not 1 <= leaf_bits <= LEAF_BITS_MAX:
            raise ValueError(f"leaf_bits must be within 1..{LEAF_BITS_MAX}")
        self.leaf_bits = leaf_bits
        size = 1 << leaf_bits
        if leaves is not None and len(leaves) != size:
            raise ValueError(f"a tree of {leaf_bits} leaf bits has {size} leaves, got {len(leaves)}")
        self.leaves: list[int] = list(leaves) if leaves is not None else [0] * size
        self.keys = 0  # entries folded in (not carried on the wire)
        self._levels: list[list[int]] | None = None

    def add(self, leaf: int, h: int) -> None:
        self.leaves[leaf] ^= h
        self.keys += 1
        self._levels = None

    def add_entry(self, token: int, key: bytes, version: Version) -> None:
        self.add(leaf_of(token, self.leaf_bits), entry_hash(key, version))

    def levels(self) -> list[list[int]]:
        """``levels()[0]`` are the leaves, ``levels()[-1] == [root]``."""
        if self._levels is None:
            levels = [self.leaves]
            while len(levels[-1]) > 1:
                below = levels[-1]
                levels.append([_inner(below[i], below[i + 1]) for i in range(0, len(below), 2)])
            self._levels = levels
        return self._levels

    @property
    def root(self) -> int:
        return self.levels()[-1][0]

    # wire form: the leaves, 8 bytes each, big-endian
    def leaves_bytes(self) -> bytes:
        return b"".join(h.to_bytes(8, "big") for h in self.leaves)

    @classmethod
    def from_leaves_bytes(cls, leaf_bits: int, data: bytes) -> "MerkleTree":
        if len(data) != 8 << leaf_bits:
            raise ValueError(f"expected {8 << leaf_bits} bytes of leaves, got {len(data)}")
        return cls(leaf_bits, [int.from_bytes(data[i:i + 8], "big") for i in range(0, len(data), 8)])


def diff(a: MerkleTree, b: MerkleTree) -> tuple[list[int], int]:
    """Leaves whose hashes differ, found by descending from the root only into
    subtrees that differ; also returns how many tree nodes were compared."""
    if a.leaf_bits != b.leaf_bits:
        raise ValueError("trees of different shapes cannot be compared")
    la, lb = a.levels(), b.levels()
    compared = 0
    frontier = [0]
    for depth in range(len(la) - 1, -1, -1):
        nxt = []
        for i in frontier:
            compared += 1
            if la[depth][i] != lb[depth][i]:
                nxt.append(i)
        if depth == 0:
            return nxt, compared
        frontier = [c for i in nxt for c in (2 * i, 2 * i + 1)]
    return [], compared  # pragma: no cover - the loop always returns at depth 0


def compare_entries(mine: dict[bytes, Version], theirs: dict[bytes, Version]) -> tuple[list[bytes], list[bytes]]:
    """What to send and what to fetch, given both sides' versions in the differing
    leaves: ``(push, pull)`` — push where ours is newer or they lack it, pull where
    theirs is newer or we lack it. Equal versions move nothing. Sorted, for
    determinism."""
    push = [k for k, v in mine.items() if v.newer_than(theirs.get(k)) or _states_differ(v, theirs.get(k))]
    pull = [k for k, v in theirs.items() if v.newer_than(mine.get(k)) or _states_differ(v, mine.get(k))]
    return sorted(push), sorted(pull)


def _states_differ(a: Version, b: Version | None) -> bool:
    """Typed records whose state digests differ: move them both ways, whichever
    version is newer (the newer side's state may still lack what the other holds)."""
    return (b is not None and a.ctx is not None and b.ctx is not None and "h" in a.ctx and "h" in b.ctx
            and a.ctx["h"] != b.ctx["h"])


class BucketCollector:
    """Collects items for a set of wanted leaves under a bound on items and bytes,
    keeping *whole* leaves: past the bound it drops the highest-numbered leaf (its
    keys stay different and the next session takes them). The lowest wanted leaf is
    always kept, so every session makes progress."""

    __slots__ = ("wanted", "items_max", "bytes_max", "by_leaf", "items", "bytes", "dropped")

    def __init__(self, wanted: Iterable[int], items_max: int, bytes_max: int) -> None:
        self.wanted = set(wanted)
        self.items_max = items_max
        self.bytes_max = bytes_max
        self.by_leaf: dict[int, list[tuple[object, int]]] = {}
        self.items = 0
        self.bytes = 0
        self.dropped: set[int] = set()

    def add(self, leaf: int, item: object, size: int) -> None:
        if leaf not in self.wanted:
            return
        self.by_leaf.setdefault(leaf, []).append((item, size))
        self.items += 1
        self.bytes += size
        while (self.items > self.items_max or self.bytes > self.bytes_max) and len(self.wanted) > 1:
            top = max(self.wanted)
            self.wanted.discard(top)
            self.dropped.add(top)
            for _, sz in self.by_leaf.pop(top, []):
                self.items -= 1
                self.bytes -= sz

    @property
    def truncated(self) -> bool:
        return bool(self.dropped)

    def leaves(self) -> list[int]:
        return sorted(self.wanted)

    def collected(self) -> list[object]:
        return [item for leaf in sorted(self.by_leaf) for item, _ in self.by_leaf[leaf]]
