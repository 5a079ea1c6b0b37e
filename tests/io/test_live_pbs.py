"""Live latency samples, `math pbs --dir` and dynamic quorums on real node processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from quorumkv import ALL, AsyncClient, Client, Target, UnavailableError
from quorumkv.core.limits import PBS_SAMPLES_MAX

pytestmark = pytest.mark.integration

KEYS = 150


def qkv(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quorumkv", *args], capture_output=True, text=True,
                          timeout=timeout)


def wait_for(pred, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_live_samples_prediction_and_dynamic_quorums(make_cluster):
    # N=3 on 3 nodes, default W=1: every node is a primary of every key.
    cluster = make_cluster(nodes=3, replicas=3, storage="memory", w="1", r="1")
    d = str(cluster.root)
    first = cluster.addresses()[0]
    with Client([first]) as c:
        # Before any traffic: no model, and `math pbs --dir` refuses with the counts.
        with pytest.raises(UnavailableError, match="no latency model"):
            c.get("k0", target=Target(0.9, 1.0))
        too_few = qkv("math", "pbs", "--dir", d, "--trials", "1000")
        assert too_few.returncode == 3, too_few.stdout + too_few.stderr
        assert "too few latency samples" in too_few.stderr and "need --min-samples=100" in too_few.stderr

        for i in range(KEYS):
            assert c.put(f"k{i}", f"v{i}", w=ALL) == 3  # the W used comes back
        for i in range(KEYS):
            assert c.get_item(f"k{i}", r=ALL).r_used == 3

        # Samples: two remote replicas per request (the local one is not network traffic).
        lat = c.latencies()
        assert lat.node == "n1"
        for kind in "wars":
            got = getattr(lat, kind)
            assert 2 * KEYS <= len(got) <= PBS_SAMPLES_MAX, kind
            assert lat.recorded[kind] >= len(got)
            assert all(x >= 0 for x in got)
            assert sorted(got)[len(got) // 2] < 100.0, kind  # a local cluster: well under 100 ms

        # The live prediction merges every node's samples.
        res = qkv("math", "pbs", "--dir", d, "--trials", "20000", "-o", "json")
        assert res.returncode == 0, res.stderr
        rep = json.loads(res.stdout)
        assert 0.0 <= rep["p_consistent"] <= 1.0 and rep["t_visibility_ms"] >= 0.0
        assert rep["n"] == 3 and rep["nodes"] == ["n1", "n2", "n3"]
        assert all(rep["samples"][k] >= 2 * KEYS for k in "wars")
        table = qkv("math", "pbs", "--node", first, "--trials", "5000")
        assert table.returncode == 0, table.stderr
        assert "live samples from n1: W=" in table.stdout

        # Dynamic quorums once the coordinator has rebuilt its model.
        wait_for(lambda: c.latencies().model.get("ready"), "the latency model")
        item = c.get_item("k7", target=Target(0.5, 1000.0))
        assert item.value == b"v7" and 1 <= item.r_used <= 3
        # Certainty needs a strict quorum: with W=1, N=3 that is R=3.
        item = c.get_item("k8", target=Target(1.0, 0.0))
        assert item.value == b"v8" and item.r_used == 3
        assert c.put("k9", "x", target_latency_ms=60_000.0) == 3  # every W is within a minute
        cli = qkv("get", "k8", "--target-fresh", "1", "--within-ms", "0", "--node", first, "--verbose")
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout == "v8\n" and "r_used=3" in cli.stderr

        async def async_twin():
            async with AsyncClient([first]) as ac:
                got = await ac.get_item("k8", target=Target(1.0, 0.0))
                samples = await ac.latencies()
                w_used = await ac.put("k10", "y", target_latency_ms=60_000.0)
                return got, samples, w_used

        got, samples, w_used = asyncio.run(async_twin())
        assert (got.value, got.r_used, w_used) == (b"v8", 3, 3)
        assert samples.node == "n1" and samples.model["ready"]

        # One replica down: R=3 is impossible, and a non-strict R cannot promise certainty.
        node3 = cluster.node("n3")
        assert cluster.signal(node3, signal.SIGKILL)
        wait_for(lambda: any(mv.node == "n3" and mv.state == "down" for mv in c.status().members),
                 "n3 marked down")
        with pytest.raises(UnavailableError, match=r"no R meets target P\(fresh\) >= 1 within 0 ms") as exc:
            c.get("k8", target=Target(1.0, 0.0))
        assert "R>2 needs more live replicas" in str(exc.value)
        cli = qkv("get", "k8", "--target-fresh", "1", "--node", first)
        assert cli.returncode == 3 and "no R meets target" in cli.stderr
        assert c.get("k8", target=Target(0.5, 1000.0)) == b"v8"  # a looser target still works
