"""``quorumkv bench``: put/get throughput and latency, quorum cluster vs one node.

Two clusters are started one after the other in the same run on this machine:

* baseline: one node, N=1 (R=W=1) — the same server code with no replication;
* quorum:   three nodes, N=3, R=W=2 — every op fans out to three replicas.

Each runs a put phase then a get phase for ``seconds`` with ``clients`` concurrent
clients (one connection each, round-robin over the nodes, one request in flight per
client, like ``redis-benchmark -c``). The load generator shares the machine's cores
with the nodes, so quote the ratio quorum/baseline rather than absolute figures.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time

from ..client.aio import AsyncClient
from .localcluster import LocalCluster
from ..shell.server import install_event_loop_policy


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    idx = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[idx] / 1e6


async def _phase(addresses, op: str, *, clients: int, seconds: float, keys: int, value: bytes, seed: int,
                 token_aware: bool = False):
    # client i starts at node i (round-robin) and knows them all; with token-aware
    # routing each key goes to one of its replicas (benchmarks/bench_routing.py),
    # without it client i's requests all go to node i
    conns = [AsyncClient(addresses[i % len(addresses):] + addresses[:i % len(addresses)],
                         token_aware=token_aware) for i in range(clients)]
    for c in conns:
        await c.ping()
    latencies: list[int] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(client: AsyncClient, rng: random.Random) -> None:
        nonlocal errors
        perf = time.perf_counter_ns
        record = latencies.append
        while time.perf_counter() < stop_at:
            key = b"key:%012d" % rng.randrange(keys)
            t0 = perf()
            try:
                if op == "put":
                    await client.put(key, value)
                else:
                    await client.get(key, default=None)
            except Exception:  # counted, not raised: the run goes on
                errors += 1
                continue
            record(perf() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, random.Random(seed + i)) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.close()
    latencies.sort()
    return {
        "op": op,
        "ops": len(latencies),
        "errors": errors,
        "ops_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
    }


def _run_cluster(name, *, nodes, replicas, storage, base_port, clients, seconds, keys, value_bytes):
    root = tempfile.mkdtemp(prefix=f"quorumkv-bench-{name}-")
    cluster = LocalCluster(root)
    cluster.create(nodes, base_port=base_port, replicas=replicas, storage=storage,
                   r="QUORUM", w="QUORUM")
    try:
        cluster.up()
        value = os.urandom(value_bytes)

        async def both():
            put = await _phase(cluster.addresses(), "put", clients=clients, seconds=seconds,
                               keys=keys, value=value, seed=1)
            get = await _phase(cluster.addresses(), "get", clients=clients, seconds=seconds,
                               keys=keys, value=value, seed=2)
            return [put, get]

        phases = asyncio.run(both())
        return {"name": name, "nodes": nodes, "n": replicas, "storage": storage, "phases": phases}
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


def run_bench(*, clients=50, seconds=5.0, storage="memory", keys=10_000, value_bytes=100,
              base_port=7500, console=None) -> dict:
    install_event_loop_policy()
    common = dict(storage=storage, clients=clients, seconds=seconds, keys=keys, value_bytes=value_bytes)
    baseline = _run_cluster("baseline-1node-N1", nodes=1, replicas=1, base_port=base_port, **common)
    quorum = _run_cluster("quorum-3node-N3-R2W2", nodes=3, replicas=3, base_port=base_port + 10, **common)
    ratios = {
        p_b["op"]: round(p_q["ops_per_s"] / p_b["ops_per_s"], 3) if p_b["ops_per_s"] else None
        for p_b, p_q in zip(baseline["phases"], quorum["phases"])
    }
    result = {"clients": clients, "seconds": seconds, "storage": storage, "keys": keys,
              "value_bytes": value_bytes, "runs": [baseline, quorum], "quorum_over_baseline": ratios}
    if console is not None:
        from rich.table import Table

        table = Table("cluster", "storage", "op", "ops/s", "p50 ms", "p99 ms", "errors",
                      title=f"quorumkv bench — {clients} clients, {seconds:g} s per phase")
        for run in result["runs"]:
            for ph in run["phases"]:
                table.add_row(run["name"], run["storage"], ph["op"], f"{ph['ops_per_s']:,.0f}",
                              f"{ph['p50_ms']:.2f}", f"{ph['p99_ms']:.2f}", str(ph["errors"]))
        console.print(table)
        console.print("quorum / baseline throughput: "
                      + ", ".join(f"{op} {r:.2f}x" for op, r in ratios.items() if r is not None))
    return result
