"""NodeCore: the protocol state machine of one quorumkv node — a dispatcher.

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

The effects it returns and what the shell must do for each: core/effects.py.
Persist-before-ack: a replica's ack is produced only by ``on_store_done``, after
the storage effect is durable (core/replica.py). Time (``now_ms``: monotonic; wall time
only through ``observe_wall_clock``) and randomness
(a seed) are arguments; the core owns no clock, socket or global random state.

This module only dispatches (riak_kv's get_core/put_core split): a request goes by
type to its handler — read/write coordinators (getcore.py, putcore.py, rounds.py),
replica side (replica.py), gossip.py, inspection.py, or an extension — a reply to
its sender through ONE op-id → owner map (``owners``), a storage completion by its
token's kind. A round's last step returns its decisions (read repairs, hints) as
values; ``apply`` turns them into effects. Also handoff.py (hints), parking.py
(held until the ring is synced), levels.py (settings, R/W).
"""

from __future__ import annotations

from typing import Any, Callable

from . import messages as m
from .clock import ClockGuard
from .effects import (  # noqa: F401 - re-exported: the shell and tests import them from here
    DeleteHint, LoadHints, Log, Peek, ReadHint, Respond, SaveHlcCeiling, SaveMembers, ScanRange, Send, StoreHint,
    StoreRead, StoreWrite,
)
from .getcore import ReadCoordinator
from .gossip import GOSSIP_FANOUT, SEED_PREFIX, Gossiper, starting_membership  # noqa: F401 - re-exported
from .handoff import HINT_TARGETS_MAX, Handoff  # bounds re-exported: NodeCore builds its parts with them
from .inspection import Inspector, statistics, status_reply
from .levels import Levels, NodeSettings, level_from_wire  # noqa: F401 - re-exported
from .limits import ROUNDS_INFLIGHT_MAX
from .parking import RING_SYNC_GATED, RING_SYNC_PARKED_MAX, Parking  # noqa: F401 - re-exported
from .putcore import RESTAMPS_MAX, WriteCoordinator
from .rand import SplitMix64
from .replica import Replica
from .ring import Ring
from .ringchange import RingChange
from .rounds import (  # noqa: F401 - SELF, LOCAL_*: re-exported
    LOCAL_READ, LOCAL_WRITE, ROUND_STATS, SELF, Hint, Op, Out, Repair, ReplyOwner, RoundOwner, Rounds,
)
from .routing import LoadTracker
from .typed_coord import TypedCoordinator
from .validation import level_to_wire, validate_key, validate_value  # noqa: F401 - re-exported
from .version import HLC

REPLICA_REPLIES = frozenset((m.RepWriteAck, m.RepReadResp, m.RepPeekResp))  # found by op id (``owners``)
Handler = Callable[..., None]


class NodeCore:
    def __init__(self, settings: NodeSettings, members: dict[str, str], hlc_last: int = 0,
                 now_ms: int = 0, hints_held: dict[str, tuple[int, int]] | None = None,
                 hlc_ceiling: int | None = None, departed: dict[str, tuple[str, int, int]] | None = None,
                 known: dict[str, tuple[str, int, int, str]] | None = None, wall_ms: int | None = None) -> None:
        """``hlc_last``: the largest timestamp in storage; ``hlc_ceiling``: the last
        ceiling ``SaveHlcCeiling`` made durable (0 on a fresh node; None: the caller
        keeps none, so the HLC cannot promise anything across restarts);
        ``known``: the last table ``SaveMembers`` made durable ({} on a first start;
        None: the caller keeps none — then the node trusts its ring at once instead
        of waiting to hear a majority's tables, ``RingSync``); ``departed``: node ->
        (address, generation, version) of members known as left (an older state
        file's form of the same, merged into ``known``). ``now_ms``: the monotonic
        clock (deadlines, intervals); ``wall_ms``: the wall clock read at the same
        moment (None: the same as ``now_ms``) — see ``observe_wall_clock``."""
        if settings.node_id not in members:
            raise ValueError(f"node {settings.node_id!r} is not in its own member list")
        self.settings = settings
        self.node_id = settings.node_id
        #: wall clock minus monotonic clock, as last observed (``observe_wall_clock``)
        self.wall_offset_ms = 0 if wall_ms is None else wall_ms - now_ms
        self.membership = starting_membership(settings, members, now_ms, departed, known)
        self.ring: Ring | None = None
        self.future_ring: Ring | None = None  # set while a join/leave is in progress
        self.default_r = self.default_w = 0
        self.levels = Levels(self)
        self.levels.rebuild()
        self.hlc = HLC(hlc_last)
        self.rng = SplitMix64(settings.rng_seed)
        self.load = LoadTracker()
        self.ops: dict[int, Op] = {}  # the rounds this node coordinates (core/rounds.py)
        self.owners: dict[int, ReplyOwner] = {}  # op id -> who handles replies to it
        self._next_op = 1
        self.latency_model: Any = None  # core/dynamic.py LatencyTable, kept current by the shell
        self.stats: dict[str, int] = dict.fromkeys(ROUND_STATS, 0)  # each part adds its own counters
        # Message type -> handler(conn, msg, now_ms, out); reply type -> handler(peer,
        # msg, now_ms, out); storage token kind -> handler(token, ok, result, now_ms, out);
        # tick hooks; "work in flight" probes. Every part below fills them in through
        # the extension interface, as the protocol families in other modules do.
        self._requests: dict[type, Handler] = {}
        self._responses: dict[type, Handler] = {}
        self._stored: dict[str, Handler] = {}
        self._tickers: list[Callable[[int, Out], None]] = []
        self._busy_probes: list[Callable[[], bool]] = []
        self.rounds = Rounds(self, ROUNDS_INFLIGHT_MAX)
        self.reads = ReadCoordinator(self, self.rounds)
        self.writes = WriteCoordinator(self, self.rounds, RESTAMPS_MAX)
        self.handoff = Handoff(self, hints_held, HINT_TARGETS_MAX, now_ms)
        self.hints_held = self.handoff.held  # per target: [count, bytes]
        self.replica = Replica(self, self.handoff)
        self.inspector = Inspector(self, self.rounds)
        self.gossip = Gossiper(self, now_ms)
        # ``known`` None: the caller keeps no membership across starts (bare cores in
        # unit tests), so there is nothing a start could have missed: synced at once.
        self.parking = Parking(self, now_ms, synced=known is None and departed is None)
        self.ring_sync = self.parking.ring_sync
        self._coordinators: dict[str, RoundOwner] = {"read": self.reads, "write": self.writes,
                                                     "inspect": self.inspector}
        self.ring_change = rc = RingChange(self, settings.settle_ms)
        self.add_busy_probe(lambda: rc.in_progress() or bool(rc.push_inflight))
        self.clock = ClockGuard(self, hlc_ceiling, now_ms)
        self.typed = TypedCoordinator(self)  # counters, sets, maps, causal writes (core/typed_coord.py)

    # ------------------------------------------------------------------- time
    # Two clocks: every event's ``now_ms`` is the MONOTONIC clock (deadlines,
    # timeouts, intervals, the failure detector), so a wall-clock step moves none of
    # them. Wall time (the HLC, TTL expiry, tombstone-GC grace and hint age against
    # version timestamps, clock offsets, the durable HLC ceiling) is
    # ``wall_ms(now_ms)``: the monotonic reading plus the offset the runtime last
    # observed. The runtime observes it before every event it feeds (runtime/
    # executor.py); the node's socket handlers pass the monotonic clock alone, so
    # there a step is seen at the next tick or storage completion.
    def observe_wall_clock(self, wall_ms: int, now_ms: int) -> None:
        """The wall clock read ``wall_ms`` when the monotonic clock read ``now_ms``."""
        self.wall_offset_ms = wall_ms - now_ms

    def wall_ms(self, now_ms: int) -> int:
        """The wall-clock time (ms) at monotonic time ``now_ms``."""
        return now_ms + self.wall_offset_ms

    # ------------------------------------------------------- extension interface
    # Protocol families in their own modules (anti-entropy, ring changes, the shell's
    # latency and snapshot requests) plug in here, never through the private tables.
    def handle_requests(self, handlers: dict[type, Handler]) -> None:
        """Route requests of these message types to ``handler(conn, msg, now_ms, out)``."""
        for t, fn in handlers.items():
            assert t not in self._requests, f"two handlers for {t.__name__}"
            self._requests[t] = fn

    def handle_responses(self, handlers: dict[type, Handler]) -> None:
        """Route responses of these message types to ``handler(peer, msg, now_ms, out)``."""
        for t, fn in handlers.items():
            assert t not in self._responses and t not in REPLICA_REPLIES, f"two handlers for {t.__name__}"
            self._responses[t] = fn

    def handle_stored(self, kind: str, handler: Handler) -> None:
        """Route completions of storage tokens ``(kind, ...)`` to ``handler(token, ok, result, now_ms, out)``."""
        assert kind not in self._stored, f"two handlers for storage token kind {kind!r}"
        self._stored[kind] = handler

    def add_ticker(self, ticker: Callable[[int, Out], None]) -> None:
        """Call ``ticker(now_ms, out)`` on every tick."""
        self._tickers.append(ticker)

    def add_busy_probe(self, probe: Callable[[], bool]) -> None:
        """``probe()`` true means work is in flight: tick at the normal cadence (``next_deadline_ms``)."""
        self._busy_probes.append(probe)

    def new_op_id(self, owner: ReplyOwner | None = None) -> int:
        """A fresh message id (one counter for every family, so ids never collide);
        ``owner`` gets the RepWriteAck/RepReadResp/RepPeekResp replies sent under it."""
        op_id = self._next_op
        self._next_op = op_id + 1
        if owner is not None:
            self.owners[op_id] = owner
        return op_id

    def respond(self, conn: Any, msg: Any, now_ms: int, out: Out) -> None:
        if conn is SELF:  # the local replica's answer: straight to the op's owner
            if msg.id:  # id 0: fire-and-forget (read repair); nobody waits for it
                self._reply(self.node_id, msg, now_ms, out)
        else:
            out.append(Respond(conn, msg))

    def deliver(self, node: str, msg: Any, now_ms: int, out: Out) -> None:
        """Send a request to ``node``; to this node, through the same request table."""
        if node == self.node_id:
            self._requests[type(msg)](SELF, msg, now_ms, out)
        else:
            out.append(Send(node, msg))

    def apply(self, decisions: list[Repair] | list[Hint], now_ms: int, out: Out) -> None:
        """Turn a round's decisions into effects."""
        for d in decisions:
            if type(d) is Repair:
                self.deliver(d.node, d.msg, now_ms, out)
            else:
                assert type(d) is Hint
                self.handoff.keep_own(d.owner, d.key, d.record, now_ms, out)

    def ring_changed(self, now_ms: int, out: Out) -> None:
        self.stats["membership_changes"] += 1
        self.levels.rebuild()
        out.append(Log("info", "ring_changed", {"members": list(self.membership.ring_members()),
                                                "future": list(self.membership.future_ring_members())}))

    # --------------------------------------------------------------- queries
    def replication_factor(self) -> int:
        """N in force: the configured N, clamped to the ring's size once there is a ring."""
        return self.ring.n if self.ring is not None else self.settings.n

    def address_of(self, peer: str) -> str | None:
        if peer.startswith(SEED_PREFIX):
            return peer[len(SEED_PREFIX):]
        return self.membership.address_of(peer)

    def is_alive(self, node: str) -> bool:
        return self.membership.is_alive(node)

    def members(self) -> dict[str, str]:
        return {e.node: e.address for e in self.membership.table()}

    def status_reply(self, req_id: int, now_ms: int) -> m.StatusReply:
        return status_reply(self, req_id, now_ms)

    def statistics(self) -> dict[str, Any]:
        return statistics(self)

    def install_latency_model(self, model: Any) -> None:
        """Event: a new dynamic-quorum latency model (core/dynamic.py), built off the core."""
        self.latency_model = model

    # ------------------------------------------------------------------ events
    def on_request(self, conn: Any, msg: Any, now_ms: int) -> Out:
        out: Out = []
        handler = self._requests.get(type(msg))
        if handler is None:  # a response type arriving as a request: a confused peer. Answer, don't crash.
            self.respond(conn, m.Error(getattr(msg, "id", 0), f"unexpected {type(msg).__name__} as a request"),
                         now_ms, out)
        elif self.ring_sync.synced or not self.parking.holds(conn, msg, now_ms, out):
            handler(conn, msg, now_ms, out)
        return out

    def on_response(self, peer: str, msg: Any, now_ms: int) -> Out:
        out: Out = []
        self._reply(peer, msg, now_ms, out)
        return out

    def _reply(self, peer: str, msg: Any, now_ms: int, out: Out) -> None:
        t = type(msg)
        if t in REPLICA_REPLIES:
            owner = self.owners.get(msg.id)
            if owner is not None:
                owner.on_reply(msg.id, peer, msg, now_ms, out)
            elif t is m.RepWriteAck:  # the ring change's pushes keep their own ids (core/ringchange.py)
                self.ring_change.on_push_ack(msg.id, msg.ok, now_ms, out)
            return  # else a late reply for a finished round, or a fire-and-forget repair ack
        handler = self._responses.get(t)
        if handler is not None:
            handler(peer, msg, now_ms, out)

    def on_store_done(self, token: Any, ok: bool, result: Any, now_ms: int) -> Out:
        """``result``: what was read (StoreRead/ReadHint/Peek), or an error string when not ok."""
        out: Out = []
        self._stored[token[0]](token, ok, result, now_ms, out)
        return out

    def on_hints_loaded(self, owner: str, entries: list[Any], now_ms: int) -> Out:
        out: Out = []
        self.handoff.on_hints_loaded(owner, entries, now_ms, out)
        return out

    def on_peer_lost(self, peer: str, reason: str, now_ms: int) -> Out:
        out: Out = []
        for op in list(self.ops.values()):
            self._coordinators[op.kind].on_peer_lost(op, peer, reason, now_ms, out)
        self.handoff.on_peer_lost(peer, now_ms, out)
        rc = self.ring_change
        for op_id, entry in list(rc.push_inflight.items()):
            if entry[0] == peer:
                rc.on_push_ack(op_id, False, now_ms, out)
        if rc.request_id and rc.sources and rc.sources[0] == peer:
            rc.on_request_failed(rc.request_id, now_ms, out, reason)
        return out

    def on_send_failed(self, peer: str, msg: Any, reason: str, now_ms: int) -> Out:
        out: Out = []
        op_id = getattr(msg, "id", 0)
        if not isinstance(op_id, int) or not op_id:
            return out  # one-way (heartbeat, gossip) or a fire-and-forget repair
        owner = self.owners.get(op_id)
        if owner is not None:
            owner.on_send_failed(op_id, peer, msg, reason, now_ms, out)
        else:  # the ring change's stream requests and pushes keep their own ids (core/ringchange.py)
            self.ring_change.on_request_failed(op_id, now_ms, out, reason)
        return out

    def next_deadline_ms(self, now_ms: int) -> int:
        """When this core next needs ``tick`` (absolute ms), so an idle shell can sleep:
        ``now_ms`` with work in flight (rounds, a busy part or protocol family), else
        the next heartbeat or gossip round (the shell still caps its sleep)."""
        if self.ops or any(busy() for busy in self._busy_probes):
            return now_ms
        return self.gossip.next_wakeup_ms()

    def tick(self, now_ms: int) -> Out:
        out: Out = []
        for op in self.rounds.expired(now_ms):
            if op.op_id in self.ops:  # (an earlier expiry in this batch may have closed it)
                self._coordinators[op.kind].expire(op, now_ms, out)
        if self.settings.speculative_retry_ms:
            self.reads.speculate(now_ms, out)
        self.gossip.tick(now_ms, out)
        self.parking.tick(now_ms, out)
        self.handoff.tick(now_ms, out)
        for ticker in self._tickers:
            ticker(now_ms, out)
        self.clock.tick(now_ms, out)
        return out
