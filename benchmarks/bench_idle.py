"""Idle cost and scale: CPU burnt per node of a local memory cluster at rest.

Starts NODES memory nodes, times how long until every node sees every other one up
(``converged_s``: membership agreement, measured from the start of ``cluster up``)
and a write and a read through every node succeed (``serving``), lets the cluster
settle, then reads each process's user+system CPU time from /proc before and after
a window and prints the mean and max per node as a percentage of one core. With
``--kill``, it then SIGKILLs the last node and times how long until every survivor
shows it suspect (``kill_to_suspect_s``: the first and the last survivor to) and down
(``kill_to_down_s``), polling each survivor's status every ~50 ms. Linux only (reads
/proc/PID/stat).

    PYTHONPATH=src python benchmarks/bench_idle.py [--nodes 12] [--window-s 10]
        [--settle-s 3] [--base-port 0] [--set heartbeat_interval_ms=500 ...] [--kill]

Run it with the worktree's PYTHONPATH so the nodes run the code you mean to measure;
on a shared machine compare two runs made back to back (or interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def states_of(cluster, victim: str, survivors) -> dict[str, str]:
    out = {}
    for node in survivors:
        with Client([node.address]) as c:
            out[node.id] = next((v.state for v in c.status().members if v.node == victim), "unknown")
    return out


def detection(cluster) -> dict[str, float]:
    """SIGKILL the last node; seconds until the first/last survivor shows it suspect
    (or down) and down."""
    victim = cluster.nodes[-1]
    survivors = cluster.nodes[:-1]
    os.kill(victim.pid(), signal.SIGKILL)
    t0 = time.monotonic()
    suspect: dict[str, float] = {}
    down: dict[str, float] = {}
    while len(down) < len(survivors):
        if time.monotonic() - t0 > 60:
            raise SystemExit(f"{victim.id} not down everywhere within 60 s: {states_of(cluster, victim.id, survivors)}")
        now = time.monotonic() - t0
        for node_id, state in states_of(cluster, victim.id, survivors).items():
            if state in ("suspect", "down"):
                suspect.setdefault(node_id, now)
            if state == "down":
                down.setdefault(node_id, now)
        time.sleep(0.05)
    return {"kill_to_suspect_s_first": round(min(suspect.values()), 2),
            "kill_to_suspect_s_last": round(max(suspect.values()), 2),
            "kill_to_down_s_first": round(min(down.values()), 2),
            "kill_to_down_s_last": round(max(down.values()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument("--settle-s", type=float, default=3.0)
    ap.add_argument("--base-port", type=int, default=0, help="0: pick free ports")
    ap.add_argument("--label", default="")
    ap.add_argument("--kill", action="store_true", help="then SIGKILL a node and time its detection")
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
        detected = detection(cluster) if args.kill else {}
        print(json.dumps({"bench": "idle", "label": args.label, "nodes": args.nodes, "set": args.set,
                          "window_s": round(elapsed, 2), "up_s": round(up_s, 2),
                          "converged_s": round(converged_s, 2), "serving": serving,
                          "cpu_pct_per_node_mean": round(sum(per_node) / len(per_node), 2),
                          "cpu_pct_per_node_max": round(max(per_node), 2),
                          "cpu_pct_total": round(sum(per_node), 1), **detected}))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
