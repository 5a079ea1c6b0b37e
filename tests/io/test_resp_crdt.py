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
    assert b.incr("views") == 6 and c.decrby("views", 2) == 4 and a.decr("views") == 3  # counter-typed: ours
    assert b.get("views") == b"3" and a.type("views") == b"string"  # GET of a counter: its value
    assert c.execute_command("QKV.CINCRBY", "views", 10) == 13
    with Client(cluster.addresses()) as cl:
        assert cl.counter_value("views") == 13
    assert a.incr("plain-counter") == 1 and b.incrby("plain-counter", 4) == 5  # not a counter: the other INCR

    assert a.incrby("n", 5) == 5 and a.type("n") == b"string"  # a missing key: a plain integer string
    a.set("plain", "text")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        b.sadd("plain", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        c.get("cart")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        a.hget("cart", "f")
    with pytest.raises(redis.ResponseError):
        a.incr("plain")  # a plain non-integer string: the other INCR's error


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


def test_incr_on_a_plain_key_goes_to_an_existing_handler_and_counters_stay_ours():
    """When another INCRBY is registered (plain string counters), only counter-typed keys
    are ours; the rest go to it, unchanged (pure: the handler generators driven by hand)."""
    from quorumkv.core import crdt, typed
    from quorumkv.core import messages as m
    from quorumkv.core.version import Version
    from quorumkv.resp.commands import Session
    from quorumkv.resp.commands_crdt import ReadOp, UpdateOp, _incr_family

    calls = []

    def plain_incrby(s, node, args):
        calls.append(args)
        yield (ReadOp(args[1]),)
        return b":42\r\n"

    handler = _incr_family(plain_incrby, 1, None)
    s = Session(1)
    # a plain string key: delegated
    gen = handler(s, None, [b"incrby", b"k", b"5"])
    assert next(gen) == (ReadOp(b"k"),)
    assert gen.send((m.Reply(1, m.OK, b"7", Version(1, "n1")),)) == (ReadOp(b"k"),)  # the fallback's own read
    with pytest.raises(StopIteration) as stop:
        gen.send((m.Reply(2, m.OK, b"7", Version(1, "n1")),))
    assert stop.value.value == b":42\r\n" and calls == [[b"incrby", b"k", b"5"]]
    # a counter-typed key: a PN-counter update, the fallback untouched
    rec = typed.typed_record(Version(1, "n1"), typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), "n1", 2))
    gen = handler(s, None, [b"incrby", b"c", b"5"])
    next(gen)
    op = gen.send((m.Reply(1, m.OK, rec.value, rec.version),))
    assert op == (UpdateOp(b"c", typed.COUNTER, "incr", (), 5),)
    after = typed.typed_record(Version(2, "n1"), typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), "n1", 7))
    with pytest.raises(StopIteration) as stop:
        gen.send((m.Reply(2, m.OK, after.value, after.version),))
    assert stop.value.value == b":7\r\n" and len(calls) == 1
