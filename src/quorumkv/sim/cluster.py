"""N real ``NodeCore``s under one virtual clock, wired by a simulated network.

The simulator is the shell: it executes the effects the cores return, in order,
the way ``shell/server.py`` does, except that the network, the disk and time are
simulated and every random choice follows the run's seed.

===================  =========================================================
effect               what the simulator does
===================  =========================================================
``Send(peer, msg)``  network decides loss/dup/delay; on arrival
                     ``peer.on_request(PeerConn(...), msg)``; to a crashed peer:
                     ``on_send_failed`` (connection refused), as the real link
``Respond(conn, m)`` ``PeerConn``: back to the sender's ``on_response``;
                     ``ClientConn``: to the simulated client
``StoreWrite``       durable ``sync_us`` later, *then* ``on_store_done`` (persist
                     before ack; the ``ack-before-persist`` bug inverts this)
``StoreRead``        ``on_store_done(token, True, record)`` ``read_us`` later
anything else        ``UnknownEffect`` — a new core feature the sim must learn
===================  =========================================================

Events are ``(time µs, sequence, callable, args)`` in a heap; the sequence number
makes equal times run in scheduling order, so a run is a pure function of its
seed. Nodes are visited in sorted order and no set of strings is ever iterated
(string hashing is randomised per process).
"""

from __future__ import annotations

import heapq
import inspect
import random

from ..core import messages as m
from ..core import node as core_node
from ..core.antientropy import AESettings, PurgeMany, ReadMany, ScanLocal
from ..core.antientropy import install as install_antientropy
from ..core.node import NodeCore, NodeSettings, Respond, Send, StoreRead, StoreWrite
from ..core.version import newest
from ..core.ring import Ring
from .config import SimConfig
from .history import History
from .network import ClientConn, LatencySampler, Network, PeerConn
from .storage import SimStorage

# Effects of issue 3 (hinted handoff, inspect, logging); looked up by name so the
# simulator still runs a core without them.
StoreHint = getattr(core_node, "StoreHint", None)
ReadHint = getattr(core_node, "ReadHint", None)
Peek = getattr(core_node, "Peek", None)
LoadHints = getattr(core_node, "LoadHints", None)
SaveHlcCeiling = getattr(core_node, "SaveHlcCeiling", None)
DeleteHint = getattr(core_node, "DeleteHint", None)
Log = getattr(core_node, "Log", None)
_CORE_INIT = inspect.signature(NodeCore.__init__).parameters

#: Virtual wall clock at time 0 (ms): a plausible epoch, so negative skew stays positive.
EPOCH_MS = 1_700_000_000_000


#: Anti-entropy interval inside the simulator (virtual ms).
SIM_AE_INTERVAL_MS = 1_000


class UnknownEffect(TypeError):
    """The core returned an effect type the simulator does not know how to execute."""


class SimCluster:
    def __init__(self, cfg: SimConfig, rng: random.Random, sampler: LatencySampler,
                 history: History | None = None, core_settings: dict | None = None) -> None:
        self.cfg = cfg
        self.rng = rng
        self.history = history if history is not None else History()
        self.net = Network(sampler, rng)
        self.sampler = sampler
        self.names = [f"n{i}" for i in range(1, cfg.nodes + 1)]
        self.members = {name: f"sim://{name}" for name in self.names}
        self.ring = Ring(self.names, cfg.n)
        self.core_settings = dict(core_settings or {})
        self.storage = {name: SimStorage(name) for name in self.names}
        self.incarnation = {name: 0 for name in self.names}
        self.skew_ms = {name: 0 for name in self.names}
        self.now_us = 0
        self.logs: dict[str, int] = {}  # Log effects by event name
        self.cores: dict[str, NodeCore | None] = {name: self._new_core(name) for name in self.names}
        self._queue: list = []
        self._seq = 0
        self.inflight = 0  # messages and storage operations not yet delivered/done
        self.events_run = 0
        self.stats = {"crashes": 0, "restarts": 0, "pending_writes_lost": 0, "acked_cache_lost": 0,
                      "phantom_acks": 0, "send_failed": 0, "peer_lost": 0}
        #: client id -> callable(reply | None, now_us); None means the connection died.
        self.client_handlers: dict = {}
        #: (client conn, request id) of requests a coordinator holds (a crash tells the client)
        self.client_waiting: dict[tuple[ClientConn, int], None] = {}
        self._scans: dict = {}  # (node, incarnation, token) -> records left to hand out
        if cfg.bug == "ack-before-persist":
            for name in self.names:
                self._periodic(cfg.lazy_sync_us, self._lazy_sync, name)
        self._periodic(cfg.tick_ms * 1000, self._tick)

    def _new_core(self, name: str) -> NodeCore:
        """A core built the way shell/server.py builds one (fields it lacks are skipped)."""
        cfg, now = self.cfg, self.clock_ms(name)
        wanted = dict(node_id=name, n=cfg.n, r=cfg.r, w=cfg.w, timeout_ms_read=cfg.timeout_ms,
                      timeout_ms_write=cfg.timeout_ms, address=self.members[name], generation=now,
                      rng_seed=self.rng.getrandbits(64), **self.core_settings)
        settings = NodeSettings(**{k: v for k, v in wanted.items() if k in NodeSettings._fields})
        kw = {}
        if "now_ms" in _CORE_INIT:
            kw["now_ms"] = now
        if "hints_held" in _CORE_INIT:
            kw["hints_held"] = self.storage[name].hint_summary()
        if "hlc_ceiling" in _CORE_INIT:
            kw["hlc_ceiling"] = self.storage[name].hlc_ceiling
        core = NodeCore(settings, self.members, hlc_last=self.storage[name].max_timestamp(), **kw)
        # Anti-entropy runs as on a real node (shell/antientropy.py installs it), with a
        # short interval so replicas converge within the sim's recovery window.
        # Tombstone GC stays off: the sim's storage has no purge.
        install_antientropy(core, AESettings(interval_ms=SIM_AE_INTERVAL_MS, gc=False), now)
        return core

    # ------------------------------------------------------------ event queue
    def at(self, delay_us: int, fn, *args, inflight: bool = False) -> None:
        self._seq += 1
        if inflight:
            self.inflight += 1
        heapq.heappush(self._queue, (self.now_us + delay_us, self._seq, inflight, fn, args))

    def _periodic(self, every_us: int, fn, *args) -> None:
        def fire(*a):
            fn(*a)
            self.at(every_us, fire, *a)
        self.at(every_us, fire, *args)

    def run_until(self, done, limit_us: int) -> bool:
        """Run events until ``done()`` is true (checked after each event) or time limit_us."""
        queue = self._queue
        while queue and not done():
            if queue[0][0] > limit_us:
                self.now_us = limit_us
                return False
            t, _, inflight, fn, args = heapq.heappop(queue)
            self.now_us = t
            if inflight:
                self.inflight -= 1
            self.events_run += 1
            fn(*args)
        return done()

    def quiet(self) -> bool:
        return self.inflight == 0

    # ------------------------------------------------------------------ clock
    def clock_ms(self, node: str) -> int:
        return EPOCH_MS + self.now_us // 1000 + self.skew_ms[node]

    def up(self, node: str) -> bool:
        return self.cores[node] is not None

    # ---------------------------------------------------------------- effects
    def run(self, node: str, effects: list) -> None:
        for eff in effects:
            t = type(eff)
            if t is Send:
                self._send(node, eff.peer, eff.msg)
            elif t is Respond:
                self._respond(node, eff.conn, eff.msg)
            elif t is StoreWrite:
                self._store_write(node, eff)
            elif t is StoreRead:
                self.at(self.cfg.read_us, self._store_read_done, node, self.incarnation[node], eff,
                        inflight=True)
            elif t is Log and t is not None:
                self.logs[eff.event] = self.logs.get(eff.event, 0) + 1
            elif t in (StoreHint, ReadHint, Peek, LoadHints, DeleteHint) and t is not None:
                self._hint_effect(node, eff)
            elif t is SaveHlcCeiling and t is not None:  # durable sync_us later, like a write
                self.at(self.cfg.sync_us, self._ceiling_saved, node, self.incarnation[node], eff, inflight=True)
            elif t in (ScanLocal, ReadMany, PurgeMany):
                self._ae_effect(node, eff)
            else:
                raise UnknownEffect(
                    f"node {node} returned {t.__name__} ({eff!r}); teach quorumkv/sim/cluster.py "
                    "how to execute it")

    def _send(self, src: str, dst: str, msg) -> None:
        if dst not in self.cores:
            raise UnknownEffect(f"node {src} sent to unknown peer {dst!r}")
        if not self.up(dst):  # connection refused: the shell's link fails the send at once
            self.stats["send_failed"] += 1
            self.at(self.sampler.for_message(msg), self._send_failed, src, self.incarnation[src], dst, msg,
                    inflight=True)
            return
        if (self.cfg.bug == "phantom-ack" and type(msg) is m.RepWrite and self.net.reachable(src, dst)
                and self.rng.random() < 0.5):
            # Seeded bug: the write never reaches the replica, yet an ack comes back.
            self.stats["phantom_acks"] += 1
            conn = PeerConn(src, dst, self.incarnation[src], self.incarnation[dst])
            self.at(self.sampler.delay_us(1), self._deliver_response, conn, m.RepWriteAck(msg.id, True),
                    inflight=True)
            return
        conn = PeerConn(src, dst, self.incarnation[src], self.incarnation[dst])
        for delay in self.net.deliveries(src, dst, msg):
            self.at(delay, self._deliver_request, conn, msg, inflight=True)

    def _alive(self, node: str, incarnation: int) -> bool:
        return self.cores[node] is not None and self.incarnation[node] == incarnation

    def _deliver_request(self, conn: PeerConn, msg) -> None:
        # A crash of either end kills the connection and what was in flight on it.
        if not (self._alive(conn.dst, conn.dst_incarnation) and self._alive(conn.src, conn.src_incarnation)):
            return
        if not self.net.reachable(conn.src, conn.dst):  # partitioned while in flight
            return
        self.run(conn.dst, self.cores[conn.dst].on_request(conn, msg, self.clock_ms(conn.dst)))

    def _respond(self, node: str, conn, msg) -> None:
        t = type(conn)
        if t is PeerConn:
            for delay in self.net.deliveries(node, conn.src, msg):
                self.at(delay, self._deliver_response, conn, msg, inflight=True)
        elif t is ClientConn:
            delay = self.sampler.for_message(msg) if self.cfg.client_delay else 0
            self.at(delay, self._deliver_reply, conn, msg, inflight=True)
        else:
            raise UnknownEffect(f"node {node} responded on unknown connection {conn!r}")

    def _deliver_response(self, conn: PeerConn, msg) -> None:
        if not (self._alive(conn.src, conn.src_incarnation) and self._alive(conn.dst, conn.dst_incarnation)):
            return
        if not self.net.reachable(conn.src, conn.dst):
            return
        self.run(conn.src, self.cores[conn.src].on_response(conn.dst, msg, self.clock_ms(conn.src)))

    def _send_failed(self, src: str, incarnation: int, dst: str, msg) -> None:
        if self._alive(src, incarnation):
            self.run(src, self.cores[src].on_send_failed(dst, msg, "unreachable", self.clock_ms(src)))

    # ---------------------------------------------------------------- storage
    def _store_write(self, node: str, eff: StoreWrite) -> None:
        inc = self.incarnation[node]
        if self.cfg.bug == "ack-before-persist":
            self.storage[node].write_cached(eff.key, eff.record)
            self.at(0, self._store_write_done, node, inc, eff, False, inflight=True)
        else:
            self.at(self.cfg.sync_us, self._store_write_done, node, inc, eff, True, inflight=True)

    def _store_write_done(self, node: str, incarnation: int, eff: StoreWrite, persist: bool) -> None:
        if not self._alive(node, incarnation):
            if persist:
                self.stats["pending_writes_lost"] += 1  # never acked: allowed to vanish
            return
        if persist:
            self.storage[node].persist(eff.key, eff.record)
        self.run(node, self.cores[node].on_store_done(eff.token, True, None, self.clock_ms(node)))

    def _store_read_done(self, node: str, incarnation: int, eff: StoreRead) -> None:
        if self._alive(node, incarnation):
            record = self.storage[node].read(eff.key)
            self.run(node, self.cores[node].on_store_done(eff.token, True, record, self.clock_ms(node)))

    def _hint_effect(self, node: str, eff) -> None:
        t, inc, st = type(eff), self.incarnation[node], self.storage[node]
        if t is StoreHint:  # durable like a write, then acked
            self.at(self.cfg.sync_us, self._hint_stored, node, inc, eff, inflight=True)
        elif t is ReadHint:
            self.at(self.cfg.read_us, self._store_done_with, node, inc, eff.token,
                    lambda: newest(r for _, r in st.peek_hints(eff.key)), inflight=True)
        elif t is Peek:
            self.at(self.cfg.read_us, self._store_done_with, node, inc, eff.token,
                    lambda: (st.read(eff.key), st.peek_hints(eff.key)), inflight=True)
        elif t is LoadHints:
            self.at(self.cfg.read_us, self._hints_loaded, node, inc, eff, inflight=True)
        else:  # DeleteHint: no answer expected
            st.delete_hint(eff.hint_id)

    def _ae_effect(self, node: str, eff) -> None:
        t, inc, st = type(eff), self.incarnation[node], self.storage[node]
        if t is ScanLocal:
            key = (node, inc, eff.token)
            if eff.limit <= 0:
                self._scans.pop(key, None)
                return
            if key not in self._scans:
                self._scans[key] = sorted(st.snapshot().items())

            def chunk():
                items = self._scans.get(key, [])
                part, rest = items[:eff.limit], items[eff.limit:]
                last = len(part) < eff.limit
                if last:
                    self._scans.pop(key, None)
                else:
                    self._scans[key] = rest
                return (part, last)

            self.at(self.cfg.read_us, self._store_done_with, node, inc, eff.token, chunk, inflight=True)
        elif t is ReadMany:
            self.at(self.cfg.read_us, self._store_done_with, node, inc, eff.token,
                    lambda: [st.read(k) for k in eff.keys], inflight=True)
        else:  # PurgeMany: GC is off in the sim (installed with gc=False); nothing purged
            self.at(self.cfg.read_us, self._store_done_with, node, inc, eff.token, lambda: 0, inflight=True)

    def _hint_stored(self, node: str, incarnation: int, eff) -> None:
        if not self._alive(node, incarnation):
            self.stats["pending_writes_lost"] += 1
            return
        self.storage[node].store_hint(eff.owner, eff.key, eff.record, eff.created_ms)
        self.run(node, self.cores[node].on_store_done(eff.token, True, None, self.clock_ms(node)))

    def _ceiling_saved(self, node: str, incarnation: int, eff) -> None:
        if self._alive(node, incarnation):
            self.storage[node].hlc_ceiling = eff.ts
            self.run(node, self.cores[node].on_store_done(eff.token, True, None, self.clock_ms(node)))

    def _store_done_with(self, node: str, incarnation: int, token, read) -> None:
        if self._alive(node, incarnation):
            self.run(node, self.cores[node].on_store_done(token, True, read(), self.clock_ms(node)))

    def _hints_loaded(self, node: str, incarnation: int, eff) -> None:
        if self._alive(node, incarnation):
            entries = self.storage[node].load_hints(eff.owner, eff.limit)
            self.run(node, self.cores[node].on_hints_loaded(eff.owner, entries, self.clock_ms(node)))

    def _lazy_sync(self, node: str) -> None:
        self.storage[node].sync()

    def _tick(self) -> None:
        for name in self.names:
            core = self.cores[name]
            if core is not None:
                self.run(name, core.tick(self.clock_ms(name)))

    # ---------------------------------------------------------------- clients
    def client_send(self, client: int, node: str, msg, on_sent=None) -> None:
        """A client sends ``msg`` to coordinator ``node``; the answer goes to its handler.

        ``on_sent(effects)`` sees the coordinator's effects for this request (the
        harness reads a write's version from them).
        """
        delay = self.sampler.for_message(msg) if self.cfg.client_delay else 0
        self.at(delay, self._deliver_client_request, client, node, msg, on_sent, inflight=True)

    def _deliver_client_request(self, client: int, node: str, msg, on_sent) -> None:
        core = self.cores[node]
        if core is None:  # connection refused
            self.client_handlers[client](msg.id, None, "connection refused")
            return
        conn = ClientConn(client, node, self.incarnation[node])
        self.client_waiting[(conn, msg.id)] = None
        effects = core.on_request(conn, msg, self.clock_ms(node))
        if on_sent is not None:
            on_sent(effects)
        self.run(node, effects)

    def _deliver_reply(self, conn: ClientConn, msg) -> None:
        if (conn, msg.id) in self.client_waiting:
            del self.client_waiting[(conn, msg.id)]
            self.client_handlers[conn.client](msg.id, msg, "")

    # ----------------------------------------------------------------- faults
    def crash(self, node: str) -> None:
        if self.cores[node] is None:
            return
        self.cores[node] = None
        self.incarnation[node] += 1
        self.stats["crashes"] += 1
        self.stats["acked_cache_lost"] += self.storage[node].crash()
        self.history.nemesis(self.now_us, f"crash {node}")
        # Peers holding a connection to it see it reset (the real link: connection_lost).
        for peer in self.names:
            if peer != node and self.cores[peer] is not None and self.net.reachable(peer, node):
                self.at(self.sampler.delay_us(1), self._peer_lost, peer, self.incarnation[peer], node,
                        inflight=True)
        for conn, req_id in [w for w in self.client_waiting if w[0].node == node]:
            del self.client_waiting[(conn, req_id)]
            self.at(self.sampler.delay_us(1), self._client_conn_lost, conn.client, req_id, inflight=True)

    def _peer_lost(self, peer: str, incarnation: int, lost: str) -> None:
        if self._alive(peer, incarnation):
            self.stats["peer_lost"] += 1
            self.run(peer, self.cores[peer].on_peer_lost(lost, "connection lost", self.clock_ms(peer)))

    def _client_conn_lost(self, client: int, req_id: int) -> None:
        self.client_handlers[client](req_id, None, "connection lost")

    def restart(self, node: str) -> None:
        if self.cores[node] is not None:
            return
        # As the real shell: a fresh core whose HLC starts past everything on disk.
        self.cores[node] = self._new_core(node)
        self.stats["restarts"] += 1
        self.history.nemesis(self.now_us, f"restart {node}")

    def partition(self, side_of: dict[str, int]) -> None:
        self.net.side = dict(side_of)
        groups: dict[int, list[str]] = {}
        for name in self.names:
            groups.setdefault(side_of.get(name, 0), []).append(name)
        text = " | ".join(",".join(g) for _, g in sorted(groups.items()))
        self.history.nemesis(self.now_us, f"partition {text}")

    def heal_partition(self) -> None:
        if self.net.side:
            self.net.side = {}
            self.history.nemesis(self.now_us, "heal partition")

    # ------------------------------------------------------------- inspection
    def replica_versions(self, key: bytes) -> dict[str, object]:
        """Each replica's newest version of ``key`` (None: no record)."""
        out = {}
        for name in self.ring.preference_list(key):
            rec = self.storage[name].read(key)
            out[name] = rec.version if rec is not None else None
        return out
