"""The node's outbound links: one persistent connection per peer, opened on demand,
reconnected with capped exponential back-off, and ``SocketTransport`` — the real
node's Transport edge (``runtime/interfaces.py``) that sends over them.

While a link is down, sends fail at once (``Executor.send_failed``) and the core's
quorum round decides. Frames queued per event-loop turn are written with one
``transport.write`` (batching: many requests, one syscall).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

import msgspec
import structlog

from ..core import messages as m
from ..core import wire
from ..core.framing import FrameDecoder
from ..core.limits import CLIENT_PIPELINE_MAX, PEER_QUEUE_BYTES_MAX
from ..core.messages_admin import Auth, SnapshotReply
from ..errors import ProtocolError
from . import auth
from .config import parse_address
from .conns import Conn
from .latency import PendingStamps, now_us
from .wallclock import mono_ms

if TYPE_CHECKING:
    from .server import NodeServer

log = structlog.get_logger("quorumkv.node")

#: Reconnect back-off towards a peer: first retry after 50 ms, doubling to 1 s.
RECONNECT_MS_MIN = 50
RECONNECT_MS_MAX = 1_000
#: Connect attempt to a peer gives up after this long.
CONNECT_TIMEOUT_MS = 1_000
#: What a peer may answer on our outbound link (client-facing replies never come back there).
RESPONSE_TYPES = set(wire.RESPONSE_TYPES) - {m.Reply, m.Pong, m.StatusReply, m.InspectReply, m.LatenciesReply,
                                           SnapshotReply}


def loopback_source(listen: str, peer_host: str) -> tuple[str, int] | None:
    """The local address a peer link connects from: the node's own listen address when
    both it and the peer are distinct IPv4 loopback addresses (``quorumkv verify``'s
    partition nemesis gives each node its own 127.x address and drops traffic between
    address pairs — without this the kernel would send from 127.0.0.1); None (the
    kernel's choice) otherwise."""
    own = parse_address(listen)[0]
    try:
        a, b = ipaddress.ip_address(own), ipaddress.ip_address(peer_host)
    except ValueError:  # host names: leave the source to the kernel
        return None
    if a.version == 4 and b.version == 4 and a.is_loopback and b.is_loopback and a != b:
        return (own, 0)
    return None


class PeerLink(Conn):
    """Our outbound connection to one peer."""

    def __init__(self, server: "NodeServer", peer: str, address: str) -> None:
        super().__init__(server)
        self.peer = peer
        self.address = address
        self.state = "down"  # down | connecting | up
        self.retry_at_ms = 0
        self.last_attempt_ms = 0
        self.backoff_ms = RECONNECT_MS_MIN
        self._pending: list = []  # messages queued while connecting
        self.stamps = PendingStamps()  # send times of RepWrite/RepRead: latency samples
        self._sampled = False  # a request of the batch being gathered is stamped already

    def _flush(self) -> None:
        self._sampled = False
        super()._flush()

    # -- sending --------------------------------------------------------------
    def request(self, msg) -> None:
        t = type(msg)
        # Latency samples: the first RepWrite/RepRead of each batch (one per link per
        # loop turn). A lone request is always sampled; under load one of a batch
        # is (measured: ~40 frames per batch at saturation), which keeps the timing
        # off the per-request path.
        if (t is m.RepWrite or t is m.RepRead) and msg.id and not self._sampled:
            self._sampled = True
            self.stamps.stamp(msg.id, t is m.RepWrite)
        if self.state == "up":
            if self.buffered_bytes() > PEER_QUEUE_BYTES_MAX:
                self._failed(msg, f"send queue full (PEER_QUEUE_BYTES_MAX={PEER_QUEUE_BYTES_MAX})")
            else:
                self.send(msg)
            return
        if self.state == "down":
            now = mono_ms()
            # In back-off, fail fast — unless the detector still believes the peer is
            # alive (it just started, or restarted): then try again, at most every
            # RECONNECT_MS_MIN, rather than fail requests it could serve.
            if now < self.retry_at_ms and not (
                    self.server.core.is_alive(self.peer) and now >= self.last_attempt_ms + RECONNECT_MS_MIN):
                self._failed(msg, "unreachable")
                return
            self.last_attempt_ms = now
            self.state = "connecting"
            self.server.loop.create_task(self._connect())
        if len(self._pending) >= CLIENT_PIPELINE_MAX * 10:
            self._failed(msg, "connect queue full")
        else:
            self._pending.append(msg)

    def _failed(self, msg, reason: str) -> None:
        server = self.server
        server.loop.call_soon(server.executor.send_failed, self.peer, msg, reason)

    async def _connect(self) -> None:
        host, port = parse_address(self.address)
        ctx = self.server.tls_client_ctx
        try:
            await asyncio.wait_for(
                self.server.loop.create_connection(lambda: self, host, port, ssl=ctx,
                                                   server_hostname=host if ctx is not None else None,
                                                   local_addr=loopback_source(self.server.config.listen, host)),
                CONNECT_TIMEOUT_MS / 1000,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._down(f"unreachable ({type(exc).__name__})")
            pending, self._pending = self._pending, []
            for msg in pending:
                self.server.executor.send_failed(self.peer, msg, "unreachable")

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.closed = False
        self.decoder = FrameDecoder()
        self.state = "up"
        self.backoff_ms = RECONNECT_MS_MIN
        log.info("peer_connected", peer=self.peer)
        creds = auth.internode_credentials(self.server.config)
        if creds is not None:  # peers that require authentication see this first
            self.send(Auth(auth.PEER_AUTH_ID, *creds))
        pending, self._pending = self._pending, []
        for msg in pending:
            self.send(msg)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.transport = None
        self._out = []
        self._out_bytes = 0
        self.stamps.clear()
        self._down("connection lost")
        self.server.executor.peer_lost(self.peer, "unreachable")

    def _down(self, reason: str) -> None:
        if self.state != "down":
            log.info("peer_down", peer=self.peer, reason=reason)
        self.state = "down"
        self.retry_at_ms = mono_ms() + self.backoff_ms
        self.backoff_ms = min(self.backoff_ms * 2, RECONNECT_MS_MAX)

    # -- receiving ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        server = self.server
        try:
            msgs = self.decoder.feed(data)
        except ProtocolError as exc:
            log.warning("bad_peer_frame", peer=self.peer, reason=str(exc))
            server.stats["bad_peer_frames"] += 1
            self.transport.close()
            return
        now = mono_ms()
        core = server.core
        t_now = now_us()
        for msg in msgs:
            t = type(msg)
            if (t is m.RepWriteAck or t is m.RepReadResp) and msg.t_us:
                t0 = self.stamps.take(msg.id, t is m.RepWriteAck)
                if t0 is not None:
                    server.latency.add(t is m.RepWriteAck, t0, msg.t_us, t_now)
            if t not in RESPONSE_TYPES:
                if t is m.Reply and msg.id == auth.PEER_AUTH_ID:
                    continue  # the peer accepted our Auth
                if t is m.Error:
                    log.warning("peer_refused_us", peer=self.peer, reason=msg.message)
                    continue
                log.warning("bad_peer_message", peer=self.peer, type=type(msg).__name__)
                continue
            try:
                server.run(core.on_response(self.peer, msg, now))
            except Exception:  # a bug must not kill the node: drop this link (its rounds fail over)
                log.exception("peer_response_failed", peer=self.peer, type=t.__name__)
                server.stats["peer_response_errors"] += 1
                if self.transport is not None:
                    self.transport.close()
                return

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()



class SocketTransport:
    """The real node's Transport edge: ``send`` over the peer's ``PeerLink``,
    ``respond`` on the inbound connection (or RESP connection) the request came on."""

    __slots__ = ("server",)

    def __init__(self, server: "NodeServer") -> None:
        self.server = server

    def send(self, peer: str, msg) -> None:
        server = self.server
        link = server.links.get(peer)
        if link is not None and link.address != server.core.address_of(peer):
            link.close()  # the peer moved (a replacement took its id): reconnect there
            del server.links[peer]
            link = None
        if link is None:
            link = server.link(peer)
            if link is None:
                server.loop.call_soon(server.executor.send_failed, peer, msg, "no address known")
                return
        link.request(msg)

    def respond(self, conn, msg) -> None:
        t = type(msg)
        if t is m.RepWriteAck or t is m.RepReadResp:  # stamp: latency samples
            msg = msgspec.structs.replace(msg, t_us=now_us())
        elif t is m.StatusReply or t is m.Pong:  # shell facts the core does not know
            msg = self.server.shell_facts(msg)
        conn.respond(msg)
