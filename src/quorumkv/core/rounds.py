"""The quorum rounds a node coordinates: what the read and the write coordinator share.

``Op`` is one round (riak's get/put FSM state, trimmed): the ``QuorumRound`` that
judges replies plus where to answer. ``Rounds`` keeps the open ones (``core.ops``)
and their deadlines, registers each in the core's one op-id → owner map, sends to a
replica (the local one through the same request table a peer's request takes),
and plans the general path's targets. The decisions a round's last step makes —
read repairs, hints for silent replicas — are values (``Repair``, ``Hint``) that
``NodeCore.apply`` turns into effects, as riak's ``final_action`` does.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import InvalidRequestError, UnavailableError
from . import dynamic
from . import messages as m
from .consistency import weak_warning
from .levels import JointSets, level_from_wire
from .quorum import QuorumRound
from .validation import validate_key, validate_value
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore

SELF = "<self>"  # the connection token of requests a node sends to itself
#: Storage token kinds of the coordinator's own replica in a fast-path round: the
#: store's completion goes straight to the round (no RepWrite/RepRead to ourselves).
LOCAL_WRITE = "lw"
LOCAL_READ = "lr"

Out = list[Any]  # the effects of one step, in order
#: The counters of client requests and their rounds (``NodeCore.stats``).
ROUND_STATS = ("requests", "reads", "writes", "won", "lost", "timeouts", "invalid", "overloaded",
               "hinted_writes", "read_repairs", "speculative_retries", "write_restamps")


class ReplyOwner(Protocol):
    """What ``NodeCore.owners`` maps an op id to: whoever sent messages under it."""

    def on_reply(self, op_id: int, peer: str, msg: Any, now_ms: int, out: Out) -> None: ...

    def on_send_failed(self, op_id: int, peer: str, msg: Any, reason: str, now_ms: int, out: Out) -> None: ...


class RoundOwner(ReplyOwner, Protocol):
    """A coordinator of rounds (``Op``): reads, writes, inspects."""

    def on_peer_lost(self, op: Op, peer: str, reason: str, now_ms: int, out: Out) -> None: ...

    def expire(self, op: Op, now_ms: int, out: Out) -> None: ...


class Coordinator:
    """What the read and write coordinators (getcore.py, putcore.py) share: the node
    they serve and the tables of its open rounds, held as attributes so the fast path
    looks each up once."""

    def __init__(self, core: NodeCore, rounds: Rounds) -> None:
        self.core = core
        self.rounds = rounds
        self.settings = core.settings
        self.ops = core.ops
        self.owners = core.owners
        self.stats = core.stats
        self.load, self.hlc, self.node_id = core.load, core.hlc, core.node_id


class Repair(NamedTuple):
    """Read repair: write ``msg`` (the newest version) to ``node``."""

    node: str
    msg: m.RepWrite


class Hint(NamedTuple):
    """Keep ``record`` here as a hint for ``owner``, which did not take it."""

    owner: str
    key: bytes
    record: Record


class Op:
    """A request this node coordinates: the quorum round plus where to answer."""

    __slots__ = ("op_id", "kind", "round", "conn", "req_id", "deadline_ms", "warning", "answered",
                 "key", "sent_ms", "spares", "speculated", "hint_for", "blocking_repair",
                 "repairs_pending", "reply", "record", "targets", "restamps", "newer")

    def __init__(self, op_id: int, kind: str, rnd: QuorumRound, conn: Any, req_id: int, deadline_ms: int,
                 warning: str, key: bytes) -> None:
        self.op_id = op_id
        self.kind = kind  # "read", "write" or "inspect"
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
        self.reply: Any = None  # the client's answer once decided (a Reply, or an InspectReply)
        self.record: Record | None = None  # writes: the version being written
        #: writes: ([(node, hint_for)], unreachable primaries), for a re-stamp
        self.targets: tuple[list[tuple[str, str | None]], list[str]] = ([], [])
        self.restamps = 0  # writes: times re-stamped above a replica's newer version
        self.newer: Version | None = None  # writes: a newer version a replica holds (this attempt)


class Plan(NamedTuple):
    """The general path's common part of a Get or Put round."""

    level: int | str | None
    needed: int
    warning: str
    deadline_ms: int
    primaries: tuple[str, ...]  # the key's replicas (current and future during a ring change)
    joint: JointSets | None
    ring_order: tuple[str, ...]
    primary_only: bool


class Rounds:
    def __init__(self, core: NodeCore, open_max: int) -> None:
        self.core = core
        self.ops = core.ops
        self.owners = core.owners
        #: ROUNDS_INFLIGHT_MAX (core/limits.py), as the node was built with it
        self.open_max = open_max
        self._deadlines: list[tuple[int, int]] = []  # heap of (deadline_ms, op_id)
        # Fast-path rounds' deadlines: now + a fixed timeout, so in order of creation —
        # a FIFO per timeout (writes, reads) instead of the heap. Most rounds finish
        # long before; their entries are skipped when they expire. (A wall clock
        # stepping back delays the entries behind by at most the step.)
        self.fast_deadlines: tuple[deque[tuple[int, int]], deque[tuple[int, int]]] = (deque(), deque())

    def open(self, op: Op, owner: ReplyOwner) -> None:
        """Register ``op`` (general path: its deadline goes on the heap)."""
        assert op.op_id not in self.owners, f"op id {op.op_id} reused"
        self.ops[op.op_id] = op
        self.owners[op.op_id] = owner
        heapq.heappush(self._deadlines, (op.deadline_ms, op.op_id))

    def close(self, op: Op, complete: bool) -> bool:
        """Forget ``op`` (``complete``: every replica answered): its late replies find
        no owner. False: already closed."""
        if self.ops.pop(op.op_id, None) is None:
            return False
        del self.owners[op.op_id]
        if not complete:
            done = self.core.load.done
            for node in op.round.outstanding:  # never answered: no longer in flight for load purposes
                done(node, None)
        return True

    def renumber(self, op: Op, owner: ReplyOwner) -> None:
        """A new attempt of ``op`` under a fresh op id: the old one's replies are ignored."""
        del self.ops[op.op_id]
        del self.owners[op.op_id]
        op.op_id = self.core.new_op_id()
        self.open(op, owner)

    def expired(self, now_ms: int) -> list[Op]:
        """The open rounds whose deadline is ``now_ms`` or earlier."""
        due: list[Op] = []
        ops = self.ops
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            op = ops.get(heapq.heappop(heap)[1])
            if op is not None:
                due.append(op)
        for fifo in self.fast_deadlines:
            while fifo and fifo[0][0] <= now_ms:
                op = ops.get(fifo.popleft()[1])
                if op is not None:
                    due.append(op)
        return due

    def send(self, op: Op, node: str, msg: Any, now_ms: int, out: Out) -> None:
        op.sent_ms[node] = now_ms
        self.core.load.sent(node)
        self.core.deliver(node, msg, now_ms, out)

    def answer(self, op: Op, now_ms: int, out: Out) -> None:
        """Give the client ``op.reply`` — once."""
        assert not op.answered, f"op {op.op_id} answered twice"
        op.answered = True
        self.core.respond(op.conn, op.reply, now_ms, out)

    def refuse(self, conn: Any, req_id: int, exc: InvalidRequestError | UnavailableError, now_ms: int,
               out: Out) -> None:
        """A request no round can serve: the client's fault (INVALID), or not now (UNAVAILABLE)."""
        core = self.core
        invalid = isinstance(exc, InvalidRequestError)
        core.stats["invalid" if invalid else "lost"] += 1
        core.respond(conn, m.Reply(req_id, m.INVALID if invalid else m.UNAVAILABLE, message=str(exc)), now_ms, out)

    def replied(self, op: Op, peer: str, now_ms: int) -> None:
        """``peer`` answered ``op``: no longer in flight, and how long it took."""
        sent = op.sent_ms.get(peer)
        self.core.load.done(peer, (now_ms - sent) if sent is not None else None)

    def refuse_overloaded(self, conn: Any, req_id: int, now_ms: int, out: Out) -> bool:
        """True (and answered OVERLOADED): ``open_max`` rounds are open already."""
        if len(self.ops) < self.open_max:
            return False
        core = self.core
        core.stats["overloaded"] += 1
        core.respond(conn, m.Reply(req_id, m.OVERLOADED, message=f"node {core.node_id} has "
                                   f"ROUNDS_INFLIGHT_MAX={self.open_max} rounds open"), now_ms, out)
        return True

    @staticmethod
    def lost_reply(op: Op) -> m.Reply:
        """The answer to a round that cannot be won (or timed out)."""
        rnd = op.round
        status = m.TIMEOUT if rnd.timed_out else m.UNAVAILABLE
        # A failed write may still land: its version lets a session order after it.
        return m.Reply(op.req_id, status, version=op.record.version if op.record else None,
                       message=rnd.error_message(), warning=op.warning)

    def plan(self, conn: Any, msg: m.Get | m.Put, now_ms: int, out: Out) -> Plan | None:
        """The general path up to the choice of targets; None: answered already."""
        core = self.core
        key = msg.key
        validate_key(key)
        ring = core.ring
        if ring is None:
            core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=f"node {core.node_id} is joining "
                                       "and has no ring yet"), now_ms, out)
            return None
        n = ring.n
        level = level_from_wire(msg.r if isinstance(msg, m.Get) else msg.w)
        dyn = dynamic.wants_target(msg)
        if dyn:  # a freshness/latency target instead of R/W: the live model picks (core/dynamic.py)
            core.stats["dynamic_requests"] = core.stats.get("dynamic_requests", 0) + 1
            live = sum(map(core.membership.is_alive, ring.preference_list(key)))
            level, why = dynamic.level_for(msg, core.latency_model, n, core.default_w, live)
            if level is None:
                core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=why), now_ms, out)
                return None
        settings = core.settings
        if type(msg) is m.Get:
            needed = core.levels.count(level, n, core.default_r, "R")
            warning = None if dyn else weak_warning(needed, core.default_w, n)
            deadline = now_ms + settings.timeout_ms_read
        else:
            assert isinstance(msg, m.Put)
            validate_value(msg.value)
            if msg.ttl_ms < 0:
                raise InvalidRequestError(f"ttl_ms must be >= 0, got {msg.ttl_ms}")
            needed = core.levels.count(level, n, core.default_w, "W")
            warning = weak_warning(core.default_r, needed, n)
            deadline = now_ms + settings.timeout_ms_write
        if self.refuse_overloaded(conn, msg.id, now_ms, out):
            return None
        primaries = ring.preference_list(key)
        joint = core.levels.joint_sets(key, primaries, level, needed, type(msg) is m.Get)
        if joint is not None:  # a ring change moves this key: current and future replicas both take part
            primaries += tuple(x for x in joint[1][1] if x not in primaries)
        primary_only = msg.primary_only or not settings.sloppy_quorum or needed == n
        return Plan(level, needed, warning or "", deadline, primaries, joint, ring.extended_list(key),
                    primary_only)

    def open_planned(self, plan: Plan, kind: str, conn: Any, msg: m.Get | m.Put,
                     targets: list[tuple[str, str | None]], spares: list[tuple[str, str | None]],
                     owner: ReplyOwner) -> tuple[Op, list[str]]:
        """Open the general path's round over ``targets``; also the primaries no
        target or spare covers (they count as failed: "down")."""
        covered = {o or node for node, o in targets} | {o or node for node, o in spares}
        unreachable = [p for p in plan.primaries if p not in covered]
        groups = None
        if plan.joint is not None:  # each set counts the fallbacks standing in for its members
            stand = {o: node for node, o in targets + spares if o}
            groups = tuple((name, frozenset(stand.get(x, x) for x in g), c) for name, g, c in plan.joint)
        rnd = QuorumRound(kind, tuple(node for node, _ in targets) + tuple(unreachable), plan.needed, groups)
        op = Op(self.core.new_op_id(), kind, rnd, conn, msg.id, plan.deadline_ms, plan.warning, msg.key)
        op.spares = spares
        self.open(op, owner)
        for p in unreachable:
            rnd.add_failure(p, "down")
        return op, unreachable
