"""Idle cost and scale: CPU burnt per node of a local memory cluster at rest.

Starts NODES memory nodes, times how long until every node sees every other one up
(``converged_s``: membership agreement, measured from the start of ``cluster up``)
and a write and a read through every node succeed (``serving``), lets the cluster
settle, then reads each process's user+system CPU time from /proc before and after
a window and prints the mean and max per node as a percentage of one core. Linux
only (reads /proc/PID/stat).

    PYTHONPATH=src python benchmarks/bench_idle.py [--nodes 12] [--window-s 10]
        [--settle-s 3] [--base-port 0] [--set heartbeat_interval_ms=500 ...]

Run it with the worktree's PYTHONPATH so the nodes run the code you mean to measure;
on a shared machine compare two runs made back to back (or interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from quorumkv import Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def all_agree(cluster) -> bool:
    want = {n.id for n in cluster.nodes}
    for node in cluster.nodes:
        with Client([node.address]) as c:
            st = c.status()
        if {v.node for v in st.members if v.state == "up"} != want:
            return False
    return True


def serves(cluster) -> bool:
    for node in cluster.nodes:
        with Client([node.address]) as c:
            c.put(f"idle-probe-{node.id}", node.id)
            if c.get(f"idle-probe-{node.id}") != node.id.encode():
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument("--settle-s", type=float, default=3.0)
    ap.add_argument("--base-port", type=int, default=0, help="0: pick free ports")
    ap.add_argument("--label", default="")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=INT",
                    help="a node config field (integer) for every node, e.g. heartbeat_interval_ms=500")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="qkv-idle-")
    cluster = LocalCluster(root)
    base = args.base_port or free_base_port(2 * args.nodes)
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = int(value)
    cluster.create(args.nodes, base_port=base, replicas=3, storage="memory",
                   node_overrides={f"n{i + 1}": overrides for i in range(args.nodes)} if overrides else None)
    try:
        t0 = time.monotonic()
        cluster.up()
        up_s = time.monotonic() - t0
        while not all_agree(cluster):
            if time.monotonic() - t0 > 120:
                raise SystemExit("membership did not converge within 120 s")
            time.sleep(0.05)
        converged_s = time.monotonic() - t0
        serving = serves(cluster)
        time.sleep(args.settle_s)
        pids = [n.pid() for n in cluster.nodes]
        before = [cpu_s(p) for p in pids]
        w0 = time.monotonic()
        time.sleep(args.window_s)
        elapsed = time.monotonic() - w0
        after = [cpu_s(p) for p in pids]
        per_node = [100 * (a - b) / elapsed for a, b in zip(after, before)]
        print(json.dumps({"bench": "idle", "label": args.label, "nodes": args.nodes, "set": args.set,
                          "window_s": round(elapsed, 2), "up_s": round(up_s, 2),
                          "converged_s": round(converged_s, 2), "serving": serving,
                          "cpu_pct_per_node_mean": round(sum(per_node) / len(per_node), 2),
                          "cpu_pct_per_node_max": round(max(per_node), 2),
                          "cpu_pct_total": round(sum(per_node), 1)}))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
