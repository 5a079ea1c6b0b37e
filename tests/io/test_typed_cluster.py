"""Causal mode and CRDTs against real node processes (issue 15)."""

from __future__ import annotations

import asyncio

import pytest

from quorumkv import Client
from quorumkv.client import AsyncClient
from quorumkv.client import SiblingsError
from quorumkv.errors import InvalidRequestError


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(nodes=3, replicas=3)


def test_two_clients_write_concurrently_both_are_siblings_and_a_resolution_supersedes_both(cluster):
    addrs = cluster.addresses()
    with Client([addrs[0]]) as c1, Client([addrs[1]]) as c2, Client([addrs[2]]) as c3:
        c1.put("cart", b"v0", context=None)
        ctx = c1.get_siblings("cart").context
        # both read the same context and write through different coordinators
        c1.put("cart", b"from-1", context=ctx)
        c2.put("cart", b"from-2", context=ctx)
        sib = c3.get_siblings("cart", r="ALL")
        assert sorted(sib.values) == [b"from-1", b"from-2"]
        with pytest.raises(SiblingsError, match="get_siblings"):
            c3.get("cart")
        c3.put("cart", b"resolved", context=sib.context)
        assert c1.get_siblings("cart", r="ALL").values == [b"resolved"]
        assert c2.get("cart") == b"resolved"
        # a causal delete keeps its context: the key reads as missing, and a stale write
        # (the context from before the delete) is a sibling, not a resurrection of "resolved"
        gone = c1.get_siblings("cart")
        c1.delete("cart", context=gone.context)
        assert c2.get("cart", default=None) is None
        c2.put("cart", b"late", context=gone.context)
        assert c3.get_siblings("cart", r="ALL").values == [b"late"]


def test_a_resolver_merges_siblings_on_get_and_writes_the_resolution_back(cluster):
    addrs = cluster.addresses()
    with Client([addrs[0]]) as c1, Client([addrs[1]]) as c2, \
            Client(addrs, resolver=lambda values: b"+".join(sorted(values))) as resolving:
        c1.put("doc", b"x", context=None)
        c2.put("doc", b"y", context=None)  # no context: a sibling, whichever landed first
        assert resolving.get("doc", r="ALL") == b"x+y"
        assert c1.get_siblings("doc", r="ALL").values == [b"x+y"]  # written back, superseding both


def test_counter_set_map_and_wrong_type(cluster):
    with Client(cluster.addresses()) as c:
        assert c.counter_incr("views", 5) == 5
        assert c.counter_incr("views", -2) == 3
        assert c.counter_value("views", r="ALL") == 3
        c.sadd("s", "a", "b", "c")
        c.srem("s", "b")
        assert c.smembers("s", r="ALL") == {b"a", b"c"}
        c.hset("h", {"f1": "1", "f2": "2"})
        c.hdel("h", "f1")
        assert c.hgetall("h", r="ALL") == {b"f2": b"2"}
        assert c.hget("h", "f2") == b"2" and c.hget("h", "nope") is None
        # at ALL: the check is made on the applying primary's copy (docs/consistency.md), which a
        # write acked by W=2 of 3 may not have reached yet
        c.put("plain", b"text", w="ALL")
        with pytest.raises(InvalidRequestError, match="WRONGTYPE"):
            c.sadd("plain", "x")
        with pytest.raises(InvalidRequestError, match="WRONGTYPE"):
            c.get("views")
        with pytest.raises(InvalidRequestError, match="WRONGTYPE"):
            c.smembers("views")
        assert c.smembers("missing") == set() and c.counter_value("missing") == 0


def test_updates_through_every_node_converge_on_every_replica(cluster):
    """Each node is an applying primary (N=3 of 3): increments made through all of them
    concurrently are all counted, on every replica (reads at ALL merge nothing away)."""
    async def run():
        clients = [AsyncClient([a]) for a in cluster.addresses()]
        try:
            await asyncio.gather(*(c.counter_incr("hits") for c in clients for _ in range(20)))
            await asyncio.gather(*(c.sadd("members", f"m{i}-{j}") for i, c in enumerate(clients) for j in range(5)))
            return ([await c.counter_value("hits", r="ALL") for c in clients],
                    [await c.smembers("members", r="ALL") for c in clients])
        finally:
            for c in clients:
                await c.close()

    counts, members = asyncio.run(run())
    assert counts == [60, 60, 60]
    assert all(m == {f"m{i}-{j}".encode() for i in range(3) for j in range(5)} for m in members)


def test_a_killed_replica_gets_the_typed_updates_it_missed_and_all_replicas_converge(cluster):
    """Hinted handoff and read repair carry typed records like any other; every
    replica ends with the same state (inspect shows the state digest per replica)."""
    import signal

    from helpers import wait_for

    n3 = cluster.node("n3")
    with Client(cluster.addresses()[:2]) as c:
        c.sadd("cart", "before")
        c.counter_incr("n", 1)
        assert cluster.signal(n3, signal.SIGKILL)
        wait_for(lambda: not n3.running(), 10, "n3 to die")
        c.sadd("cart", "during")
        c.counter_incr("n", 2)
        cluster.start(n3)
        cluster.wait_ready([n3])

        def converged(key):
            info = c.inspect(key)
            versions = {r.version for r in info.replicas if r.role == "primary" and r.answered}
            return len([r for r in info.replicas if r.answered]) == 3 and len(versions) == 1

        wait_for(lambda: converged("cart") and converged("n"), 30, "typed keys to converge on all replicas",
                 detail=lambda: c.inspect("cart"))
        assert c.smembers("cart", r="ALL") == {b"before", b"during"}  # n3's copy is the same state
        assert c.counter_value("n", r="ALL") == 3
