"""The CLI contract (names, options, output and exit codes) against real processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quorumkv.core.ring import Ring

from quorumkv.testing import free_base_port

pytestmark = pytest.mark.integration


def qkv(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli_cluster(tmp_path):
    d = str(tmp_path / "c")
    up = qkv("cluster", "up", "--nodes", "5", "--dir", d, "--base-port", str(free_base_port(10)),
             "--replicas", "3")
    assert up.returncode == 0, up.stderr
    yield d
    down = qkv("cluster", "down", "--dir", d)
    assert down.returncode == 0, down.stderr


def test_cluster_up_status_restart_down(cli_cluster, tmp_path):
    d = cli_cluster
    st = qkv("cluster", "status", "--dir", d, "-o", "json")
    assert st.returncode == 0, st.stderr
    rows = json.loads(st.stdout)
    assert [r["id"] for r in rows] == ["n1", "n2", "n3", "n4", "n5"]
    assert all(r["state"] == "up" and isinstance(r["pid"], int) for r in rows)
    assert all(r["address"].startswith("127.0.0.1:") for r in rows)
    for node in ("n1", "n2", "n3", "n4", "n5"):  # data, log and config under DIR/NODE_ID/
        assert (tmp_path / "c" / node / "node.toml").exists()
        assert (tmp_path / "c" / node / "node.log").exists()
        assert (tmp_path / "c" / node / "data" / "kv.sqlite3").exists()

    assert qkv("put", "k", "v1", "--dir", d).returncode == 0
    assert qkv("cluster", "kill", "n4", "--dir", d).returncode == 0
    rows = {r["id"]: r for r in json.loads(qkv("cluster", "status", "--dir", d, "-o", "json").stdout)}
    assert rows["n4"]["state"] == "down" and rows["n4"]["pid"] is None
    table = qkv("cluster", "status", "--dir", d)
    assert "n4" in table.stdout and "down" in table.stdout

    re = qkv("cluster", "restart", "n4", "--dir", d)
    assert re.returncode == 0, re.stderr
    rows = {r["id"]: r for r in json.loads(qkv("cluster", "status", "--dir", d, "-o", "json").stdout)}
    assert rows["n4"]["state"] == "up"
    got = qkv("get", "k", "--r", "ALL", "--dir", d)
    assert (got.returncode, got.stdout) == (0, "v1\n")


def test_put_get_delete_exit_codes(cli_cluster):
    d = cli_cluster
    assert qkv("put", "greeting", "hello world", "--w", "QUORUM", "--dir", d).returncode == 0
    got = qkv("get", "greeting", "--r", "2", "--dir", d)
    assert (got.returncode, got.stdout) == (0, "hello world\n")

    missing = qkv("get", "nope", "--dir", d)
    assert missing.returncode == 1 and "not found" in missing.stderr and missing.stdout == ""

    assert qkv("delete", "greeting", "--dir", d).returncode == 0
    gone = qkv("get", "greeting", "--dir", d)
    assert gone.returncode == 1 and "not found" in gone.stderr

    # --node (repeatable) instead of --dir
    status = json.loads(qkv("cluster", "status", "--dir", d, "-o", "json").stdout)
    addrs = [r["address"] for r in status]
    assert qkv("put", "via-node", "x", "--node", addrs[0], "--node", addrs[1]).returncode == 0
    got = qkv("get", "via-node", "--node", addrs[2])
    assert (got.returncode, got.stdout) == (0, "x\n")

    # bad usage: exit 2
    assert qkv("get", "greeting", "--r", "7", "--dir", d).returncode == 2
    assert qkv("get", "greeting", "--r", "SOME", "--dir", d).returncode == 2
    assert qkv("get", "greeting").returncode == 2  # no cluster named
    assert qkv("frobnicate").returncode == 2
    assert qkv("put", "only-key", "--dir", d).returncode == 2
    empty = qkv("put", "", "v", "--dir", d)
    assert empty.returncode == 2 and "empty key" in empty.stderr

    # partial quorum: a warning on stderr, not an error
    weak = qkv("get", "via-node", "--r", "1", "--dir", d)
    assert weak.returncode == 0 and "warning" in weak.stderr and "R=1 + W=2 <= N=3" in weak.stderr


def test_unmet_quorum_exits_3(cli_cluster):
    d = cli_cluster
    key = "victim-key"
    replicas = Ring(["n1", "n2", "n3", "n4", "n5"], 3).preference_list(key.encode())
    assert qkv("put", key, "v", "--w", "ALL", "--dir", d).returncode == 0
    assert qkv("cluster", "kill", replicas[0], "--dir", d).returncode == 0
    res = qkv("put", key, "v2", "--w", "ALL", "--dir", d)
    assert res.returncode == 3
    assert "UnavailableError: write needed 3 acks" in res.stderr and replicas[0] in res.stderr
    res = qkv("get", key, "--r", "ALL", "--dir", d)
    assert res.returncode == 3 and "read needed 3 replies" in res.stderr
    ok = qkv("get", key, "--dir", d)  # QUORUM still fine
    assert ok.returncode == 0 and ok.stdout.strip() in ("v", "v2")


def test_no_reachable_node_exits_4(tmp_path):
    res = qkv("get", "k", "--node", f"127.0.0.1:{free_base_port(1)}")
    assert res.returncode == 4 and "no node reachable" in res.stderr


def test_demo_runs():
    res = qkv("demo", "--base-port", str(free_base_port(10)), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "UnavailableError: write needed 3 acks" in res.stdout
    assert "200/200" in res.stdout
