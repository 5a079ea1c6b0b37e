"""N real ``NodeCore``s under one virtual clock, wired by a simulated network.

Each node's effects are executed by the same runtime as the real node's
(``runtime/executor.py``, in the order it documents); only the edges differ
(``sim/edges.py``): the network, the disk and time are simulated and every random
choice follows the run's seed. What each effect amounts to here:

=====================  =======================================================
effect                 what the simulator does
=====================  =======================================================
``Send(peer, msg)``    to the address the sender's core knows for ``peer``
                       (``seed:ADDR`` too); the network decides loss/dup/
                       delay; on arrival ``peer.on_request(PeerConn(...), msg)``.
                       To a crashed node, or an address a replacement left:
                       ``on_send_failed`` (connection refused), as the real link
``Respond(conn, m)``   ``PeerConn``: back to the sender's ``on_response``;
                       ``ClientConn``: to the simulated client
``StoreWrite``         durable ``sync_us`` later, *then* ``on_store_done``
                       (persist before ack; ``ack-before-persist`` inverts it)
``StoreRead``          ``on_store_done(token, True, record)`` ``read_us`` later
``StoreHint`` ...      hint table (``core.hints.HintTable``), as the engines
``ScanKeys``           as ``ScanRange`` without values (SCAN/KEYS)
``PaxosStore``         CASPaxos acceptor step (core/paxos.py) on the durable
                       state ``sync_us`` later, then answered (promises survive
                       a crash)
``SaveHlcCeiling``     durable ``sync_us`` later (survives a crash), then
                       ``on_store_done``; a restarted core starts above it
``SaveMembers``        kept in the node's ``Boot`` (``node-state.json`` in the
                       shell): a restarted core knows every member it knew,
                       with its address, generation and status
``SaveBootstrapped``   kept in the ``Boot``: after its join/replace a restart
                       comes back as a member
``ScanRange``          ``read_us`` later: up to ``limit`` records with key >
                       ``after`` in key order (streaming for ring changes)
``ScanLocal``,         anti-entropy scans and reads; ``PurgeMany`` is the
``ReadMany``,          engines' compare-and-delete, durable ``sync_us`` later
``PurgeMany``          (tombstone GC runs when the ``gc`` fault is on)
``DropMany``           cleanup's compare-and-delete of leftovers, ``sync_us``
``Log``                counted (and ring-change completions recorded in the
                       history); ``decommission_completed`` retires the node
                       a little later (the operator stops the process)
anything else          ``UnknownEffect`` — a new core feature the runtime
                       must learn
=====================  =======================================================

Events are ``(time µs, sequence, callable, args)`` in a heap; the sequence number
makes equal times run in scheduling order, so a run is a pure function of its
seed. Nodes are visited in sorted order and no set of strings is ever iterated
(string hashing is randomised per process).
"""

from __future__ import annotations

import heapq
import random
from typing import NamedTuple

from ..core import messages as m
from ..core.antientropy import AESettings
from ..core.antientropy import install as install_antientropy
from ..core.clock import MAX_CLOCK_SKEW_MS_DEFAULT
from ..core.paxos import install as install_paxos
from ..core.hints import HintSettings
from ..core.membership import JOINING, LEAVING, LEFT, REPLACING, UP
from ..core.messages_ring import Cleanup, Decommission
from ..core.node import SEED_PREFIX, NodeCore, NodeSettings
from ..core.ring import Ring
from ..runtime import Executor, UnknownEffect
from .config import SimConfig
from .edges import SimClock, SimNodeStorage, SimTransport
from .history import History
from .network import ClientConn, LatencySampler, Network, PeerConn
from .storage import SimStorage

#: Virtual wall clock at time 0 (ms): a plausible epoch, so negative skew stays positive.
EPOCH_MS = 1_700_000_000_000
#: Each node's virtual MONOTONIC clock starts at its index times this (ms): the first
#: node's at 0, far from the wall clock, and each node's apart (separate machines).
#: So a wall-clock use fed the monotonic clock (a version, a TTL) or a deadline
#: compared across nodes breaks visibly instead of hiding; skew moves wall time only.
MONO_SPACING_MS = 1_000_000_000

#: Anti-entropy interval inside the simulator (virtual ms).
SIM_AE_INTERVAL_MS = 1_000
#: ``settle_ms`` of the simulated nodes: how long a joining/replacing/leaving node
#: waits for gossip before it streams (production: 2 s; the sim scales it down so a
#: short workload sees ring changes start *and* finish; still 2 gossip rounds).
SIM_SETTLE_MS = 1_000
#: A node that reached ``left`` is stopped this long afterwards (the operator's
#: ``kill`` after ``decommission`` returns), long enough for its gossip to spread.
RETIRE_AFTER_US = 1_500_000
#: Statuses of a node in the middle of a ring change.
RING_CHANGE_STATUSES = (JOINING, REPLACING, LEAVING)
#: Core counters summed over every incarnation of every node (the report's
#: ``core`` section): what ring changes and GC really did.
CORE_TOTALS = ("stream_keys_received", "stream_keys_sent", "stream_failures", "tombstones_purged",
               "cleanup_keys_dropped",
               "gc_rounds", "hints_stored", "hints_replayed", "hints_dropped_age", "read_repairs",
               "ae_keys_pushed", "ae_keys_pulled",
               "ring_sync_waits", "ring_sync_refused")  # requests a restarted node held until synced


#: The client id of operator requests (decommission); workload clients are >= 0,
#: the final verification reader is -1.
ADMIN_CLIENT = -2




def gc_clock_skew_ms(cfg: SimConfig, core_settings: dict | None = None) -> int:
    """The clock spread tombstone GC's grace must cover beyond the hint age: the
    larger of the cores' ``max_clock_skew_ms`` and the spread the sim's clocks really
    have (``skew``: each node up to ``skew_ms_max`` off true time, twice that apart)."""
    skew_ms = (core_settings or {}).get("max_clock_skew_ms", MAX_CLOCK_SKEW_MS_DEFAULT)
    if "skew" in cfg.faults:
        skew_ms = max(skew_ms, 2 * cfg.skew_ms_max)
    return skew_ms


class Boot(NamedTuple):
    """How a node process starts (its config file plus ``node-state.json``)."""

    members: dict
    seeds: tuple = ()
    replace: bool = False
    known: dict = {}  # SaveMembers: the table the node knew (never mutated, only replaced)


class SimCluster:
    def __init__(self, cfg: SimConfig, rng: random.Random, sampler: LatencySampler,
                 history: History | None = None, core_settings: dict | None = None,
                 gc_grace_ms: int = 0, ae_interval_ms: int = SIM_AE_INTERVAL_MS) -> None:
        self.cfg = cfg
        self.rng = rng
        self.history = history if history is not None else History()
        self.net = Network(sampler, rng)
        self.sampler = sampler
        #: every node id that ever existed, in creation order (joins append)
        self.names = [f"n{i}" for i in range(1, cfg.nodes + 1)]
        #: current address of each node id (a replacement gets a new one)
        self.address = {name: f"sim://{name}" for name in self.names}
        self._by_address = {addr: name for name, addr in self.address.items()}
        self.members = dict(self.address)  # the initial cluster's member list
        self.boot = {name: Boot(dict(self.members)) for name in self.names}
        self.initial_ring = Ring(self.names, cfg.n)
        self._rings: dict[tuple, Ring] = {tuple(sorted(self.names)): self.initial_ring}
        self.core_settings = dict(core_settings or {})
        #: > 0: tombstone GC on, with this grace (and hints kept at most as long,
        #: the rule shell/config.py enforces)
        self.gc_grace_ms = gc_grace_ms
        self.ae_interval_ms = ae_interval_ms  # 0: no periodic anti-entropy (scenarios)
        self.storage = {name: SimStorage(name) for name in self.names}
        self.incarnation = {name: 0 for name in self.names}
        self.skew_ms = {name: 0 for name in self.names}
        self.mono_base_ms: dict[str, int] = {}  # node -> its monotonic clock's base (clock_ms)
        #: nodes stopped for good after a decommission (node -> virtual µs)
        self.retired: dict[str, int] = {}
        #: nodes whose decommission completed: they never come back (node -> µs)
        self.left: dict[str, int] = {}
        #: a crashed node's own status when it crashed (the nemesis replaces only
        #: members that were up)
        self.last_status: dict[str, str] = {}
        self.now_us = 0
        self.logs: dict[str, int] = {}  # Log effects by event name
        self.core_totals = dict.fromkeys(CORE_TOTALS, 0)
        #: each node's one runtime (runtime/executor.py) on the simulated edges (sim/edges.py),
        #: rebuilt with every new core (restart, replace)
        self.executors: dict[str, Executor] = {}
        self.cores: dict[str, NodeCore | None] = {name: self._new_core(name) for name in self.names}
        self._queue: list = []
        self._seq = 0
        self.inflight = 0  # messages and storage operations not yet delivered/done
        self.events_run = 0
        self.stats = {"crashes": 0, "restarts": 0, "pending_writes_lost": 0, "acked_cache_lost": 0,
                      "phantom_acks": 0, "send_failed": 0, "peer_lost": 0, "joins": 0, "joins_completed": 0,
                      "decommissions": 0, "decommissions_completed": 0, "replaces": 0,
                      "replaces_completed": 0, "skew_changes": 0, "partitions": 0, "cleanups": 0}
        #: client id -> callable(req id, reply | None, reason); None means the connection died.
        self.client_handlers: dict = {}
        #: (client conn, request id) of requests a coordinator holds (a crash tells the client)
        self.client_waiting: dict[tuple[ClientConn, int], None] = {}
        self._admin_waiting: dict = {}  # admin request id -> on_reply (None: nobody listens)
        self._admin_next = 0
        self.client_handlers[ADMIN_CLIENT] = self._on_admin_reply
        if cfg.bug == "ack-before-persist":
            for name in self.names:
                self._periodic(cfg.lazy_sync_us, self._lazy_sync, name)
        self._periodic(cfg.tick_ms * 1000, self._tick)

    def _new_core(self, name: str) -> NodeCore:
        """A core built the way shell/server.py builds one, and its executor."""
        cfg, now, wall, boot = self.cfg, self.clock_ms(name), self.wall_ms(name), self.boot[name]
        extra = dict(self.core_settings)
        extra.setdefault("settle_ms", SIM_SETTLE_MS)
        if self.gc_grace_ms and "hints" not in extra:
            extra["hints"] = HintSettings(age_ms_max=self.hint_age_ms_max())
        # Default levels as the shell's default config (QUORUM): every simulated
        # request names its level, and an integer default would make a node whose
        # ring is still smaller than R (a replacement that knows only itself) fail
        # to start.
        settings = NodeSettings(node_id=name, n=cfg.n, r="QUORUM", w="QUORUM", timeout_ms_read=cfg.timeout_ms,
                                timeout_ms_write=cfg.timeout_ms, address=self.address[name], generation=wall,
                                rng_seed=self.rng.getrandbits(64), seeds=boot.seeds, replace=boot.replace,
                                **extra)
        st = self.storage[name]
        core = NodeCore(settings, dict(boot.members), hlc_last=st.max_timestamp(), now_ms=now,
                        hints_held=st.hint_summary(), hlc_ceiling=st.hlc_ceiling, known=boot.known, wall_ms=wall)
        # Anti-entropy runs as on a real node (shell/antientropy.py installs it), with a
        # short interval so replicas converge within the sim's recovery window.
        install_antientropy(core, AESettings(interval_ms=self.ae_interval_ms, gc=self.gc_grace_ms > 0,
                                             gc_grace_ms=self.gc_grace_ms or AESettings().gc_grace_ms), now)
        install_paxos(core)  # linearizable ops, as shell/server.py installs them
        self.executors[name] = Executor(core, SimNodeStorage(self, name), SimTransport(self, name),
                                        SimClock(self, name), lambda eff: self._log(name, eff))
        return core

    def hint_age_ms_max(self) -> int:
        """With tombstone GC on: the longest hint age that is safe with the grace
        (``core.hints.safe_with_gc``, the rule shell/config.py enforces). A grace too
        short for any leaves 0: hints are dropped, anti-entropy repairs."""
        return max(self.gc_grace_ms - gc_clock_skew_ms(self.cfg, self.core_settings) - 1, 0)

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
        """``node``'s monotonic clock (its base: ``MONO_SPACING_MS``)."""
        base = self.mono_base_ms.get(node)
        if base is None:
            base = self.mono_base_ms[node] = len(self.mono_base_ms) * MONO_SPACING_MS
        return base + self.now_us // 1000

    def wall_ms(self, node: str) -> int:
        """``node``'s wall clock: true time plus its skew."""
        return EPOCH_MS + self.now_us // 1000 + self.skew_ms[node]

    def now_ms(self, node: str) -> int:
        """The time of ``node``'s next step: its monotonic clock, after handing its
        core the wall clock (as the runtime's ``Executor.now`` does)."""
        now = self.clock_ms(node)
        self.cores[node].observe_wall_clock(self.wall_ms(node), now)
        return now

    def up(self, node: str) -> bool:
        return self.cores[node] is not None

    def live(self) -> list[str]:
        return [name for name in self.names if self.cores[name] is not None]

    def status(self, node: str) -> str | None:
        """The node's own gossip status (joining/up/leaving/left/replacing); None when down."""
        core = self.cores[node]
        return core.membership.me.status if core is not None else None

    def in_service(self) -> list[str]:
        """Nodes a client may talk to: every node not stopped for good (crashed ones included)."""
        return [name for name in self.names if name not in self.retired]

    def ring_change_in_progress(self) -> bool:
        """A join, replace or decommission has started and not finished (a crashed
        node counts with the status it had: it resumes when it restarts)."""
        for name in self.in_service():
            core = self.cores[name]
            if core is None:
                boot = self.boot[name]
                if boot.replace or (boot.seeds and len(boot.members) == 1):
                    return True
            elif core.membership.me.status in RING_CHANGE_STATUSES:
                return True
        return False

    def ring_settled(self) -> bool:
        """No ring change in progress and every live node agrees on the ring (what an
        operator checks in ``quorumkv status`` before the next join or decommission)."""
        if self.ring_change_in_progress():
            return False
        for name in self.live():  # a restarted node that has not yet heard a majority's tables
            if not self.cores[name].ring_sync.synced:
                return False
        views = {(c.membership.ring_members(), c.membership.future_ring_members())
                 for c in (self.cores[n] for n in self.live()) if c is not None}
        return len(views) <= 1

    def ring_view(self) -> Ring:
        """The ring most live, up nodes agree on (the initial ring while none is up)."""
        votes: dict[tuple, int] = {}
        for name in self.live():
            core = self.cores[name]
            if core.membership.me.status == UP:
                members = core.membership.ring_members()
                votes[members] = votes.get(members, 0) + 1
        if not votes:
            return self.initial_ring
        members = max(sorted(votes), key=lambda k: votes[k])
        ring = self._rings.get(members)
        if ring is None:  # building a ring hashes every vnode: keep the few a run sees
            ring = self._rings[members] = Ring(members, self.cfg.n)
        return ring

    @property
    def ring(self) -> Ring:
        return self.ring_view()

    # ---------------------------------------------------------------- effects
    def run(self, node: str, effects: list) -> None:
        """Execute one step's effects of ``node`` (the one runtime, runtime/executor.py)."""
        self.executors[node].run(effects)

    def _log(self, node: str, eff) -> None:
        self.logs[eff.event] = self.logs.get(eff.event, 0) + 1
        event = eff.event
        if event in ("join_completed", "replace_completed"):  # SaveBootstrapped came just before
            self.stats[event.split("_")[0] + "s_completed"] += 1
            self.history.nemesis(self.now_us, f"{event.replace('_', ' ')} {node}")
        elif event == "decommission_completed":
            self.stats["decommissions_completed"] += 1
            self.left[node] = self.now_us
            self.history.nemesis(self.now_us, f"decommission completed {node}")
            self.at(RETIRE_AFTER_US, self.retire, node, self.incarnation[node])

    def _resolve(self, src: str, dst: str) -> str | None:
        """The node a ``Send`` from ``src`` to ``dst`` reaches, or None (refused).

        Like the shell's link: it connects to the address the sender's core knows;
        a node that moved (a replacement) is not at the old address any more.
        """
        core = self.cores[src]
        address = core.address_of(dst) if core is not None else None
        if address is None:
            if dst.startswith(SEED_PREFIX) or dst not in self.address:
                raise UnknownEffect(f"node {src} sent to unknown peer {dst!r}")
            return None
        name = self._by_address.get(address)
        if name is None or self.address[name] != address:
            return None
        if not dst.startswith(SEED_PREFIX) and name != dst:
            return None
        return name

    def _send(self, src: str, dst_peer: str, msg) -> None:
        dst = self._resolve(src, dst_peer)
        if dst is None or not self.up(dst):  # connection refused: the shell's link fails the send at once
            self.stats["send_failed"] += 1
            self.at(self.sampler.for_message(msg), self._send_failed, src, self.incarnation[src], dst_peer, msg,
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
        self.run(conn.dst, self.cores[conn.dst].on_request(conn, msg, self.now_ms(conn.dst)))

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
        self.run(conn.src, self.cores[conn.src].on_response(conn.dst, msg, self.now_ms(conn.src)))

    def _send_failed(self, src: str, incarnation: int, dst: str, msg) -> None:
        if self._alive(src, incarnation):
            self.run(src, self.cores[src].on_send_failed(dst, msg, "unreachable", self.now_ms(src)))

    # ---------------------------------------------------------------- storage
    def _lazy_sync(self, node: str) -> None:
        self.storage[node].sync()

    def _tick(self) -> None:
        for name in self.names:
            core = self.cores[name]
            if core is not None:
                self.run(name, core.tick(self.now_ms(name)))

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
        effects = core.on_request(conn, msg, self.now_ms(node))
        if on_sent is not None:
            on_sent(effects)
        self.run(node, effects)

    def _deliver_reply(self, conn: ClientConn, msg) -> None:
        if (conn, msg.id) in self.client_waiting:
            del self.client_waiting[(conn, msg.id)]
            self.client_handlers[conn.client](msg.id, msg, "")

    # ----------------------------------------------------------------- faults
    def _bank(self, core: NodeCore) -> None:
        """Add a core's counters to the run's totals before it goes away."""
        for name in CORE_TOTALS:
            self.core_totals[name] += core.stats.get(name, 0)

    def totals(self) -> dict[str, int]:
        out = dict(self.core_totals)
        for name in self.names:
            core = self.cores[name]
            if core is not None:
                for stat in CORE_TOTALS:
                    out[stat] += core.stats.get(stat, 0)
        return out

    def crash(self, node: str) -> None:
        core = self.cores[node]
        if core is None:
            return
        self._bank(core)
        self.last_status[node] = core.membership.me.status
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
            self.run(peer, self.cores[peer].on_peer_lost(lost, "connection lost", self.now_ms(peer)))

    def _client_conn_lost(self, client: int, req_id: int) -> None:
        self.client_handlers[client](req_id, None, "connection lost")

    def restart(self, node: str, incarnation: int | None = None) -> None:
        """Start ``node`` again (no-op if it runs, was retired, or — when
        ``incarnation`` is given — if it has been crashed/replaced since)."""
        if self.cores[node] is not None or node in self.retired:
            return
        if incarnation is not None and incarnation != self.incarnation[node]:
            return
        if node in self.left:  # it left the cluster: the operator does not start it again
            self.retire(node)
            return
        # As the real shell: a fresh core whose HLC starts past everything on disk.
        self.cores[node] = self._new_core(node)
        self.stats["restarts"] += 1
        self.history.nemesis(self.now_us, f"restart {node}")

    def partition(self, side_of: dict[str, int]) -> None:
        self.net.side = dict(side_of)
        self.stats["partitions"] += 1
        groups: dict[int, list[str]] = {}
        for name in self.names:
            groups.setdefault(side_of.get(name, 0), []).append(name)
        text = " | ".join(",".join(g) for _, g in sorted(groups.items()))
        self.history.nemesis(self.now_us, f"partition {text}")

    def heal_partition(self) -> None:
        if self.net.side:
            self.net.side = {}
            self.history.nemesis(self.now_us, "heal partition")

    def set_skew(self, node: str, skew_ms: int) -> None:
        """Step ``node``'s clock to ``skew_ms`` off true time (NTP stepping it, a VM pause...)."""
        self.skew_ms[node] = skew_ms
        self.stats["skew_changes"] += 1
        self.history.nemesis(self.now_us, f"skew {node} {skew_ms:+d}ms")

    # ---------------------------------------------------------- ring changes
    def join(self, seeds: list[str] | None = None) -> str:
        """Start a new node ``nK`` with seeds and no members: it joins (Cassandra's
        auto-bootstrap; ``localcluster.add_node`` does the same)."""
        name = f"n{len(self.names) + 1}"
        address = f"sim://{name}"
        seed_nodes = seeds if seeds is not None else [n for n in self.in_service() if n != name]
        self.names.append(name)
        self.address[name] = address
        self._by_address[address] = name
        self.storage[name] = SimStorage(name)
        self.incarnation[name] = 0
        self.skew_ms[name] = 0
        self.boot[name] = Boot({name: address}, tuple(self.address[s] for s in seed_nodes), False)
        self.cores[name] = self._new_core(name)
        self.stats["joins"] += 1
        self.history.nemesis(self.now_us, f"join {name}")
        return name

    def decommission(self, node: str, on_reply=None) -> None:
        """An operator's ``quorumkv decommission``: a ``Decommission`` request to ``node``."""
        self.stats["decommissions"] += 1
        self.history.nemesis(self.now_us, f"decommission {node}")
        self.admin(node, on_reply, Decommission)

    def cleanup(self, node: str, on_reply=None) -> None:
        """An operator's ``quorumkv cleanup``: drop what ``node`` no longer replicates."""
        self.stats["cleanups"] += 1
        self.history.nemesis(self.now_us, f"cleanup {node}")
        self.admin(node, on_reply, Cleanup)

    def replace(self, node: str) -> None:
        """Replace dead ``node``: a new process with the same id, an empty disk, a new
        address and generation, ``replace = true`` (``localcluster.replace_node``)."""
        if self.cores[node] is not None:
            raise ValueError(f"{node} is running; a replacement is for a dead node")
        self.incarnation[node] += 1  # any restart scheduled for the dead one is void
        gen = sum(1 for a in self._by_address if self._by_address[a] == node)
        address = f"sim://{node}/r{gen}"
        self.address[node] = address
        self._by_address[address] = node
        self.storage[node] = SimStorage(node)
        seeds = tuple(self.address[s] for s in self.in_service() if s != node)
        self.boot[node] = Boot({node: address}, seeds, True)
        self.cores[node] = self._new_core(node)
        self.stats["replaces"] += 1
        self.history.nemesis(self.now_us, f"replace {node}")

    def retire(self, node: str, incarnation: int | None = None) -> None:
        """Stop a node that has left, for good."""
        if node in self.retired or (incarnation is not None and incarnation != self.incarnation[node]):
            return
        if self.status(node) not in (LEFT, None):
            return
        self.crash(node)
        self.retired[node] = self.now_us
        self.history.nemesis(self.now_us, f"retire {node}")

    # ------------------------------------------------------------ admin calls
    def admin(self, node: str, on_reply, make_msg) -> None:
        """Send an admin request (built by ``make_msg(req_id)``); ``on_reply(reply | None)``."""
        self._admin_next += 1
        self._admin_waiting[self._admin_next] = on_reply
        self.client_send(ADMIN_CLIENT, node, make_msg(self._admin_next))

    def _on_admin_reply(self, req_id: int, reply, reason: str) -> None:
        on_reply = self._admin_waiting.pop(req_id, None)
        if on_reply is not None:
            on_reply(reply)

    # ------------------------------------------------------------- inspection
    def replica_versions(self, key: bytes) -> dict[str, object]:
        """Each replica's newest version of ``key`` under the current ring (None: no record)."""
        out = {}
        for name in self.ring_view().preference_list(key):
            rec = self.storage[name].read(key)
            out[name] = rec.version if rec is not None else None
        return out

