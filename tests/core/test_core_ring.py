"""Consistent-hash ring: preference lists, determinism, balance, movement, frozen hash."""

from __future__ import annotations

import hashlib
import random

import pytest

from quorumkv.core.ring import RING_FORMAT, Ring, token

NODES5 = ["n1", "n2", "n3", "n4", "n5"]
KEYS = [b"key-%d" % i for i in range(100_000)]


@pytest.fixture(scope="module")
def ring5() -> Ring:
    return Ring(NODES5, 3)


@pytest.fixture(scope="module")
def primaries5(ring5) -> list[str]:
    return [ring5.primary(k) for k in KEYS]


def test_token_is_frozen_blake2b64_big_endian():
    # Computed independently of quorumkv: changing the hash re-homes every key.
    for data in (b"", b"key-0", b"n1#0", "ключ".encode()):
        expected = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
        assert token(data) == expected
    assert RING_FORMAT == "blake2b64-vnode-v1"


def test_token_literal_value():
    # blake2b(b"quorumkv", digest_size=8) read big-endian, pinned as a literal so the
    # test also fails if the hash, digest size or byte order change.
    assert token(b"quorumkv") == 0xA59EE99898918EB9
    assert token(b"quorumkv") == int.from_bytes(
        hashlib.blake2b(b"quorumkv", digest_size=8).digest(), "big"
    )


def test_vnode_tokens_are_node_hash_index():
    r = Ring(["a", "b"], 1, vnodes=4)
    expected = sorted(token(f"{n}#{i}".encode()) for n in ("a", "b") for i in range(4))
    assert r._tokens == expected


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_preference_list_has_n_distinct_nodes(ring5, n):
    r = Ring(NODES5, n) if n != 3 else ring5
    for k in KEYS[:5000]:
        plist = r.preference_list(k)
        assert len(plist) == n
        assert len(set(plist)) == n
        assert set(plist) <= set(NODES5)
        assert plist[0] == r.primary(k)


def test_extended_list_starts_with_preference_list(ring5):
    for k in KEYS[:2000]:
        ext = ring5.extended_list(k)
        assert sorted(ext) == sorted(NODES5)
        assert ext[:3] == ring5.preference_list(k)


def test_deterministic_regardless_of_membership_order(ring5):
    shuffled = NODES5[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != NODES5
    other = Ring(reversed(shuffled + ["n1"]), 3)  # duplicates ignored too
    assert other.nodes == ring5.nodes
    for k in KEYS[:10_000]:
        assert other.preference_list(k) == ring5.preference_list(k)


def test_members_dict_is_accepted():
    members = {"n2": "h:2", "n1": "h:1", "n3": "h:3"}
    assert Ring(members, 2).preference_list(b"x") == Ring(["n3", "n1", "n2"], 2).preference_list(b"x")


def test_primary_share_balanced_within_25_percent(primaries5):
    mean = len(KEYS) / len(NODES5)
    counts = {n: 0 for n in NODES5}
    for p in primaries5:
        counts[p] += 1
    for node, c in counts.items():
        assert 0.75 * mean <= c <= 1.25 * mean, (node, c, counts)


def test_adding_sixth_node_moves_about_one_sixth_and_only_to_it(primaries5):
    ring6 = Ring(NODES5 + ["n6"], 3)
    moved = 0
    for k, before in zip(KEYS, primaries5):
        after = ring6.primary(k)
        if after != before:
            moved += 1
            assert after == "n6", (k, before, after)
    frac = moved / len(KEYS)
    assert 0.5 / 6 <= frac <= 1.5 / 6, frac


def test_n_larger_than_cluster_is_clamped():
    r = Ring(["a", "b"], 5)
    assert r.n == 2
    for k in KEYS[:500]:
        assert sorted(r.preference_list(k)) == ["a", "b"]


@pytest.mark.parametrize("nodes,n", [([], 3), (["a"], 0), (["a"], -1)])
def test_invalid_ring_rejected(nodes, n):
    with pytest.raises(ValueError):
        Ring(nodes, n)


def test_key_past_last_token_wraps_to_first_vnode():
    r = Ring(["a", "b", "c"], 2, vnodes=8)
    # Find a key hashing beyond the largest vnode token.
    last = r._tokens[-1]
    for i in range(1_000_000):
        k = b"wrap-%d" % i
        if token(k) > last:
            break
    else:  # pragma: no cover
        pytest.skip("no key past the last token found")
    assert r.primary(k) == r._owners[0]
    assert r.preference_list(k) == r._plists[0]


# ------------------------------------------------------------- ring-change plans
def test_plan_moves_for_a_join_gives_the_new_node_about_n_over_nodes():
    from quorumkv.core.ringchange import plan_moves

    old = ["n1", "n2", "n3", "n4", "n5"]
    moves = plan_moves(old, old + ["n6"], 3, 256)
    assert {to for _, to, _ in moves} == {"n6"}  # only the new node gains replicas
    assert {src for src, _, _ in moves} <= set(old)
    total = sum(share for _, _, share in moves)
    assert abs(total - 3 / 6) < 0.06, total  # it replicates ~N/nodes of the key space


def test_plan_moves_for_a_leave_hands_its_share_to_the_others():
    from quorumkv.core.ringchange import plan_moves

    old = ["n1", "n2", "n3", "n4", "n5", "n6"]
    moves = plan_moves(old, [n for n in old if n != "n2"], 3, 256)
    assert "n2" not in {to for _, to, _ in moves}
    total = sum(share for _, _, share in moves)
    assert abs(total - 3 / 6) < 0.06, total  # every key n2 replicated gets one new replica
    assert plan_moves(old, old, 3, 256) == []  # nothing changes, nothing moves
