"""Snapshot cost: 1 node (SQLite, fsync on), KEYS keys of 100 bytes; time `quorumkv
snapshot --node` idle and while a client writes as fast as it can, and the write
throughput during vs. before the snapshot (what a backup costs the node).

    python benchmarks/bench_snapshot.py [KEYS]
"""
import asyncio, json, subprocess, sys, tempfile, threading, time
from quorumkv import AsyncClient, Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

KEYS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
d = tempfile.mkdtemp()
cl = LocalCluster(d + "/c")
cl.create(1, base_port=free_base_port(2), replicas=1, storage="sqlite")
cl.up()
addr = cl.addresses()[0]


def snapshot(tag):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "quorumkv", "snapshot", "--node", addr, "--tag", tag, "-o", "json"],
                       capture_output=True, text=True, check=True)
    return time.monotonic() - t0, json.loads(r.stdout)["nodes"][0]


try:
    async def load():
        async with AsyncClient([addr]) as c:
            for s in range(0, KEYS, 500):
                await asyncio.gather(*(c.put(f"k{i}", b"x" * 100) for i in range(s, min(s + 500, KEYS))))
    asyncio.run(load())
    idle_s, row = snapshot("idle")
    stop, counts = threading.Event(), []

    def writer():
        with Client([addr]) as c:
            i = 0
            while not stop.is_set():
                c.put(f"w{i}", b"y" * 100)
                i += 1
                counts.append(time.monotonic())
    t = threading.Thread(target=writer); t.start()
    time.sleep(2)
    t_snap0 = time.monotonic()
    busy_s, row2 = snapshot("busy")
    t_snap1 = time.monotonic()
    time.sleep(1)
    stop.set(); t.join()
    before = sum(1 for x in counts if t_snap0 - 2 <= x < t_snap0) / 2
    during = sum(1 for x in counts if t_snap0 <= x < t_snap1) / (t_snap1 - t_snap0)
    print(json.dumps({"keys": row["keys"], "bytes": row["bytes"], "snapshot_idle_s": round(idle_s, 2),
                      "snapshot_under_writes_s": round(busy_s, 2), "keys_in_busy_snapshot": row2["keys"],
                      "writes_per_s_before": round(before), "writes_per_s_during": round(during)}))
finally:
    cl.down()
