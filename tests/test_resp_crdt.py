"""RESP commands on typed keys (resp/commands_crdt.py) with redis-py, against real nodes."""

from __future__ import annotations

import pytest
import redis

from quorumkv import Client


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(nodes=3, replicas=3, storage="memory")


def test_sets_hashes_counters_through_different_nodes(cluster):
    a, b, c = (redis.Redis(port=_port(n.resp), socket_timeout=30) for n in cluster.nodes)
    assert a.sadd("cart", "milk", "eggs", "milk") == 2
    assert b.sadd("cart", "eggs", "bread") == 1
    assert c.srem("cart", "eggs", "nope") == 1
    assert a.smembers("cart") == {b"milk", b"bread"}
    assert b.scard("cart") == 2 and c.sismember("cart", "milk") == 1
    assert a.type("cart") == b"set"

    assert a.hset("user", mapping={"name": "ada", "lang": "py"}) == 2
    assert b.hset("user", "lang", "ocaml") == 0  # an update, not a new field
    assert c.hdel("user", "name", "missing") == 1
    assert a.hgetall("user") == {b"lang": b"ocaml"}
    assert b.hget("user", "lang") == b"ocaml" and b.hget("user", "name") is None and c.hlen("user") == 1

    assert a.execute_command("QKV.CINCRBY", "views", 5) == 5  # makes a PN-counter
    # INCR & co on a counter-typed key update the counter (on any other key: CASPaxos)
    assert b.incr("views") == 6 and c.decrby("views", 2) == 4 and a.decr("views") == 3
    assert b.get("views") == b"3"  # GET of a counter: its value
    assert c.execute_command("QKV.CINCRBY", "views", 10) == 13

    assert a.incrby("n", 5) == 5 and a.type("n") == b"string"  # a missing key: a plain integer string
    a.set("plain", "text")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        b.sadd("plain", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        c.get("cart")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        a.hget("cart", "f")
    with pytest.raises(redis.ResponseError, match="not an integer"):  # not a counter: CASPaxos INCR
        a.incr("plain")


def test_siblings_over_resp(cluster):
    a, b = (redis.Redis(port=_port(n.resp), socket_timeout=30) for n in cluster.nodes[:2])
    assert a.execute_command("QKV.PUTCTX", "doc", "", "v0") == b"OK"
    ctx, values = a.execute_command("QKV.SIBLINGS", "doc")
    assert values == [b"v0"] and a.get("doc") == b"v0"
    a.execute_command("QKV.PUTCTX", "doc", ctx, "left")
    b.execute_command("QKV.PUTCTX", "doc", ctx, "right")
    ctx2, values = b.execute_command("QKV.SIBLINGS", "doc")
    assert sorted(values) == [b"left", b"right"]
    with pytest.raises(redis.ResponseError, match="QKV.SIBLINGS"):
        a.get("doc")
    b.execute_command("QKV.PUTCTX", "doc", ctx2, "merged")
    assert a.get("doc") == b"merged"
    with pytest.raises(redis.ResponseError, match="malformed causal context"):
        a.execute_command("QKV.PUTCTX", "doc", "\xc1garbage", "x")
    # the Python client reads what RESP wrote, and the other way round
    with Client(cluster.addresses()) as cl:
        assert cl.get_siblings("doc").values == [b"merged"]
        assert cl.smembers("nothing") == set()
        cl.sadd("pyset", "x")
    assert a.smembers("pyset") == {b"x"}
