"""Throughput of QuorumRedis against plain redis-py, same machine, same run (not a test).

    python examples/redis_quorum_bench.py [--seconds 2] [--concurrency 32] [--servers 3]

Starts its own redis-servers (no AOF). Cases, 50% writes / 50% reads over 1,000 keys
of 100 bytes:

* plain redis-py, blocking, one server             (the floor: one round trip per op)
* the seed's code, blocking, 5 sequential SET/GETs  (one server, "5 nodes" as keys)
* QuorumRedis, blocking, N servers, R=W=QUORUM
* plain redis.asyncio, C concurrent callers, one server
* AsyncQuorumRedis, C concurrent callers, N servers, R=W=QUORUM
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import redis
import redis.asyncio as aredis

from quorumkv.contrib.redis_quorum import AsyncQuorumRedis, QuorumRedis
from quorumkv.cli.redis_server import RedisServer

KEYS = 1_000
VALUE = b"x" * 100


def run_sync(seconds: float, op) -> tuple[float, float]:
    done, i = 0, 0
    end = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() < end:
        for _ in range(100):
            op(i)
            i += 1
        done += 100
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


async def run_async(seconds: float, concurrency: int, op) -> tuple[float, float]:
    done = 0
    end = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < end:
            await op(i)
            i += concurrency
            done += 1

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--servers", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        servers = [RedisServer(f"{tmp}/r{i}").start() for i in range(max(args.servers, 1))]
        urls = [s.url for s in servers]
        rows = []
        try:
            plain = redis.Redis.from_url(urls[0])

            def plain_op(i):
                k = b"p%d" % (i % KEYS)
                plain.set(k, VALUE) if i % 2 == 0 else plain.get(k)

            rows.append(("plain redis-py, blocking, 1 server", run_sync(args.seconds, plain_op)))

            def seed_op(i):  # the seed's read_value/write_value: 5 keys on one server, in turn
                k = "s%d" % (i % KEYS)
                for node_id in range(5):
                    plain.set(f"{k}:{node_id}", VALUE) if i % 2 == 0 else plain.get(f"{k}:{node_id}")

            rows.append(("seed's code, blocking, 5 sequential ops on 1 server", run_sync(args.seconds, seed_op)))
            with QuorumRedis(urls) as q:
                def quorum_op(i):
                    k = b"q%d" % (i % KEYS)
                    q.put(k, VALUE) if i % 2 == 0 else q.get(k, default=None)

                rows.append((f"QuorumRedis, blocking, N={q.n} R={q.r} W={q.w}", run_sync(args.seconds, quorum_op)))
            plain.close()

            async def async_cases():
                ap_ = aredis.Redis.from_url(urls[0], max_connections=args.concurrency)

                async def aplain_op(i):
                    k = b"p%d" % (i % KEYS)
                    await (ap_.set(k, VALUE) if i % 2 == 0 else ap_.get(k))

                rows.append((f"plain redis.asyncio, {args.concurrency} callers, 1 server",
                             await run_async(args.seconds, args.concurrency, aplain_op)))
                await ap_.aclose()
                async with AsyncQuorumRedis(urls) as aq:
                    async def aquorum_op(i):
                        k = b"q%d" % (i % KEYS)
                        await (aq.put(k, VALUE) if i % 2 == 0 else aq.get(k, default=None))

                    rows.append((f"AsyncQuorumRedis, {args.concurrency} callers, N={aq.n} R={aq.r} W={aq.w}",
                                 await run_async(args.seconds, args.concurrency, aquorum_op)))

            asyncio.run(async_cases())
        finally:
            for s in servers:
                s.kill()
    width = max(len(name) for name, _ in rows)  # CPU/op is steadier than ops/s on a busy machine
    print(f"{'case':<{width}}     ops/s  client CPU µs/op")
    for name, (rate, cpu_us) in rows:
        print(f"{name:<{width}}  {rate:>8,.0f}  {cpu_us:>8,.0f}")


if __name__ == "__main__":
    main()
