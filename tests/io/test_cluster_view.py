"""Seeing the cluster: ``cluster status --node`` from anywhere (every node's view, a
member joined by ``serve --seed`` included), ``quorumkv ring``, ``cluster up --set``,
JSON-only logs with repeated events rate-limited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from quorumkv.client import Client
from quorumkv.cli.localcluster import LocalCluster, parse_settings
from quorumkv.shell.logsetup import LOG_REPEAT_WINDOW_MS, RepeatLimiter
from quorumkv.cli.testing import free_base_port

from helpers import wait_for

redis = pytest.importorskip("redis")


def qkv(*args: str, timeout: int = 120, password: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if password is not None:
        env["QUORUMKV_PASSWORD"] = password  # how the CLI reaches a secured cluster by --node
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ------------------------------------------------------------------ pure parts
def test_repeat_limiter_drops_repeats_and_counts_them():
    now = [0.0]
    lim = RepeatLimiter(clock=lambda: now[0])
    assert lim(None, "info", {"event": "peer_down", "peer": "n2"}) == {"event": "peer_down", "peer": "n2"}
    for _ in range(3):
        with pytest.raises(structlog.DropEvent):
            lim(None, "info", {"event": "peer_down", "peer": "n2"})
    assert lim(None, "info", {"event": "peer_down", "peer": "n3"}) == {"event": "peer_down", "peer": "n3"}
    assert lim(None, "info", {"event": "ring_changed"}) == {"event": "ring_changed"}  # not limited
    now[0] = LOG_REPEAT_WINDOW_MS / 1000
    assert lim(None, "info", {"event": "peer_down", "peer": "n2"})["suppressed"] == 3


@pytest.mark.parametrize("item,error", [
    ("nope=1", "--set nope: unknown config key"),
    ("max_clok_skew_ms=1", "did you mean max_clock_skew_ms?"),
    ("listen=127.0.0.1:1", "set per node"),
    ("fsync=3", "expected bool"),
    ("tick_ms=0", "tick_ms must be > 0"),
    ("novalue", "expected KEY=VALUE"),
])
def test_set_refuses_with_one_line(item, error):
    with pytest.raises(ValueError, match=error.replace("?", r"\?")):
        parse_settings([item])


def test_set_reads_toml_values():
    assert parse_settings(["fsync=false", "max_clock_skew_ms=200", "r=ONE", "resp_password=1234"]) == {
        "fsync": False, "max_clock_skew_ms": 200, "r": "ONE", "resp_password": "1234"}


# -------------------------------------------------------------- real processes
def _json_lines(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.integration
def test_status_from_anywhere_ring_set_and_logs(tmp_path):
    d = str(tmp_path / "c")
    base = free_base_port(8)
    bad = qkv("cluster", "up", "--nodes", "3", "--dir", d, "--base-port", str(base), "--set", "nope=1")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown config key" in bad.stderr
    up = qkv("cluster", "up", "--nodes", "3", "--dir", d, "--base-port", str(base), "--replicas", "2",
             "--storage", "memory", "--set", "resp_password=s3cret", "--set", "max_clock_skew_ms=300")
    assert up.returncode == 0, up.stderr
    cluster = LocalCluster(d)
    seed = None
    try:
        for info in cluster.nodes:  # --set reached every node's config, and the node uses it
            cfg = tomllib.loads(Path(info.config_file).read_text())
            assert (cfg["resp_password"], cfg["max_clock_skew_ms"]) == ("s3cret", 300)
        r = redis.Redis(port=int(cluster.nodes[0].resp.rsplit(":", 1)[1]))
        with pytest.raises(redis.AuthenticationError):
            r.set("k", "v")
        r.close()

        with Client(cluster.addresses(), password="s3cret") as c:  # resp_password secures the native port too
            for i in range(60):
                c.put(f"k{i}", b"v")

        # A fourth node joins through --seed, started by hand (not in the directory).
        n4_port = free_base_port(1)
        n4_dir = tmp_path / "n4"
        n4_conf = tmp_path / "n4.toml"  # the cluster's password: peers authenticate with it
        n4_conf.write_text(f'node_id = "n4"\nlisten = "127.0.0.1:{n4_port}"\ndata_dir = "{n4_dir}"\n'
                           'resp_password = "s3cret"\n')
        seed = subprocess.Popen(
            [sys.executable, "-m", "quorumkv", "serve", "--node-id", "n4", "--listen", f"127.0.0.1:{n4_port}",
             "--data-dir", str(n4_dir), "--seed", cluster.nodes[0].address, "--storage", "memory", "--n", "2",
             "--config", str(n4_conf)],
            stdout=open(tmp_path / "n4.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)

        refused = qkv("cluster", "status", "--node", cluster.nodes[1].address)
        assert refused.returncode == 0 and "no node answered" in refused.stdout and "NOAUTH" in refused.stdout

        def status(*where):
            res = qkv("cluster", "status", *where, "-o", "json", password="s3cret")
            assert res.returncode == 0, res.stderr
            return {row["id"]: row for row in json.loads(res.stdout)}

        entry = ["--node", "127.0.0.1:1", "--node", cluster.nodes[1].address]  # the first does not answer
        wait_for(lambda: status(*entry).get("n4", {}).get("state") == "up", 60, "n4 to join and be seen up")
        rows = status(*entry)
        assert set(rows) == {"n1", "n2", "n3", "n4"}
        assert all(r["answered"] and r["state"] == "up" for r in rows.values())
        assert abs(sum(r["ownership"] for r in rows.values()) - 2) < 0.01  # effective shares sum to N
        assert sum(r["keys"] for r in rows.values() if r["id"] != "n4") >= 60 * 2
        assert all(r["metrics"] for r in rows.values() if r["id"] != "n4")  # n4 serves none: not configured
        assert all(set(r["views"]) == {"n1", "n2", "n3", "n4"} for r in rows.values())
        table = qkv("cluster", "status", *entry, password="s3cret")
        assert table.returncode == 0 and "4 of 4 nodes answered" in table.stdout

        ring = qkv("ring", "--node", cluster.nodes[2].address, "-o", "json", "--tokens", password="s3cret")
        assert ring.returncode == 0, ring.stderr
        doc = json.loads(ring.stdout)
        assert set(doc["nodes"]) == {"n1", "n2", "n3", "n4"} and doc["n"] == 2
        assert abs(sum(o["primary"] for o in doc["nodes"].values()) - 1) < 1e-9
        assert len(doc["arcs"]) == 4 * doc["vnodes"]

        # Kill n3: the others see it down; the status still answers, naming it.
        os.kill(cluster.node("n3").pid(), signal.SIGKILL)
        wait_for(lambda: status("--dir", d)["n3"]["state"] == "down", 30, "n3 down in cluster status")
        rows = status("--node", cluster.nodes[0].address)
        assert rows["n3"]["answered"] is False and rows["n3"]["keys"] is None
        assert rows["n1"]["answered"] and rows["n4"]["answered"]
        # Its survivors' logs: JSON only; peer_down for n3 at most once per window.
        log = _json_lines(cluster.node("n1").log_file)
        assert any(e["event"] == "node_listening" for e in log)
        wait_for(lambda: any(e["event"] == "peer_down" and e.get("peer") == "n3"
                             for e in _json_lines(cluster.node("n1").log_file)), 30, "a peer_down line")
        downs = [datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
                 for e in _json_lines(cluster.node("n1").log_file)
                 if e["event"] == "peer_down" and e.get("peer") == "n3"]
        gaps = [(b - a).total_seconds() * 1000 for a, b in zip(downs, downs[1:])]
        assert all(g >= LOG_REPEAT_WINDOW_MS - 50 for g in gaps), gaps
    finally:
        if seed is not None:
            seed.send_signal(signal.SIGTERM)
            seed.wait(timeout=30)
        qkv("cluster", "down", "--dir", d)
