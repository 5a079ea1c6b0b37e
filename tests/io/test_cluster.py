"""Real node processes on 127.0.0.1: quorum reads/writes, kill -9, restart, durability."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from quorumkv import ALL, QUORUM, AsyncClient, Client, NotFoundError, UnavailableError
from quorumkv.core.ring import Ring

pytestmark = pytest.mark.integration

KEYS = 300


def ring_of(cluster) -> Ring:
    return Ring([n.id for n in cluster.nodes], 3)


def kill9(cluster, node_id: str) -> None:
    node = cluster.node(node_id)
    pid = node.pid()
    assert cluster.signal(node, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node.running():
        assert time.monotonic() < deadline, f"{node_id} (pid {pid}) survived SIGKILL"
        time.sleep(0.01)


def test_quorum_survives_one_dead_replica(make_cluster):
    cluster = make_cluster(nodes=5)
    with Client(cluster.addresses()) as c:
        for i in range(KEYS):
            c.put(f"k{i}", f"v{i}", w=QUORUM)
        kill9(cluster, "n3")
        # Every key is still readable at QUORUM (n3 held a copy of about 3/5 of them)...
        for i in range(KEYS):
            assert c.get(f"k{i}", r=QUORUM) == f"v{i}".encode()
        # ...and writable, then readable again.
        for i in range(KEYS):
            c.put(f"k{i}", f"w{i}", w=QUORUM)
        for i in range(KEYS):
            assert c.get(f"k{i}", r=QUORUM) == f"w{i}".encode()
        c.delete("k0")
        with pytest.raises(NotFoundError):
            c.get("k0")


def test_two_of_three_replicas_dead_fails_fast_and_clearly(make_cluster):
    cluster = make_cluster(nodes=5)
    ring = ring_of(cluster)
    key = b"the-key"
    replicas = ring.preference_list(key)
    with Client(cluster.addresses(), timeout_ms=10_000) as c:
        c.put(key, b"before", w=ALL)
        kill9(cluster, replicas[0])
        kill9(cluster, replicas[1])
        alive = [n.address for n in cluster.nodes if n.id not in replicas[:2]]
    with Client(alive, timeout_ms=10_000) as c:
        with pytest.raises(UnavailableError) as exc:
            c.put(key, b"after", w=QUORUM)
        msg = str(exc.value)
        assert "write needed 2 acks" in msg
        assert replicas[0] in msg and replicas[1] in msg
        with pytest.raises(UnavailableError, match="read needed 2 replies"):
            c.get(key, r=QUORUM)
        # ONE still works: the third replica is alive and holds the value.
        assert c.get(key, r=1) in (b"before", b"after")
        # Keys whose replicas are all alive are unaffected.
        other = next(f"x{i}".encode() for i in range(1000)
                     if not set(ring.preference_list(f"x{i}".encode())) & set(replicas[:2]))
        c.put(other, b"fine", w=ALL)
        assert c.get(other, r=ALL) == b"fine"


def test_acknowledged_writes_survive_kill9_of_every_node(make_cluster):
    """Writes acked at QUORUM while nodes are SIGKILLed are all there after restart."""
    cluster = make_cluster(nodes=5)
    acked: dict[str, str] = {}
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        i = 0
        with Client(cluster.addresses(), timeout_ms=5_000) as c:
            while not stop.is_set():
                key, value = f"d{i % 150}", f"gen{i}"
                try:
                    c.put(key, value, w=QUORUM)
                    acked[key] = value
                except Exception as exc:  # unacknowledged: may or may not be there
                    errors.append(repr(exc))
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    kill9(cluster, "n2")  # one node dies mid-stream; writes carry on at QUORUM
    count = len(acked)
    while len(acked) < count + 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive()
    snapshot = dict(acked)
    assert len(snapshot) == 150
    for node in cluster.nodes:  # now the whole cluster crashes
        if node.running():
            kill9(cluster, node.id)
    cluster.up()  # restart all with the same data directories
    with Client(cluster.addresses()) as c:
        for key, value in snapshot.items():
            assert c.get(key, r=ALL) == value.encode(), key


def test_restarted_node_keeps_its_data(make_cluster):
    cluster = make_cluster(nodes=3)
    with Client(cluster.addresses()) as c:
        for i in range(100):
            c.put(f"r{i}", f"v{i}", w=ALL)
    node = cluster.node("n1")
    with Client([node.address]) as direct:
        assert direct.ping().keys == 100
    kill9(cluster, "n1")
    cluster.start(node)
    cluster.wait_ready([node])
    with Client([node.address]) as direct:
        assert direct.ping().keys == 100
    # With the other two down, n1 alone answers reads at ONE from its own disk.
    kill9(cluster, "n2")
    kill9(cluster, "n3")
    with Client([node.address]) as direct:
        for i in range(100):
            assert direct.get(f"r{i}", r=1) == f"v{i}".encode()


def test_async_client_and_failover(make_cluster):
    import asyncio

    cluster = make_cluster(nodes=3, storage="memory")
    dead = "127.0.0.1:1"  # nothing listens there: the client must move on

    async def main():
        async with AsyncClient([dead] + cluster.addresses()) as c:
            await c.put("a", "1")
            await c.put(b"b", b"\x00\xff")
            assert await c.get("a") == b"1"
            assert await c.get("b") == b"\x00\xff"
            results = await asyncio.gather(*(c.put(f"p{i}", str(i)) for i in range(200)))
            assert len(results) == 200
            values = await asyncio.gather(*(c.get(f"p{i}") for i in range(200)))
            assert values == [str(i).encode() for i in range(200)]
            await c.delete("a")
            assert await c.get("a", default=None) is None
            with pytest.raises(NotFoundError):
                await c.get("a")
            item = await c.get_item("b", r=ALL)
            assert item.value == b"\x00\xff" and item.version is not None

    asyncio.run(main())


def test_sync_client_fails_over_when_its_node_dies(make_cluster):
    cluster = make_cluster(nodes=3, storage="memory")
    with Client(cluster.addresses()) as c:
        c.put("x", "1")
        kill9(cluster, "n1")  # the node the client is connected to
        c.put("x", "2")  # moves to n2
        assert c.get("x") == b"2"
