"""NodeCore: the protocol state machine of one quorumkv node.

The shell feeds it events and executes the effects it returns, in order:

=======================  ====================================================
event (method)           what it means
=======================  ====================================================
``on_request``           a request arrived on an inbound connection ``conn``
                         (a client's Get/Put/Ping/Status/Inspect or a peer's
                         RepWrite/RepRead/RepPeek/Heartbeat/Gossip)
``on_response``          an answer arrived from ``peer`` on our outbound link
``on_store_done``        a storage effect finished (``token`` from it)
``on_hints_loaded``      the hints a ``LoadHints`` effect asked for
``on_peer_lost``         the outbound link to ``peer`` failed; nothing more
                         will come back on it
``on_send_failed``       one request to ``peer`` could not be sent
``tick``                 time passed: deadlines, heartbeats, gossip, detector,
                         speculative retries, hint replay
=======================  ====================================================

=======================  ====================================================
effect                   what the shell must do
=======================  ====================================================
``Send``                 send ``msg`` to ``peer`` (address: ``address_of``)
``Respond``              send ``msg`` back on inbound connection ``conn``
``StoreWrite``           durably apply ``record`` *then* ``on_store_done``
``StoreRead``            read ``key``; ``on_store_done(token, ok, record)``
``StoreHint``            durably keep ``record`` as a hint for ``owner``,
                         then ``on_store_done``
``ReadHint``             newest hinted record for ``key``; ``on_store_done``
``Peek``                 local record and hints for ``key``; ``on_store_done``
                         with ``(record, [(owner, record), ...])``
``LoadHints``            up to ``limit`` hints for ``owner``:
                         ``on_hints_loaded(owner, [(hint_id, key, record,
                         created_ms), ...])``
``DeleteHint``           forget hint ``hint_id`` (it was delivered or dropped)
``Log``                  write a structured log line
``SaveHlcCeiling``       durably record the HLC ceiling ``ts``, then
                         ``on_store_done`` (core/clock.py); read back at start
                         and passed as ``hlc_ceiling``
``SaveMembers``          durably record what this node knows of every other
                         node (replacing the last table); read back at start
                         and passed as ``known``
=======================  ====================================================

Persist-before-ack: a replica's ack is produced only by ``on_store_done``, which
the shell calls after the storage effect is durable. Time (``now_ms``, wall-clock
milliseconds) and randomness (a seed) are arguments; the core owns no clock,
socket or global random state, so the simulator runs it under virtual time.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable, NamedTuple

from ..errors import InvalidRequestError, UnavailableError
from . import dynamic
from . import messages as m
from .consistency import resolve, weak_warning
from .effects import (  # noqa: F401 - re-exported: the shell and tests import them from here
    DeleteHint, LoadHints, Log, Peek, ReadHint, Respond, SaveHlcCeiling, SaveMembers, ScanRange, Send, StoreHint,
    StoreRead, StoreWrite,
)
from .clock import MAX_CLOCK_SKEW_MS_DEFAULT, ClockGuard
from .hints import HintSettings, TokenBucket, admit, expired, record_size
from .limits import KEY_BYTES_MAX, ROUNDS_INFLIGHT_MAX, VALUE_BYTES_MAX
from .membership import ALIVE, JOINING, LEFT, MEMBERS_MAX, REPLACING, UP, DetectorSettings, Membership, RingSync
from .messages_cas import Atomic
from .messages_scan import Scan
from .messages_typed import Update
from .quorum import LOST, PENDING, WON, QuorumRound
from .rand import SplitMix64
from .ring import Ring
from .ringchange import RingChange
from .routing import LoadTracker, joint_read_targets, read_targets, write_targets
from .typed import is_typed, needs_repair, read_result
from .typed_coord import TypedCoordinator
from .version import HLC, Record, Version, newest

SELF = "<self>"  # the connection token of requests a node sends to itself
#: Storage token kinds of the coordinator's own replica in a fast-path round: the
#: store's completion goes straight to the round (no RepWrite/RepRead to ourselves).
LOCAL_WRITE = "lw"
LOCAL_READ = "lr"
SEED_PREFIX = "seed:"  # peer name of a seed address whose node id we don't know yet

#: Peers a node gossips its table to per gossip round (memberlist's GossipNodes: 3).
GOSSIP_FANOUT = 2
#: Nodes a node keeps hints for at most: one per possible member (a peer naming a
#: node outside the membership is refused anyway; this bounds the table even so).
HINT_TARGETS_MAX = MEMBERS_MAX
#: Times a client write is re-stamped at most (docs/consistency.md, "Acked writes
#: in real-time order"): a replica that holds a newer version of the key does not
#: apply ours and says so (``RepWriteAck.newer``); such acks do not count towards W,
#: and once the round cannot be won without them the write is sent again under a
#: fresh timestamp above the newest version they named. One re-stamp usually
#: suffices; the replicas of a key (N=3) can hold at most 3 different newer ones.
#: Past the bound (other writes to the key keep landing newer versions: writes
#: concurrent with this one) newer acks count towards W, as acks did before.
RESTAMPS_MAX = 3
#: Client requests a node holds while its ring is not yet synced after a start
#: (``RingSync``; docs/ring-changes.md, "Restarts"): one client pipeline's worth
#: (CLIENT_PIPELINE_MAX). Normally the wait is one gossip round trip; past the bound
#: a request is answered UNAVAILABLE at once rather than queued without limit.
RING_SYNC_PARKED_MAX = 1_000
#: Client request types that always wait for the ring sync: linearizable operations,
#: typed updates and scans route by the ring and promise more than a weak read. A
#: Get/Put waits only when it asks R + W > N (``_strict``).
RING_SYNC_GATED = (Atomic, Update, Scan)


class NodeSettings(NamedTuple):
    node_id: str
    n: int = 3
    r: int | str = 2
    w: int | str = 2
    timeout_ms_read: int = 2_000
    timeout_ms_write: int = 2_000
    vnodes: int = 256
    address: str = ""
    generation: int = 0
    seeds: tuple[str, ...] = ()
    detector: DetectorSettings = DetectorSettings()
    gossip_interval_ms: int = 500
    #: Send a read to one more replica when the first ones have not answered within
    #: this long (Cassandra's speculative retry); 0 turns it off.
    speculative_retry_ms: int = 20
    read_repair: bool = True
    #: Sloppy quorum (Dynamo, Riak's default): fallbacks standing in for down primaries
    #: count towards R and W. False makes every request primaries-only (Riak pr/pw).
    #: A level of ALL always means every *primary*, whatever this says.
    sloppy_quorum: bool = True
    #: Send every read to all live primaries, not just the R best (Riak's way: more
    #: load, more read repair; Cassandra's way, the default, sends to R plus a
    #: speculative extra when one is slow).
    read_all_replicas: bool = False
    hints: HintSettings = HintSettings()
    timeout_ms_inspect: int = 1_000
    rng_seed: int = 0
    #: Start as the replacement of a dead node with this node's id (``replacing``).
    replace: bool = False
    #: How long a node that starts joining, replacing or leaving waits for gossip to
    #: tell every coordinator before it streams (2 gossip rounds and some).
    settle_ms: int = 2_000
    #: CockroachDB's max-offset rule: a node whose clock is further than this off
    #: from most live peers refuses to coordinate writes (core/clock.py); 0: off.
    max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS_DEFAULT
    #: The shell's tombstone GC grace (0: GC off). A session floor older than it may
    #: name a purged tombstone, so a read finding no copy at all honours it.
    tombstone_gc_grace_ms: int = 0
    #: After a start, how long a client request that needs an up-to-date ring (a
    #: strict Get/Put, a linearizable op, a typed update, a scan) waits for the node
    #: to hear the tables of a majority of members (``RingSync``) before it is
    #: answered UNAVAILABLE rather than served by a ring that may be stale.
    timeout_ms_ring_sync: int = 2_000


class _Op:
    """A request this node coordinates: the quorum round plus where to answer."""

    __slots__ = ("op_id", "kind", "round", "conn", "req_id", "deadline_ms", "warning", "answered",
                 "key", "sent_ms", "spares", "speculated", "hint_for", "blocking_repair",
                 "repairs_pending", "reply", "record", "targets", "restamps", "newer")

    def __init__(self, op_id, kind, rnd, conn, req_id, deadline_ms, warning, key):
        self.op_id = op_id
        self.kind = kind
        self.round = rnd
        self.conn = conn
        self.req_id = req_id
        self.deadline_ms = deadline_ms
        self.warning = warning
        self.answered = False
        self.key = key
        self.sent_ms: dict[str, int] = {}
        self.spares: list[tuple[str, str | None]] = []
        self.speculated = False
        self.hint_for: dict[str, str] = {}  # fallback node -> the primary it stands in for
        self.blocking_repair = False
        self.repairs_pending: set[str] = set()
        self.reply = None
        self.record: Record | None = None  # writes: the version being written
        self.targets = None  # writes: ([(node, hint_for)], unreachable primaries), for a re-stamp
        self.restamps = 0  # writes: times re-stamped above a replica's newer version
        self.newer: Version | None = None  # writes: a newer version a replica holds (this attempt)


def level_from_wire(code: int) -> int | str | None:
    if code == m.LEVEL_DEFAULT:
        return None
    if code < 0:
        try:
            return m.LEVEL_NAMES[code]
        except KeyError:
            raise InvalidRequestError(f"unknown consistency level code {code}") from None
    return code


# Checks every request gets, on the client before sending and here on receipt; they
# live in .validation so that the client (and the CLI's start-up) need not import
# this module.
from .validation import level_to_wire, validate_key, validate_value  # noqa: E402,F401


class NodeCore:
    def __init__(self, settings: NodeSettings, members: dict[str, str], hlc_last: int = 0,
                 now_ms: int = 0, hints_held: dict[str, tuple[int, int]] | None = None,
                 hlc_ceiling: int | None = None, departed: dict[str, tuple[str, int, int]] | None = None,
                 known: dict[str, tuple[str, int, int, str]] | None = None) -> None:
        """``hlc_last``: the largest timestamp in storage; ``hlc_ceiling``: the last
        ceiling ``SaveHlcCeiling`` made durable (0 on a fresh node; None: the caller
        keeps none, so the HLC cannot promise anything across restarts);
        ``known``: the last table ``SaveMembers`` made durable ({} on a first start;
        None: the caller keeps none — then the node trusts its ring at once instead
        of waiting to hear a majority's tables, ``RingSync``); ``departed``: node ->
        (address, generation, version) of members known as left (an older state
        file's form of the same, merged into ``known``)."""
        if settings.node_id not in members:
            raise ValueError(f"node {settings.node_id!r} is not in its own member list")
        self.settings = settings
        self.node_id = settings.node_id
        address = settings.address or members[settings.node_id]
        # A node that knows only itself but has seeds is joining an existing cluster.
        joining = bool(settings.seeds) and len(members) == 1
        status = REPLACING if settings.replace else JOINING if joining else UP
        self.membership = Membership(self.node_id, address, settings.generation, members,
                                     settings.detector, now_ms, status,
                                     {**{n: (*e, LEFT) for n, e in (departed or {}).items()}, **(known or {})})
        self._known_saved = self.membership.known_key()
        self.ring: Ring | None = None
        self.future_ring: Ring | None = None  # set while a join/leave is in progress
        # A bad R or W fails here, at startup; later ring changes never raise (_rebuild_ring).
        resolve(settings.r, settings.n, 1, "R")
        resolve(settings.w, settings.n, 1, "W")
        self._rebuild_ring()
        self.hlc = HLC(hlc_last)
        self.rng = SplitMix64(settings.rng_seed)
        self.load = LoadTracker()
        self.ops: dict[int, _Op] = {}
        self._deadlines: list[tuple[int, int]] = []  # heap of (deadline_ms, op_id)
        # Fast-path rounds' deadlines (_coordinate_fast): now + a fixed timeout, so in
        # order of creation — a FIFO per timeout (reads, writes) instead of the heap.
        # Most rounds finish long before; their entries are skipped when they expire.
        # (A wall clock stepping back delays the entries behind by at most the step.)
        self._fast_deadlines: tuple[deque, deque] = (deque(), deque())  # writes, reads
        self._next_op = 1
        self._next_heartbeat_ms = now_ms
        self._next_gossip_ms = now_ms
        # hints held here, per target: [count, bytes]
        self.hints_held: dict[str, list[int]] = {o: [c, b] for o, (c, b) in (hints_held or {}).items()}
        self._replaying: dict[str, int] = {}  # owner -> replay sends outstanding
        self._hints_unsynced: dict[str, int] = {}  # owner -> StoreHint effects not yet durable
        self._replays: dict[int, tuple[str, object, int, int]] = {}  # op -> (owner, hint_id, size, deadline)
        # Hints of a departed (LEFT) owner go to the key's current replicas instead:
        # op -> replicas whose ack is still awaited (the hint is deleted once all acked).
        self._handovers: dict[int, set[str]] = {}
        self._replay_bucket = TokenBucket(settings.hints.replay_per_s, now_ms)
        # Extension points for protocol families in their own modules (anti-entropy,
        # ring changes): message type -> handler(conn|peer, msg, now_ms, out), storage
        # token kind -> handler(token, ok, result, now_ms, out), and tick hooks.
        self._request_handlers: dict[type, object] = {}
        self._response_handlers: dict[type, object] = {}
        self._store_handlers: dict[str, object] = {
            # the coordinator's own replica, written/read directly (_coordinate_fast)
            LOCAL_WRITE: self._local_write_done, LOCAL_READ: self._local_read_done,
        }
        self._tickers: list = []
        self._restamps_waiting: set[int] = set()  # write op ids waiting for the HLC ceiling (_restamp)
        self._tickers.append(self._restamp_tick)
        self.latency_model = None  # core/dynamic.py LatencyTable, kept current by the shell
        self.stats: dict[str, int] = {}
        self.ring_change = RingChange(self, settings.settle_ms)
        # Callables that say "a protocol family has work in flight" (next_deadline_ms).
        rc = self.ring_change
        self._busy_probes: list = [lambda: rc.state in ("settling", "streaming") or bool(rc.push_inflight)]
        self.stats.update({
            "suspects_vouched": 0,  # suspicion timeouts restarted by an indirect probe
            "requests": 0, "reads": 0, "writes": 0, "won": 0, "lost": 0, "timeouts": 0,
            "invalid": 0, "overloaded": 0, "replica_writes": 0, "replica_reads": 0,
            "hinted_writes": 0, "hints_stored": 0, "hints_replayed": 0,
            "hints_dropped_bytes": 0, "hints_dropped_age": 0, "hints_refused_target": 0,
            "hints_handed_over": 0, "read_repairs": 0,
            "speculative_retries": 0, "membership_changes": 0, "write_restamps": 0,
        })
        self.clock = ClockGuard(self, hlc_ceiling, now_ms)
        # A (re)started node's ring may be older than the cluster's: strict requests
        # wait until it has heard a majority's tables (docs/ring-changes.md, "Restarts").
        # ``known`` None: the caller keeps no membership across starts (bare cores in
        # unit tests), so there is nothing a start could have missed: synced at once.
        self.ring_sync = RingSync(self.membership, now_ms, synced=known is None and departed is None)
        self._sync_parked: deque = deque()  # (deadline_ms, conn, msg), arrival order
        self.stats.update({"ring_synced": int(self.ring_sync.synced), "ring_sync_ms": 0,
                           "ring_sync_waits": 0, "ring_sync_refused": 0})
        self._busy_probes.append(lambda: bool(self._sync_parked))
        self.typed = TypedCoordinator(self)  # counters, sets, maps, causal writes (core/typed_coord.py)

    # ------------------------------------------------------- extension interface
    # Protocol families in their own modules (anti-entropy, ring changes, the shell's
    # latency and snapshot requests) plug in here, never through the private tables.
    def handle_requests(self, handlers: dict[type, Callable[..., None]]) -> None:
        """Route requests of these message types to ``handler(conn, msg, now_ms, out)``."""
        for t, fn in handlers.items():
            assert t not in self._request_handlers, f"two handlers for {t.__name__}"
            self._request_handlers[t] = fn

    def handle_responses(self, handlers: dict[type, Callable[..., None]]) -> None:
        """Route responses of these message types to ``handler(peer, msg, now_ms, out)``."""
        for t, fn in handlers.items():
            assert t not in self._response_handlers, f"two handlers for {t.__name__}"
            self._response_handlers[t] = fn

    def handle_stored(self, kind: str, handler: Callable[..., None]) -> None:
        """Route completions of storage tokens ``(kind, ...)`` to ``handler(token, ok, result, now_ms, out)``."""
        assert kind not in self._store_handlers, f"two handlers for storage token kind {kind!r}"
        self._store_handlers[kind] = handler

    def add_ticker(self, ticker: Callable[[int, list[Any]], None]) -> None:
        """Call ``ticker(now_ms, out)`` on every tick."""
        self._tickers.append(ticker)

    def add_busy_probe(self, probe: Callable[[], bool]) -> None:
        """``probe()`` true means work is in flight: tick at the normal cadence (``next_deadline_ms``)."""
        self._busy_probes.append(probe)

    # ------------------------------------------------------------------ config
    def _rebuild_ring(self) -> None:
        members = self.membership.ring_members()
        self.ring = Ring(members, self.settings.n, self.settings.vnodes) if members else None
        future = self.membership.future_ring_members()
        self.future_ring = (Ring(future, self.settings.n, self.settings.vnodes)
                            if future and future != members else None)
        n = self.replication_factor()
        self.default_r = self._default_count(self.settings.r, n, "R")
        self.default_w = self._default_count(self.settings.w, n, "W")

    def _default_count(self, level: int | str, n: int, what: str) -> int:
        """The configured R or W as a count on an ``n``-replica ring. Never raises: this
        runs inside gossip handling. An integer larger than a shrunken ring is kept (each
        request then fails UNAVAILABLE, saying why: ``_count``); the configured N
        accepts it (checked at startup)."""
        try:
            return resolve(level, n, 1, what)
        except InvalidRequestError:
            return resolve(level, self.settings.n, 1, what)

    def _count(self, level, n: int, default: int, what: str) -> int:
        """A request's R or W on an ``n``-replica ring. Impossible even with the
        configured N: the client's fault (InvalidRequestError). Possible with the
        configured N but not with the ring as it is now: UnavailableError."""
        try:
            return resolve(level, n, default, what)
        except InvalidRequestError:
            if n >= self.settings.n:
                raise
            count = resolve(level, self.settings.n, default, what)
            raise UnavailableError(f"{what}={count} needs {count} replicas but the ring has only {n} "
                                   f"node{'s' if n > 1 else ''} (N={self.settings.n} configured)") from None

    def replication_factor(self) -> int:
        """N in force: the configured N, clamped to the ring's size once there is a ring."""
        return self.ring.n if self.ring is not None else self.settings.n

    def address_of(self, peer: str) -> str | None:
        if peer.startswith(SEED_PREFIX):
            return peer[len(SEED_PREFIX):]
        return self.membership.address_of(peer)

    def is_alive(self, node: str) -> bool:
        return self.membership.is_alive(node)

    # ------------------------------------------------------------------ events
    def on_request(self, conn, msg, now_ms: int) -> list:
        out: list = []
        t = type(msg)
        if t is m.RepWrite:
            self._replica_write(conn, msg, now_ms, out)
        elif t is m.RepRead:
            self.stats["replica_reads"] += 1
            if msg.hint_for and msg.hint_for != self.node_id:
                out.append(ReadHint(("r", conn, msg.id), msg.key))
            else:
                out.append(StoreRead(("r", conn, msg.id), msg.key))
        elif t is m.Heartbeat:
            self.clock.on_heartbeat(msg, now_ms)
            tr = self.membership.on_heartbeat(msg.node, msg.generation, now_ms)
            if tr is not None:
                self._transition(tr, now_ms, out)
            self._on_probe(msg, now_ms, out)
        elif t is m.Gossip:
            self.clock.observe_remote(msg.hlc, now_ms)
            self._merge(msg.endpoints, now_ms, out)
            self.respond(conn, m.GossipAck(msg.id, self.membership.table(), self.hlc.last), now_ms, out)
        elif t is m.Get or t is m.Put:
            if not self.ring_sync.synced and self._strict(msg) and self._park(conn, msg, now_ms, out):
                return out
            self.stats["requests"] += 1
            if self.clock.admit(conn, msg, now_ms, out):
                self._coordinate_client(conn, msg, now_ms, out)
        elif t is m.RepPeek:
            out.append(Peek(("p", conn, msg.id), msg.key))
        elif t is m.Ping:
            self.respond(conn, m.Pong(msg.id, self.node_id, self.replication_factor(), self.default_r,
                                       self.default_w, self.members(), ring=list(self.membership.ring_members()),
                                       vnodes=self.settings.vnodes), now_ms, out)
        elif t is m.Status:
            self.respond(conn, self.status_reply(msg.id, now_ms), now_ms, out)
        elif t is m.Inspect:
            try:
                validate_key(msg.key)
                self._start_inspect(conn, msg, now_ms, out)
            except InvalidRequestError as exc:
                self.respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
        elif t in self._request_handlers:
            if not self.ring_sync.synced and t in RING_SYNC_GATED and self._park(conn, msg, now_ms, out):
                return out
            self._request_handlers[t](conn, msg, now_ms, out)
        else:
            # A response type arriving as a request: a confused peer. Answer, don't crash.
            self.respond(conn, m.Error(getattr(msg, "id", 0), f"unexpected {t.__name__} as a request"),
                          now_ms, out)
        return out

    def on_response(self, peer: str, msg, now_ms: int) -> list:
        out: list = []
        t = type(msg)
        if (t is m.RepWriteAck or t is m.RepReadResp) and t not in self._response_handlers:
            # The common case first: a replica's answer to an open round (op ids are
            # unique among rounds, replays and ring-change pushes: one counter).
            op = self.ops.get(msg.id)
            if op is not None:
                self._op_response(op, peer, msg, t, now_ms, out)
                return out
        if t is m.GossipAck:
            self.clock.observe_remote(msg.hlc, now_ms)
            self._merge(msg.endpoints, now_ms, out)
            if not self.ring_sync.synced and self.ring_sync.heard_from(peer, self.membership, now_ms):
                self._ring_synced(now_ms, out)
            return out
        handler = self._response_handlers.get(t)
        if handler is not None:
            handler(peer, msg, now_ms, out)
            return out
        if msg.id in self._replays:
            waiting = self._handovers.get(msg.id)
            sent_to_peer = peer in waiting if waiting is not None else peer == self._replays[msg.id][0]
            if not sent_to_peer:
                return out  # an answer from a node this replay did not go to: ignored
            ok = t is m.RepWriteAck and msg.ok
            if ok and waiting is not None:
                waiting.discard(peer)
                if waiting:
                    return out  # a departed node's hint: every current replica must ack
            self._replay_done(msg.id, ok, now_ms, out)
            return out
        if t is m.RepWriteAck and self.ring_change.on_push_ack(msg.id, msg.ok, now_ms, out):
            return out
        op = self.ops.get(msg.id)
        if op is None:
            return out  # late reply for a finished round, or a fire-and-forget repair ack
        self._op_response(op, peer, msg, t, now_ms, out)
        return out

    def _op_response(self, op: _Op, peer: str, msg, t: type, now_ms: int, out: list) -> None:
        """A replica's answer to one of our rounds (a peer's, or our own storage's)."""
        sent = op.sent_ms.get(peer)
        self.load.done(peer, (now_ms - sent) if sent is not None else None)
        rnd = op.round
        if t is m.RepWriteAck and op.kind == "read" and peer in op.repairs_pending:  # blocking repair
            self._repair_settled(op, peer, now_ms, out)
            return
        if t is m.RepWriteAck and op.kind == "write":
            if msg.ok and msg.newer is not None:  # not applied: the replica holds a newer version
                self.clock.observe_remote(msg.newer.ts, now_ms)
            if msg.ok and (msg.newer is None or op.restamps >= RESTAMPS_MAX):
                rnd.add_ok(peer)
            elif msg.ok:  # not counted towards W: a round lost this way is re-stamped (_restamp)
                if op.newer is None or msg.newer.newer_than(op.newer):
                    op.newer = msg.newer
                rnd.add_failure(peer, f"holds newer version {msg.newer}")
            else:
                rnd.add_failure(peer, f"failed: {msg.error}")
        elif t is m.RepReadResp and op.kind == "read":
            if msg.ok:
                if msg.record is not None:
                    self.hlc.observe(msg.record.version.ts, now_ms)
                rnd.add_ok(peer, msg.record)
            else:
                self._replica_failed(op, peer, f"failed: {msg.error}", now_ms, out)
        elif t is m.RepPeekResp and op.kind == "inspect":
            rnd.add_ok(peer, (msg.record, msg.hints))
        else:
            rnd.add_failure(peer, f"sent unexpected {t.__name__}")
        self._progress(op, now_ms, out)

    def _local_write_done(self, token, ok: bool, result, now_ms: int, out: list) -> None:
        """Our own replica's write for round ``token[2]`` is durable (or failed): the
        ack ``on_store_done`` would have sent to ourselves, taken directly."""
        op = self.ops.get(token[2])
        if op is not None:
            ack = m.RepWriteAck(token[2], ok, "" if ok else str(result),
                                newer=result if ok and type(result) is Version else None)
            self._op_response(op, self.node_id, ack, m.RepWriteAck, now_ms, out)

    def _local_read_done(self, token, ok: bool, result, now_ms: int, out: list) -> None:
        op = self.ops.get(token[2])
        if op is not None:
            resp = m.RepReadResp(token[2], ok, result if ok else None, "" if ok else str(result))
            self._op_response(op, self.node_id, resp, m.RepReadResp, now_ms, out)

    def on_store_done(self, token, ok: bool, result, now_ms: int) -> list:
        """``result``: what was read (StoreRead/ReadHint/Peek), or an error string when not ok."""
        out: list = []
        kind, conn, req_id = token[:3]
        handler = self._store_handlers.get(kind)
        if handler is not None:
            handler(token, ok, result, now_ms, out)
            return out
        if kind == "h" or kind == "hw":
            owner = token[3]
            self._hints_unsynced[owner] -= 1
            if not ok:
                out.append(Log("error", "hint_store_failed", {"target": owner, "error": str(result)}))
            if kind == "h":  # a hint this coordinator keeps for itself: nobody waits for it
                return out
            kind = "w"
        if kind == "w":  # ok: result is None, or the newer version that kept this one out
            msg = m.RepWriteAck(req_id, ok, "" if ok else str(result),
                                newer=result if ok and type(result) is Version else None)
        elif kind == "r":
            msg = m.RepReadResp(req_id, ok, result if ok else None, "" if ok else str(result))
        else:  # "p": inspect peek
            record, hints = result if ok else (None, [])
            msg = m.RepPeekResp(req_id, record, list(hints))
        self.respond(conn, msg, now_ms, out)
        return out

    def on_hints_loaded(self, owner: str, entries: list, now_ms: int) -> list:
        out: list = []
        held = self.hints_held.setdefault(owner, [0, 0])
        if not entries:
            if not self._hints_unsynced.get(owner):
                self.hints_held[owner] = [0, 0]  # storage says nothing is left: resync
            self._replaying.pop(owner, None)
            return out
        hs = self.settings.hints
        in_flight = {hint_id for _, hint_id, _, _ in self._replays.values()}
        departed = self._departed(owner)
        for hint_id, key, record, _created_ms in entries:
            if hint_id in in_flight:  # already being replayed: don't send (or count) it twice
                continue
            size = record_size(key, record.value)
            if expired(hs, record, now_ms):
                self.stats["hints_dropped_age"] += 1
                out.append(DeleteHint(hint_id))
                held[0] -= 1
                held[1] -= size
                out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "age",
                                                           "age_ms": now_ms - record.version.wall_ms}))
                continue
            op_id = self.new_op_id()
            self._replays[op_id] = (owner, hint_id, size, now_ms + self.settings.timeout_ms_write)
            if departed:
                self._hand_over(op_id, owner, key, record, now_ms, out)
            else:
                out.append(Send(owner, m.RepWrite(op_id, key, record)))
        # In flight now (a hand-over whose replicas are all down finished at once).
        sent = sum(1 for o, *_ in self._replays.values() if o == owner)
        if sent:
            self._replaying[owner] = sent
        else:
            self._replaying.pop(owner, None)
        return out

    def on_peer_lost(self, peer: str, reason: str, now_ms: int) -> list:
        out: list = []
        for op in list(self.ops.values()):
            if peer in op.repairs_pending:  # a blocking repair's target is gone: don't wait for it
                self._repair_settled(op, peer, now_ms, out)
            if peer in op.round.outstanding:
                self._replica_failed(op, peer, reason, now_ms, out)
                self._progress(op, now_ms, out)
        for op_id, (owner, *_rest) in list(self._replays.items()):
            if owner == peer or peer in self._handovers.get(op_id, ()):
                self._replay_done(op_id, False, now_ms, out)
        rc = self.ring_change
        for op_id, entry in list(rc.push_inflight.items()):
            if entry[0] == peer:
                rc.on_push_ack(op_id, False, now_ms, out)
        if rc.request_id and rc.sources and rc.sources[0] == peer:
            rc.on_request_failed(rc.request_id, now_ms, out, reason)
        return out

    def on_send_failed(self, peer: str, msg, reason: str, now_ms: int) -> list:
        out: list = []
        op_id = getattr(msg, "id", None)
        if op_id in self._replays:
            self._replay_done(op_id, False, now_ms, out)
            return out
        if op_id and op_id not in self.ops and self.ring_change.on_request_failed(op_id, now_ms, out, reason):
            return out
        op = self.ops.get(op_id)
        if op is None:
            return out
        if type(msg) is m.RepWrite and op.kind == "read":
            # A read's RepWrite is a blocking repair: it will never be acked, stop waiting.
            if peer in op.repairs_pending:
                self._repair_settled(op, peer, now_ms, out)
        elif peer in op.round.outstanding:
            self._replica_failed(op, peer, reason, now_ms, out)
            self._progress(op, now_ms, out)
        return out

    def next_deadline_ms(self, now_ms: int) -> int:
        """When this core next needs ``tick`` (absolute ms), so an idle shell can sleep.

        Work in flight — quorum rounds (deadlines, speculative retries), hint replay,
        hints waiting to be replayed, a ring change or anti-entropy exchange (the
        ``_busy_probes``) — answers ``now_ms``: tick at the shell's normal cadence.
        Otherwise the next heartbeat or gossip round; the shell still caps its sleep
        (the failure detector's checks and protocol families' periodic timers run
        at that cap)."""
        if self.ops or self._replays or self._replaying:
            return now_ms
        for count, _bytes in self.hints_held.values():
            if count > 0:
                return now_ms
        for busy in self._busy_probes:
            if busy():
                return now_ms
        if self.settings.gossip_interval_ms >= self.settings.detector.heartbeat_interval_ms:
            # gossip rides the protocol period's wake-up (see _membership_tick): one
            # wake-up per period, not two
            return self._next_heartbeat_ms
        return min(self._next_heartbeat_ms, self._next_gossip_ms)

    def tick(self, now_ms: int) -> list:
        out: list = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            _, op_id = heapq.heappop(heap)
            op = self.ops.get(op_id)
            if op is not None:
                self._expire(op, now_ms, out)
        for fifo in self._fast_deadlines:
            while fifo and fifo[0][0] <= now_ms:
                op = self.ops.get(fifo.popleft()[1])
                if op is not None:
                    self._expire(op, now_ms, out)
        if self.settings.speculative_retry_ms:
            self._speculate(now_ms, out)
        self._membership_tick(now_ms, out)
        if self._sync_parked:
            self._sync_tick(now_ms, out)
        self._hints_tick(now_ms, out)
        for ticker in self._tickers:
            ticker(now_ms, out)
        self.clock.tick(now_ms, out)
        return out

    def _expire(self, op: _Op, now_ms: int, out: list) -> None:
        """``op``'s deadline passed."""
        if op.kind == "write" and op.record is not None:
            for node in op.round.outstanding:  # silent replicas get a hint
                self._hint_locally(op.hint_for.get(node, node), op.key, op.record, now_ms, out)
        op.round.expire()
        self._progress(op, now_ms, out)
        if op.kind == "read" and not op.answered:  # waited for blocking repair in vain
            op.answered = True
            self.respond(op.conn, op.reply, now_ms, out)
        self._maybe_finish(op, now_ms, out, expired=True)

    # ------------------------------------------------------------ replica side
    def _replica_write(self, conn, msg, now_ms: int, out: list) -> None:
        self.stats["replica_writes"] += 1
        self.hlc.observe(msg.record.version.ts, now_ms)
        owner = msg.hint_for
        if not owner or owner == self.node_id:
            out.append(StoreWrite(("w", conn, msg.id), msg.key, msg.record))
            return
        refused = self._hint_target_refused(owner)
        if refused:
            self.stats["hints_refused_target"] += 1
            self.respond(conn, m.RepWriteAck(msg.id, False, refused), now_ms, out)
            return
        size = record_size(msg.key, msg.record.value)
        held = self.hints_held.setdefault(owner, [0, 0])
        if not admit(self.settings.hints, held[1], size):
            self.stats["hints_dropped_bytes"] += 1
            out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "bytes",
                                                       "held_bytes": held[1]}))
            self.respond(conn, m.RepWriteAck(msg.id, False, f"hints for {owner} are full "
                                              f"(bytes_max_per_target={self.settings.hints.bytes_max_per_target})"),
                          now_ms, out)
            return
        held[0] += 1
        held[1] += size
        self.stats["hints_stored"] += 1
        self._hints_unsynced[owner] = self._hints_unsynced.get(owner, 0) + 1
        out.append(StoreHint(("hw", conn, msg.id, owner), owner, msg.key, msg.record, now_ms))

    def _hint_target_refused(self, owner: str) -> str:
        """Why a peer's hint for ``owner`` is refused ("" when it is accepted): only
        for a current member, and hint targets are bounded (HINT_TARGETS_MAX)."""
        e = self.membership.endpoints.get(owner)
        if e is None or e.status == LEFT:
            return f"hint for {owner!r} refused: not a member of the ring"
        if owner not in self.hints_held and len(self.hints_held) >= HINT_TARGETS_MAX:
            return f"hint for {owner!r} refused: HINT_TARGETS_MAX={HINT_TARGETS_MAX} targets held"
        return ""

    # ------------------------------------------------------------- coordinator
    def new_op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def _coordinate_client(self, conn, msg, now_ms: int, out: list) -> None:
        op_id = self._next_op
        try:
            self._coordinate(conn, msg, now_ms, out)
        except InvalidRequestError as exc:
            self.stats["invalid"] += 1
            self.respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
            return
        except UnavailableError as exc:
            self.stats["lost"] += 1
            self.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=str(exc)), now_ms, out)
            return
        if type(msg) is m.Get and msg.floor is not None and op_id in self.ops:
            self.clock.note_read(op_id, msg.floor)

    def _coordinate_fast(self, conn, msg, now_ms: int, out: list) -> bool:
        """The common case, coordinated without the general machinery: a Get/Put at
        the default level, no dynamic target, no ring change, every primary of the
        key live (and serving reads). The coordinator's own replica is written or
        read by a storage effect whose completion goes straight to the round
        (LOCAL_WRITE / LOCAL_READ), the others get a RepWrite/RepRead. The same
        targets, round, op and replies as ``_coordinate``; False (nothing done):
        take the general path."""
        ring = self.ring
        if ring is None or self.future_ring is not None or len(self.ops) >= ROUNDS_INFLIGHT_MAX:
            return False
        is_get = type(msg) is m.Get
        if not is_get and type(msg) is not m.Put:
            return False  # a subclass such as TypedPut carries its own record (core/typed_coord.py)
        key = msg.key
        if not key or len(key) > KEY_BYTES_MAX:
            return False
        if is_get:
            if msg.r != m.LEVEL_DEFAULT or msg.target_p_fresh or msg.target_within_ms:
                return False
        elif (msg.w != m.LEVEL_DEFAULT or msg.target_latency_ms or msg.ttl_ms < 0
              or (msg.value is not None and len(msg.value) > VALUE_BYTES_MAX)):
            return False
        primaries = ring.preference_list(key)
        n = ring.n
        me = self.node_id
        membership = self.membership
        if is_get:
            if self.settings.read_all_replicas:
                return False
            needed = self.default_r
            candidates = read_targets(primaries, (), membership.serves_reads, self.load, me, True)
            if len(candidates) != n:
                return False  # a primary is down or still streaming: fallbacks, spares
            targets, spares = candidates[:needed], candidates[needed:]
            warning = weak_warning(needed, self.default_w, n)
            deadline = now_ms + self.settings.timeout_ms_read
        else:
            alive = membership.is_alive
            for p in primaries:
                if not alive(p):
                    return False
            needed = self.default_w
            warning = weak_warning(self.default_r, needed, n)
            deadline = now_ms + self.settings.timeout_ms_write
            targets = [(p, None) for p in primaries]
            spares = []
        if not 1 <= needed <= n:
            return False  # the general path says why
        op_id = self._next_op
        self._next_op = op_id + 1
        kind = "read" if is_get else "write"
        rnd = QuorumRound(kind, tuple(node for node, _ in targets), needed)
        op = _Op(op_id, kind, rnd, conn, msg.id, deadline, warning or "", key)
        op.spares = spares
        self.ops[op_id] = op
        self._fast_deadlines[is_get].append((deadline, op_id))
        sent_ms = op.sent_ms
        load_sent = self.load.sent
        stats = self.stats
        if is_get:
            stats["reads"] += 1
            op.blocking_repair = msg.blocking_repair
            for node, _ in targets:
                sent_ms[node] = now_ms
                load_sent(node)
                if node == me:
                    stats["replica_reads"] += 1
                    out.append(StoreRead((LOCAL_READ, None, op_id), key))
                else:
                    out.append(Send(node, m.RepRead(op_id, key, "")))
        else:
            stats["writes"] += 1
            expires = now_ms + msg.ttl_ms if msg.ttl_ms and msg.value is not None else 0
            # A typed write (core/typed_coord.py) arrives with the record its primary made.
            record = getattr(msg, "record", None) or Record(Version(self.hlc.now(now_ms), me), msg.value, expires)
            op.record = record
            op.targets = (targets, [])
            for node in primaries:
                sent_ms[node] = now_ms
                load_sent(node)
                if node == me:
                    stats["replica_writes"] += 1
                    out.append(StoreWrite((LOCAL_WRITE, None, op_id), key, record))
                else:
                    out.append(Send(node, m.RepWrite(op_id, key, record, "")))
        # No _progress here: nothing has answered yet, and needed >= 1.
        return True

    def _coordinate(self, conn, msg, now_ms: int, out: list) -> None:
        if self._coordinate_fast(conn, msg, now_ms, out):
            return
        key = msg.key
        validate_key(key)
        if self.ring is None:
            self.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=f"node {self.node_id} is joining "
                                        "and has no ring yet"), now_ms, out)
            return
        n = self.ring.n
        is_get = type(msg) is m.Get
        level = level_from_wire(msg.r if is_get else msg.w)
        dyn = dynamic.wants_target(msg)
        if dyn:  # a freshness/latency target instead of R/W: the live model picks (core/dynamic.py)
            self.stats["dynamic_requests"] = self.stats.get("dynamic_requests", 0) + 1
            live = sum(map(self.membership.is_alive, self.ring.preference_list(key)))
            level, why = dynamic.level_for(msg, self.latency_model, n, self.default_w, live)
            if level is None:
                self.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=why), now_ms, out)
                return
        if is_get:
            needed = self._count(level, n, self.default_r, "R")
            warning = None if dyn else weak_warning(needed, self.default_w, n)
            deadline = now_ms + self.settings.timeout_ms_read
        else:
            validate_value(msg.value)
            if msg.ttl_ms < 0:
                raise InvalidRequestError(f"ttl_ms must be >= 0, got {msg.ttl_ms}")
            needed = self._count(level, n, self.default_w, "W")
            warning = weak_warning(self.default_r, needed, n)
            deadline = now_ms + self.settings.timeout_ms_write
        if len(self.ops) >= ROUNDS_INFLIGHT_MAX:
            self.stats["overloaded"] += 1
            self.respond(conn, m.Reply(msg.id, m.OVERLOADED,
                                        message=f"node {self.node_id} has ROUNDS_INFLIGHT_MAX="
                                        f"{ROUNDS_INFLIGHT_MAX} rounds open"), now_ms, out)
            return
        primaries = self.ring.preference_list(key)
        joint = self._joint_sets(key, primaries, level, needed, is_get)
        if joint is not None:  # a ring change moves this key: current and future replicas both take part
            primaries += tuple(x for x in joint[1][1] if x not in primaries)
        ring_order = self.ring.extended_list(key)
        alive = self.membership.is_alive
        primary_only = msg.primary_only or not self.settings.sloppy_quorum or needed == n
        if is_get:
            candidates = read_targets(primaries, ring_order, self.membership.serves_reads, self.load,
                                      self.node_id, primary_only)
            if joint is not None:
                targets, spares = joint_read_targets(candidates, [(set(g), c) for _, g, c in joint],
                                                     self.settings.read_all_replicas)
            else:
                fanout = needed
                if self.settings.read_all_replicas:
                    fanout = max(needed, sum(1 for _, owner in candidates if owner is None))
                targets, spares = candidates[:fanout], candidates[fanout:]
        else:
            targets = write_targets(primaries, ring_order, alive, primary_only)
            spares = []
        covered = {owner or node for node, owner in targets} | {owner or node for node, owner in spares}
        unreachable = [p for p in primaries if p not in covered]
        op_id = self.new_op_id()
        kind = "read" if is_get else "write"
        groups = None
        if joint is not None:  # each set counts the fallbacks standing in for its members
            stand = {owner: node for node, owner in targets + spares if owner}
            groups = tuple((name, frozenset(stand.get(x, x) for x in g), c) for name, g, c in joint)
        rnd = QuorumRound(kind, tuple(node for node, _ in targets) + tuple(unreachable), needed, groups)
        op = _Op(op_id, kind, rnd, conn, msg.id, deadline, warning or "", key)
        op.spares = spares
        self.ops[op_id] = op
        heapq.heappush(self._deadlines, (deadline, op_id))
        for p in unreachable:
            rnd.add_failure(p, "down")
        if is_get:
            self.stats["reads"] += 1
            op.blocking_repair = msg.blocking_repair
            for node, owner in targets:
                self._send_read(op, node, owner, now_ms, out)
        else:
            self.stats["writes"] += 1
            expires = now_ms + msg.ttl_ms if msg.ttl_ms and msg.value is not None else 0
            # A typed write (core/typed_coord.py) arrives with the record its primary made.
            record = getattr(msg, "record", None) or Record(Version(self.hlc.now(now_ms), self.node_id),
                                                            msg.value, expires)
            op.record = record
            op.targets = (targets, unreachable)
            for node, owner in targets:
                if owner:
                    op.hint_for[node] = owner
                    self.stats["hinted_writes"] += 1
                self._send(op, node, m.RepWrite(op_id, key, record, owner or ""), now_ms, out)
            for p in unreachable:  # known down and no fallback stands in: keep the write for it here
                self._hint_locally(p, key, record, now_ms, out)
        self._progress(op, now_ms, out)

    def _joint_sets(self, key: bytes, primaries: tuple[str, ...], level, needed: int, is_get: bool):
        """While a ring change moves ``key``: its current and future replica sets, each
        with the count it needs, ``(("current", set, R|W), ("future", set, R|W))``;
        None otherwise. Both sets must reach their count (docs/failures.md, "Ring
        changes": why that keeps strict quorums intersecting across the change)."""
        if self.future_ring is None:
            return None
        future = self.future_ring.preference_list(key)
        if set(future) == set(primaries):
            return None
        need = needed
        if len(future) != len(primaries):  # the ring grows past, or shrinks below, N
            level = level if level is not None else (self.settings.r if is_get else self.settings.w)
            try:
                need = resolve(level, len(future), 1, "R" if is_get else "W")
            except InvalidRequestError:
                need = min(needed, len(future))
        return (("current", primaries, needed), ("future", future, need))

    def _top_up(self, op: _Op, failing: str, now_ms: int, out: list) -> None:
        """Joint read losing ``failing``: bring in spares until each replica set can
        still reach its count (the set ``failing`` was in, or both)."""
        while op.spares:
            short = op.round.wanting(exclude=failing)
            i = next((i for i, (node, _) in enumerate(op.spares) if any(node in g for g in short)), None)
            if i is None:
                return
            spare, owner = op.spares.pop(i)
            self._send_read(op, spare, owner, now_ms, out)

    def _next_spare(self, op: _Op) -> tuple[str, str | None]:
        """The spare to bring in: in a joint round, one of a replica set still short."""
        for i, (node, _owner) in enumerate(op.spares):
            if op.round.short_of(node):
                return op.spares.pop(i)
        return op.spares.pop(0)

    def _send(self, op: _Op, node: str, msg, now_ms: int, out: list) -> None:
        op.sent_ms[node] = now_ms
        self.load.sent(node)
        if node == self.node_id:
            out.extend(self.on_request(SELF, msg, now_ms))
        else:
            out.append(Send(node, msg))

    def _send_read(self, op: _Op, node: str, owner: str | None, now_ms: int, out: list) -> None:
        if owner:
            op.hint_for[node] = owner
        op.round.add_replica(node)
        self._send(op, node, m.RepRead(op.op_id, op.key, owner or ""), now_ms, out)

    def _replica_failed(self, op: _Op, node: str, reason: str, now_ms: int, out: list) -> None:
        """A replica failed. Reads bring in a spare first, so the round never gives up
        early. Writes leave a hint here for the replica that missed it (Cassandra's
        coordinator does the same): a node that died before the detector noticed
        still gets every write it missed once it is back."""
        if op.kind == "read" and op.spares and op.round.status == PENDING:
            if op.round.groups is None:
                spare, owner = op.spares.pop(0)
                self._send_read(op, spare, owner, now_ms, out)
            else:
                self._top_up(op, node, now_ms, out)
        elif op.kind == "write" and op.record is not None and node in op.round.outstanding:
            self._hint_locally(op.hint_for.get(node, node), op.key, op.record, now_ms, out)
        op.round.add_failure(node, reason)

    def _restamp(self, op: _Op, now_ms: int, out: list) -> bool:
        """A write round lost because replicas hold a newer version (``op.newer``):
        send the write again, as a new attempt (a new op id: the old attempt's acks
        are ignored), stamped above it. Strict quorums intersect, so a write acked
        with W applied copies is newer than every write acked before it began
        (docs/consistency.md, "Acked writes in real-time order"). A timestamp beyond
        the durable ceiling waits for the next save, as a new write would
        (core/clock.py). False: not possible (bound reached, deadline passed)."""
        waiting = self._restamps_waiting
        if op.restamps >= RESTAMPS_MAX or op.round.timed_out or now_ms >= op.deadline_ms:
            waiting.discard(op.op_id)
            return False
        clock = self.clock
        if clock.durable is not None and not clock._may_issue(now_ms):  # noqa: SLF001
            clock._save(now_ms, out)  # noqa: SLF001
            waiting.add(op.op_id)  # _restamp_tick tries again
            return True
        waiting.discard(op.op_id)
        old = op.round
        for node in old.outstanding:  # the old attempt's acks will be ignored
            self.load.done(node, None)
        del self.ops[op.op_id]
        op.op_id = self.new_op_id()
        self.ops[op.op_id] = op
        heapq.heappush(self._deadlines, (op.deadline_ms, op.op_id))
        op.restamps += 1
        op.newer = None
        self.stats["write_restamps"] += 1
        rec = op.record
        op.record = Record(Version(self.hlc.now(now_ms), self.node_id, rec.version.ctx), rec.value, rec.expires_ms)
        op.round = QuorumRound(old.kind, old.replicas, old.needed, old.groups)
        targets, unreachable = op.targets
        for p in unreachable:
            op.round.add_failure(p, "down")
        for node, owner in targets:
            self._send(op, node, m.RepWrite(op.op_id, op.key, op.record, owner or ""), now_ms, out)
        for p in unreachable:
            self._hint_locally(p, op.key, op.record, now_ms, out)
        self._progress(op, now_ms, out)
        return True

    def _restamp_tick(self, now_ms: int, out: list) -> None:
        for op_id in list(self._restamps_waiting):
            op = self.ops.get(op_id)
            if op is None:
                self._restamps_waiting.discard(op_id)
            else:
                self._progress(op, now_ms, out)

    def _hint_locally(self, owner: str, key: bytes, record: Record, now_ms: int, out: list) -> None:
        if owner == self.node_id:
            return
        size = record_size(key, record.value)
        held = self.hints_held.setdefault(owner, [0, 0])
        if not admit(self.settings.hints, held[1], size):
            self.stats["hints_dropped_bytes"] += 1
            out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "bytes", "held_bytes": held[1]}))
            return
        held[0] += 1
        held[1] += size
        self.stats["hints_stored"] += 1
        self._hints_unsynced[owner] = self._hints_unsynced.get(owner, 0) + 1
        out.append(StoreHint(("h", None, 0, owner), owner, key, record, now_ms))

    def _speculate(self, now_ms: int, out: list) -> None:
        delay = self.settings.speculative_retry_ms
        for op in list(self.ops.values()):
            if (op.kind == "read" and not op.speculated and op.spares and op.round.status == PENDING
                    and now_ms - min(op.sent_ms.values(), default=now_ms) >= delay):
                op.speculated = True
                self.stats["speculative_retries"] += 1
                spare, owner = self._next_spare(op)
                self._send_read(op, spare, owner, now_ms, out)

    def _progress(self, op: _Op, now_ms: int, out: list) -> None:
        rnd = op.round
        if op.reply is None and rnd.status != PENDING:
            if op.kind == "inspect":
                return self._maybe_finish(op, now_ms, out)
            if rnd.status == LOST and op.newer is not None and self._restamp(op, now_ms, out):
                return  # sent again above the newer version, or waiting to (RESTAMPS_MAX)
            if rnd.status == WON and op.kind == "read" and self.clock.floors and self.clock.read_floor(
                    op, now_ms, out):
                return  # the session's floor is not met yet (core/clock.py)
            if rnd.status == WON:
                self.stats["won"] += 1
                if op.kind == "read":
                    rec = self._read_result(op)
                    if rec is None or not rec.live_at(now_ms):  # missing, deleted or expired
                        op.reply = m.Reply(op.req_id, m.NOT_FOUND, None, rec.version if rec else None,
                                           "not found", op.warning, r_used=rnd.needed)
                    else:
                        op.reply = m.Reply(op.req_id, m.OK, rec.value, rec.version, "", op.warning,
                                           rec.expires_ms, r_used=rnd.needed)
                    if op.blocking_repair and self.settings.read_repair:
                        op.repairs_pending = set(self._repair(op, rec, now_ms, out, reply_id=op.op_id))
                else:
                    op.reply = m.Reply(op.req_id, m.OK, op.record.value if is_typed(op.record.version) else None,
                                       op.record.version, "", op.warning, w_used=rnd.needed)  # typed: new state
            else:
                self.stats["lost"] += 1
                status = m.TIMEOUT if rnd.timed_out else m.UNAVAILABLE
                if status == m.TIMEOUT:
                    self.stats["timeouts"] += 1
                # A failed write may still land: its version lets a session order after it.
                op.reply = m.Reply(op.req_id, status, version=op.record.version if op.record else None,
                                   message=rnd.error_message(), warning=op.warning)
            if not op.repairs_pending:
                op.answered = True
                self.respond(op.conn, op.reply, now_ms, out)
        self._maybe_finish(op, now_ms, out)

    def _read_result(self, op: _Op) -> Record | None:
        return read_result(op.round.records.values())  # typed records: the merge (core/typed.py)

    def _maybe_finish(self, op: _Op, now_ms: int, out: list, expired: bool = False) -> None:
        rnd = op.round
        complete = rnd.complete
        if not (complete or expired or (rnd.status == LOST and op.kind != "inspect")):
            return
        if op.repairs_pending and not expired:
            return
        if op.op_id not in self.ops:
            return
        del self.ops[op.op_id]
        if not complete:
            for node in rnd.outstanding:  # never answered: no longer in flight for load purposes
                self.load.done(node, None)
        if op.kind == "inspect":
            self.respond(op.conn, self._inspect_reply(op, now_ms), now_ms, out)
        elif op.kind == "read" and rnd.status == WON and not op.blocking_repair and self.settings.read_repair:
            self._repair(op, self._read_result(op), now_ms, out, reply_id=0)

    def _repair(self, op: _Op, newest_rec: Record | None, now_ms: int, out: list, reply_id: int) -> list[str]:
        """Read repair: write the newest version back to primaries that answered with less.

        ``reply_id`` 0 is fire-and-forget (acks are ignored); otherwise the acks come
        back to this op (blocking repair). Fallbacks are not repaired: they only hold
        hints. Returns the replicas written to.
        """
        if newest_rec is None:
            return []
        stale = [node for node, rec in op.round.records.items()
                 if node not in op.hint_for and needs_repair(newest_rec, rec)]
        for node in stale:
            self.stats["read_repairs"] += 1
            msg = m.RepWrite(reply_id, op.key, newest_rec)
            if node == self.node_id:
                out.extend(self.on_request(SELF, msg, now_ms))
            else:
                out.append(Send(node, msg))
        return stale

    def _repair_settled(self, op: _Op, peer: str, now_ms: int, out: list) -> None:
        """A blocking repair to ``peer`` was acked, failed or lost: stop waiting for it."""
        op.repairs_pending.discard(peer)
        if not op.repairs_pending and op.reply is not None and not op.answered:
            op.answered = True
            self.respond(op.conn, op.reply, now_ms, out)
        self._maybe_finish(op, now_ms, out)

    def respond(self, conn, msg, now_ms: int, out: list) -> None:
        if conn is SELF:
            if msg.id:  # id 0: fire-and-forget (read repair); nobody waits for it
                out.extend(self.on_response(self.node_id, msg, now_ms))
        else:
            out.append(Respond(conn, msg))

    # ----------------------------------------------------------------- inspect
    def _start_inspect(self, conn, msg, now_ms: int, out: list) -> None:
        if len(self.ops) >= ROUNDS_INFLIGHT_MAX:  # an inspect is a round like any other
            self.stats["overloaded"] += 1
            self.respond(conn, m.Reply(msg.id, m.OVERLOADED, message=f"node {self.node_id} has "
                                        f"ROUNDS_INFLIGHT_MAX={ROUNDS_INFLIGHT_MAX} rounds open"), now_ms, out)
            return
        nodes = sorted(set(self.membership.peers()) | {self.node_id})
        op_id = self.new_op_id()
        rnd = QuorumRound("inspect", tuple(nodes), len(nodes))
        deadline = now_ms + self.settings.timeout_ms_inspect
        op = _Op(op_id, "inspect", rnd, conn, msg.id, deadline, "", msg.key)
        self.ops[op_id] = op
        heapq.heappush(self._deadlines, (deadline, op_id))
        for node in nodes:
            self._send(op, node, m.RepPeek(op_id, msg.key), now_ms, out)

    def _inspect_reply(self, op: _Op, now_ms: int) -> m.InspectReply:
        key = op.key
        state = self.membership.state_of
        primaries = list(self.ring.preference_list(key)) if self.ring else []
        planned = {}
        if self.ring is not None:
            planned = {node: owner for node, owner in write_targets(
                tuple(primaries), self.ring.extended_list(key), self.membership.is_alive) if owner}
        views = []
        all_records = []
        for node in primaries:
            answered = node in op.round.records
            rec = op.round.records[node][0] if answered else None
            all_records.append(rec)
            views.append(_view(node, "primary", state(node), answered, rec,
                               error=op.round.failures.get(node, "")))
        for node in sorted(op.round.replicas):
            if node in primaries:
                continue
            hints = op.round.records.get(node, (None, []))[1] if node in op.round.records else []
            if hints or node in planned:
                best = newest(rec for _, rec in hints)
                owner = hints[0][0] if hints else planned.get(node)
                all_records.append(best)
                views.append(_view(node, "fallback", state(node), node in op.round.records, best,
                                   hint_for=owner, error=op.round.failures.get(node, "")))
        top = newest(all_records)
        return m.InspectReply(op.req_id, key, self.node_id, primaries, views,
                              str(top.version) if top else None)

    # -------------------------------------------------------------- membership
    def _merge(self, endpoints, now_ms: int, out: list) -> None:
        before = (self.membership.ring_members(), self.membership.future_ring_members())
        self.membership.merge(endpoints, now_ms)
        me = self.membership.me
        if me.status in (JOINING, REPLACING) and len(self.membership.endpoints) > 1:
            # Admitted: we have the cluster's table. Stream our ranges' data, then go up.
            self.ring_change.start_pull("join" if me.status == JOINING else "replace", now_ms, out)
        if (self.membership.ring_members(), self.membership.future_ring_members()) != before:
            self.ring_changed(now_ms, out)
        if not self.ring_sync.synced and self.ring_sync.update(self.membership, now_ms):
            self._ring_synced(now_ms, out)  # members left: fewer answers make a majority
        # Persist what we know of the others — who joined, is joining, was replaced,
        # is leaving or has left — so a restart (even of the whole cluster, with
        # config files that list the initial members) routes by the ring we knew,
        # never by an older one: coordinators that disagree on a key's replicas
        # without a joint round break quorum intersection (docs/ring-changes.md,
        # "Restarts"; simulator seeds 72, 218 and 906).
        key = self.membership.known_key()
        if key != self._known_saved:
            self._known_saved = key
            out.append(SaveMembers(self.membership.known()))

    def ring_changed(self, now_ms: int, out: list) -> None:
        self.stats["membership_changes"] += 1
        self._rebuild_ring()
        out.append(Log("info", "ring_changed", {"members": list(self.membership.ring_members()),
                                                "future": list(self.membership.future_ring_members())}))

    def _heartbeat(self, now_ms: int, probe: bool = False, ask: str = "", vouch: str = "") -> m.Heartbeat:
        return m.Heartbeat(0, self.node_id, self.membership.me.generation, self.hlc.last, now_ms,
                           probe, ask, vouch)

    def _on_probe(self, msg: m.Heartbeat, now_ms: int, out: list) -> None:
        """The SWIM side of a heartbeat (core/membership.py): answer a probe, pass a
        suspect's answer on to whoever asked us to probe it, probe for a peer, note a
        helper's vouch. Only members get anything back."""
        ms = self.membership
        sender = msg.node
        if sender not in ms.detectors:
            return
        if msg.probe:
            out.append(Send(sender, self._heartbeat(now_ms)))
        for requester in ms.relayed_to(sender, now_ms):
            out.append(Send(requester, self._heartbeat(now_ms, vouch=sender)))
        if msg.ask and ms.ask_relay(msg.ask, sender, now_ms):
            out.append(Send(msg.ask, self._heartbeat(now_ms, probe=True)))
        if msg.vouch and ms.vouch(msg.vouch, now_ms):
            self.stats["suspects_vouched"] += 1

    def _membership_tick(self, now_ms: int, out: list) -> None:
        ms = self.membership
        if now_ms >= self._next_heartbeat_ms:
            self._next_heartbeat_ms = now_ms + self.settings.detector.heartbeat_interval_ms
            probe = self._heartbeat(now_ms, probe=True)
            targets = ms.probe_targets(self.rng)
            for peer in targets:
                out.append(Send(peer, probe))
            for suspect in ms.suspects(self.rng):  # direct and indirect probes (SWIM), bounded
                if suspect not in targets:
                    out.append(Send(suspect, probe))
                for helper in ms.helpers_for(suspect, self.rng):
                    out.append(Send(helper, self._heartbeat(now_ms, ask=suspect)))
            ms.expire_relays(now_ms)
        if now_ms >= self._next_gossip_ms:
            # on schedule, not from now: rounds taken at the next protocol period's
            # tick still average one per gossip interval
            self._next_gossip_ms += self.settings.gossip_interval_ms
            if self._next_gossip_ms <= now_ms:
                self._next_gossip_ms = now_ms + self.settings.gossip_interval_ms
            table = ms.table()
            if self.ring_sync.synced:
                targets = self.rng.sample(ms.peers(), GOSSIP_FANOUT)
            else:  # every member not heard from yet: a majority's answers in one round trip
                targets = self.ring_sync.unheard(ms)
            if ms.me.status == JOINING or not targets:
                targets += [SEED_PREFIX + s for s in self.settings.seeds if s != ms.me.address]
            for peer in targets:
                out.append(Send(peer, m.Gossip(0, table, self.hlc.last)))
        for tr in ms.check(now_ms):
            self._transition(tr, now_ms, out)

    def _transition(self, tr, now_ms: int, out: list) -> None:
        level = "info" if tr.new == ALIVE else "warning"
        out.append(Log(level, f"node_{tr.new}", {"peer": tr.node, "was": tr.old}))

    # --------------------------------------------------------------- ring sync
    def _strict(self, msg) -> bool:
        """A Get/Put that asks R + W > N (or a freshness/latency target): it must not
        be coordinated by a ring that may be stale. A request whose level is invalid
        is not held: ``_coordinate`` says why at once."""
        if self.ring is None or dynamic.wants_target(msg):
            return True
        n = self.ring.n
        is_get = type(msg) is m.Get
        try:
            level = level_from_wire(msg.r if is_get else msg.w)
            needed = resolve(level, n, self.default_r if is_get else self.default_w, "R" if is_get else "W")
        except (InvalidRequestError, UnavailableError):
            return False
        return (needed + self.default_w if is_get else self.default_r + needed) > n

    def _park(self, conn, msg, now_ms: int, out: list) -> bool:
        """Hold a client request until the ring is synced (True), or answer it
        UNAVAILABLE at once when RING_SYNC_PARKED_MAX are held (True as well)."""
        if len(self._sync_parked) >= RING_SYNC_PARKED_MAX:
            self._sync_refuse(conn, msg, f"node {self.node_id} restarted and has not yet heard the "
                              f"membership of a majority of the cluster; RING_SYNC_PARKED_MAX="
                              f"{RING_SYNC_PARKED_MAX} requests already wait for it", now_ms, out)
            return True
        self.stats["ring_sync_waits"] += 1
        self._sync_parked.append((now_ms + self.settings.timeout_ms_ring_sync, conn, msg))
        return True

    def _sync_refuse(self, conn, msg, text: str, now_ms: int, out: list) -> None:
        self.stats["ring_sync_refused"] += 1
        self.stats["requests"] += 1
        if type(msg) is Atomic:
            from .messages_cas import AtomicReply
            # a plain Get/Put made linearizable by the node default expects a plain Reply
            # (what paxos.plain_reply makes; paxos imports this module, not the reverse)
            reply = m.Reply(msg.id, m.UNAVAILABLE, message=text) if msg.plain else \
                AtomicReply(msg.id, m.UNAVAILABLE, message=text)
            self.respond(conn, reply, now_ms, out)
        else:
            self.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=text), now_ms, out)

    def _sync_tick(self, now_ms: int, out: list) -> None:
        """Answer the held requests whose ``timeout_ms_ring_sync`` has passed."""
        parked = self._sync_parked
        heard = len(self.ring_sync.heard)
        needed = RingSync.needed(self.membership)
        while parked and parked[0][0] <= now_ms:
            _, conn, msg = parked.popleft()
            self._sync_refuse(conn, msg, (
                f"node {self.node_id} restarted and its ring may be stale: it has heard the membership of "
                f"{heard} of the {needed} peers it needs (a majority of the cluster) within "
                f"timeout_ms_ring_sync={self.settings.timeout_ms_ring_sync}; try another node or again "
                "later"), now_ms, out)

    def _ring_synced(self, now_ms: int, out: list) -> None:
        """A majority's tables are merged: serve what waited, in arrival order."""
        self.stats["ring_synced"] = 1  # in ``status``; no log line: most starts sync in one round trip
        self.stats["ring_sync_ms"] = now_ms - self.ring_sync.since_ms
        parked, self._sync_parked = self._sync_parked, deque()
        for _, conn, msg in parked:
            out.extend(self.on_request(conn, msg, now_ms))

    # ------------------------------------------------------------------- hints
    def _departed(self, owner: str) -> bool:
        e = self.membership.endpoints.get(owner)
        return e is not None and e.status == LEFT

    def _hints_tick(self, now_ms: int, out: list) -> None:
        for owner, (count, _bytes) in self.hints_held.items():
            if count <= 0 or owner in self._replaying or self.ring is None:
                continue
            if self.membership.endpoints.get(owner) is None:
                continue
            # A departed owner's hints are handed to the keys' current replicas (below),
            # at once: it will never come back to take them.
            if not self._departed(owner) and not self.membership.is_alive(owner):
                continue
            want = min(count, self.settings.hints.replay_batch_max)
            got = self._replay_bucket.take(want, now_ms)
            if got:
                self._replaying[owner] = 0
                out.append(LoadHints(owner, got))
        for op_id, (owner, hint_id, size, deadline) in list(self._replays.items()):
            if deadline <= now_ms:
                self._replay_done(op_id, False, now_ms, out)

    def _hand_over(self, op_id: int, owner: str, key: bytes, record: Record, now_ms: int, out: list) -> None:
        """Replay a departed node's hint to the key's current replicas: live ones get it
        now (the hint is deleted once they all acked), a down one gets a hint here."""
        waiting = self._handovers[op_id] = set()
        for node in self.ring.preference_list(key):
            if node == owner:
                continue
            if node == self.node_id:
                waiting.add(node)
                out.extend(self.on_request(SELF, m.RepWrite(op_id, key, record), now_ms))
            elif self.membership.is_alive(node):
                waiting.add(node)
                out.append(Send(node, m.RepWrite(op_id, key, record)))
            else:
                self._hint_locally(node, key, record, now_ms, out)
        if not waiting and op_id in self._replays:
            self._replay_done(op_id, True, now_ms, out)

    def _replay_done(self, op_id: int, ok: bool, now_ms: int, out: list) -> None:
        owner, hint_id, size, _ = self._replays.pop(op_id)
        handed_over = self._handovers.pop(op_id, None) is not None
        if ok:
            self.stats["hints_handed_over" if handed_over else "hints_replayed"] += 1
            held = self.hints_held.setdefault(owner, [0, 0])
            held[0] -= 1
            held[1] -= size
            out.append(DeleteHint(hint_id))
        left = self._replaying.get(owner, 0) - 1
        if left <= 0 or not ok:
            self._replaying.pop(owner, None)  # the next tick loads the next batch
        else:
            self._replaying[owner] = left

    # ------------------------------------------------------------------- info
    def members(self) -> dict[str, str]:
        return {e.node: e.address for e in self.membership.table()}

    def status_reply(self, req_id: int, now_ms: int) -> m.StatusReply:
        ms = self.membership
        views = []
        for node, e in sorted(ms.endpoints.items()):
            det = ms.detectors.get(node)
            phi = round(det.phi(now_ms), 2) if det is not None else 0.0
            views.append(m.MemberView(node, e.address, ms.state_of(node), e.status, e.generation,
                                      e.version, phi, self.clock.offset_of(node)))
        return m.StatusReply(req_id, self.node_id, views, list(ms.ring_members()), self.statistics(),
                             {o: c for o, (c, _) in self.hints_held.items() if c > 0})

    def statistics(self) -> dict:
        return dict(self.stats, rounds_open=len(self.ops),
                    hints_held=sum(c for c, _ in self.hints_held.values()))

    def install_latency_model(self, model) -> None:
        """Event: the shell (or a test) hands over a new dynamic-quorum latency model
        (core/dynamic.py ``LatencyTable``), built off the core from live samples."""
        self.latency_model = model


def _view(node, role, state, answered, rec, hint_for=None, error="") -> m.ReplicaView:
    if rec is None:
        return m.ReplicaView(node, role, state, answered, None, False, None, 0, hint_for, error)
    return m.ReplicaView(node, role, state, answered, str(rec.version), rec.value is None,
                         None if rec.value is None else len(rec.value), rec.expires_ms, hint_for, error)
