"""Consistent-hash ring with virtual nodes, and preference lists.

Frozen format: a token is the first 8 bytes (big-endian) of BLAKE2b-64 of the key;
node ``X`` owns the vnode tokens ``hash(b"X#0") .. hash(b"X#V-1")``. Changing either
re-homes every key, so both are part of the disk and wire format
(``RING_FORMAT``). Every node computes the same ring from the same membership.

A key's preference list is the first N *distinct* nodes met walking clockwise from
the key's token (Dynamo §4.3; riak_core ``chash``). Each vnode position's list is
precomputed, so a lookup is one bisect.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from .limits import VNODES_DEFAULT

RING_FORMAT = "blake2b64-vnode-v1"


def token(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    __slots__ = ("nodes", "vnodes", "n", "_tokens", "_owners", "_plists")

    def __init__(self, nodes: Iterable[str], n: int, vnodes: int = VNODES_DEFAULT) -> None:
        self.nodes: tuple[str, ...] = tuple(sorted(set(nodes)))
        if not self.nodes:
            raise ValueError("a ring needs at least one node")
        if n < 1:
            raise ValueError("replication factor N must be >= 1")
        self.vnodes = vnodes
        # N larger than the cluster: every node holds every key (and rounds can only
        # reach len(nodes) replicas); the configuration check warns about this.
        self.n = min(n, len(self.nodes))
        points = sorted(
            (token(f"{node}#{i}".encode()), node) for node in self.nodes for i in range(vnodes)
        )
        self._tokens = [t for t, _ in points]
        self._owners = [node for _, node in points]
        self._plists = [self._walk(i) for i in range(len(points))]

    def _walk(self, start: int) -> tuple[str, ...]:
        out: list[str] = []
        size = len(self._owners)
        for step in range(size):
            node = self._owners[(start + step) % size]
            if node not in out:
                out.append(node)
                if len(out) == self.n:
                    break
        return tuple(out)

    def _index(self, key: bytes) -> int:
        return self._index_of_token(token(key))

    def _index_of_token(self, tok: int) -> int:
        i = bisect.bisect_left(self._tokens, tok)
        return 0 if i == len(self._tokens) else i

    def preference_list_of_token(self, tok: int) -> tuple[str, ...]:
        return self._plists[self._index_of_token(tok)]

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def preference_list(self, key: bytes) -> tuple[str, ...]:
        """The N distinct replicas of ``key``, primary first."""
        return self._plists[self._index(key)]

    def extended_list(self, key: bytes) -> tuple[str, ...]:
        """Every node in ring order from the key: primaries, then fallback candidates."""
        start = self._index(key)
        out: list[str] = []
        size = len(self._owners)
        for step in range(size):
            node = self._owners[(start + step) % size]
            if node not in out:
                out.append(node)
                if len(out) == len(self.nodes):
                    break
        return tuple(out)

    def primary(self, key: bytes) -> str:
        return self._owners[self._index(key)]
