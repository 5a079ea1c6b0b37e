"""The node runtime: drives a NodeCore with asyncio, TCP and a storage engine.

Effects are executed in the order the core returns them. Persist-before-ack holds
because a replica's ack is only produced by ``on_store_done``, which the engine
calls after the write is durable.

Connections:

* inbound (``_Inbound``): clients and peers send requests; answers go back on the
  same connection, possibly out of order (ids match them up). At most
  ``CLIENT_PIPELINE_MAX`` requests are open per connection; past that the node stops
  reading from it until answers drain (TCP back-pressure).
* outbound (``_PeerLink``): one persistent connection per peer, opened on demand,
  reconnected with capped exponential back-off. While it is down, sends fail at once
  and the core's quorum round decides. Frames queued per tick are written with one
  ``transport.write`` (batching: many requests, one syscall).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
from collections import deque

import msgspec
import structlog

from ..core import messages as m
from ..core import wire
from ..core.framing import FrameDecoder, FrameEncoder
from ..core.limits import CLIENT_PIPELINE_MAX, PEER_QUEUE_BYTES_MAX
from ..core.hints import HintSettings
from ..core.membership import DetectorSettings
from ..core.node import (
    DeleteHint, LoadHints, Log, NodeCore, NodeSettings, Peek, ReadHint, Respond, SaveHlcCeiling, SaveMembers,
    ScanRange, Send,
    StoreHint, StoreRead, StoreWrite,
)
from ..core.scan import ScanCoordinator, ScanKeys
from ..core.typed import read_result
from ..errors import InvalidRequestError, ProtocolError
from .config import NodeConfig, parse_address
from .latency import (
    MODEL_IN_USE_MS, MODEL_REFRESH_MS, MODEL_REFRESH_MS_IDLE, LatencyRecorder, PendingStamps, build_table, now_us,
)
from .antientropy import AE_EFFECTS, AntiEntropyShell
from .metrics_hist import RequestLatency
from ..core.messages_cas import PxAccept, PxPrepare, PxRead
from ..core.paxos import PaxosStore
from ..core.paxos import atomic_from_plain
from ..core.paxos import install as install_paxos
from .engines import open_engine
from .storage import StorageEngine
from .snapshot import SnapshotShell
from .wallclock import now_ms, set_clock_offset_ms
from . import auth, tls
from ..core.messages_admin import Auth, Snapshot, SnapshotReply

log = structlog.get_logger("quorumkv.node")

#: Reconnect back-off towards a peer: first retry after 50 ms, doubling to 1 s.
RECONNECT_MS_MIN = 50
RECONNECT_MS_MAX = 1_000
#: Connect attempt to a peer gives up after this long.
CONNECT_TIMEOUT_MS = 1_000
#: Replies queued towards one native-protocol client (our batch plus the socket's send
#: buffer) above which the node stops reading that client's requests, until they drain
#: below INBOUND_SEND_BYTES_LOW. A client that pipelines large GETs and never reads
#: then costs at most this plus the replies of requests already open, not unbounded
#: memory (the RESP front end pauses the same way; asyncio's default is 64 KiB, a
#: few MiB keeps a fast reader of large values streaming).
INBOUND_SEND_BYTES_HIGH = 4 * 1024 * 1024
INBOUND_SEND_BYTES_LOW = 1024 * 1024


def newest_hint(hints):
    """What a fallback answers a read with: its newest hint (typed hints: merged)."""
    return read_result(rec for _, rec in hints)




class _Conn(asyncio.Protocol):
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


class _Inbound(_Conn):
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
        now = now_ms()
        for i, msg in enumerate(msgs):
            if self.closed:
                return
            t = type(msg)
            if t in _PEER_REQUEST_TYPES:
                self.is_peer = True
            elif not self.is_peer and (self.write_paused or self._out_bytes >= INBOUND_SEND_BYTES_HIGH):
                self._backlog.extend(msgs[i:])  # replies are piling up: the rest waits
                return
            if t not in self.allowed:  # security (shell/auth.py); also every non-request
                if t not in _REQUEST_TYPES:
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


_REQUEST_TYPES = set(wire.REQUEST_TYPES)
#: What only a peer sends (marks an inbound connection as a peer's link).
_PEER_REQUEST_TYPES = {m.RepWrite, m.RepRead, m.RepPeek, m.Heartbeat, m.Gossip, PxRead, PxPrepare, PxAccept}
# What a peer may answer on our outbound link (client-facing replies never come back there).
_RESPONSE_TYPES = set(wire.RESPONSE_TYPES) - {m.Reply, m.Pong, m.StatusReply, m.InspectReply, m.LatenciesReply,
                                           SnapshotReply}


def _loopback_source(listen: str, peer_host: str) -> tuple[str, int] | None:
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


class _PeerLink(_Conn):
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
            now = now_ms()
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
        server.loop.call_soon(lambda: server.run(server.core.on_send_failed(self.peer, msg, reason, now_ms())))

    async def _connect(self) -> None:
        host, port = parse_address(self.address)
        ctx = self.server.tls_client_ctx
        try:
            await asyncio.wait_for(
                self.server.loop.create_connection(lambda: self, host, port, ssl=ctx,
                                                   server_hostname=host if ctx is not None else None,
                                                   local_addr=_loopback_source(self.server.config.listen, host)),
                CONNECT_TIMEOUT_MS / 1000,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._down(f"unreachable ({type(exc).__name__})")
            pending, self._pending = self._pending, []
            for msg in pending:
                self.server.run(self.server.core.on_send_failed(self.peer, msg, "unreachable", now_ms()))

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
        self.server.run(self.server.core.on_peer_lost(self.peer, "unreachable", now_ms()))

    def _down(self, reason: str) -> None:
        if self.state != "down":
            log.info("peer_down", peer=self.peer, reason=reason)
        self.state = "down"
        self.retry_at_ms = now_ms() + self.backoff_ms
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
        now = now_ms()
        core = server.core
        t_now = now_us()
        for msg in msgs:
            t = type(msg)
            if (t is m.RepWriteAck or t is m.RepReadResp) and msg.t_us:
                t0 = self.stamps.take(msg.id, t is m.RepWriteAck)
                if t0 is not None:
                    server.latency.add(t is m.RepWriteAck, t0, msg.t_us, t_now)
            if t not in _RESPONSE_TYPES:
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


class NodeServer:
    def __init__(self, config: NodeConfig, storage: StorageEngine | None = None) -> None:
        self.config = config
        set_clock_offset_ms(config.clock_offset_ms)
        self.loop = asyncio.get_running_loop()
        self.storage = storage or open_engine(
            config.storage, os.path.join(config.data_dir, "data"), fsync=config.fsync, loop=self.loop,
            redis_url=config.redis_url,
        )
        c = config
        now = now_ms()
        members, replace = dict(c.members), c.replace
        saved = self._load_state()
        if saved.get("bootstrapped"):
            members = {**saved.get("members", {}), **members}
            replace = False
        departed = {n: tuple(e) for n, e in saved.get("departed", {}).items()}  # an older state file
        known = {n: tuple(e) for n, e in saved.get("known", {}).items()}  # SaveMembers
        settings = NodeSettings(
            node_id=c.node_id, n=c.n, r=c.r, w=c.w,
            timeout_ms_read=c.timeout_ms_read, timeout_ms_write=c.timeout_ms_write,
            address=c.listen, generation=now, seeds=tuple(c.seeds),
            detector=DetectorSettings(heartbeat_interval_ms=c.heartbeat_interval_ms, phi_suspect=c.phi_suspect,
                                      suspect_to_down_ms=c.suspect_to_down_ms),
            gossip_interval_ms=c.gossip_interval_ms, speculative_retry_ms=c.speculative_retry_ms,
            read_repair=c.read_repair, read_all_replicas=c.read_all_replicas, sloppy_quorum=c.sloppy_quorum,
            hints=HintSettings(bytes_max_per_target=c.hint_bytes_max_per_target, age_ms_max=c.hint_age_ms_max,
                               replay_per_s=c.hint_replay_per_s),
            rng_seed=int.from_bytes(os.urandom(8), "big"),
            replace=replace, settle_ms=c.settle_ms, max_clock_skew_ms=c.max_clock_skew_ms,
            tombstone_gc_grace_ms=c.tombstone_gc_grace_ms if c.tombstone_gc and self.storage.supports_purge else 0,
            timeout_ms_ring_sync=c.timeout_ms_ring_sync,
        )
        self.core = NodeCore(settings, members, hlc_last=self.storage.max_timestamp(), now_ms=now,
                             hints_held=self.storage.hint_summary(), hlc_ceiling=self.storage.hlc_ceiling(),
                             departed=departed, known=known)
        self.encoder = FrameEncoder()
        self.links: dict[str, _PeerLink] = {}
        self.inbound: set[_Inbound] = set()
        # Shell counters, merged into the node's Status reply (``quorumkv cluster status``).
        self.stats = {"bad_input": 0, "bad_peer_frames": 0, "peer_response_errors": 0, "tick_errors": 0,
                      **dict.fromkeys(auth.SECURITY_COUNTERS, 0)}
        # Security (shell/auth.py, shell/tls.py): users of both ports, TLS contexts.
        self.users = auth.Users(config.users, config.resp_password)
        self.secure = self.users.enabled or config.tls
        self.open_types = auth.open_types(self.users.enabled, config.tls)
        self.tls_server_ctx = tls.server_context(config.tls_cert, config.tls_key, config.tls_ca) if config.tls else None
        self.tls_client_ctx = (tls.client_context(config.tls_ca, config.tls_cert, config.tls_key)
                               if config.tls else None)
        self._tls_listener = None
        self._server: asyncio.base_events.Server | None = None
        self.resp = None  # RespFrontEnd when config.resp_listen is set
        self.metrics = None  # MetricsServer when config.metrics_listen is set (shell/metrics.py)
        self.request_latency = RequestLatency()  # client request latency by op and level
        self.serving = False  # listening for clients (``/ready``)
        self._tick_handle = None
        self._tick_idle = False  # the scheduled tick is further away than tick_ms
        self._stopped = asyncio.Event()
        self.paxos = install_paxos(self.core)  # linearizable ops: CASPaxos + ABD reads (core/paxos.py)
        # config consistency = "linearizable": clients' plain Get/Put run as linearizable ops
        self.linearizable_default = config.consistency == "linearizable"
        self.ae = AntiEntropyShell(self, now)  # Merkle anti-entropy + tombstone GC (shell/antientropy.py)
        ae = self.ae.ae
        self.core.add_busy_probe(  # an exchange in flight keeps the tick cadence up
            lambda: bool(ae.session or ae.pass_ or ae.repairs or ae.responders or ae.gc_round or ae.serving))
        # Live WARS samples of our internode traffic and the dynamic-quorum model
        # rebuilt from them every MODEL_REFRESH_MS (shell/latency.py, core/dynamic.py).
        self.latency = LatencyRecorder()
        self.core.latency_model = build_table({}, self.core.replication_factor(), now)
        self.core.handle_requests({m.Latencies: self._on_latencies})
        self.scan = ScanCoordinator(self.core)  # SCAN/KEYS across the cluster (core/scan.py)
        self.snapshots = SnapshotShell(self)  # backups (shell/snapshot.py)
        self.core.handle_requests({Snapshot: self.snapshots.on_request})
        self._model_handle = None
        self._model_job = None
        self._model_seen: tuple = ()
        self._model_built_ms = 0  # when the last build started
        self._model_used_ms = -MODEL_IN_USE_MS  # when a dynamic request was last seen
        self._model_dynamic_seen = 0

    @property
    def stats_bad_input(self) -> int:
        return self.stats["bad_input"]

    @stats_bad_input.setter
    def stats_bad_input(self, value: int) -> None:
        self.stats["bad_input"] = value

    # -- effects --------------------------------------------------------------
    def run(self, effects: list) -> None:
        for eff in effects:
            t = type(eff)
            if t is Respond:
                msg = eff.msg
                if type(msg) is m.RepWriteAck or type(msg) is m.RepReadResp:  # stamp: latency samples
                    msg = msgspec.structs.replace(msg, t_us=now_us())
                elif type(msg) is m.StatusReply:
                    msg = msgspec.structs.replace(msg, stats={**msg.stats, **self.stats, **self._status_stats()},
                                                  info=self._status_info())
                elif type(msg) is m.Pong:  # the shell knows its storage; the core does not
                    msg = msgspec.structs.replace(msg, storage=self.storage.name, keys=self.storage.count(),
                                                  peers_connected=sum(1 for lk in self.links.values()
                                                                      if lk.state == "up"))
                eff.conn.respond(msg)
            elif t is Send:
                link = self.links.get(eff.peer)
                if link is not None and link.address != self.core.address_of(eff.peer):
                    link.close()  # the peer moved (a replacement took its id): reconnect there
                    del self.links[eff.peer]
                    link = None
                if link is None:
                    link = self._link(eff.peer)
                    if link is None:
                        self.loop.call_soon(self._send_failed, eff.peer, eff.msg, "no address known")
                        continue
                link.request(eff.msg)
            elif t is StoreWrite:
                self.storage.write(eff.key, eff.record, self._done_cb(eff.token))
            elif t is StoreRead:
                self.storage.read(eff.key, self._done_cb(eff.token))
            elif t is StoreHint:
                self.storage.write_hint(eff.owner, eff.key, eff.record, eff.created_ms, self._done_cb(eff.token))
            elif t is ReadHint:
                self._sync_done(eff.token, lambda key=eff.key: newest_hint(self.storage.peek_hints(key)))
            elif t is Peek:
                self._sync_done(eff.token, lambda key=eff.key: (self.storage.get_now(key),
                                                                 self.storage.peek_hints(key)))
            elif t is LoadHints:
                entries = self.storage.load_hints(eff.owner, eff.limit)
                self.run(self.core.on_hints_loaded(eff.owner, entries, now_ms()))
            elif t in AE_EFFECTS:
                self.ae.execute(eff)
            elif t is ScanRange:
                self._sync_done(eff.token, lambda e=eff: self.storage.scan_range(e.after, e.limit))
            elif t is ScanKeys:
                self._sync_done(eff.token, lambda e=eff: self.storage.scan_keys(e.after, e.limit))
            elif t is DeleteHint:
                self.storage.delete_hint(eff.hint_id)
            elif t is SaveMembers:
                self._save_state(known=eff.members)
            elif t is PaxosStore:
                self.storage.paxos(eff.op, eff.key, eff.ballot, eff.record, self._done_cb(eff.token))
            elif t is SaveHlcCeiling:
                self.storage.save_hlc_ceiling(eff.ts, self._done_cb(eff.token))
            elif t is Log:
                getattr(log, eff.level, log.info)(eff.event, **eff.fields)
                if eff.event in ("join_completed", "replace_completed"):
                    self._save_bootstrapped()
            else:  # pragma: no cover - a core bug, not input
                raise TypeError(f"unknown effect {eff!r}")

    def _status_stats(self) -> dict[str, int]:
        """Shell facts for ``cluster status``: local storage, ring shape."""
        from .metrics import storage_bytes  # noqa: PLC0415 - prometheus_client only when asked

        return {"storage_keys": self.storage.count(), "storage_bytes": storage_bytes(self.storage),
                "vnodes": self.core.settings.vnodes, "n_configured": self.core.settings.n}

    def _status_info(self) -> dict[str, str]:
        from .. import __version__  # noqa: PLC0415

        c = self.config
        return {"resp": c.resp_listen, "metrics": c.metrics_listen, "storage": self.storage.name,
                "version": __version__}

    def _state_file(self) -> str:
        return os.path.join(self.config.data_dir, "data", "node-state.json")

    def _load_state(self) -> dict:
        try:
            with open(self._state_file()) as fh:
                saved = json.load(fh)
            return saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_bootstrapped(self) -> None:
        """After a join or replace streamed its data, a restart must come back as a
        member (``up``), not join or replace again: remember the members we know."""
        self._save_state(bootstrapped=True, members=self.core.members())

    def _save_state(self, **fields) -> None:
        """Update ``node-state.json`` (durably: fsync, then rename over the old one)."""
        state = {**self._load_state(), **fields}
        tmp = self._state_file() + ".tmp"
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file())

    def peer_heard(self, peer: str) -> None:
        """A peer spoke to us: it is up, so skip any reconnect back-off towards it."""
        link = self.links.get(peer)
        if link is not None and link.state == "down":
            link.retry_at_ms = 0
            link.backoff_ms = RECONNECT_MS_MIN

    def _link(self, peer: str) -> "_PeerLink | None":
        address = self.core.address_of(peer)
        if address is None:
            return None
        link = self.links[peer] = _PeerLink(self, peer, address)
        return link

    def _send_failed(self, peer: str, msg, reason: str) -> None:
        self.run(self.core.on_send_failed(peer, msg, reason, now_ms()))

    def _sync_done(self, token, read) -> None:
        try:
            result = read()
        except Exception as exc:  # storage error: the replica answers "failed"
            self.run(self.core.on_store_done(token, False, f"storage error: {exc}", now_ms()))
            return
        self.run(self.core.on_store_done(token, True, result, now_ms()))

    def _done_cb(self, token):
        def done(ok, result):
            self.run(self.core.on_store_done(token, ok, result, now_ms()))
        return done

    # -- live latencies and the dynamic-quorum model ----------------------------
    def _on_latencies(self, conn, msg, now: int, out: list) -> None:
        snap = self.latency.snapshot()
        model = self.core.latency_model
        out.append(Respond(conn, m.LatenciesReply(msg.id, self.core.node_id, snap["w"], snap["a"], snap["r"],
                                                  snap["s"], dict(self.latency.recorded),
                                                  model.to_dict() if model is not None else {})))

    def _model_tick(self) -> None:
        """Rebuild the model in a worker thread when new samples arrived (one job at a
        time): every MODEL_REFRESH_MS while the model is in use (not ready yet, or a
        dynamic request within MODEL_IN_USE_MS), else every MODEL_REFRESH_MS_IDLE."""
        self._model_handle = self.loop.call_later(MODEL_REFRESH_MS / 1000, self._model_tick)
        n = self.core.replication_factor()
        seen = (n, tuple(self.latency.recorded.values()))
        if self._model_job is not None or seen == self._model_seen:
            return
        now = now_ms()
        dynamic = self.core.stats.get("dynamic_requests", 0)
        if dynamic != self._model_dynamic_seen:
            self._model_dynamic_seen = dynamic
            self._model_used_ms = now
        model = self.core.latency_model
        in_use = model is None or not model.ready or now - self._model_used_ms < MODEL_IN_USE_MS
        if not in_use and now - self._model_built_ms < MODEL_REFRESH_MS_IDLE:
            return
        self._model_seen = seen
        self._model_built_ms = now
        job = self._model_job = self.loop.run_in_executor(None, build_table, self.latency.snapshot(), n, now_ms())
        job.add_done_callback(self._model_built)

    def _model_built(self, job) -> None:
        self._model_job = None
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            log.error("latency_model_failed", error=repr(exc))
            return
        self.core.latency_model = job.result()

    def _tick(self) -> None:
        # The next tick is scheduled whatever this one does: an exception in one step
        # (a bug) is logged and counted, and the node keeps its timers, heartbeats
        # and deadlines running instead of going silently deaf.
        try:
            self.run(self.core.tick(now_ms()))
        except Exception:
            self.stats["tick_errors"] += 1
            log.exception("tick_failed", node=self.core.node_id)
        finally:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        """Tick every ``tick_ms`` while the core has work in flight; when idle, sleep
        until its next deadline (``NodeCore.next_deadline_ms``), at most
        ``tick_ms_idle_max``. ``wake`` pulls an idle sleep in when work arrives."""
        cfg = self.config
        now = now_ms()
        try:
            due = self.core.next_deadline_ms(now)
        except Exception:
            self.stats["tick_errors"] += 1
            log.exception("next_deadline_failed", node=self.core.node_id)
            due = now
        delay_ms = min(max(due - now, cfg.tick_ms), cfg.tick_ms_idle_max)
        self._tick_idle = delay_ms > cfg.tick_ms
        self._tick_handle = self.loop.call_later(delay_ms / 1000, self._tick)

    def wake(self) -> None:
        """Events were handled: if the core now has work in flight and the tick loop
        sleeps long, bring the next tick in to ``tick_ms``."""
        if self._tick_idle and self._tick_handle is not None:
            now = now_ms()
            try:
                busy = self.core.next_deadline_ms(now) <= now + self.config.tick_ms
            except Exception:
                busy = True
            if busy:
                self._tick_handle.cancel()
                self._tick_idle = False
                self._tick_handle = self.loop.call_later(self.config.tick_ms / 1000, self._tick)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        host, port = parse_address(self.config.listen)
        if self.tls_server_ctx is not None:
            self._tls_listener = tls.TlsListener(
                self.loop, lambda: _Inbound(self), self.tls_server_ctx, self.stats,
                self.encoder.encode(m.Error(0, "this port requires TLS (the client's tls_ca=, or QUORUMKV_TLS_CA)")),
                "native")
            await self._tls_listener.start(host, port)
        else:
            self._server = await self.loop.create_server(lambda: _Inbound(self), host, port, reuse_address=True)
        if self.config.resp_listen:
            from .resp_server import RespFrontEnd  # noqa: PLC0415 - only nodes that speak RESP load it

            self.resp = RespFrontEnd(self)
            await self.resp.start()
        self._schedule_tick()
        self._model_handle = self.loop.call_later(MODEL_REFRESH_MS / 1000, self._model_tick)
        self.serving = True
        if self.config.metrics_listen:
            from .metrics import MetricsServer  # noqa: PLC0415 - only nodes that serve metrics load it

            self.metrics = MetricsServer(self)
            self.metrics.start(self.config.metrics_listen)
        log.info("node_started", node=self.config.node_id, listen=self.config.listen,
                 storage=self.storage.name, n=self.core.settings.n, members=len(self.config.members),
                 seeds=list(self.config.seeds))

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._model_handle is not None:
            self._model_handle.cancel()
        if self._server is not None:
            self._server.close()
        if self._tls_listener is not None:
            self._tls_listener.close()
        if self.resp is not None:
            self.resp.close()
        if self.metrics is not None:
            self.metrics.close()
        for conn in list(self.inbound):
            if conn.transport is not None:
                conn.transport.close()
        for link in self.links.values():
            link.close()
        await asyncio.sleep(0)
        self.storage.close()
        log.info("node_stopped", node=self.config.node_id)


def configure_logging(level: str = "info") -> None:
    """JSON lines only, repeated events rate-limited (shell/logsetup.py)."""
    from .logsetup import configure  # noqa: PLC0415

    configure(level)


def install_event_loop_policy(event_loop: str = "uvloop") -> None:
    """uvloop when asked for and installed (a dependency; measured in
    docs/performance.md), else asyncio's own loop."""
    if event_loop != "uvloop":
        return
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def serve(config: NodeConfig) -> None:
    """Run one node in the foreground until SIGTERM/SIGINT."""
    configure_logging(config.log_level)
    install_event_loop_policy(config.event_loop)

    async def main() -> None:
        server = NodeServer(config)
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        log.info("node_listening", node=config.node_id, listen=config.listen, resp=config.resp_listen,
                 metrics=config.metrics_listen)
        await server.serve_forever()
        await server.stop()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, SystemExit):
        raise
    except (OSError, InvalidRequestError) as exc:  # port in use, bad config: the CLI says it in one line
        log.error("node_failed", node=config.node_id, error=str(exc))
        raise
    except Exception:
        log.exception("node_crashed", node=config.node_id)
        raise
