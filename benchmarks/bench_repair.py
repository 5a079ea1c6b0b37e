"""Anti-entropy throughput on a real local cluster: keys compared per second when
replicas agree, keys repaired per second after a node's data directory is wiped,
and how long periodic anti-entropy alone takes to restore the wiped node.

    python benchmarks/bench_repair.py [--keys 20000] [--nodes 3] [--storage sqlite]

Prints one line per figure. The load generator and every node share the machine.
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

#: Puts in flight while loading.
LOAD_CONCURRENCY = 200
#: Give up on the periodic-convergence measurement after this long.
CONVERGE_TIMEOUT_S = 300


async def load(addresses: list[str], keys: int, value_bytes: int) -> None:
    value = b"x" * value_bytes
    async with AsyncClient(addresses, timeout_ms=30_000) as c:
        for start in range(0, keys, LOAD_CONCURRENCY):
            await asyncio.gather(*(c.put(f"key{i:08d}", value, w="ALL")
                                   for i in range(start, min(start + LOAD_CONCURRENCY, keys))))


def wait_all_up(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with Client(cluster.addresses(), timeout_ms=2_000) as c:
                c.put("warm-up", "x", w="ALL")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def repair_all(cluster: LocalCluster) -> tuple[float, dict]:
    totals: dict[str, int] = {}
    t0 = time.perf_counter()
    for node in cluster.nodes:
        with Client([node.address]) as c:
            reply = c.repair()
        assert reply.ok, reply
        for k, v in reply.summary.items():
            totals[k] = totals.get(k, 0) + v
    return time.perf_counter() - t0, totals


def wipe(cluster: LocalCluster, node_id: str) -> None:
    node = cluster.node(node_id)
    cluster.stop(node)
    shutil.rmtree(f"{node.dir}/data", ignore_errors=True)
    cluster.start(node)
    cluster.wait_ready([node])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--storage", default="sqlite", choices=["sqlite", "memory"])
    ap.add_argument("--ae-interval-ms", type=int, default=1_000,
                    help="periodic anti-entropy interval for the convergence measurement")
    args = ap.parse_args()
    if args.storage == "memory":
        raise SystemExit("wiping needs a data directory: use --storage sqlite")
    root = tempfile.mkdtemp(prefix="qkv-bench-repair-")
    cluster = LocalCluster(root)
    settings = {"ae_interval_ms": 0, "ae_repair_per_s": 1_000_000, "read_repair": False}
    cluster.create(args.nodes, base_port=free_base_port(2 * args.nodes), replicas=args.replicas,
                   storage=args.storage, fsync=False,
                   node_overrides={f"n{i + 1}": dict(settings) for i in range(args.nodes)})
    try:
        cluster.up()
        wait_all_up(cluster)
        t0 = time.perf_counter()
        asyncio.run(load(cluster.addresses(), args.keys, args.value_bytes))
        print(f"loaded {args.keys} keys at ALL in {time.perf_counter() - t0:.1f} s "
              f"({args.nodes} nodes, N={args.replicas}, {args.storage} fsync off)")

        secs, tot = repair_all(cluster)
        print(f"in sync: repair of every node compared {tot['keys_compared']} keys in {secs:.2f} s = "
              f"{tot['keys_compared'] / secs:,.0f} keys/s compared; repaired {tot['keys_pushed'] + tot['keys_pulled']}")

        wipe(cluster, "n2")
        t0 = time.perf_counter()
        with Client([cluster.node("n2").address]) as c:
            reply = c.repair()
        secs = time.perf_counter() - t0
        s = reply.summary
        repaired = s["keys_pushed"] + s["keys_pulled"]
        print(f"wiped n2: `repair` on n2 pulled {s['keys_pulled']} keys in {secs:.2f} s = "
              f"{repaired / secs:,.0f} keys/s repaired ({s['sessions']} sessions, "
              f"{s['buckets_differing']} differing leaves; ae_repair_per_s=1,000,000 i.e. unthrottled)")

        # Periodic anti-entropy alone, at --ae-interval-ms and the default rate bound.
        if args.nodes != args.replicas:
            return  # the check below relies on every node holding every key
        for node in cluster.nodes:
            cluster.stop(node)
        for node in cluster.nodes:
            from quorumkv.shell.config import NodeConfig  # noqa: PLC0415

            cfg = NodeConfig.load(node.config_file)
            cfg.ae_interval_ms = args.ae_interval_ms
            cfg.ae_repair_per_s = NodeConfig.__dataclass_fields__["ae_repair_per_s"].default
            with open(node.config_file, "w") as fh:
                fh.write(cfg.to_toml())
        cluster.up()
        wait_all_up(cluster)
        wipe(cluster, "n2")
        t0 = time.perf_counter()
        target = None
        with Client([cluster.node("n1").address]) as c1:
            target = c1.ping().keys  # with N = nodes every node holds every key
        while time.perf_counter() - t0 < CONVERGE_TIMEOUT_S:
            with Client([cluster.node("n2").address]) as c:
                if c.ping().keys >= target:
                    break
            time.sleep(0.05)
        secs = time.perf_counter() - t0
        print(f"wiped n2, periodic anti-entropy only (ae_interval_ms={args.ae_interval_ms}, "
              f"ae_repair_per_s={cfg.ae_repair_per_s}): n2 holds all {target} keys again after {secs:.2f} s")
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
