"""Cleanup after a join: 4 nodes (N=3, SQLite), KEYS keys of 100 bytes, add n5, then
`quorumkv cleanup --dir ...` at the nodes' default rate bound (5,000 keys/s each).

    python benchmarks/bench_cleanup.py [KEYS]
"""
import asyncio, json, subprocess, sys, tempfile, time, shutil
from quorumkv import AsyncClient, Client, ALL
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

KEYS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
d = tempfile.mkdtemp()
cl = LocalCluster(d + "/c")
cl.create(4, base_port=free_base_port(10), replicas=3, storage="sqlite",
          node_overrides={f"n{i}": {"settle_ms": 200} for i in range(1, 5)})
cl.up()
try:
    async def load():
        async with AsyncClient(cl.addresses()) as c:
            for s in range(0, KEYS, 500):
                await asyncio.gather(*(c.put(f"k{i}", b"x" * 100, w=ALL) for i in range(s, min(s + 500, KEYS))))
    asyncio.run(load())
    new = cl.add_node(); cl.start(new); cl.wait_ready([new])
    def up():
        try:
            for a in cl.addresses():
                with Client([a], timeout_ms=2000) as c:
                    if not all(m.state == "up" for m in c.status().members):
                        return False
            return True
        except Exception:
            return False
    while not up(): time.sleep(0.1)
    time.sleep(1)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "quorumkv", "cleanup", "--dir", cl.root, "-o", "json"],
                       capture_output=True, text=True)
    el = time.monotonic() - t0
    rows = json.loads(r.stdout)
    if r.returncode: print(r.stderr[-300:])
    scanned = sum(x.get("scanned", 0) for x in rows); dropped = sum(x.get("dropped", 0) for x in rows)
    print(f"cleanup: 5 nodes, {scanned} records scanned, {dropped} dropped in {el:.1f} s "
          f"-> {scanned / el:,.0f} keys/s overall (default bound 5,000 keys/s per node); rc={r.returncode}")
finally:
    cl.down(); shutil.rmtree(d, ignore_errors=True)
