"""Token-aware routing in Client/AsyncClient: each plain get/put goes to one of the
key's replicas (learned from a node's Pong), and falls back to any node on failure."""

from __future__ import annotations

import asyncio

from quorumkv import AsyncClient, Client
from quorumkv.core import messages as m
from quorumkv.core.ring import Ring

KEYS = [f"route-{i}".encode() for i in range(40)]


def test_routes_only_to_replicas_from_a_pong_and_not_for_one_address():
    members = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, 6)}
    pong = m.Pong(1, "n1", 3, 2, 2, members, ring=sorted(members), vnodes=16)
    c = Client(list(members.values()), token_aware=True)
    assert c.token_aware and not Client(list(members.values())).token_aware  # opt-in
    c._learn_ring(pong)
    ring = Ring(sorted(members), 3, 16)
    addr_idx = {a: i for i, a in enumerate(members.values())}
    for key in KEYS:
        idx = c._routed(m.Put(1, key, b"v"))
        assert idx in {addr_idx[members[n]] for n in ring.preference_list(key)}
        assert c._routed(m.Ping(2)) is None  # only keyed plain requests are routed
    # an unreachable node is left out of the routes for a while: the next replica
    key = KEYS[0]
    first = c._routed(m.Get(1, key))
    c._route_failed(first)
    second = c._routed(m.Get(1, key))
    assert second != first and second in {addr_idx[members[n]] for n in ring.preference_list(key)}
    assert c._ring_stale()  # a failure makes the client ask for the ring again
    # a node of an old version (no ring in its Pong) turns routing off, nothing breaks
    c._learn_ring(m.Pong(1, "n1", 3, 2, 2, members))
    assert c._routed(m.Get(1, key)) is None
    # a client given one address talks to that node only
    assert not Client([members["n1"]], token_aware=True).token_aware


def test_token_aware_clients_coordinate_on_a_replica_and_fail_over(make_cluster):
    cluster = make_cluster(5, 3, storage="memory")
    addrs = [n.address for n in cluster.nodes]
    with Client(addrs, token_aware=True) as c:
        for key in KEYS:
            c.put(key, key)
            ring = c._ring
            assert ring is not None and ring.nodes == tuple(sorted(n.id for n in cluster.nodes))
            replicas = {cluster.nodes[int(n[1:]) - 1].address for n in ring.preference_list(key)}
            host, port = c.nodes[c._current]
            assert f"{host}:{port}" in replicas  # the coordinator was one of the key's replicas
            assert c.get(key) == key
        assert len(c._pool) >= 1  # connections to several nodes are kept, not reopened

    async def async_round() -> None:
        async with AsyncClient(addrs, token_aware=True) as ac:
            await asyncio.gather(*(ac.put(k, b"a" + k) for k in KEYS))
            got = await asyncio.gather(*(ac.get(k) for k in KEYS))
            assert got == [b"a" + k for k in KEYS]
            assert ac._ring is not None and ac._pool  # routed over connections to the replicas

    asyncio.run(async_round())
    # a stopped node: its keys are still served through the others
    victim = cluster.nodes[1]
    assert cluster.stop(victim)
    with Client(addrs, token_aware=True) as c:
        for key in KEYS:
            c.put(key, b"after-" + key)
            assert c.get(key) == b"after-" + key

    async def async_after() -> None:
        async with AsyncClient(addrs, token_aware=True) as ac:
            got = await asyncio.gather(*(ac.get(k) for k in KEYS))
            assert got == [b"after-" + k for k in KEYS]

    asyncio.run(async_after())
