"""Token-aware routing against round-robin coordinators, interleaved, on one cluster.

Starts one memory cluster (default 5 nodes, N=3, R=W=2: a coordinator picked at
random is a replica of 3/5 of the keys), then runs the ``quorumkv bench`` phases
(put, then get) with token-aware clients and with clients pinned to one node each,
alternating REPS times, and prints per run the ops/s, p50/p99 and the node CPU time
per operation (user+system of every node process, from /proc; Linux only). Compare
the two modes within one run: the machine's load moves absolute figures.

    PYTHONPATH=src python benchmarks/bench_routing.py [--nodes 5] [--replicas 3]
        [--clients 50] [--seconds 3] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile

from quorumkv.cli.bench import _phase
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.shell.server import install_event_loop_policy
from quorumkv.cli.testing import free_base_port

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    install_event_loop_policy()
    root = tempfile.mkdtemp(prefix="qkv-routing-")
    cluster = LocalCluster(root)
    cluster.create(args.nodes, base_port=free_base_port(2 * args.nodes), replicas=args.replicas,
                   storage="memory", r="QUORUM", w="QUORUM")
    results: dict[str, list] = {"token": [], "pinned": []}
    try:
        cluster.up()
        pids = [n.pid() for n in cluster.nodes]
        value = os.urandom(100)
        for rep in range(args.reps):
            for mode in ("token", "pinned"):
                for op in ("put", "get"):
                    before = sum(cpu_s(p) for p in pids)
                    ph = asyncio.run(_phase(cluster.addresses(), op, clients=args.clients, seconds=args.seconds,
                                            keys=args.keys, value=value, seed=rep, token_aware=mode == "token"))
                    used = sum(cpu_s(p) for p in pids) - before
                    ph["cpu_us_per_op"] = round(1e6 * used / ph["ops"], 1) if ph["ops"] else None
                    ph.update(mode=mode, rep=rep)
                    results[mode].append(ph)
                    print(json.dumps(ph), flush=True)
        for mode, phases in results.items():
            for op in ("put", "get"):
                sel = [p for p in phases if p["op"] == op]
                print(json.dumps({"summary": mode, "op": op, "nodes": args.nodes, "n": args.replicas,
                                  "ops_per_s_median": statistics.median(p["ops_per_s"] for p in sel),
                                  "cpu_us_per_op_median": statistics.median(p["cpu_us_per_op"] for p in sel),
                                  "p99_ms_median": statistics.median(p["p99_ms"] for p in sel),
                                  "errors": sum(p["errors"] for p in sel)}))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
