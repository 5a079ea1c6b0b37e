"""Atomic Redis commands and transactions against a real 3-node cluster with redis-py:
MULTI refused before anything runs; QKV.CAS, INCR family, SETNX, GETDEL and SET NX/XX/GET
on CASPaxos (core/paxos.py); QUORUM MODE LINEARIZABLE."""

from __future__ import annotations

import threading

import pytest

redis = pytest.importorskip("redis")

from quorumkv.localcluster import LocalCluster  # noqa: E402
from quorumkv.testing import free_base_port  # noqa: E402

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
