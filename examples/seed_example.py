"""The seed article's example — 5 Redis "nodes", quorum 3 — done right with QuorumRedis.

    python examples/seed_example.py                 # starts 5 redis-servers itself
    python examples/seed_example.py URL URL ...     # uses your servers (nothing is killed)

The seed kept its 5 "nodes" as keys on ONE Redis server, asked them one after the
other, stored no versions and returned True/False. Here every node is its own
redis-server (its own failure domain), requests go out in parallel, each value is
stored with a version, reads return the newest value, and when too many servers are
gone the error says exactly what was needed and what was missing.
"""

from __future__ import annotations

import sys
import tempfile

from quorumkv.errors import UnavailableError
from quorumkv.contrib.redis_quorum import QuorumRedis
from quorumkv.cli.redis_server import RedisServer

NODE_COUNT = 5
QUORUM_SIZE = 3
#: Deadline of one read or write.
TIMEOUT_MS = 500


def show_servers(q: QuorumRedis, key: str) -> None:
    for server, held in q.inspect(key).items():
        if isinstance(held, str):
            print(f"    {server:<22} {held}")
        else:
            print(f"    {server:<22} {held.value!r:<8} version {held.version}")


def main(argv: list[str]) -> int:
    servers: list[RedisServer] = []
    tmp = tempfile.TemporaryDirectory(prefix="seed-example-")
    try:
        if argv:
            urls = argv
        else:
            servers = [RedisServer(f"{tmp.name}/redis{i}").start() for i in range(NODE_COUNT)]
            urls = [s.url for s in servers]
            print(f"started {NODE_COUNT} redis-servers: {', '.join(s.address for s in servers)}")
        with QuorumRedis(urls, r=QUORUM_SIZE, w=QUORUM_SIZE, timeout_ms=TIMEOUT_MS) as q:
            print(f"N={q.n}, R={q.r}, W={q.w}: every read quorum meets every write quorum (R + W > N)")
            key = "test_key"
            print("read before any write:", q.get(key, default=None))
            q.put(key, "test_value")
            print("read after write:", q.get(key))
            q.put(key, "v2")
            print("after a second write, each server holds a value and its version:")
            q.drain()
            show_servers(q, key)
            if not servers:
                print("(servers given on the command line: not killing any)")
                return 0

            for victim in servers[:2]:
                victim.kill()  # SIGKILL
            print(f"killed 2 of 5 servers ({servers[0].address}, {servers[1].address})")
            print("read after 2 of 5 servers were killed:", repr(q.get(key)))
            q.put(key, "v3")
            print("write with 3 of 5 servers left: ok; read:", repr(q.get(key)))

            servers[2].kill()
            print(f"killed a third server ({servers[2].address}): 2 of 5 left, quorum is 3")
            for what, op in (("write", lambda: q.put(key, "v4")), ("read", lambda: q.get(key))):
                try:
                    op()
                    print(f"{what}: unexpectedly succeeded")
                    return 1
                except UnavailableError as exc:
                    print(f"{what} -> {type(exc).__name__}: {exc}")
            print("still reachable at R=2 (a weaker read, knowingly):", repr(q.get(key, r=2)))
        return 0
    finally:
        for s in servers:
            s.kill()
        tmp.cleanup()


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the R=2 read above warns that it is a partial quorum
    sys.exit(main(sys.argv[1:]))
