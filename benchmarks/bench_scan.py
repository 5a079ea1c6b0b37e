"""Cluster-wide key scan throughput: a 3-node cluster (N=3, SQLite), KEYS loaded,
then every key listed by ``Client.keys()`` (pages of 1,000) and by redis-py's
``scan_iter(count=...)``; checks each listing is exact.

    PYTHONPATH=src python benchmarks/bench_scan.py [--keys 100000] [--count 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import redis

from quorumkv.client import Client
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--count", type=int, default=1_000)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        cluster = LocalCluster(root)
        cluster.create(args.nodes, base_port=free_base_port(2 * args.nodes), replicas=3, storage="sqlite",
                       fsync=False)
        cluster.up()
        try:
            r = redis.Redis(port=int(cluster.nodes[0].resp.rsplit(":", 1)[1]))
            pipe = r.pipeline(transaction=False)
            for i in range(args.keys):
                pipe.set(f"key:{i:08d}", "v")
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
            expected = sorted(f"key:{i:08d}".encode() for i in range(args.keys))
            with Client(cluster.addresses()) as c:
                t0 = time.perf_counter()
                got = c.keys()
                t_client = time.perf_counter() - t0
            assert got == expected
            t0 = time.perf_counter()
            seen = list(r.scan_iter(count=args.count))
            t_resp = time.perf_counter() - t0
            assert sorted(seen) == expected and len(seen) == len(set(seen))
            r.close()
        finally:
            cluster.down()
    print(json.dumps({"keys": args.keys, "nodes": args.nodes, "client_keys_s": round(t_client, 2),
                      "client_keys_per_s": round(args.keys / t_client),
                      "resp_scan_count": args.count, "resp_scan_s": round(t_resp, 2),
                      "resp_scan_keys_per_s": round(args.keys / t_resp)}))


if __name__ == "__main__":
    main()
