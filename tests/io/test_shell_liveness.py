"""The node runtime survives its own bugs and its clients' misbehaviour (issue 10, hole 7).

In-process: a real ``NodeServer`` (memory storage) on loopback, driven by one event
loop, so a test can break one step on purpose and watch the node carry on.
"""

from __future__ import annotations

import asyncio

import pytest

from quorumkv.core import messages as m
from quorumkv.core.framing import FrameDecoder, FrameEncoder
from quorumkv.core.node import Send
from quorumkv.core.version import Record, Version
from quorumkv.shell.config import NodeConfig
from quorumkv.shell.server import INBOUND_SEND_BYTES_HIGH, NodeServer
from quorumkv.cli.testing import free_base_port

ENC = FrameEncoder()
WAIT_S = 10.0


async def until(cond, what: str, timeout_s: float = WAIT_S):
    """Await ``cond()`` becoming truthy (polled on the loop); fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := cond()):
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def config(tmp_path, members: dict[str, str], node_id: str = "n1") -> NodeConfig:
    return NodeConfig(node_id=node_id, listen=members[node_id], data_dir=str(tmp_path / node_id),
                      members=members, storage="memory", n=len(members), r=1, w=1)


def test_an_exception_in_tick_does_not_stop_the_tick_loop(tmp_path):
    async def main():
        port = free_base_port(1)
        server = NodeServer(config(tmp_path, {"n1": f"127.0.0.1:{port}"}))
        await server.start()
        real_tick = server.core.tick
        calls = []

        def flaky_tick(now_ms):
            calls.append(now_ms)
            if len(calls) == 1:
                raise RuntimeError("bug in one step")
            return real_tick(now_ms)

        server.core.tick = flaky_tick
        try:
            await until(lambda: len(calls) >= 3, "ticks after the failing one")
            assert server.stats["tick_errors"] == 1
        finally:
            await server.stop()

    asyncio.run(main())


def test_an_exception_handling_a_peer_reply_drops_the_link_not_the_node(tmp_path):
    async def main():
        base = free_base_port(2)
        members = {"n1": f"127.0.0.1:{base}", "n2": f"127.0.0.1:{base + 1}"}
        answered = []

        async def fake_peer(reader, writer):  # answers anything with an ack
            await reader.read(1)
            writer.write(ENC.encode(m.RepWriteAck(123, True)))
            answered.append(True)
            await reader.read()  # until n1 drops us

        peer = await asyncio.start_server(fake_peer, "127.0.0.1", base + 1)
        server = NodeServer(config(tmp_path, members))
        await server.start()

        def broken(peer_id, msg, now_ms):
            raise RuntimeError("bug handling a reply")

        server.core.on_response = broken
        try:
            server.run([Send("n2", m.Heartbeat(0, "n1", 1))])
            await until(lambda: server.stats["peer_response_errors"] == 1, "the error to be counted")
            await until(lambda: server.links["n2"].state == "down", "the link to be dropped")
            assert answered
            # the node itself still serves
            reader, writer = await asyncio.open_connection("127.0.0.1", base)
            writer.write(ENC.encode(m.Ping(7)))
            dec = FrameDecoder()
            msgs = []
            while not msgs:
                msgs = dec.feed(await reader.read(65536))
            assert type(msgs[0]) is m.Pong and msgs[0].id == 7
            writer.close()
        finally:
            await server.stop()
            peer.close()

    asyncio.run(main())


def test_a_client_that_pipelines_large_gets_and_never_reads_is_paused_and_loses_nothing(tmp_path):
    value_bytes = 512 * 1024
    gets = 3 * INBOUND_SEND_BYTES_HIGH // value_bytes  # 3x the high-water mark of replies

    async def main():
        port = free_base_port(1)
        server = NodeServer(config(tmp_path, {"n1": f"127.0.0.1:{port}"}))
        await server.start()
        server.storage.write(b"big", Record(Version(1, "n1"), b"v" * value_bytes), lambda ok, r: None)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
            writer.transport.pause_reading()  # never read: the kernel buffers fill up
            writer.write(b"".join(ENC.encode(m.Get(i + 1, b"big", 1)) for i in range(gets)))
            conn = await until(lambda: next((c for c in server.inbound if c.paused), None),
                               "the node to stop reading the client")
            await asyncio.sleep(0.2)  # let the node do whatever it would do while we don't read
            assert conn.buffered_bytes() <= INBOUND_SEND_BYTES_HIGH + 2 * value_bytes
            assert conn._backlog, "requests decoded before the pause wait, not dropped"
            # Now read: every GET gets its reply, in full.
            writer.transport.resume_reading()
            dec = FrameDecoder()
            ids = set()
            while len(ids) < gets:
                for msg in dec.feed(await asyncio.wait_for(reader.read(1 << 20), WAIT_S)):
                    assert msg.status == m.OK and len(msg.value) == value_bytes
                    ids.add(msg.id)
            assert ids == set(range(1, gets + 1))
            writer.close()
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_peer_link_is_not_paused_for_slow_reading(tmp_path):
    # Heartbeats travel on the same connection as replica traffic: pausing a slow
    # peer's link would make it look dead. Only clients are paused for not reading.
    value_bytes = 512 * 1024
    gets = 3 * INBOUND_SEND_BYTES_HIGH // value_bytes

    async def main():
        base = free_base_port(2)
        members = {"n1": f"127.0.0.1:{base}", "n2": f"127.0.0.1:{base + 1}"}
        server = NodeServer(config(tmp_path, members))
        await server.start()
        server.storage.write(b"big", Record(Version(1, "n1"), b"v" * value_bytes), lambda ok, r: None)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", base, limit=2**16)
            writer.transport.pause_reading()
            writer.write(ENC.encode(m.Heartbeat(0, "n2", 1)) +
                         b"".join(ENC.encode(m.RepRead(i + 1, b"big")) for i in range(gets)))
            conn = await until(lambda: next((c for c in server.inbound if c.is_peer), None), "the peer link")
            await until(lambda: conn.open_requests == 0, "every read answered")
            assert not conn._backlog and not conn.paused
            writer.close()
        finally:
            await server.stop()

    asyncio.run(main())
