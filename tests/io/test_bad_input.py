"""A node never dies from what arrives on its socket, and bad requests write nothing."""

from __future__ import annotations

import socket

import msgspec
import pytest

from quorumkv import Client, InvalidRequestError
from quorumkv.core import messages as m
from quorumkv.core.framing import FrameDecoder, FrameEncoder
from quorumkv.core.limits import FRAME_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX

pytestmark = pytest.mark.integration
ENC = FrameEncoder()


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory):
    from quorumkv.cli.localcluster import LocalCluster
    from quorumkv.cli.testing import free_base_port

    cluster = LocalCluster(str(tmp_path_factory.mktemp("bad") / "c"))
    cluster.create(3, base_port=free_base_port(6), replicas=3, storage="sqlite")
    cluster.up()
    yield cluster
    cluster.down()


def raw(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def read_until_closed(s: socket.socket) -> list:
    dec = FrameDecoder()
    msgs = []
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        msgs.extend(dec.feed(data))
    return msgs


def assert_serving(cluster) -> None:
    with Client(cluster.addresses()) as c:
        c.put("health", "ok")
        assert c.get("health") == b"ok"
    for node in cluster.nodes:
        assert node.running(), f"{node.id} died"


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("data, expect", [
    (b"\x00\x00\x00\x05hello", "undecodable"),                        # garbage payload
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds FRAME_BYTES_MAX"), # wrong protocol
    ((FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"x" * 10, "exceeds FRAME_BYTES_MAX"),
    (frame(msgspec.msgpack.encode([77, 1, b"k"])), "undecodable"),      # unknown message type
    (frame(msgspec.msgpack.encode([2, 1, b"k", 12345, 0])), "undecodable"),  # value not bytes
    (ENC.encode(m.Reply(1, 0)), "unexpected Reply"),                    # a response as a request
])
def test_bad_frames_get_an_error_and_a_closed_connection(node_cluster, data, expect):
    s = raw(node_cluster.nodes[0].address)
    s.sendall(data)
    msgs = read_until_closed(s)
    s.close()
    assert msgs and type(msgs[-1]) is m.Error and expect in msgs[-1].message
    assert_serving(node_cluster)


def test_truncated_frame_and_vanishing_clients(node_cluster):
    addr = node_cluster.nodes[1].address
    # A frame that promises 100 bytes and delivers 10, then the client goes away.
    s = raw(addr)
    s.sendall((100).to_bytes(4, "big") + b"0123456789")
    s.close()
    # A client that sends requests and disconnects before the answers come back.
    for _ in range(20):
        s = raw(addr)
        s.sendall(b"".join(ENC.encode(m.Put(i, b"vanish%d" % i, b"v", 0)) for i in range(50)))
        s.sendall(ENC.encode(m.Get(999, b"vanish1", 0)))
        s.close()
    # Half a header, then reset.
    s = raw(addr)
    s.sendall(b"\x00\x00")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert_serving(node_cluster)


def test_invalid_requests_rejected_before_anything_is_written(node_cluster):
    addr = node_cluster.nodes[0].address
    big_key = b"k" * (KEY_BYTES_MAX + 1)
    s = raw(addr)
    dec = FrameDecoder()
    s.sendall(ENC.encode(m.Put(1, b"", b"v", 0)) + ENC.encode(m.Put(2, big_key, b"v", 0))
              + ENC.encode(m.Put(3, b"ok-key", b"v", 9)) + ENC.encode(m.Get(4, b"ok-key", -9))
              + ENC.encode(m.Put(5, b"big-value", b"x" * (VALUE_BYTES_MAX + 1), 0)))
    replies = {}
    while len(replies) < 5:
        for r in dec.feed(s.recv(1 << 20)):
            replies[r.id] = r
    s.close()
    assert all(r.status == m.INVALID for r in replies.values())
    assert "empty key" in replies[1].message
    assert "KEY_BYTES_MAX" in replies[2].message
    assert "W=9 is impossible with N=3" in replies[3].message
    assert "unknown consistency level" in replies[4].message
    assert "VALUE_BYTES_MAX" in replies[5].message
    with Client([addr]) as c:
        for key in (b"ok-key", b"big-value"):
            assert c.get(key, r="ALL", default=None) is None  # nothing was written
        # The client checks the same limits before sending anything.
        for bad in (lambda: c.put("", "v"), lambda: c.put(big_key, "v"), lambda: c.put("k", 12),
                    lambda: c.put("k", None), lambda: c.get("k", r=0), lambda: c.get("k", r="MOST"),
                    lambda: c.put("k", "v", w=True), lambda: c.put(123, "v")):
            with pytest.raises(InvalidRequestError):
                bad()
    assert_serving(node_cluster)
