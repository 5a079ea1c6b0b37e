"""TLS on every port, mutual TLS between nodes, users and roles (issue 13 part 2),
against real node processes: the native client and redis-py with ``ssl=True``.

Each refusal — bad credentials, no credentials, a role without the permission, a
plaintext client on a TLS port, an unknown peer (a certificate from another CA), a
client sending internode messages — must be refused with a clear error and counted
in the node's statistics.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import ssl
import subprocess
import sys

import pytest
import redis

from quorumkv.client import Client
from quorumkv.client import AsyncClient
from quorumkv.core import messages as m
from quorumkv.core.framing import FrameDecoder, FrameEncoder
from quorumkv.core.messages_admin import Auth
from quorumkv.errors import ProtocolError
from quorumkv.cli.localcluster import LocalCluster
from quorumkv.cli.testing import free_base_port

from helpers import wait_for

pytest.importorskip("cryptography", reason="quorumkv certs needs cryptography (the test extra)")
pytestmark = pytest.mark.integration

ADMIN_PW = "adm1n-pw"
USERS = {"reader": {"password": "r3ad", "role": "readonly"},
         "writer": {"password": "wr1te", "role": "readwrite"}}


def certs(out, *nodes):
    subprocess.run([sys.executable, "-m", "quorumkv", "certs", "--out", str(out),
                    *[a for n in nodes for a in ("--node", f"{n}=127.0.0.1")]], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ca_dir = root / "certs"
    certs(ca_dir, "n1", "n2", "n3")
    certs(root / "rogue", "n9")  # another CA: an unknown peer
    overrides = {f"n{i}": {"tls_cert": str(ca_dir / f"n{i}.pem"), "tls_key": str(ca_dir / f"n{i}-key.pem"),
                           "tls_ca": str(ca_dir / "ca.pem"), "users": USERS, "resp_password": ADMIN_PW}
                 for i in (1, 2, 3)}
    mp = pytest.MonkeyPatch()
    # The cluster's own readiness checks (and the CLI) find credentials and CA here.
    mp.setenv("QUORUMKV_PASSWORD", ADMIN_PW)
    mp.setenv("QUORUMKV_TLS_CA", str(ca_dir / "ca.pem"))
    cl = LocalCluster(str(root / "cluster"))
    cl.create(3, base_port=free_base_port(6), replicas=3, node_overrides=overrides)
    try:
        cl.up()
        yield cl, ca_dir, root / "rogue"
    finally:
        cl.down()
        mp.undo()


def stats(cl, i: int = 0) -> dict:
    """Node i's statistics (the security counters are per node)."""
    ca = str(pathlib.Path(cl.root).parent / "certs" / "ca.pem")
    with Client([cl.addresses()[i]], user="default", password=ADMIN_PW, tls_ca=ca) as c:  # admin
        return c.status().stats


def test_native_client_over_tls_with_roles(tls_cluster, monkeypatch):
    cl, ca_dir, _ = tls_cluster
    ca = str(ca_dir / "ca.pem")
    with Client(cl.addresses(), user="writer", password="wr1te", tls_ca=ca, w="ALL") as c:
        c.put("k", "v")  # W=ALL: every node took it, over mutual-TLS internode links
        assert c.get("k", r="ALL") == b"v"
    before = stats(cl)
    with Client(cl.addresses()[:1], user="reader", password="r3ad", tls_ca=ca) as c:
        assert c.get("k") == b"v"
        with pytest.raises(ProtocolError, match="NOPERM user 'reader' has no permission to send Put"):
            c.put("k", "x")
        assert c.get("k") == b"v"  # the connection carries on after a refusal
    with Client(cl.addresses()[:1], user="writer", password="wr1te", tls_ca=ca) as c:
        with pytest.raises(ProtocolError, match="NOPERM user 'writer' has no permission to send Snapshot"):
            c.snapshot("by-writer")  # backups are for admins
    with pytest.raises(ProtocolError, match="WRONGPASS"):
        Client(cl.addresses()[:1], user="writer", password="nope", tls_ca=ca).get("k")
    monkeypatch.delenv("QUORUMKV_PASSWORD")
    with pytest.raises(ProtocolError, match="NOAUTH authentication required"):
        Client(cl.addresses()[:1], user=None, password=None, tls_ca=ca, session=False)._call(m.Ping(1))
    after = stats(cl)
    assert after["auth_denied"] == before["auth_denied"] + 2
    assert after["auth_failed"] == before["auth_failed"] + 1
    assert after["auth_missing"] == before["auth_missing"] + 1


def test_async_client_over_tls_with_roles(tls_cluster):
    cl, ca_dir, _ = tls_cluster
    ca = str(ca_dir / "ca.pem")

    async def run():
        async with AsyncClient(cl.addresses(), user="writer", password="wr1te", tls_ca=ca) as c:
            await c.put("ak", "av")
            assert await c.get("ak") == b"av"
        async with AsyncClient(cl.addresses()[:1], user="reader", password="r3ad", tls_ca=ca) as c:
            got, refused = await asyncio.gather(c.get("ak"), c.put("ak", "x"), return_exceptions=True)
            assert got == b"av"  # the refusal of one pipelined request leaves the other alone
            assert isinstance(refused, ProtocolError) and "NOPERM" in str(refused)
        with pytest.raises(ProtocolError, match="WRONGPASS"):
            async with AsyncClient(cl.addresses()[:1], user="reader", password="bad", tls_ca=ca) as c:
                await c.get("ak")

    asyncio.run(run())


def test_plaintext_client_on_tls_port_is_refused_and_counted(tls_cluster, monkeypatch):
    cl, _, _ = tls_cluster
    monkeypatch.delenv("QUORUMKV_TLS_CA")
    before = stats(cl)
    with pytest.raises(ProtocolError, match="this port requires TLS"):
        Client(cl.addresses()[:1], password=ADMIN_PW, ssl_context=None).ping()
    r = redis.Redis(port=int(cl.nodes[0].resp.rsplit(":", 1)[1]), password=ADMIN_PW, socket_timeout=5)
    with pytest.raises(redis.RedisError, match="this port requires TLS"):
        r.ping()
    after = stats(cl)
    assert after["tls_plaintext_refused"] == before["tls_plaintext_refused"] + 2


def test_unknown_peer_is_refused_at_the_handshake(tls_cluster):
    cl, ca_dir, rogue = tls_cluster
    before = stats(cl)
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    ctx.load_cert_chain(str(rogue / "n9.pem"), str(rogue / "n9-key.pem"))  # signed by another CA
    host, port = cl.nodes[0].address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(FrameEncoder().encode(m.Ping(1)))  # TLS 1.3: the alert comes on first I/O
                got = s.recv(1)
        except (ssl.SSLError, OSError) as exc:  # the node's alert: unknown CA
            got = exc
    assert got == b"" or isinstance(got, OSError), f"the node answered an unknown peer: {got!r}"
    wait_for(lambda: stats(cl)["tls_handshake_failed"] == before["tls_handshake_failed"] + 1, 10,
             "the failed handshake counted")


def test_internode_messages_need_an_authenticated_peer(tls_cluster):
    """A client (TLS, right password, but no node certificate) cannot speak as a peer."""
    cl, ca_dir, _ = tls_cluster
    before = stats(cl)
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    host, port = cl.nodes[0].address.rsplit(":", 1)
    enc, dec = FrameEncoder(), FrameDecoder()
    with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host) as s:
        s.sendall(enc.encode(Auth(1, "writer", "wr1te")) + enc.encode(m.RepRead(2, b"k")))
        replies = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            replies += dec.feed(data)
    assert type(replies[0]) is m.Reply and replies[0].status == m.OK
    assert type(replies[-1]) is m.Error and "accepted only from authenticated peers" in replies[-1].message
    assert stats(cl)["peer_refused"] == before["peer_refused"] + 1


def test_redis_py_over_tls_with_users(tls_cluster):
    cl, ca_dir, _ = tls_cluster
    port = int(cl.nodes[1].resp.rsplit(":", 1)[1])
    common = dict(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_dir / "ca.pem"), socket_timeout=10)
    before = stats(cl, 1)
    w = redis.Redis(username="writer", password="wr1te", **common)
    assert w.set("rk", "1") and w.get("rk") == b"1"
    rd = redis.Redis(username="reader", password="r3ad", **common)
    assert rd.get("rk") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        rd.set("rk", "2")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(username="writer", password="bad", **common).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):  # NOAUTH
        redis.Redis(**common).get("rk")
    assert redis.Redis(password=ADMIN_PW, **common).get("rk") == b"1"  # AUTH <password>: the default user
    after = stats(cl, 1)
    assert after["auth_denied"] == before["auth_denied"] + 1
    # (redis-py may retry a refused connection: at least one each)
    assert after["auth_failed"] > before["auth_failed"]
    assert after["auth_missing"] > before["auth_missing"], {k: (before[k], after[k]) for k in before if k.startswith(("auth", "tls"))}


def test_internode_user_without_tls(tmp_path, monkeypatch):
    """Without TLS, peers authenticate with internode_user (role node): the cluster
    works at W=ALL, and a readwrite user cannot send internode messages."""
    users = {**USERS, "cluster": {"password": "n0des", "role": "node"}}
    monkeypatch.delenv("QUORUMKV_TLS_CA", raising=False)  # the TLS cluster's, when it ran first
    monkeypatch.setenv("QUORUMKV_USER", "writer")
    monkeypatch.setenv("QUORUMKV_PASSWORD", "wr1te")
    cl = LocalCluster(str(tmp_path / "c"))
    cl.create(2, base_port=free_base_port(4), replicas=2,
              node_overrides={f"n{i}": {"users": users, "internode_user": "cluster", "internode_password": "n0des"}
                              for i in (1, 2)})
    try:
        cl.up()
        with Client(cl.addresses(), w="ALL", r="ALL") as c:
            c.put("a", "1")
            assert c.get("a") == b"1"
            host, port = cl.nodes[0].address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(FrameEncoder().encode(Auth(1, "writer", "wr1te")) + FrameEncoder().encode(m.RepRead(2, b"a")))
                dec, replies = FrameDecoder(), []
                while data := s.recv(65536):
                    replies += dec.feed(data)
            assert "accepted only from authenticated peers" in replies[-1].message
            assert c.status().stats["peer_refused"] >= 1
    finally:
        cl.down()


def test_security_counters_are_exported_as_metrics(tls_cluster):
    """Refusals reach Prometheus as quorumkv_auth_total / quorumkv_tls_refused_total."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    cl, ca_dir, _ = tls_cluster
    node = cl.nodes[0]
    assert node.metrics, "local clusters serve metrics"

    def scrape() -> dict:
        text = urllib.request.urlopen(f"http://{node.metrics}/metrics", timeout=10).read().decode()
        return {(s.name, tuple(s.labels.values())): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    before = scrape()
    with pytest.raises(ProtocolError, match="WRONGPASS"):
        Client([node.address], user="writer", password="nope", tls_ca=str(ca_dir / "ca.pem")).ping()
    with pytest.raises(ProtocolError, match="this port requires TLS"):
        Client([node.address], password=ADMIN_PW, ssl_context=None, tls_ca="").ping()
    with Client([node.address], user="reader", password="r3ad", tls_ca=str(ca_dir / "ca.pem")) as c:
        with pytest.raises(ProtocolError, match="NOPERM"):
            c.put("m", "x")
    after = scrape()
    for key in [("quorumkv_auth_total", ("bad_credentials",)), ("quorumkv_auth_total", ("permission_denied",)),
                ("quorumkv_tls_refused_total", ("plaintext",))]:
        assert after[key] == before[key] + 1, key
    assert after[("quorumkv_auth_total", ("ok",))] >= before[("quorumkv_auth_total", ("ok",))] + 1


def test_certs_reuses_its_ca_for_a_later_node(tmp_path):
    """`quorumkv certs` makes the CA once: a host added later gets a certificate the
    running nodes trust; keys are private to their owner."""
    from cryptography import x509

    certs(tmp_path, "n1")
    ca_before = (tmp_path / "ca.pem").read_bytes()
    certs(tmp_path, "n6")
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    ca = x509.load_pem_x509_certificate(ca_before)
    for node in ("n1", "n6"):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{node}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert node in sans.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert (tmp_path / f"{node}-key.pem").stat().st_mode & 0o077 == 0
