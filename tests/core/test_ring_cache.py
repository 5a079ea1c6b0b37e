"""The ring's caches (vnode position per key, extended list per position) never change
an answer: cached and uncached lookups agree, also across a cache reset."""

from __future__ import annotations

from quorumkv.core import ring as ring_mod
from quorumkv.core.ring import Ring


def uncached(r: Ring, key: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    i = r._index_of_token(ring_mod.token(key))
    return r._plists[i], r._extended_walk(i)


def test_cached_lookups_equal_a_fresh_walk_and_survive_a_reset(monkeypatch):
    monkeypatch.setattr(ring_mod, "KEY_CACHE_MAX", 50)  # force several resets
    r = Ring([f"n{i}" for i in range(7)], 3, vnodes=16)
    keys = [b"k%d" % i for i in range(400)] + [b"x" * 500]  # and one key too long to cache
    for _ in range(2):  # the second pass hits the caches
        for key in keys:
            plist, ext = uncached(r, key)
            assert r.preference_list(key) == plist
            assert r.extended_list(key) == ext
            assert r.extended_list(key)[:3] == plist and sorted(ext) == sorted(r.nodes)
    assert len(r._key_index) <= 50
    assert b"x" * 500 not in r._key_index


def test_a_new_ring_does_not_inherit_answers():
    old = Ring(["a", "b", "c"], 2, vnodes=8)
    new = Ring(["a", "b", "c", "d"], 2, vnodes=8)
    keys = [b"k%d" % i for i in range(200)]
    for key in keys:
        old.extended_list(key)
    moved = [k for k in keys if new.preference_list(k) != old.preference_list(k)]
    assert moved, "adding a node moves some keys"
    for key in keys:
        assert new.extended_list(key) == uncached(new, key)[1]
