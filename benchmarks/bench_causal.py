"""The cost of causal mode and of each CRDT against plain last-writer-wins, side by side.

    python benchmarks/bench_causal.py [--ops 3000] [--keys 200] [--concurrency 48] [--storage sqlite]

One 3-node local cluster (N=3, QUORUM reads and writes), the same key count and
concurrency for every workload; one AsyncClient per node, requests spread over
them. Each row is one workload run to completion:

* ``lww put`` / ``lww get`` — plain puts and gets (16-byte values);
* ``lww get+put`` — a read then a write of the same key (the shape of a causal
  update, for comparison);
* ``causal get+put`` — ``get_siblings`` then ``put(..., context=ctx)``: the
  read-resolve-write cycle of causal mode;
* ``counter incr`` / ``set add`` (a new member each time) / ``map hset`` (16
  fields per key) — one typed update each;
* ``... read`` — reading the typed keys back (R=QUORUM merges the replies).

``bytes/key`` is the mean stored value size per key (``inspect``'s value_bytes on a
primary; the type tag and digest in the version, ~20 bytes, are not included).
The load generator and all three nodes share the machine, so absolute numbers are
this machine's; the ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from quorumkv import AsyncClient, Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

VALUE = b"v" * 16
MAP_FIELDS = 16


async def timed(clients: list[AsyncClient], ops: int, concurrency: int, op) -> float:
    """Run ``op(client, i)`` for i in range(ops), ``concurrency`` at a time; ops/s."""
    it = iter(range(ops))

    async def worker(w: int) -> None:
        client = clients[w % len(clients)]
        for i in it:
            await op(client, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return ops / (time.perf_counter() - t0)


async def run(addresses: list[str], ops: int, keys: int, concurrency: int) -> list[tuple[str, float, str]]:
    clients = [AsyncClient([a] + [b for b in addresses if b != a], timeout_ms=30_000) for a in addresses]

    def key(prefix: str, i: int) -> str:
        return f"{prefix}:{i % keys:06d}"

    async def causal(c, i):
        sib = await c.get_siblings(key("causal", i))
        await c.put(key("causal", i), VALUE, context=sib.context)

    async def lww_rmw(c, i):
        await c.get(key("lww", i), default=None)
        await c.put(key("lww", i), VALUE)

    rows = []
    try:
        workloads = [
            ("lww put", "lww", lambda c, i: c.put(key("lww", i), VALUE)),
            ("lww get", "lww", lambda c, i: c.get(key("lww", i), default=None)),
            ("lww get+put", "lww", lww_rmw),
            ("causal get+put", "causal", causal),
            ("causal read", "causal", lambda c, i: c.get_siblings(key("causal", i))),
            ("counter incr", "counter", lambda c, i: c.counter_incr(key("counter", i), 1)),
            ("counter read", "counter", lambda c, i: c.counter_value(key("counter", i))),
            ("set add", "set", lambda c, i: c.sadd(key("set", i), f"member-{i:08d}")),
            ("set read", "set", lambda c, i: c.smembers(key("set", i))),
            ("map hset", "map", lambda c, i: c.hset(key("map", i), {f"field{i % MAP_FIELDS:02d}": VALUE})),
            ("map read", "map", lambda c, i: c.hgetall(key("map", i))),
        ]
        for name, prefix, op in workloads:
            rate = await timed(clients, ops, concurrency, op)
            rows.append((name, rate, prefix))
    finally:
        for c in clients:
            await c.close()
    return rows


def bytes_per_key(addresses: list[str], prefix: str, keys: int) -> float:
    sizes = []
    with Client(addresses) as c:
        for i in range(keys):
            info = c.inspect(f"{prefix}:{i:06d}")
            got = [r.value_bytes for r in info.replicas if r.role == "primary" and r.value_bytes is not None]
            if got:
                sizes.append(max(got))
    return sum(sizes) / len(sizes) if sizes else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=3_000, help="operations per workload")
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument("--storage", default="sqlite", choices=["sqlite", "memory"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-causal-") as tmp:
        cluster = LocalCluster(tmp)
        cluster.create(3, base_port=free_base_port(6), replicas=3, storage=args.storage)
        cluster.up()
        try:
            rows = asyncio.run(run(cluster.addresses(), args.ops, args.keys, args.concurrency))
            sizes = {p: bytes_per_key(cluster.addresses(), p, args.keys)
                     for p in ("lww", "causal", "counter", "set", "map")}
        finally:
            cluster.down()
    base = {name: rate for name, rate, _ in rows}
    print(f"3 nodes, N=3, QUORUM, storage={args.storage}, {args.ops} ops per workload over {args.keys} keys, "
          f"concurrency {args.concurrency}")
    print(f"{'workload':<16} {'ops/s':>9} {'vs lww put':>11} {'bytes/key':>10}")
    for name, rate, prefix in rows:
        print(f"{name:<16} {rate:>9.0f} {rate / base['lww put']:>10.2f}x {sizes[prefix]:>10.0f}")


if __name__ == "__main__":
    main()
