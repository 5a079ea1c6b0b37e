"""Linearizable mode on real processes: the node default (config ``consistency``)
for native and Redis clients, the CLI's --linearizable/cas/incr, and the Redis
storage engine refusing CAS with a clear error."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from quorumkv.client import Client
from quorumkv.errors import InvalidRequestError
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.shell.storage_redis import RedisEngine
from quorumkv.cli.testing import free_base_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lin_cluster(tmp_path_factory):
    c = LocalCluster(str(tmp_path_factory.mktemp("lin") / "c"))
    c.create(3, base_port=free_base_port(6), replicas=3, storage="sqlite",
             node_overrides={f"n{i}": {"consistency": "linearizable"} for i in (1, 2, 3)})
    c.up()
    yield c
    c.down()


def _stats(c: Client) -> dict:
    return c.status().stats


def test_node_default_makes_plain_get_put_linearizable(lin_cluster):
    addrs = lin_cluster.addresses()
    with Client(addrs[:1]) as c:
        before = _stats(c)
        c.put("d:k", "v1")
        assert c.get("d:k") == b"v1"
        c.delete("d:k")
        assert c.get("d:k", default=None) is None
        after = _stats(c)
    assert after["cas_ops"] - before["cas_ops"] >= 2  # the put and the delete went through CASPaxos
    assert after["lin_reads"] - before["lin_reads"] >= 2
    assert after["writes"] == before["writes"]  # no plain LWW write was coordinated


def test_node_default_applies_to_a_new_redis_connection(lin_cluster):
    redis = pytest.importorskip("redis")
    r = redis.Redis(port=int(lin_cluster.nodes[1].resp.rsplit(":", 1)[1]))
    try:
        assert r.execute_command("QUORUM")[b"mode"] == b"LINEARIZABLE"
        assert r.set("d:r", "x") is True and r.get("d:r") == b"x"
    finally:
        r.close()


def test_cli_linearizable_cas_incr(lin_cluster):
    def cli(cmd, *args):
        return subprocess.run([sys.executable, "-m", "quorumkv", cmd, "--dir", lin_cluster.root, *args],
                              capture_output=True, text=True, timeout=60)

    assert cli("put", "cli:k", "a", "--linearizable").returncode == 0
    got = cli("get", "cli:k", "--linearizable")
    assert got.returncode == 0 and got.stdout == "a\n"
    assert cli("cas", "cli:k", "a", "b").stdout == "1\n"
    assert cli("cas", "cli:k", "a", "c").stdout == "0\n"
    assert cli("cas", "cli:new", ":absent:", "z").stdout == "1\n"
    assert cli("incr", "cli:n", "5").stdout == "5\n"
    assert cli("incr", "cli:n", "--", "-2").stdout == "3\n"
    bad = cli("get", "cli:k", "--linearizable", "--r", "ONE")
    assert bad.returncode != 0 and "--linearizable" in bad.stderr


def test_client_rejects_unknown_consistency():
    with pytest.raises(InvalidRequestError, match="consistency"):
        Client(["127.0.0.1:1"], consistency="strong")


def test_redis_engine_refuses_cas_with_a_clear_error():
    got = []
    RedisEngine.paxos(SimpleNamespace(name="redis"), "prepare", b"k", None, None, lambda ok, r: got.append((ok, r)))
    assert RedisEngine.supports_paxos is False
    assert got[0][0] is False and "redis storage engine does not support" in got[0][1] and "sqlite" in got[0][1]
