"""The client's transport seam (``quorumkv.client.transport``): ``Client`` and
``AsyncClient`` run unchanged over any transport — here an in-process one that hands
each request to a tiny fake node, with no socket at all — and their failover and
"outcome unknown" rules sit above the seam, not inside the TCP code."""

from __future__ import annotations

import asyncio
import socket

import pytest

from quorumkv.client import AsyncClient, Client, TcpTransport
from quorumkv.core import messages as m
from quorumkv.core import messages_cas as mc
from quorumkv.core.version import Version
from quorumkv.errors import ConnectionFailedError, QuorumTimeoutError


class FakeNode:
    """Answers Get/Put/Ping from a dict; counts the requests it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[bytes, bytes | None] = {}
        self.seen: list[object] = []
        self.ts = 0

    def answer(self, msg):
        self.seen.append(msg)
        if type(msg) is m.Put:
            self.ts += 1
            self.data[msg.key] = msg.value
            return m.Reply(msg.id, m.OK, version=Version(self.ts, self.name), w_used=2)
        if type(msg) is m.Get:
            value = self.data.get(msg.key)
            status = m.OK if value is not None else m.NOT_FOUND
            return m.Reply(msg.id, status, value, Version(self.ts, self.name) if value else None, r_used=2)
        if type(msg) is m.Ping:
            return m.Pong(msg.id, self.name, 3, 2, 2)
        if type(msg) is mc.Atomic:
            return mc.AtomicReply(msg.id, m.OK, applied=True)
        raise AssertionError(f"unexpected {msg!r}")


class FakeConnection:
    def __init__(self, node: FakeNode, fail_after: int | None) -> None:
        self.node = node
        self.pending: list[object] = []
        self.fail_after = fail_after  # requests answered before the connection "drops"
        self.closed = False

    def send(self, msg) -> None:
        if self.fail_after is not None and len(self.node.seen) >= self.fail_after:
            self.node.seen.append(msg)  # it reached the node; the answer is lost
            raise ConnectionResetError("connection reset by fake peer")
        self.pending.append(self.node.answer(msg))

    def receive(self):
        out, self.pending = self.pending, []
        return out

    def set_timeout_ms(self, timeout_ms: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """host:port -> FakeNode; ``down`` refuse connections, ``flaky`` drop mid-request."""

    def __init__(self, nodes: dict[str, FakeNode], down=(), flaky=()) -> None:
        self.nodes, self.down, self.flaky = nodes, set(down), set(flaky)
        self.connects: list[str] = []

    def connect(self, host: str, port: int, timeout_ms: int) -> FakeConnection:
        addr = f"{host}:{port}"
        self.connects.append(addr)
        if addr in self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        return FakeConnection(self.nodes[addr], 0 if addr in self.flaky else None)


ADDRS = ["10.0.0.1:7001", "10.0.0.2:7001"]


@pytest.fixture
def no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the client opened a real socket")

    monkeypatch.setattr(socket, "create_connection", refuse)


def _nodes():
    return {a: FakeNode(f"n{i + 1}") for i, a in enumerate(ADDRS)}


def test_default_transport_is_tcp():
    assert isinstance(Client(ADDRS).transport, TcpTransport)


def test_client_runs_over_another_transport(no_sockets):
    nodes = _nodes()
    t = FakeTransport(nodes)
    with Client(ADDRS, transport=t) as c:
        assert c.put("k", "v") == 2
        assert c.get("k") == b"v"
        assert c.get("absent", default=None) is None
    assert t.connects == [ADDRS[0]]  # one connection, reused
    assert [type(x) for x in nodes[ADDRS[0]].seen] == [m.Put, m.Get, m.Get]


def test_unreachable_node_fails_over_and_all_down_names_each(no_sockets):
    nodes = _nodes()
    with Client(ADDRS, transport=FakeTransport(nodes, down=[ADDRS[0]])) as c:
        c.put("k", "v")
    assert nodes[ADDRS[1]].data == {b"k": b"v"}
    with Client(ADDRS, transport=FakeTransport(nodes, down=ADDRS)) as c:
        with pytest.raises(ConnectionFailedError) as exc:
            c.get("k")
    assert all(a in str(exc.value) for a in ADDRS)


def test_dropped_put_is_resent_elsewhere_but_atomic_change_is_not(no_sockets):
    nodes = _nodes()
    with Client(ADDRS, transport=FakeTransport(nodes, flaky=[ADDRS[0]])) as c:
        c.put("k", "v")  # lost on n1 mid-request, re-sent to n2 (idempotent under LWW)
    assert nodes[ADDRS[1]].data == {b"k": b"v"}
    nodes = _nodes()
    with Client(ADDRS, transport=FakeTransport(nodes, flaky=[ADDRS[0]])) as c:
        with pytest.raises(QuorumTimeoutError, match="outcome unknown"):
            c.incr("counter")
    assert nodes[ADDRS[1]].seen == []  # never re-sent: it might have run on n1


class FakeAsyncConnection:
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.lost = None

    async def request(self, msg, timeout_ms: int):
        await asyncio.sleep(0)
        return self.node.answer(msg)

    def close(self) -> None:
        self.lost = ConnectionResetError("closed")


class FakeAsyncTransport:
    def __init__(self, nodes: dict[str, FakeNode], down=()) -> None:
        self.nodes, self.down = nodes, set(down)

    async def connect(self, host: str, port: int, timeout_ms: int) -> FakeAsyncConnection:
        addr = f"{host}:{port}"
        if addr in self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        return FakeAsyncConnection(self.nodes[addr])


def test_async_client_runs_over_another_transport(no_sockets):
    nodes = _nodes()

    async def main():
        async with AsyncClient(ADDRS, transport=FakeAsyncTransport(nodes, down=[ADDRS[0]])) as c:
            await asyncio.gather(*(c.put(f"k{i}", f"v{i}") for i in range(5)))
            return [await c.get(f"k{i}") for i in range(5)]

    assert asyncio.run(main()) == [f"v{i}".encode() for i in range(5)]
    assert len(nodes[ADDRS[1]].data) == 5 and not nodes[ADDRS[0]].seen
