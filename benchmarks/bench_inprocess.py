"""CPU per request of the Python path alone, in one process, no sockets.

Three layers, each timed with the process's CPU clock (so a busy machine inflates the
figures less than wall time would), 50/50 GET/SET over 10k keys, 100-byte values:

* ``parse``: ``RequestParser`` on one command at a time (as a non-pipelined client
  delivers them);
* ``core``: ``NodeCore`` of a 1-node (or N-node, ``--n``) cluster answering Get/Put,
  its storage effects and peer answers served at once by a dict;
* ``node``: a real ``NodeServer`` (memory storage) with 50 RESP connections on fake
  transports: parse, RESP connection, core, effects, storage — everything but the
  syscalls and the event loop's polling.

    PYTHONPATH=src python benchmarks/bench_inprocess.py [--ops 20000] [--n 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from quorumkv.core import messages as m
from quorumkv.core.node import NodeCore, NodeSettings, Respond, StoreRead, StoreWrite
from quorumkv.resp.parser import RequestParser
from quorumkv.shell.config import NodeConfig
from quorumkv.shell.resp_server import RespConnection, RespFrontEnd
from quorumkv.shell.server import NodeServer
from quorumkv.cli.testing import free_base_port

KEYS = [b"key:%012d" % i for i in range(10_000)]
VALUE = b"x" * 100


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


COMMANDS = [resp(b"GET", k) if i % 2 else resp(b"SET", k, VALUE) for i, k in enumerate(KEYS)]


def cpu_us_per_op(fn, ops: int) -> float:
    t0 = time.process_time()
    fn(ops)
    return round((time.process_time() - t0) / ops * 1e6, 2)


def bench_parse(ops: int) -> None:
    parser = RequestParser()
    if not hasattr(parser, "commands"):  # an older parser (before/after comparisons)
        from quorumkv.resp.parser import NEED_DATA  # noqa: PLC0415

        for i in range(ops):
            parser.receive_data(COMMANDS[i % 10_000])
            while parser.next_command() is not NEED_DATA:
                pass
        return
    for i in range(ops):
        parser.receive_data(COMMANDS[i % 10_000])
        parser.commands()


def bench_core(n: int):
    members = {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, n + 1)}
    level = 1 if n == 1 else 2
    core = NodeCore(NodeSettings("n1", n=n, r=level, w=level), members, now_ms=1_000)
    data: dict = {}

    def run(effects, now):
        for e in effects:
            t = type(e)
            if t is StoreWrite:
                data[e.key] = e.record
                run(core.on_store_done(e.token, True, None, now), now)
            elif t is StoreRead:
                run(core.on_store_done(e.token, True, data.get(e.key), now), now)
            elif t is Respond:
                pass
            elif type(e.msg) is m.RepWrite:
                run(core.on_response(e.peer, m.RepWriteAck(e.msg.id, True), now), now)
            elif type(e.msg) is m.RepRead:
                run(core.on_response(e.peer, m.RepReadResp(e.msg.id, True, data.get(e.msg.key)), now), now)

    def go(ops: int) -> None:
        for i in range(ops):
            now = 1_000 + i // 1_000
            key = KEYS[i % 10_000]
            msg = m.Get(i + 1, key) if i % 2 else m.Put(i + 1, key, VALUE)
            run(core.on_request("client", msg, now), now)
            if i % 1_000 == 0:
                core.tick(now)
    return go


class _Transport:
    def write(self, data) -> None:
        pass

    def get_extra_info(self, name):
        return ("127.0.0.1", 1)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def bench_node(ops: int) -> float:
    async def main() -> float:
        port = free_base_port(1)
        with tempfile.TemporaryDirectory() as tmp:
            server = NodeServer(NodeConfig(node_id="n1", listen=f"127.0.0.1:{port}", data_dir=tmp,
                                           storage="memory", n=1))
            front = RespFrontEnd(server)
            conns = []
            for _ in range(50):
                conn = RespConnection(front)
                conn.connection_made(_Transport())
                conns.append(conn)
            t0 = time.process_time()
            done = 0
            while done < ops:
                for conn in conns:
                    conn.data_received(COMMANDS[done % 10_000])
                    done += 1
                await asyncio.sleep(0)  # the loop runs the per-turn reply writes
            return (time.process_time() - t0) / done * 1e6
    return round(asyncio.run(main()), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=3, help="cluster size for the N-node core figure")
    args = ap.parse_args()
    out = {
        "parse_us_per_cmd": cpu_us_per_op(bench_parse, args.ops),
        "core_us_per_op_n1": cpu_us_per_op(bench_core(1), args.ops),
        f"core_us_per_op_n{args.n}": cpu_us_per_op(bench_core(args.n), args.ops),
        "node_us_per_op_n1": bench_node(args.ops),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
