"""Per-request cost of running local clusters: ops/s *and* node CPU time per operation.

On a shared, overloaded machine throughput swings with the neighbours' load; the CPU
time the node processes spend per request (user+system, summed over every node of
the cluster, from /proc) is far steadier, and it is what the code controls. Each
cluster given is loaded in turn by the same C load generator (respload, from the
shared bench kit: 10k keys, 100-byte values, 50/50 GET/SET), repetitions
interleaved (A B A B ...) so that a change of background load hits all alike.

    PYTHONPATH=src python benchmarks/bench_resp_cost.py \\
        --cluster /tmp/base3 base-3node --cluster /tmp/new3 new-3node [--reps 3] [--seconds 4]
        [--clients 50] [--pipeline 1] [--ratio 1:1] [--respload PATH]

Clusters are started beforehand (``quorumkv cluster up --storage memory ...``); each
is addressed through its first node's RESP port. Any other RESP server can join the
same interleaved run with ``--endpoint HOST:PORT PID[,PID...] LABEL`` — e.g. the shared
kit's reference server (``python ../shared/bench/pyresp_server.py --port 27190 &``),
whose CPU per op is the yardstick the issue's ratios are about. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess

from quorumkv.cli.localcluster import LocalCluster

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SHARED_KIT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def respload_path(given: str | None) -> str:
    if given:
        return given
    for cand in ("/tmp/qkv-bench/bin/respload", shutil.which("respload") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    src = os.path.join(SHARED_KIT, "respload.c")
    out = "/tmp/qkv-bench/bin/respload"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", out, src], check=True)
    return out


def one_run(tool: str, target: tuple[str, list[int]], args) -> dict:
    address, pids = target
    host, port = address.rsplit(":", 1)
    before = sum(cpu_s(p) for p in pids)
    out = subprocess.run([tool, "-H", host, "-p", port, "-c", str(args.clients), "-P", str(args.pipeline),
                          "-r", "10000", "-d", "100", "--ratio", args.ratio, "-t", str(args.seconds)],
                         check=True, capture_output=True, text=True).stdout
    used = sum(cpu_s(p) for p in pids) - before
    res = json.loads(out.strip().splitlines()[-1])
    res["cpu_us_per_op"] = round(1e6 * used / max(res["ops"], 1), 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", nargs=2, action="append", metavar=("DIR", "LABEL"), default=[])
    ap.add_argument("--endpoint", nargs=3, action="append", metavar=("HOST:PORT", "PIDS", "LABEL"), default=[])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--ratio", default="1:1")
    ap.add_argument("--respload")
    args = ap.parse_args()
    tool = respload_path(args.respload)
    clusters = []
    for d, label in args.cluster:
        c = LocalCluster(d)
        clusters.append(((c.nodes[0].resp, [n.pid() for n in c.nodes]), label))
    for address, pids, label in args.endpoint:
        clusters.append(((address, [int(p) for p in pids.split(",")]), label))
    rows: dict[str, list[dict]] = {label: [] for _, label in clusters}
    for rep in range(args.reps):
        for cluster, label in clusters:
            res = one_run(tool, cluster, args)
            rows[label].append(res)
            print(json.dumps({"label": label, "rep": rep, "ops_per_s": res["ops_per_s"],
                              "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
                              "cpu_us_per_op": res["cpu_us_per_op"], "errors": res["errors"]}), flush=True)
    print(f"\n| cluster | ops/s (median of {args.reps}) | p50 ms | p99 ms | node CPU µs/op (median) |")
    print("|---|---:|---:|---:|---:|")
    for _, label in clusters:
        rs = rows[label]
        print(f"| {label} | {statistics.median(r['ops_per_s'] for r in rs):,.0f} "
              f"| {statistics.median(r['p50_ms'] for r in rs):.2f} | {statistics.median(r['p99_ms'] for r in rs):.2f} "
              f"| {statistics.median(r['cpu_us_per_op'] for r in rs):.0f} |")


if __name__ == "__main__":
    main()
