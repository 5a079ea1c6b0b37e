"""The real ``redis-benchmark`` against a local quorumkv cluster's RESP ports (the
README's "Redis protocol" table). Needs ``redis-benchmark`` on PATH (Debian:
redis-tools); no PyPI package ships it, so this is a benchmark, not a test.

    python benchmarks/bench_redis_benchmark.py [--nodes 3] [--storage memory] [-n 50000] [-c 50] [-P 16]

Prints redis-benchmark's CSV (requests/s per command) and fails if any request failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile

from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

#: Longest one redis-benchmark run may take before it is called hung.
RUN_TIMEOUT_S = 600


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--storage", default="memory", choices=("memory", "sqlite"))
    ap.add_argument("-n", type=int, default=50_000, help="requests per command")
    ap.add_argument("-c", type=int, default=50, help="connections")
    ap.add_argument("-P", type=int, default=1, help="pipeline depth")
    args = ap.parse_args()
    binary = shutil.which("redis-benchmark")
    if binary is None:
        print("redis-benchmark is not on PATH (Debian: apt-get install redis-tools)", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="qkv-redis-benchmark-")
    cluster = LocalCluster(root)
    cluster.create(args.nodes, base_port=free_base_port(2 * args.nodes), replicas=min(3, args.nodes),
                   storage=args.storage)
    try:
        cluster.up()
        port = int(cluster.nodes[0].resp.rsplit(":", 1)[1])
        res = subprocess.run([binary, "-p", str(port), "-t", "set,get", "-n", str(args.n), "-c", str(args.c),
                              "-P", str(args.P), "--csv"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        print(res.stdout, end="")
        failed = res.returncode != 0 or "error" in res.stdout.lower() or "Error" in res.stderr
        if failed:
            print(res.stderr, file=sys.stderr)
        return 1 if failed else 0
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
