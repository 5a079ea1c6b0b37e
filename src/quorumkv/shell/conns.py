"""The node's inbound connections: clients and peers send requests, answers go back
on the same connection, possibly out of order (ids match them up).

At most ``CLIENT_PIPELINE_MAX`` requests are open per connection; past that the node
stops reading from it until answers drain (TCP back-pressure). Frames queued in one
event-loop turn are written with one ``transport.write`` (batching: many replies, one
syscall) — ``Conn`` is shared with the outbound peer links (``peers.py``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import structlog

from ..core import messages as m
from ..core import wire
from ..core.framing import FrameDecoder
from ..core.limits import CLIENT_PIPELINE_MAX
from ..core.messages_cas import PxAccept, PxPrepare, PxRead
from ..core.paxos import atomic_from_plain
from ..errors import ProtocolError
from . import auth, tls
from .wallclock import mono_ms

if TYPE_CHECKING:
    from .server import NodeServer

log = structlog.get_logger("quorumkv.node")

#: Replies queued towards one native-protocol client (our batch plus the socket's send
#: buffer) above which the node stops reading that client's requests, until they drain
#: below INBOUND_SEND_BYTES_LOW. A client that pipelines large GETs and never reads
#: then costs at most this plus the replies of requests already open, not unbounded
#: memory (the RESP front end pauses the same way; asyncio's default is 64 KiB, a
#: few MiB keeps a fast reader of large values streaming).
INBOUND_SEND_BYTES_HIGH = 4 * 1024 * 1024
INBOUND_SEND_BYTES_LOW = 1024 * 1024


class Conn(asyncio.Protocol):
    """Shared framing and per-tick write batching."""

    def __init__(self, server: "NodeServer") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.closed = False

    def send(self, msg) -> None:
        frame = self.server.encoder.encode(msg)
        if not self._out:
            self.server.loop.call_soon(self._flush)
        self._out.append(frame)
        self._out_bytes += len(frame)

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._out_bytes = 0
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def buffered_bytes(self) -> int:
        t = self.transport
        return self._out_bytes + (t.get_write_buffer_size() if t is not None and not self.closed else 0)


class Inbound(Conn):
    """A client's or a peer's connection to us. Reading pauses (TCP back-pressure) while
    ``CLIENT_PIPELINE_MAX`` requests are open, while replies above
    ``INBOUND_SEND_BYTES_HIGH`` wait to be sent, or while decoded requests wait in
    ``_backlog`` (at most one read's worth: they were decoded before the pause)."""

    def __init__(self, server: "NodeServer") -> None:
        super().__init__(server)
        self.open_requests = 0
        self.paused = False
        self.write_paused = False  # the transport's send buffer is above its high-water mark
        self._backlog: deque = deque()
        # A peer's link (it sent replica traffic or heartbeats) is exempt from the
        # send-buffer pause: its heartbeats travel on it, and a coordinator that is
        # slow to read its acks must not look dead to us (its own PEER_QUEUE_BYTES_MAX
        # bounds what it has in flight). Only clients are paused for not reading.
        self.is_peer = False
        self.peer_name = "?"
        # What this connection may send (shell/auth.py): everything while security is
        # off; else nothing until Auth, or everything for a peer's TLS certificate.
        self.allowed = server.open_types
        self.user: str | None = None
        self.timing: dict[int, tuple] = {}  # Get/Put id -> (label, start): the latency histogram

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=INBOUND_SEND_BYTES_HIGH, low=INBOUND_SEND_BYTES_LOW)
        peer = transport.get_extra_info("peername")
        self.peer_name = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.inbound.add(self)
        if self.server.secure and tls.peer_verified(transport):
            self.allowed, self.user = auth.ALL_TYPES, "peer-certificate"  # mutual TLS: a peer

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._backlog.clear()
        self.server.inbound.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._drain_backlog()

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self.decoder.feed(data)
        except ProtocolError as exc:
            self.fail(str(exc))
            return
        if self._backlog:
            self._backlog.extend(msgs)
        else:
            self._handle(msgs)
        self.server.wake()
        self._update_reading()

    def _handle(self, msgs) -> None:
        server = self.server
        now = mono_ms()
        for i, msg in enumerate(msgs):
            if self.closed:
                return
            t = type(msg)
            if t in PEER_REQUEST_TYPES:
                self.is_peer = True
            elif not self.is_peer and (self.write_paused or self._out_bytes >= INBOUND_SEND_BYTES_HIGH):
                self._backlog.extend(msgs[i:])  # replies are piling up: the rest waits
                return
            if t not in self.allowed:  # security (shell/auth.py); also every non-request
                if t not in REQUEST_TYPES:
                    self.fail(f"unexpected {t.__name__} from a client")
                    return
                verdict = auth.not_allowed(server, self, msg, t)
                if verdict is not auth.RUN:
                    if verdict:
                        continue
                    return
            if t not in m.ONE_WAY:
                self.open_requests += 1
                if t is m.Get or t is m.Put:  # timed by the client's own op and level
                    self.timing[msg.id] = server.request_latency.start(msg)
                    if server.linearizable_default:
                        msg = atomic_from_plain(msg)  # the node's default mode (config consistency)
            elif t is m.Heartbeat:
                server.peer_heard(msg.node)
            try:
                server.run(server.core.on_request(self, msg, now))
            except Exception as exc:  # a bug must not kill the node: drop this connection
                log.exception("request_failed", peer=self.peer_name)
                self.fail(f"internal error: {type(exc).__name__}")
                return

    def _drain_backlog(self) -> None:
        if self._backlog and not self.closed:
            msgs = list(self._backlog)
            self._backlog.clear()
            self._handle(msgs)
        self._update_reading()

    def _flush(self) -> None:
        super()._flush()
        if self._backlog and not self.write_paused:
            self.server.loop.call_soon(self._drain_backlog)  # the batch went out: carry on

    def _update_reading(self) -> None:
        if self.closed or self.transport is None:
            return
        # Hysteresis: stop at CLIENT_PIPELINE_MAX open requests, resume below half.
        limit = CLIENT_PIPELINE_MAX // 2 if self.paused else CLIENT_PIPELINE_MAX
        pause = (not self.is_peer and (self.write_paused or bool(self._backlog))) or self.open_requests >= limit
        if pause != self.paused:
            self.paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def respond(self, msg) -> None:
        if self.closed:
            return  # the client went away mid-request; its answer has nowhere to go
        self.open_requests -= 1
        started = self.timing.pop(msg.id, None)
        if started is not None:
            self.server.request_latency.done(started)
        self.send(msg)
        if self.paused:
            self._update_reading()

    def fail(self, reason: str) -> None:
        log.warning("bad_input", peer=self.peer_name, reason=reason)
        self.server.stats["bad_input"] += 1
        self.refuse(m.Error(0, reason))

    def refuse(self, error) -> None:
        """Send ``error`` after the replies already queued, then close."""
        if not self.closed:
            self._flush()
            self.transport.write(self.server.encoder.encode(error))
            self.closed = True
            self._backlog.clear()
            self.transport.close()


REQUEST_TYPES = set(wire.REQUEST_TYPES)
#: What only a peer sends (marks an inbound connection as a peer's link).
PEER_REQUEST_TYPES = {m.RepWrite, m.RepRead, m.RepPeek, m.Heartbeat, m.Gossip, PxRead, PxPrepare, PxAccept}

