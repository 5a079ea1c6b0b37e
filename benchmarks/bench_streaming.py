"""Streaming throughput of ring changes: join a 6th node to a loaded 5-node cluster,
then decommission a node; report records streamed per second.

    python benchmarks/bench_streaming.py [--keys 20000] [--value-bytes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time

from quorumkv import AsyncClient, Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

SETTLE_MS = 200


def state(address, node_id):
    try:
        with Client([address], timeout_ms=2_000) as c:
            st = c.status()
        return next((m.state for m in st.members if m.node == node_id), None), st.stats
    except Exception:
        return None, {}


def wait_state(address, node_id, want, timeout_s=300):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        s, stats = state(address, node_id)
        if s == want:
            return time.monotonic() - t0, stats
        time.sleep(0.02)
    raise TimeoutError(f"{node_id} not {want}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="qkv-stream-")
    cluster = LocalCluster(root)
    cluster.create(5, base_port=free_base_port(10), replicas=3, storage="sqlite",
                   node_overrides={f"n{i}": {"settle_ms": SETTLE_MS} for i in range(1, 6)})
    try:
        cluster.up()

        async def load():
            async with AsyncClient(cluster.addresses()) as c:
                value = b"x" * args.value_bytes
                for start in range(0, args.keys, 500):
                    await asyncio.gather(*(c.put(f"k{i}", value) for i in range(start, min(args.keys, start + 500))))

        asyncio.run(load())
        new = cluster.add_node()
        t0 = time.monotonic()
        cluster.start(new)
        cluster.wait_ready([new])
        elapsed, stats = wait_state(new.address, new.id, "up")
        elapsed += time.monotonic() - t0 - elapsed  # include process start
        got = stats["stream_keys_received"]
        stream_s = max(elapsed - SETTLE_MS / 1000, 1e-3)
        print(f"join: {got} records ({stats['stream_keys_scanned']} scanned) in {elapsed:.2f} s "
              f"incl. start and {SETTLE_MS} ms settle -> {got / stream_s:,.0f} records/s")
        leaving = cluster.node("n2")
        with Client([leaving.address]) as c:
            c.decommission()
        elapsed, stats = wait_state(leaving.address, "n2", "left")
        sent = stats["stream_keys_sent"]
        stream_s = max(elapsed - SETTLE_MS / 1000, 1e-3)
        print(f"decommission: {sent} records pushed in {elapsed:.2f} s incl. {SETTLE_MS} ms settle "
              f"-> {sent / stream_s:,.0f} records/s")
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
