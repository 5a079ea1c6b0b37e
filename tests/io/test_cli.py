"""The CLI contract (names, options, output and exit codes) against real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from quorumkv.core.limits import VALUE_BYTES_MAX
from quorumkv.core.ring import Ring
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

pytestmark = pytest.mark.integration


def qkv(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True,
                          text=True, timeout=timeout, input=input)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The error a user sees: exactly one line on stderr, and no traceback."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


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
    # Ready means ready: the moment restart returns, every node sees n4's new process
    # up and has a link to it, so a read at ALL works whichever node coordinates it.
    assert LocalCluster(d).readiness_problems(LocalCluster(d).nodes) == []
    for row in json.loads(qkv("cluster", "status", "--dir", d, "-o", "json").stdout):
        assert row["state"] == "up"
        got = qkv("get", "k", "--r", "ALL", "--node", row["address"])
        assert (got.returncode, got.stdout) == (0, "v1\n"), (row["id"], got.stderr)

    # --signal takes only what its help lists; the node is untouched on a refusal
    bad = qkv("cluster", "kill", "n4", "--dir", d, "--signal", "HUP")
    assert bad.returncode == 2 and "KILL, TERM, STOP, CONT" in one_line_error(bad)
    assert LocalCluster(d).node("n4").running()
    assert qkv("cluster", "kill", "n5", "--dir", d, "--signal", "sigterm").returncode == 0

    # -o takes only the formats it implements, on every command
    for args in (("cluster", "status", "--dir", d), ("inspect", "k", "--dir", d), ("repair", "--dir", d),
                 ("bench",)):
        res = qkv(*args, "-o", "yaml")
        assert res.returncode == 2 and "'yaml' is not one of" in one_line_error(res) and res.stdout == "", args

    # unknown node ids: one line, exit 2
    for args in (("decommission", "n9", "--dir", d), ("cluster", "restart", "n9", "--dir", d),
                 ("cluster", "kill", "n9", "--dir", d), ("replace", "n9", "--dir", d)):
        res = qkv(*args)
        assert res.returncode == 2, args
        assert "no node 'n9'" in one_line_error(res)
    res = qkv("decommission", "n9", "--node", LocalCluster(d).node("n1").address)
    assert res.returncode == 2 and "is n1, not n9" in one_line_error(res)

    # down says how many it actually stopped (n5 got SIGTERM above)
    LocalCluster(d).stop(LocalCluster(d).node("n5"))
    down = qkv("cluster", "down", "--dir", d)
    assert down.returncode == 0 and "stopped 4 of 5 nodes (1 not running)" in down.stdout
    again = qkv("cluster", "down", "--dir", d)
    assert again.returncode == 0 and "stopped 0 of 5 nodes (5 not running)" in again.stdout


def test_put_get_delete_exit_codes(cli_cluster, tmp_path):
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

    # put KEY - reads standard input; put KEY --file F reads a file
    assert qkv("put", "from-stdin", "-", "--dir", d, input="line one\nline two").returncode == 0
    got = qkv("get", "from-stdin", "--dir", d)
    assert (got.returncode, got.stdout) == (0, "line one\nline two\n")

    # the largest value the store takes goes through --file, byte for byte
    big = tmp_path / "big.bin"
    payload = os.urandom(VALUE_BYTES_MAX)
    big.write_bytes(payload)
    put = qkv("put", "big", "--file", str(big), "--dir", d, timeout=120)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([sys.executable, "-m", "quorumkv", "get", "big", "--dir", d], capture_output=True,
                         timeout=120)
    assert got.returncode == 0 and got.stdout == payload + b"\n"

    big.write_bytes(payload + b"x")  # one byte over: refused, nothing written
    over = qkv("put", "big", "--file", str(big), "--dir", d, timeout=120)
    assert over.returncode == 2 and "exceeds VALUE_BYTES_MAX" in one_line_error(over)
    got = subprocess.run([sys.executable, "-m", "quorumkv", "get", "big", "--dir", d], capture_output=True,
                         timeout=120)
    assert got.stdout == payload + b"\n"

    for args, why in ((("put", "k", "v", "--file", str(big)), "not both"),
                      (("put", "k"), "missing VALUE"),
                      (("put", "k", "--file", str(tmp_path / "absent")), "cannot read --file")):
        res = qkv(*args, "--dir", d)
        assert res.returncode == 2 and why in one_line_error(res), args


def test_version():
    from quorumkv import __version__

    for flag in ("--version", "-V"):
        res = qkv(flag)
        assert (res.returncode, res.stdout) == (0, f"quorumkv {__version__}\n")


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


def test_expected_errors_are_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = qkv("serve", "--node-id", "n1", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "n1"))
        assert res.returncode == 2 and "address already in use" in one_line_error(res).lower()
        res = qkv("demo", "--base-port", str(port))  # the demo checks its ports before starting anything
        assert res.returncode == 2 and "not all free" in one_line_error(res)

    base = free_base_port(4)
    d = str(tmp_path / "c")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))
        busy.listen()
        try:
            res = qkv("cluster", "up", "--dir", d, "--nodes", "2", "--base-port", str(base), "--storage", "memory")
        finally:
            qkv("cluster", "down", "--dir", d)
    line = one_line_error(res)
    assert res.returncode == 3 and "n2 exited during startup" in line and "in use" in line

    res = qkv("math", "pbs", "--plot", str(tmp_path / "missing" / "p.png"))
    assert res.returncode == 2 and "directory" in one_line_error(res) and "does not exist" in res.stderr

    # an unexpected exception inside the demo: one line, exit 5
    inject = ("import sys, quorumkv.cli.demo\n"
              "def boom(*args, **kwargs):\n    raise ZeroDivisionError('injected')\n"
              "quorumkv.cli.demo.run_demo = boom\n"
              "from quorumkv.cli import main\nmain(['demo'])\n")
    res = subprocess.run([sys.executable, "-c", inject], capture_output=True, text=True, timeout=60)
    assert res.returncode == 5 and "ZeroDivisionError: injected" in one_line_error(res)


def test_demo_runs():
    res = qkv("demo", "--base-port", str(free_base_port(10)), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "UnavailableError: write needed 3 acks" in res.stdout
    assert "200/200" in res.stdout
