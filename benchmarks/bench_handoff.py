"""Hinted-handoff replay rate: kill a replica, write while it is down, restart it,
time how long until every hint is delivered.

    python benchmarks/bench_handoff.py [--keys 6000] [--replay-per-s 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time

from quorumkv import AsyncClient, Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port


def hints_held(cluster) -> int:
    total = 0
    for n in cluster.nodes:
        if n.running():
            with Client([n.address]) as c:
                total += c.status().stats["hints_held"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=6000)
    ap.add_argument("--replay-per-s", type=int, default=2000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="qkv-handoff-")
    cluster = LocalCluster(root)
    cluster.create(5, base_port=free_base_port(10), replicas=3, storage="sqlite",
                   node_overrides={f"n{i}": {"hint_replay_per_s": args.replay_per_s, "read_repair": False}
                                   for i in range(1, 6)})
    try:
        cluster.up()
        victim = cluster.node("n3")
        cluster.signal(victim, signal.SIGKILL)
        others = [n.address for n in cluster.nodes if n.id != "n3"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for detection so fallbacks take the hints
            with Client(others[:1]) as c:
                if any(m.node == "n3" and m.state == "down" for m in c.status().members):
                    break
            time.sleep(0.05)

        async def load():
            async with AsyncClient(others) as c:
                for start in range(0, args.keys, 200):
                    await asyncio.gather(*(c.put(f"k{i}", b"x" * 100) for i in range(start, min(args.keys, start + 200))))

        asyncio.run(load())
        held = hints_held(cluster)
        t0 = time.monotonic()
        cluster.start(victim)
        cluster.wait_ready([victim])
        while hints_held(cluster) > 0 and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        print(f"hints {held} delivered in {elapsed:.2f} s after restart -> {held / elapsed:,.0f} hints/s "
              f"(limit hint_replay_per_s={args.replay_per_s} per holder, 4 holders)")
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
