"""TLS (stdlib ``ssl``) for a node's listeners and its links to peers.

Configuration: ``tls_cert`` / ``tls_key`` (this node's certificate and key, PEM) and
``tls_ca`` (the cluster CA). With them every port of the node speaks TLS 1.2+: the
native port (clients and peers), the RESP port, and the node's own links to its
peers, on which it presents its certificate (mutual TLS) and checks the peer's
against ``tls_ca`` and the peer's address (host name or IP in the certificate's
subjectAltName). On its listeners the node asks every client for a certificate
(``CERT_OPTIONAL``): one that verifies against ``tls_ca`` identifies a peer (role
``node``, shell/auth.py); clients without one authenticate with a password; one that
does not verify fails the handshake (an unknown peer).

Listeners accept the TCP connection themselves (``serve``) so that refusals are
clear and counted rather than lost in the event loop's log:

* a plaintext client: its first byte is not a TLS handshake record (0x16); it gets
  one plaintext error in its own protocol (a native ``Error`` frame, a RESP
  ``-ERR``), the connection is closed, ``tls_plaintext_refused`` counts it;
* a failed handshake (unknown CA, expired certificate, no common cipher, timeout):
  logged with the reason, ``tls_handshake_failed`` counts it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import structlog

log = structlog.get_logger("quorumkv.tls")

#: A TLS handshake record starts with this content type byte.
TLS_HANDSHAKE_BYTE = 0x16
#: A new connection must send its first byte, then finish the handshake, within this.
TLS_HANDSHAKE_TIMEOUT_MS = 5_000
#: Connections accepted and not yet through their handshake, at most; past it new
#: connections are closed at once (counted as failed handshakes), so a flood of
#: silent connections costs bounded memory.
HANDSHAKES_IN_FLIGHT_MAX = 256
#: Pending connections the kernel queues for accept (the listen backlog).
LISTEN_BACKLOG = 1024


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate is a peer's; clients may use a password
    return ctx


def client_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """For a node's links to its peers (with ``cert``: mutual TLS) and for clients."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def peer_verified(transport) -> bool:
    """The connection's client presented a certificate that verified against our CA."""
    return bool(transport.get_extra_info("peercert"))


class TlsListener:
    """Accepts connections on ``host:port`` and hands those whose TLS handshake
    succeeds to ``factory()`` protocols; refuses the rest (module doc)."""

    def __init__(self, loop, factory, ctx: ssl.SSLContext, stats: dict, plaintext_reply: bytes, what: str) -> None:
        self.loop = loop
        self.factory = factory
        self.ctx = ctx
        self.stats = stats
        self.plaintext_reply = plaintext_reply
        self.what = what
        self.sock: socket.socket | None = None
        self._task = None
        self._in_flight = 0
        stats.setdefault("tls_plaintext_refused", 0)
        stats.setdefault("tls_handshake_failed", 0)

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self.sock = sock
        self._task = self.loop.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        while True:
            try:
                conn, addr = await self.loop.sock_accept(self.sock)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except OSError as exc:  # EMFILE and friends: back off a little, keep serving
                log.warning("accept_failed", listener=self.what, error=str(exc))
                await asyncio.sleep(0.05)
                continue
            if self._in_flight >= HANDSHAKES_IN_FLIGHT_MAX:
                self._refused("tls_handshake_failed", addr, f"too many handshakes in flight "
                              f"(HANDSHAKES_IN_FLIGHT_MAX={HANDSHAKES_IN_FLIGHT_MAX})")
                conn.close()
                continue
            self._in_flight += 1
            self.loop.create_task(self._admit(conn, addr))

    async def _admit(self, conn: socket.socket, addr) -> None:
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = await asyncio.wait_for(self._peek(conn), TLS_HANDSHAKE_TIMEOUT_MS / 1000)
            if not first:
                conn.close()  # connected and left without a byte (a port probe)
                return
            if first[0] != TLS_HANDSHAKE_BYTE:
                self._refused("tls_plaintext_refused", addr, "plaintext client on a TLS port")
                try:
                    conn.send(self.plaintext_reply)
                except OSError:
                    pass
                conn.close()
                return
            await asyncio.wait_for(
                self.loop.connect_accepted_socket(self.factory, conn, ssl=self.ctx,
                                                  ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_MS / 1000),
                TLS_HANDSHAKE_TIMEOUT_MS / 1000)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self._refused("tls_handshake_failed", addr, f"TLS handshake failed: {reason} ({exc})"[:300])
            conn.close()
        finally:
            self._in_flight -= 1

    async def _peek(self, conn: socket.socket) -> bytes:
        """The first byte the client sent, without consuming it (b"" on EOF)."""
        fut = self.loop.create_future()
        fd = conn.fileno()
        self.loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            self.loop.remove_reader(fd)
        return conn.recv(1, socket.MSG_PEEK)

    def _refused(self, counter: str, addr, reason: str) -> None:
        self.stats[counter] += 1
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        log.warning(counter, listener=self.what, peer=peer, reason=reason)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.sock is not None:
            self.sock.close()
