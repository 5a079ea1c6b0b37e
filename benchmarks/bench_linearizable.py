"""Linearizable reads/writes and CAS against plain QUORUM reads/writes, side by side
in one run, on one local 3-node cluster (SQLite, fsync on).

Each row runs for ``--seconds``: either one client (sequential: the latency of one
operation, uncontended) or ``--clients`` concurrent clients (asyncio, one connection
each). Reads and writes of the 10 clients go to distinct keys; "CAS, one key" has
every client INCR the *same* key (contended: all changes of a key are serialised by
its home node, core/paxos.py).

    PYTHONPATH=src python benchmarks/bench_linearizable.py --seconds 5

Prints a Markdown table: ops/s, p50 and p99 latency (ms) per row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from quorumkv.client import AsyncClient  # noqa: E402
from quorumkv.cli.localcluster import LocalCluster  # noqa: E402
from quorumkv.cli.testing import free_base_port  # noqa: E402

VALUE = b"x" * 100


def _pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


async def _run(addrs, op, clients: int, seconds: float, same_key: bool) -> tuple[float, list[float]]:
    conns = [AsyncClient([addrs[i % len(addrs)]], session=False) for i in range(clients)]
    lat: list[float] = []
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int, c: AsyncClient):
        nonlocal count
        n = 0
        while time.perf_counter() < stop:
            key = "bench:hot" if same_key else f"bench:{i}:{n % 64}"
            t0 = time.perf_counter()
            await op(c, key)
            lat.append(time.perf_counter() - t0)
            count += 1
            n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return count / elapsed, lat


async def _prefill(addrs) -> None:
    async with AsyncClient(addrs[:1], session=False) as c:
        for i in range(10):
            for n in range(64):
                await c.put(f"bench:{i}:{n}", VALUE)


ROWS = [
    ("plain QUORUM read", lambda c, k: c.get(k, default=None), False),
    ("plain QUORUM write", lambda c, k: c.put(k, VALUE), False),
    ("linearizable read", lambda c, k: c.get(k, default=None, consistency="linearizable"), False),
    ("linearizable write", lambda c, k: c.put(k, VALUE, consistency="linearizable"), False),
    ("CAS (INCR)", lambda c, k: c.incr(k + ":n"), False),
]


async def bench(addrs, seconds: float, clients: int) -> list[tuple]:
    await _prefill(addrs)
    out = []
    for name, op, _ in ROWS:
        for n in (1, clients):
            tput, lat = await _run(addrs, op, n, seconds, False)
            out.append((name, f"{n} client{'s' if n > 1 else ''}, own keys", tput, lat))
    tput, lat = await _run(addrs, lambda c, k: c.incr(k), clients, seconds, True)
    out.append(("CAS (INCR)", f"{clients} clients, one key", tput, lat))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--dir", help="use this running cluster instead of starting one")
    args = ap.parse_args(argv)
    root = None
    if args.dir:
        cluster = LocalCluster(args.dir)
    else:
        root = tempfile.mkdtemp(prefix="qkv-bench-lin-")
        cluster = LocalCluster(os.path.join(root, "cluster"))
        cluster.create(3, base_port=free_base_port(6), replicas=3, storage="sqlite")
        cluster.up()
    try:
        rows = asyncio.run(bench(cluster.addresses(), args.seconds, args.clients))
    finally:
        if root is not None:
            cluster.down()
            shutil.rmtree(root, ignore_errors=True)
    print(f"3 nodes, SQLite (fsync), {args.seconds:g} s per row, value 100 bytes, one machine ({os.cpu_count()} cores)")
    print()
    print("| operation | clients | ops/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|")
    for name, who, tput, lat in rows:
        print(f"| {name} | {who} | {tput:,.0f} | {_pct(lat, 0.5):.2f} | {_pct(lat, 0.99):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
