"""Atomic Redis commands and transactions against a real 3-node cluster with redis-py:
MULTI refused before anything runs; QKV.CAS, INCR family, SETNX, GETDEL and SET NX/XX/GET
on CASPaxos (core/paxos.py); QUORUM MODE LINEARIZABLE."""

from __future__ import annotations

import threading

import pytest

redis = pytest.importorskip("redis")

from quorumkv.cli.localcluster import LocalCluster  # noqa: E402
from quorumkv.cli.testing import free_base_port  # noqa: E402

pytestmark = pytest.mark.integration


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(str(tmp_path_factory.mktemp("atomic") / "c"))
    c.create(3, base_port=free_base_port(6), replicas=3, storage="sqlite")
    c.up()
    yield c
    c.down()


@pytest.fixture(scope="module")
def rs(cluster):
    clients = [redis.Redis(port=_port(n.resp), socket_timeout=30) for n in cluster.nodes]
    yield clients
    for c in clients:
        c.close()


def test_transactional_pipeline_fails_before_anything_runs(rs):
    r = rs[0]
    pipe = r.pipeline(transaction=True)
    pipe.set("tx:a", "1")
    pipe.incr("tx:n")
    with pytest.raises(redis.exceptions.RedisError, match="MULTI is not supported|EXECABORT|not run"):
        pipe.execute()
    # Nothing of the transaction ran, on any node.
    for c in rs:
        assert c.get("tx:a") is None
        assert c.get("tx:n") is None
    assert r.ping() is True  # the connection left the refused state at EXEC


def test_multi_refused_then_commands_refused_until_exec_or_discard(rs):
    r = rs[1]
    conn = r.connection_pool.get_connection()
    try:
        for cmd, expect in ((("MULTI",), "MULTI is not supported"), (("SET", "tx:b", "1"), "not run"),
                            (("DISCARD",), None), (("GET", "tx:b"), None), (("EXEC",), "EXEC without MULTI"),
                            (("WATCH", "tx:b"), "WATCH is not supported")):
            conn.send_command(*cmd)
            if expect is None:
                reply = conn.read_response()
                assert not isinstance(reply, Exception)
            else:
                with pytest.raises(redis.ResponseError, match=expect):
                    conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert r.get("tx:b") is None


def test_atomic_string_commands(rs):
    a, b, c = rs
    assert a.execute_command("QKV.CAS", "cas:k", ":absent:", "v1") == 1
    assert b.execute_command("QKV.CAS", "cas:k", ":absent:", "v2") == 0
    assert c.execute_command("QKV.CAS", "cas:k", "nope", "v2") == 0
    assert b.execute_command("QKV.CAS", "cas:k", "v1", "v2") == 1
    assert a.get("cas:k") == b"v2"
    assert a.incr("cnt") == 1
    assert b.incrby("cnt", 10) == 11
    assert c.decr("cnt") == 10
    assert a.decrby("cnt", 4) == 6
    assert b.get("cnt") == b"6"
    a.set("notint", "x")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        b.incr("notint")
    assert c.get("notint") == b"x"
    assert a.setnx("nx:k", "1") is True
    assert b.setnx("nx:k", "2") is False
    assert c.set("nx:k", "3", nx=True) is None
    assert a.set("nx:k", "4", xx=True) is True
    assert b.set("nx:missing", "4", xx=True) is None
    assert c.set("nx:k", "5", get=True) == b"4"
    assert a.getdel("nx:k") == b"5"
    assert b.getdel("nx:k") is None
    assert c.get("nx:k") is None


def test_concurrent_incr_from_every_node_loses_nothing(rs, cluster):
    errors = []

    def worker(port):
        r = redis.Redis(port=port, socket_timeout=30)
        try:
            for _ in range(25):
                r.incr("race:counter")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            r.close()

    ports = [_port(n.resp) for n in cluster.nodes]
    threads = [threading.Thread(target=worker, args=(ports[i % 3],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, [str(e) for e in errors]
    assert int(rs[0].get("race:counter")) == 6 * 25


def test_setnx_lock_has_exactly_one_winner(cluster):
    ports = [_port(n.resp) for n in cluster.nodes]
    wins = []

    def contender(i):
        r = redis.Redis(port=ports[i % 3], socket_timeout=30)
        try:
            if r.set("lock:one", f"owner{i}", nx=True):
                wins.append(i)
        finally:
            r.close()

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert redis.Redis(port=ports[0]).get("lock:one") == f"owner{wins[0]}".encode()


def test_quorum_mode_linearizable_per_connection(rs):
    r = rs[2]
    assert r.execute_command("QUORUM", "MODE", "LINEARIZABLE") in (True, b"OK", "OK")
    try:
        assert r.set("lin:k", "v") is True
        assert r.get("lin:k") == b"v"
        assert r.mget("lin:k", "lin:none") == [b"v", None]
        assert r.exists("lin:k", "lin:none") == 1
        assert r.delete("lin:k", "lin:none") == 1
        assert r.get("lin:k") is None
        info = r.execute_command("QUORUM")
        assert info[b"mode"] == b"LINEARIZABLE"
        with pytest.raises(redis.ResponseError, match="QUORUM MODE"):
            r.execute_command("QUORUM", "MODE", "FAST")
    finally:
        r.execute_command("QUORUM", "MODE", "LWW")
