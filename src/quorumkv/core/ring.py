"""Consistent-hash ring with virtual nodes, and preference lists.

Frozen format: a token is the first 8 bytes (big-endian) of BLAKE2b-64 of the key;
node ``X`` owns the vnode tokens ``hash(b"X#0") .. hash(b"X#V-1")``. Changing either
re-homes every key, so both are part of the disk and wire format
(``RING_FORMAT``). Every node computes the same ring from the same membership.

A key's preference list is the first N *distinct* nodes met walking clockwise from
the key's token (Dynamo §4.3; riak_core ``chash``). Each vnode position's list is
precomputed, so a lookup is one bisect; the extended list (primaries, then every
fallback in ring order) is computed once per vnode position, on first use. A Ring
is immutable: a membership change builds a new one, which drops every cache.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from .limits import VNODES_DEFAULT

RING_FORMAT = "blake2b64-vnode-v1"

#: Keys whose vnode position a ring remembers (a request's coordinator looks its key
#: up several times: primaries, fallbacks, future owners). Cleared when full, so a
#: scan over many keys costs nothing but misses. Only short keys are remembered
#: (KEY_CACHE_KEY_BYTES_MAX): the cache holds at most ~16k x 128 bytes of keys.
KEY_CACHE_MAX = 16_384
KEY_CACHE_KEY_BYTES_MAX = 128


def token(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    __slots__ = ("nodes", "vnodes", "n", "_tokens", "_owners", "_plists", "_ext", "_key_index")

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
        self._ext: dict[int, tuple[str, ...]] = {}  # vnode position -> extended list
        self._key_index: dict[bytes, int] = {}  # key -> vnode position (KEY_CACHE_MAX)

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
        cache = self._key_index
        i = cache.get(key)
        if i is None:
            i = self._index_of_token(token(key))
            if len(key) <= KEY_CACHE_KEY_BYTES_MAX:
                if len(cache) >= KEY_CACHE_MAX:
                    cache.clear()
                cache[key] = i
        return i

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
        ext = self._ext.get(start)
        if ext is None:
            ext = self._ext[start] = self._extended_walk(start)
        return ext

    def _extended_walk(self, start: int) -> tuple[str, ...]:
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
