"""What security costs: the same 3-node cluster (N=3, QUORUM, memory storage, so the
network and crypto dominate) plain, with users (Auth once per connection), and with
TLS + mutual TLS between nodes + users. An asyncio client with CONCURRENCY requests
in flight writes then reads for SECONDS each; rounds alternate the three setups
ROUNDS times (the machine is shared: interleaving spreads the noise) and the median
per setup is printed.

    python benchmarks/bench_tls.py [SECONDS] [ROUNDS]
"""
import asyncio, json, statistics, subprocess, sys, tempfile, time
from quorumkv import AsyncClient
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CONCURRENCY = 32
d = tempfile.mkdtemp()
subprocess.run([sys.executable, "-m", "quorumkv", "certs", "--out", f"{d}/certs",
                *[a for i in (1, 2, 3) for a in ("--node", f"n{i}=127.0.0.1")]], check=True, capture_output=True)
USERS = {"app": {"password": "pw", "role": "readwrite"}}
SETUPS = {
    "plain": ({}, {}),
    "users": ({"users": USERS, "resp_password": "adm"}, {"user": "app", "password": "pw"}),
    "tls+mtls+users": ({"users": USERS, "resp_password": "adm", "tls_ca": f"{d}/certs/ca.pem"},
                       {"user": "app", "password": "pw", "tls_ca": f"{d}/certs/ca.pem"}),
}
clusters = {}
for name, (settings, _) in SETUPS.items():
    cl = LocalCluster(f"{d}/{name.replace('+', '_')}")
    over = {}
    for i in (1, 2, 3):
        s = dict(settings)
        if "tls_ca" in s:
            s.update(tls_cert=f"{d}/certs/n{i}.pem", tls_key=f"{d}/certs/n{i}-key.pem")
        over[f"n{i}"] = s
    cl.create(3, base_port=free_base_port(6), replicas=3, storage="memory", node_overrides=over)
    cl.up()
    clusters[name] = cl


async def run(addrs, opts, op) -> float:
    done = 0
    deadline = time.monotonic() + SECONDS
    async with AsyncClient(addrs, **opts) as c:
        async def worker(w):
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                key = f"k{w}-{i % 200}"
                if op == "put":
                    await c.put(key, b"x" * 100)
                else:
                    await c.get(key, default=None)
                done += 1
                i += 1
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return done / SECONDS


try:
    results = {name: {"put": [], "get": []} for name in SETUPS}
    for _ in range(ROUNDS):
        for name, (_, opts) in SETUPS.items():
            for op in ("put", "get"):
                results[name][op].append(asyncio.run(run(clusters[name].addresses(), opts, op)))
    print(json.dumps({name: {op: round(statistics.median(v)) for op, v in r.items()} for name, r in results.items()}))
finally:
    for cl in clusters.values():
        cl.down()
