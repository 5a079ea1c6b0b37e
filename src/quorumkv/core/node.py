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
=======================  ====================================================

Persist-before-ack: a replica's ack is produced only by ``on_store_done``, which
the shell calls after the storage effect is durable. Time (``now_ms``, wall-clock
milliseconds) and randomness (a seed) are arguments; the core owns no clock,
socket or global random state, so the simulator runs it under virtual time.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from ..errors import InvalidRequestError
from . import dynamic
from . import messages as m
from .consistency import resolve, weak_warning
from .effects import (  # noqa: F401 - re-exported: the shell and tests import them from here
    DeleteHint, LoadHints, Log, Peek, ReadHint, Respond, ScanRange, Send, StoreHint, StoreRead, StoreWrite,
)
from .hints import HintSettings, TokenBucket, admit, expired, record_size
from .limits import KEY_BYTES_MAX, ROUNDS_INFLIGHT_MAX, VALUE_BYTES_MAX
from .membership import ALIVE, JOINING, REPLACING, UP, DetectorSettings, Membership
from .quorum import LOST, PENDING, WON, QuorumRound
from .rand import SplitMix64
from .ring import Ring
from .ringchange import RingChange
from .routing import LoadTracker, read_targets, write_targets
from .version import HLC, Record, Version, newest

SELF = "<self>"  # the connection token of requests a node sends to itself
SEED_PREFIX = "seed:"  # peer name of a seed address whose node id we don't know yet

#: Peers a node gossips its table to per gossip round (memberlist's GossipNodes: 3).
GOSSIP_FANOUT = 2


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


class _Op:
    """A request this node coordinates: the quorum round plus where to answer."""

    __slots__ = ("op_id", "kind", "round", "conn", "req_id", "deadline_ms", "warning", "answered",
                 "key", "sent_ms", "spares", "speculated", "hint_for", "blocking_repair",
                 "repairs_pending", "reply", "record")

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
                 now_ms: int = 0, hints_held: dict[str, tuple[int, int]] | None = None) -> None:
        if settings.node_id not in members:
            raise ValueError(f"node {settings.node_id!r} is not in its own member list")
        self.settings = settings
        self.node_id = settings.node_id
        address = settings.address or members[settings.node_id]
        # A node that knows only itself but has seeds is joining an existing cluster.
        joining = bool(settings.seeds) and len(members) == 1
        status = REPLACING if settings.replace else JOINING if joining else UP
        self.membership = Membership(self.node_id, address, settings.generation, members,
                                     settings.detector, now_ms, status)
        self.ring: Ring | None = None
        self.future_ring: Ring | None = None  # set while a join/leave is in progress
        self._rebuild_ring()
        self.hlc = HLC(hlc_last)
        self.rng = SplitMix64(settings.rng_seed)
        self.load = LoadTracker()
        self.ops: dict[int, _Op] = {}
        self._deadlines: list[tuple[int, int]] = []  # heap of (deadline_ms, op_id)
        self._next_op = 1
        self._next_heartbeat_ms = now_ms
        self._next_gossip_ms = now_ms
        # hints held here, per target: [count, bytes]
        self.hints_held: dict[str, list[int]] = {o: [c, b] for o, (c, b) in (hints_held or {}).items()}
        self._replaying: dict[str, int] = {}  # owner -> replay sends outstanding
        self._hints_unsynced: dict[str, int] = {}  # owner -> StoreHint effects not yet durable
        self._replays: dict[int, tuple[str, object, int, int]] = {}  # op -> (owner, hint_id, size, deadline)
        self._replay_bucket = TokenBucket(settings.hints.replay_per_s, now_ms)
        # Extension points for protocol families in their own modules (anti-entropy,
        # ring changes): message type -> handler(conn|peer, msg, now_ms, out), storage
        # token kind -> handler(token, ok, result, now_ms, out), and tick hooks.
        self._request_handlers: dict[type, object] = {}
        self._response_handlers: dict[type, object] = {}
        self._store_handlers: dict[str, object] = {}
        self._tickers: list = []
        self.latency_model = None  # core/dynamic.py LatencyTable, kept current by the shell
        self.stats: dict[str, int] = {}
        self.ring_change = RingChange(self, settings.settle_ms)
        self.stats.update({
            "requests": 0, "reads": 0, "writes": 0, "won": 0, "lost": 0, "timeouts": 0,
            "invalid": 0, "overloaded": 0, "replica_writes": 0, "replica_reads": 0,
            "hinted_writes": 0, "hints_stored": 0, "hints_replayed": 0,
            "hints_dropped_bytes": 0, "hints_dropped_age": 0, "read_repairs": 0,
            "speculative_retries": 0, "membership_changes": 0,
        })

    # ------------------------------------------------------------------ config
    def _rebuild_ring(self) -> None:
        members = self.membership.ring_members()
        self.ring = Ring(members, self.settings.n, self.settings.vnodes) if members else None
        future = self.membership.future_ring_members()
        self.future_ring = (Ring(future, self.settings.n, self.settings.vnodes)
                            if future and future != members else None)
        n = self.replication_factor()
        self.default_r = resolve(self.settings.r, n, 1, "R")
        self.default_w = resolve(self.settings.w, n, 1, "W")

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
            tr = self.membership.on_heartbeat(msg.node, msg.generation, now_ms)
            if tr is not None:
                self._transition(tr, now_ms, out)
        elif t is m.Gossip:
            self._merge(msg.endpoints, now_ms, out)
            self._respond(conn, m.GossipAck(msg.id, self.membership.table()), now_ms, out)
        elif t is m.Get or t is m.Put:
            self.stats["requests"] += 1
            try:
                self._coordinate(conn, msg, now_ms, out)
            except InvalidRequestError as exc:
                self.stats["invalid"] += 1
                self._respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
        elif t is m.RepPeek:
            out.append(Peek(("p", conn, msg.id), msg.key))
        elif t is m.Ping:
            self._respond(conn, m.Pong(msg.id, self.node_id, self.replication_factor(), self.default_r,
                                       self.default_w, self.members()), now_ms, out)
        elif t is m.Status:
            self._respond(conn, self.status_reply(msg.id, now_ms), now_ms, out)
        elif t is m.Inspect:
            try:
                validate_key(msg.key)
                self._start_inspect(conn, msg, now_ms, out)
            except InvalidRequestError as exc:
                self._respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
        elif t in self._request_handlers:
            self._request_handlers[t](conn, msg, now_ms, out)
        else:
            # A response type arriving as a request: a confused peer. Answer, don't crash.
            self._respond(conn, m.Error(getattr(msg, "id", 0), f"unexpected {t.__name__} as a request"),
                          now_ms, out)
        return out

    def on_response(self, peer: str, msg, now_ms: int) -> list:
        out: list = []
        t = type(msg)
        if t is m.GossipAck:
            self._merge(msg.endpoints, now_ms, out)
            return out
        handler = self._response_handlers.get(t)
        if handler is not None:
            handler(peer, msg, now_ms, out)
            return out
        if msg.id in self._replays:
            self._replay_done(msg.id, t is m.RepWriteAck and msg.ok, now_ms, out)
            return out
        if t is m.RepWriteAck and self.ring_change.on_push_ack(msg.id, msg.ok, now_ms, out):
            return out
        op = self.ops.get(msg.id)
        if op is None:
            return out  # late reply for a finished round, or a fire-and-forget repair ack
        sent = op.sent_ms.get(peer)
        self.load.done(peer, (now_ms - sent) if sent is not None else None)
        rnd = op.round
        if t is m.RepWriteAck and op.kind == "read" and peer in op.repairs_pending:  # blocking repair
            op.repairs_pending.discard(peer)
            if not op.repairs_pending and op.reply is not None and not op.answered:
                op.answered = True
                self._respond(op.conn, op.reply, now_ms, out)
            self._maybe_finish(op, now_ms, out)
            return out
        if t is m.RepWriteAck and op.kind == "write":
            if msg.ok:
                rnd.add_ok(peer)
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
        return out

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
        if kind == "w":
            msg = m.RepWriteAck(req_id, ok, "" if ok else str(result))
        elif kind == "r":
            msg = m.RepReadResp(req_id, ok, result if ok else None, "" if ok else str(result))
        else:  # "p": inspect peek
            record, hints = result if ok else (None, [])
            msg = m.RepPeekResp(req_id, record, list(hints))
        self._respond(conn, msg, now_ms, out)
        return out

    def on_hints_loaded(self, owner: str, entries: list, now_ms: int) -> list:
        out: list = []
        held = self.hints_held.setdefault(owner, [0, 0])
        if not entries:
            if not self._hints_unsynced.get(owner):
                self.hints_held[owner] = [0, 0]  # storage says nothing is left: resync
            self._replaying.pop(owner, None)
            return out
        sent = 0
        hs = self.settings.hints
        in_flight = {hint_id for _, hint_id, _, _ in self._replays.values()}
        for hint_id, key, record, created_ms in entries:
            if hint_id in in_flight:  # already being replayed: don't send (or count) it twice
                continue
            size = record_size(key, record.value)
            if expired(hs, created_ms, now_ms):
                self.stats["hints_dropped_age"] += 1
                out.append(DeleteHint(hint_id))
                held[0] -= 1
                held[1] -= size
                out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "age",
                                                           "age_ms": now_ms - created_ms}))
                continue
            op_id = self._new_op_id()
            self._replays[op_id] = (owner, hint_id, size, now_ms + self.settings.timeout_ms_write)
            out.append(Send(owner, m.RepWrite(op_id, key, record)))
            sent += 1
        if sent:
            self._replaying[owner] = sent
        else:
            self._replaying.pop(owner, None)
        return out

    def on_peer_lost(self, peer: str, reason: str, now_ms: int) -> list:
        out: list = []
        for op in list(self.ops.values()):
            if peer in op.repairs_pending:  # a blocking repair's target is gone: don't wait for it
                op.repairs_pending.discard(peer)
                if not op.repairs_pending and op.reply is not None and not op.answered:
                    op.answered = True
                    self._respond(op.conn, op.reply, now_ms, out)
                self._maybe_finish(op, now_ms, out)
            if peer in op.round.outstanding:
                self._replica_failed(op, peer, reason, now_ms, out)
                self._progress(op, now_ms, out)
        for op_id, (owner, *_rest) in list(self._replays.items()):
            if owner == peer:
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
        if op is not None and type(msg) is not m.RepWrite or (op is not None and op.kind == "write"):
            if peer in op.round.outstanding:
                self._replica_failed(op, peer, reason, now_ms, out)
                self._progress(op, now_ms, out)
        return out

    def tick(self, now_ms: int) -> list:
        out: list = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            _, op_id = heapq.heappop(heap)
            op = self.ops.get(op_id)
            if op is not None:
                if op.kind == "write" and op.record is not None:
                    for node in op.round.outstanding:  # silent replicas get a hint
                        self._hint_locally(op.hint_for.get(node, node), op.key, op.record, now_ms, out)
                op.round.expire()
                self._progress(op, now_ms, out)
                if op.kind == "read" and not op.answered:  # waited for blocking repair in vain
                    op.answered = True
                    self._respond(op.conn, op.reply, now_ms, out)
                self._maybe_finish(op, now_ms, out, expired=True)
        if self.settings.speculative_retry_ms:
            self._speculate(now_ms, out)
        self._membership_tick(now_ms, out)
        self._hints_tick(now_ms, out)
        for ticker in self._tickers:
            ticker(now_ms, out)
        return out

    # ------------------------------------------------------------ replica side
    def _replica_write(self, conn, msg, now_ms: int, out: list) -> None:
        self.stats["replica_writes"] += 1
        self.hlc.observe(msg.record.version.ts, now_ms)
        owner = msg.hint_for
        if not owner or owner == self.node_id:
            out.append(StoreWrite(("w", conn, msg.id), msg.key, msg.record))
            return
        size = record_size(msg.key, msg.record.value)
        held = self.hints_held.setdefault(owner, [0, 0])
        if not admit(self.settings.hints, held[1], size):
            self.stats["hints_dropped_bytes"] += 1
            out.append(Log("warning", "hint_dropped", {"target": owner, "reason": "bytes",
                                                       "held_bytes": held[1]}))
            self._respond(conn, m.RepWriteAck(msg.id, False, f"hints for {owner} are full "
                                              f"(bytes_max_per_target={self.settings.hints.bytes_max_per_target})"),
                          now_ms, out)
            return
        held[0] += 1
        held[1] += size
        self.stats["hints_stored"] += 1
        self._hints_unsynced[owner] = self._hints_unsynced.get(owner, 0) + 1
        out.append(StoreHint(("hw", conn, msg.id, owner), owner, msg.key, msg.record, now_ms))

    # ------------------------------------------------------------- coordinator
    def _new_op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def _coordinate(self, conn, msg, now_ms: int, out: list) -> None:
        key = msg.key
        validate_key(key)
        if self.ring is None:
            self._respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=f"node {self.node_id} is joining "
                                        "and has no ring yet"), now_ms, out)
            return
        n = self.ring.n
        is_get = type(msg) is m.Get
        level = level_from_wire(msg.r if is_get else msg.w)
        dyn = dynamic.wants_target(msg)
        if dyn:  # a freshness/latency target instead of R/W: the live model picks (core/dynamic.py)
            live = sum(map(self.membership.is_alive, self.ring.preference_list(key)))
            level, why = dynamic.level_for(msg, self.latency_model, n, self.default_w, live)
            if level is None:
                self._respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=why), now_ms, out)
                return
        if is_get:
            needed = resolve(level, n, self.default_r, "R")
            warning = None if dyn else weak_warning(needed, self.default_w, n)
            deadline = now_ms + self.settings.timeout_ms_read
        else:
            validate_value(msg.value)
            if msg.ttl_ms < 0:
                raise InvalidRequestError(f"ttl_ms must be >= 0, got {msg.ttl_ms}")
            needed = resolve(level, n, self.default_w, "W")
            warning = weak_warning(self.default_r, needed, n)
            deadline = now_ms + self.settings.timeout_ms_write
        if len(self.ops) >= ROUNDS_INFLIGHT_MAX:
            self.stats["overloaded"] += 1
            self._respond(conn, m.Reply(msg.id, m.OVERLOADED,
                                        message=f"node {self.node_id} has ROUNDS_INFLIGHT_MAX="
                                        f"{ROUNDS_INFLIGHT_MAX} rounds open"), now_ms, out)
            return
        primaries = self.ring.preference_list(key)
        ring_order = self.ring.extended_list(key)
        alive = self.membership.is_alive
        primary_only = msg.primary_only or not self.settings.sloppy_quorum or needed == n
        if is_get:
            candidates = read_targets(primaries, ring_order, self.membership.serves_reads, self.load,
                                      self.node_id, primary_only)
            fanout = needed
            if self.settings.read_all_replicas:
                fanout = max(needed, sum(1 for _, owner in candidates if owner is None))
            targets, spares = candidates[:fanout], candidates[fanout:]
        else:
            targets = write_targets(primaries, ring_order, alive, primary_only)
            spares = []
        covered = {owner or node for node, owner in targets} | {owner or node for node, owner in spares}
        unreachable = [p for p in primaries if p not in covered]
        op_id = self._new_op_id()
        kind = "read" if is_get else "write"
        rnd = QuorumRound(kind, tuple(node for node, _ in targets) + tuple(unreachable), needed)
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
            record = Record(Version(self.hlc.now(now_ms), self.node_id), msg.value, expires)
            op.record = record
            for node, owner in targets:
                if owner:
                    op.hint_for[node] = owner
                    self.stats["hinted_writes"] += 1
                self._send(op, node, m.RepWrite(op_id, key, record, owner or ""), now_ms, out)
            if self.future_ring is not None:
                # A ring change is in progress: the nodes that will own the key get the
                # write too (not counted towards W), so none misses it while data streams.
                sent = {node for node, _ in targets}
                for node in self.future_ring.preference_list(key):
                    if node not in sent and node not in primaries:
                        self._send(op, node, m.RepWrite(op_id, key, record), now_ms, out)
        self._progress(op, now_ms, out)

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
            spare, owner = op.spares.pop(0)
            self._send_read(op, spare, owner, now_ms, out)
        elif op.kind == "write" and op.record is not None and node in op.round.outstanding:
            self._hint_locally(op.hint_for.get(node, node), op.key, op.record, now_ms, out)
        op.round.add_failure(node, reason)

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
                spare, owner = op.spares.pop(0)
                self._send_read(op, spare, owner, now_ms, out)

    def _progress(self, op: _Op, now_ms: int, out: list) -> None:
        rnd = op.round
        if op.reply is None and rnd.status != PENDING:
            if op.kind == "inspect":
                return self._maybe_finish(op, now_ms, out)
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
                    op.reply = m.Reply(op.req_id, m.OK, None, None, "", op.warning, w_used=rnd.needed)
            else:
                self.stats["lost"] += 1
                status = m.TIMEOUT if rnd.timed_out else m.UNAVAILABLE
                if status == m.TIMEOUT:
                    self.stats["timeouts"] += 1
                op.reply = m.Reply(op.req_id, status, message=rnd.error_message(), warning=op.warning)
            if not op.repairs_pending:
                op.answered = True
                self._respond(op.conn, op.reply, now_ms, out)
        self._maybe_finish(op, now_ms, out)

    def _read_result(self, op: _Op) -> Record | None:
        return newest(op.round.records.values())

    def _maybe_finish(self, op: _Op, now_ms: int, out: list, expired: bool = False) -> None:
        rnd = op.round
        if not (rnd.complete or expired or (rnd.status == LOST and op.kind != "inspect")):
            return
        if op.repairs_pending and not expired:
            return
        if op.op_id not in self.ops:
            return
        del self.ops[op.op_id]
        for node in rnd.outstanding:  # never answered: no longer in flight for load purposes
            self.load.done(node, None)
        if op.kind == "inspect":
            self._respond(op.conn, self._inspect_reply(op, now_ms), now_ms, out)
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
                 if node not in op.hint_for and (rec is None or newest_rec.version.newer_than(rec.version))]
        for node in stale:
            self.stats["read_repairs"] += 1
            msg = m.RepWrite(reply_id, op.key, newest_rec)
            if node == self.node_id:
                out.extend(self.on_request(SELF, msg, now_ms))
            else:
                out.append(Send(node, msg))
        return stale

    def _respond(self, conn, msg, now_ms: int, out: list) -> None:
        if conn is SELF:
            if msg.id:  # id 0: fire-and-forget (read repair); nobody waits for it
                out.extend(self.on_response(self.node_id, msg, now_ms))
        else:
            out.append(Respond(conn, msg))

    # ----------------------------------------------------------------- inspect
    def _start_inspect(self, conn, msg, now_ms: int, out: list) -> None:
        nodes = sorted(set(self.membership.peers()) | {self.node_id})
        op_id = self._new_op_id()
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
            self._ring_changed(now_ms, out)

    def _ring_changed(self, now_ms: int, out: list) -> None:
        self.stats["membership_changes"] += 1
        self._rebuild_ring()
        out.append(Log("info", "ring_changed", {"members": list(self.membership.ring_members()),
                                                "future": list(self.membership.future_ring_members())}))

    def _membership_tick(self, now_ms: int, out: list) -> None:
        ms = self.membership
        if now_ms >= self._next_heartbeat_ms:
            self._next_heartbeat_ms = now_ms + self.settings.detector.heartbeat_interval_ms
            hb = m.Heartbeat(0, self.node_id, ms.me.generation)
            for peer in ms.peers():
                out.append(Send(peer, hb))
        if now_ms >= self._next_gossip_ms:
            self._next_gossip_ms = now_ms + self.settings.gossip_interval_ms
            table = ms.table()
            targets = self.rng.sample(ms.peers(), GOSSIP_FANOUT)
            if ms.me.status == JOINING or not targets:
                targets += [SEED_PREFIX + s for s in self.settings.seeds if s != ms.me.address]
            for peer in targets:
                out.append(Send(peer, m.Gossip(0, table)))
        for tr in ms.check(now_ms):
            self._transition(tr, now_ms, out)

    def _transition(self, tr, now_ms: int, out: list) -> None:
        level = "info" if tr.new == ALIVE else "warning"
        out.append(Log(level, f"node_{tr.new}", {"peer": tr.node, "was": tr.old}))

    # ------------------------------------------------------------------- hints
    def _hints_tick(self, now_ms: int, out: list) -> None:
        for owner, (count, _bytes) in self.hints_held.items():
            if count <= 0 or owner in self._replaying or not self.membership.is_alive(owner):
                continue
            if self.membership.endpoints.get(owner) is None:
                continue
            want = min(count, self.settings.hints.replay_batch_max)
            got = self._replay_bucket.take(want, now_ms)
            if got:
                self._replaying[owner] = 0
                out.append(LoadHints(owner, got))
        for op_id, (owner, hint_id, size, deadline) in list(self._replays.items()):
            if deadline <= now_ms:
                self._replay_done(op_id, False, now_ms, out)

    def _replay_done(self, op_id: int, ok: bool, now_ms: int, out: list) -> None:
        owner, hint_id, size, _ = self._replays.pop(op_id)
        if ok:
            self.stats["hints_replayed"] += 1
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
                                      e.version, phi))
        return m.StatusReply(req_id, self.node_id, views, list(ms.ring_members()), self.statistics(),
                             {o: c for o, (c, _) in self.hints_held.items() if c > 0})

    def statistics(self) -> dict:
        return dict(self.stats, rounds_open=len(self.ops),
                    hints_held=sum(c for c, _ in self.hints_held.values()))


def _view(node, role, state, answered, rec, hint_for=None, error="") -> m.ReplicaView:
    if rec is None:
        return m.ReplicaView(node, role, state, answered, None, False, None, 0, hint_for, error)
    return m.ReplicaView(node, role, state, answered, str(rec.version), rec.value is None,
                         None if rec.value is None else len(rec.value), rec.expires_ms, hint_for, error)
