"""Linearizable operations per key without a leader: CASPaxos and ABD reads.

Pure, like the rest of the core: ``install(core)`` registers this family's handlers
on a ``NodeCore`` (its public extension interface) and returns the ``Paxos`` object
(the proposer). The change functions and the acceptor's rules are in ``casops.py``,
the acceptor in ``paxos_acceptor.py``, forwarding to a key's home in
``paxos_forward.py``. Messages are in ``messages_cas.py``; the acceptor's durable
steps are the ``PaxosStore`` effect, which the shell runs on the storage engine
(``shell/storage.py``).

**Acceptors** are the key's primary replicas (during a ring change: the current *and*
the future ones; every round needs a majority of each set — joint quorums, as the
plain rounds use, docs/failures.md "Ring changes"). An acceptor keeps, per key, its
record and a *promise* (a ballot); its rules are in ``paxos_acceptor.py``. Ballots
and versions are one order: a ballot is ``Version(HLC timestamp, node id)``, unique
per node across restarts (the durable HLC ceiling, core/clock.py).

**CAS (CASPaxos, Rystsov 2018).** The proposer (the node the client asked) picks a
ballot ``b``, gets promises from a majority (phase 1), takes the newest record among
them as the current state, applies the operation's change function
(``apply_op``), and asks the same replicas to accept the new record at version ``b``
(phase 2); a majority of *applied* acks completes it. Two round trips uncontended.
When the function changes nothing (a CAS whose expected value differs, SET NX on a
present key, INCR of a non-integer) and every promise carried the same version, the
state is already on a majority and phase 2 is skipped.

Why it is linearizable, also with plain writes around: every write that is stored
at all obeys "above the record, not below the promise". Take a proposer at ``b``
whose promises came from a majority P and whose current state is S. A write with a
version between S's and ``b`` that reached a replica of P before the promise would
have made that replica answer something at least as new as it (so S would not be
the newest); one that arrives after the promise is not stored there. Every majority
meets P, so no such write is ever stored on a majority: nothing is linearized
between the state the change function read and the state it wrote. Ballots only
grow, so a later operation (which learns at least ``b`` from any majority) orders
after it.

**Contention and retries.** A promise or accept refused because of a higher ballot
makes the proposer observe it (its HLC moves past it), back off a random
``1 .. min(BACKOFF_MS_MAX, BACKOFF_MS_BASE * 2**attempt)`` ms and retry, at most
``ATTEMPTS_MAX`` attempts and never past ``timeout_ms_write``. A retry after a phase 2
that some acceptor *may* have applied is careful not to apply the change twice: if
the newest state found next is exactly the record it proposed (its ballot), the
change took effect and its result is answered; if it is older than that ballot, no
other proposer can have adopted it (that proposer's ballot would be above ours and
its accept on a majority we would see), so the change is applied afresh; anything
else is answered ``TIMEOUT`` "outcome unknown". A client learns ``UNAVAILABLE`` only
when the change certainly did not take effect, ``TIMEOUT`` when it may have.

**Linearizable reads (ABD, Attiya/Bar-Noy/Dolev).** ``PxRead`` to the primaries; with
a majority of answers, the newest record is the value. If every answer carried the
same version it is already on a majority: one round trip, as a plain quorum read.
Otherwise the newest record is written back (``PxAccept`` at its own version) and
the read answers once a majority *applied* it — "a replica holds something newer"
does not count (it may be a CAS that read an older state). A write-back refused
(by a promise of a CAS in flight, or a newer record) retries the whole read.

**Linearizable writes** are CASPaxos operations whose change function ignores the
current value: phase 1 learns the highest version from a majority (and fences older
proposers), phase 2 writes above it — ABD's write with the promise that makes it
safe next to CAS.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InvalidRequestError
from . import messages as m
from . import messages_cas as mc
from .effects import Respond, Send
from .rounds import SELF as _SELF  # the connection token of requests a node sends to itself
from .quorum import LOST, PENDING, QuorumRound
from .casops import _KEEP, Change, OpResult, apply_op, validate_atomic
from .casops import agree as _agree
from .casops import atomic_from_plain, newest_version, parent_ctx, parent_of, plain_reply
from .paxos_acceptor import Acceptor, PaxosStore
from .paxos_forward import FORWARDS_INFLIGHT_MAX, Forwarder
from .paxos_proposal import ACCEPT, DONE, IDLE, PREPARE, QUEUED, READ, WRITEBACK, Groups, Phase, _Proposal
from .version import Record, Version, newest

if TYPE_CHECKING:
    from .node import NodeCore

#: Attempts (phase 1 + phase 2) one operation makes at most before giving up: duelling
#: proposers on one key back off randomly, so a handful usually settles it; 12 covers
#: ten clients hammering one key (benchmarks/bench_linearizable.py) and bounds the work.
ATTEMPTS_MAX = 12
#: Back-off after a lost attempt: random in 1 .. min(BACKOFF_MS_MAX, BACKOFF_MS_BASE *
#: 2**attempt) ms (exponential with full jitter, as in AWS's "Exponential Backoff And
#: Jitter"); the ceiling keeps a retry well inside timeout_ms_write.
BACKOFF_MS_BASE = 2
BACKOFF_MS_MAX = 100
#: Linearizable operations one node coordinates at once (each holds a quorum round and
#: its client's request); past it a request is answered OVERLOADED.
PROPOSALS_INFLIGHT_MAX = 10_000


STAT_NAMES = ("lin_reads", "lin_reads_fast", "lin_writebacks", "cas_ops", "cas_forwarded", "cas_attempts", "cas_accepts_skipped",
              "cas_retries", "cas_unknown", "paxos_prepares", "paxos_accepts", "paxos_refused")


class Paxos:
    """The proposer side on one node (the acceptor side is ``Acceptor``, installed with it)."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.props: dict[int, _Proposal] = {}
        # One proposal per key at a time from this node: proposals of one coordinator
        # would otherwise only duel each other's ballots. The others wait in order.
        self.active: dict[bytes, int] = {}  # key -> pid of the proposal running
        self.queued: dict[bytes, deque[int]] = {}  # key -> pids waiting behind it
        self.acceptor = Acceptor(core)
        self.forwarder = Forwarder(core, self._answer_conn)
        core.handle_requests({mc.Atomic: self._on_client})
        core.handle_responses({
            mc.PxReadResp: self._on_reply, mc.PxPromise: self._on_reply, mc.PxAccepted: self._on_reply,
            mc.AtomicReply: self.forwarder.on_reply})
        core.add_ticker(self._tick)
        core.add_busy_probe(lambda: bool(self.props or self.forwarder.forwards))
        core.stats.update({name: 0 for name in STAT_NAMES})

    @property
    def forwards(self) -> dict[int, Any]:
        return self.forwarder.forwards

    # ------------------------------------------------------------ proposer side
    def _on_client(self, conn: object, msg: mc.Atomic, now_ms: int, out: list[Any]) -> None:
        core = self.core
        core.stats["requests"] += 1
        try:
            validate_atomic(msg)
        except InvalidRequestError as exc:
            core.stats["invalid"] += 1
            self._refuse(conn, msg, m.INVALID, str(exc), now_ms, out)
            return
        if core.ring is None:
            self._refuse(conn, msg, m.UNAVAILABLE, f"node {core.node_id} is joining and has no ring yet", now_ms, out)
            return
        if len(self.props) >= PROPOSALS_INFLIGHT_MAX:
            core.stats["overloaded"] += 1
            self._refuse(conn, msg, m.OVERLOADED, f"node {core.node_id} has PROPOSALS_INFLIGHT_MAX="
                         f"{PROPOSALS_INFLIGHT_MAX} linearizable operations open", now_ms, out)
            return
        if msg.op != mc.OP_GET and not msg.forwarded and not msg.plain and self._forward(conn, msg, now_ms, out):
            return
        # Ids from the core's own counter: the shell reports a failed send by the
        # message's id (on_send_failed), which must never name a round of node.py's
        # or a ring change's.
        pid = self.core.new_op_id()
        prop = _Proposal(pid, conn, msg, now_ms + core.settings.timeout_ms_write)
        self.props[pid] = prop
        if msg.op == mc.OP_GET:
            core.stats["lin_reads"] += 1
        else:
            core.stats["cas_ops"] += 1
            if msg.key in self.active:
                prop.to(QUEUED)
                self.queued.setdefault(msg.key, deque()).append(pid)
                return
            self.active[msg.key] = pid
        self._start(prop, now_ms, out)

    def _refuse(self, conn: object, msg: mc.Atomic, status: int, message: str, now_ms: int, out: list[Any]) -> None:
        reply = mc.AtomicReply(msg.id, status, message=message)
        self._answer_conn(conn, plain_reply(reply) if msg.plain else reply, now_ms, out)

    def _forward(self, conn: object, msg: mc.Atomic, now_ms: int, out: list[Any]) -> bool:
        """To the key's home (``paxos_forward.py``); False: run it here."""
        return self.forwarder.forward(conn, msg, now_ms, out)

    def _targets(self, prop: _Proposal) -> bool:
        """The key's primaries (current and future during a ring change) and the
        majority each set needs. False: no ring."""
        core = self.core
        if core.ring is None:
            return False
        primaries = core.ring.preference_list(prop.key)
        needed = len(primaries) // 2 + 1
        joint = core.levels.joint_sets(prop.key, primaries, "QUORUM", needed, False)
        replicas = tuple(primaries)
        groups: Groups | None = None
        if joint is not None:
            replicas += tuple(x for x in joint[1][1] if x not in replicas)
            groups = tuple((name, frozenset(g), len(g) // 2 + 1) for name, g, _ in joint)
        prop.replicas, prop.needed, prop.groups = replicas, needed, groups
        return True

    def _start(self, prop: _Proposal, now_ms: int, out: list[Any]) -> None:
        """Begin the next attempt: a read round (OP_GET) or phase 1."""
        if not self._targets(prop):
            return self._fail(prop, m.UNAVAILABLE, f"node {self.core.node_id} has no ring", now_ms, out)
        prop.attempt += 1
        if prop.msg.op == mc.OP_GET:
            prop.to(READ)
            prop.round = QuorumRound("read", prop.replicas, prop.needed, prop.groups)
            self._broadcast(prop, lambda: mc.PxRead(prop.pid, prop.key), now_ms, out)
            return
        clock = self.core.clock
        if clock.durable is not None and not clock.may_issue(now_ms):  # wait for the ceiling
            clock.save(now_ms, out)
            prop.to(IDLE)
            prop.retry_at_ms = now_ms
            prop.attempt -= 1
            return
        self.core.stats["cas_attempts"] += 1
        ballot = prop.ballot = Version(self.core.hlc.now(self.core.wall_ms(now_ms)), self.core.node_id)
        prop.to(PREPARE)
        prop.round = QuorumRound("read", prop.replicas, prop.needed, prop.groups)
        self._broadcast(prop, lambda: mc.PxPrepare(prop.pid, prop.key, ballot), now_ms, out)

    def _broadcast(self, prop: _Proposal, make: Callable[[], Any], now_ms: int, out: list[Any]) -> None:
        core = self.core
        pid = prop.pid
        rnd = prop.round
        assert rnd is not None
        for node in rnd.replicas:
            msg = make()
            if node == core.node_id:
                core.deliver(node, msg, now_ms, out)  # this node: through its request table
            else:
                out.append(Send(node, msg))
            if self.props.get(pid) is not prop or prop.round is not rnd:
                return  # this phase ended synchronously (a one-node ring answers at once)

    def _on_reply(self, peer: str, msg: Any, now_ms: int, out: list[Any]) -> None:
        prop = self.props.get(msg.id)
        if prop is None or prop.round is None or prop.round.complete:
            return  # late, or for a finished attempt
        if prop.round.status != PENDING and prop.phase != ACCEPT:
            return  # decided; only a lost phase 2 waits for every answer (_progress)
        rnd = prop.round
        t = type(msg)
        if not msg.ok:
            rnd.add_failure(peer, f"failed: {msg.error}")
        elif t is mc.PxReadResp and prop.phase == READ:
            if msg.record is not None:
                self.core.clock.observe_remote(msg.record.version.ts, now_ms)
            rnd.add_ok(peer, msg.record)
        elif t is mc.PxPromise and prop.phase == PREPARE:
            if msg.promised:
                rnd.add_ok(peer, msg.record)
            else:
                seen = newest_version(msg.promise, msg.record.version if msg.record else None)
                if seen is not None:
                    self.core.clock.observe_remote(seen.ts, now_ms)
                rnd.add_failure(peer, f"refused: promised or holds {seen}")
        elif t is mc.PxAccepted and prop.phase in (ACCEPT, WRITEBACK):
            if msg.applied:
                rnd.add_ok(peer)
            else:
                seen = newest_version(msg.promise, msg.stored)
                if seen is not None:
                    self.core.clock.observe_remote(seen.ts, now_ms)
                rnd.add_failure(peer, f"refused: promised or holds {seen}")
        else:
            return  # a reply of another phase of this proposal: stale
        self._progress(prop, now_ms, out)

    def _progress(self, prop: _Proposal, now_ms: int, out: list[Any]) -> None:
        rnd = prop.round
        assert rnd is not None, "a proposal makes progress only in a round"
        if rnd.status == PENDING:
            return
        phase = prop.phase
        if rnd.status == LOST:
            if phase == ACCEPT:
                if not rnd.complete and not rnd.timed_out:
                    return  # wait for every acceptor: if none stored it, a retry is clean
                if rnd.oks or any(not why.startswith("refused") for why in rnd.failures.values()):
                    # Some acceptor stored it, or may have: a retry must not apply it twice.
                    assert prop.ballot is not None and prop.result is not None
                    prop.pending = (prop.ballot, prop.result)
            prop.why = rnd.error_message()
            return self._retry(prop, now_ms, out)
        # WON
        if phase == READ:
            records = list(rnd.records.values())
            cur = newest(records)
            if _agree(records):
                self.core.stats["lin_reads_fast"] += 1
                return self._answer_read(prop, cur, now_ms, out)
            self.core.stats["lin_writebacks"] += 1
            assert cur is not None, "answers that disagree hold a record"
            prop.cur = cur
            prop.to(WRITEBACK)
            prop.round = QuorumRound("write", prop.replicas, prop.needed, prop.groups)
            return self._broadcast(prop, lambda: mc.PxAccept(prop.pid, prop.key, cur), now_ms, out)
        if phase == WRITEBACK:
            return self._answer_read(prop, prop.cur, now_ms, out)
        if phase == PREPARE:
            return self._prepared(prop, now_ms, out)
        if phase == ACCEPT:
            assert prop.result is not None, "phase 2 carries the change's result"
            if prop.result.error:  # the state is chosen now; the operation itself is refused
                return self._fail(prop, m.INVALID, prop.result.error, now_ms, out)
            return self._answer(prop, prop.result, prop.ballot, now_ms, out)

    def _prepared(self, prop: _Proposal, now_ms: int, out: list[Any]) -> None:
        assert prop.round is not None and prop.ballot is not None
        records = list(prop.round.records.values())
        cur = newest(records)
        agree = _agree(records)
        result: OpResult | None = None
        new: Change = _KEEP
        if prop.pending is not None:
            pb, presult = prop.pending
            parent = parent_of(cur.version) if cur is not None else None
            if cur is not None and (cur.version.key() == pb.key() or parent == pb.key()):
                # Our earlier phase 2 took effect (the state is it, or was derived from
                # it): answer its result; the state is written back below if need be.
                result = presult
                new = _KEEP
            elif cur is None or pb.newer_than(cur.version) or (parent is not None and parent < pb.key()):
                # Nobody adopted it (the state is older, or derived from a state older
                # than our ballot; a state with our change in it descends from it).
                prop.pending = None
            else:
                self.core.stats["cas_unknown"] += 1
                return self._fail(prop, m.TIMEOUT, f"outcome unknown: an earlier attempt's accept may have "
                                  f"taken effect and been superseded ({prop.why})", now_ms, out)
        if result is None:
            new, result = apply_op(prop.msg, cur, self.core.wall_ms(now_ms))
            if result.error:
                if agree:
                    return self._fail(prop, m.INVALID, result.error, now_ms, out)
                new = _KEEP  # write the state back first: the error must be about a chosen state
        prop.result = result
        if new is _KEEP and agree:
            self.core.stats["cas_accepts_skipped"] += 1
            return self._answer(prop, result, cur.version if cur else None, now_ms, out)
        # The record names the state it was derived from (Version.ctx, otherwise unused):
        # a proposer retrying after an uncertain phase 2 tells from it whether its own
        # change is in the state it finds.
        version = Version(prop.ballot.ts, prop.ballot.node, parent_ctx(cur))
        if new is _KEEP:
            record = Record(version, cur.value, cur.expires_ms) if cur is not None else Record(version, None)
        else:
            value, expires = new
            record = Record(version, value, expires)
        prop.to(ACCEPT)
        prop.round = QuorumRound("write", prop.replicas, prop.needed, prop.groups)
        self._broadcast(prop, lambda: mc.PxAccept(prop.pid, prop.key, record), now_ms, out)

    def _retry(self, prop: _Proposal, now_ms: int, out: list[Any]) -> None:
        assert prop.round is not None
        if prop.attempt >= ATTEMPTS_MAX or now_ms >= prop.deadline_ms or prop.round.timed_out:
            if prop.pending is not None:
                self.core.stats["cas_unknown"] += 1
                return self._fail(prop, m.TIMEOUT, f"outcome unknown after {prop.attempt} attempts: {prop.why}",
                                  now_ms, out)
            status = m.TIMEOUT if prop.round.timed_out else m.UNAVAILABLE
            return self._fail(prop, status, f"not done after {prop.attempt} attempts "
                              f"(ATTEMPTS_MAX={ATTEMPTS_MAX}): {prop.why}", now_ms, out)
        self.core.stats["cas_retries"] += 1
        span = min(BACKOFF_MS_MAX, BACKOFF_MS_BASE << min(prop.attempt, 16))
        prop.to(IDLE)
        prop.round = None
        prop.retry_at_ms = now_ms + 1 + self.core.rng.randrange(span)

    def _tick(self, now_ms: int, out: list[Any]) -> None:
        if self.forwarder.forwards:
            self.forwarder.tick(now_ms, out)
        for prop in list(self.props.values()):
            if prop.phase == QUEUED:
                if now_ms >= prop.deadline_ms:
                    self._fail(prop, m.UNAVAILABLE, "not started: timed out waiting behind this node's other "
                               "operations on the key", now_ms, out)
            elif prop.phase == IDLE:
                if now_ms >= prop.deadline_ms:
                    prop.round = QuorumRound("read", ("-",), 1)
                    prop.round.expire()
                    self._retry(prop, now_ms, out)
                elif now_ms >= prop.retry_at_ms:
                    self._start(prop, now_ms, out)
            elif now_ms >= prop.deadline_ms and prop.round is not None and not prop.round.complete:
                prop.round.expire()
                self._progress(prop, now_ms, out)

    # ---------------------------------------------------------------- answers
    def _answer_read(self, prop: _Proposal, cur: Record | None, now_ms: int, out: list[Any]) -> None:
        live = cur is not None and cur.live_at(self.core.wall_ms(now_ms))
        if cur is not None and live:
            reply = mc.AtomicReply(prop.msg.id, m.OK, value=cur.value, version=cur.version,
                                   expires_ms=cur.expires_ms, found=True)
        else:
            reply = mc.AtomicReply(prop.msg.id, m.NOT_FOUND, version=cur.version if cur else None)
        self._finish(prop, reply, now_ms, out)

    def _answer(self, prop: _Proposal, result: OpResult, version: Version | None, now_ms: int, out: list[Any]) -> None:
        self.core.stats["won"] += 1
        reply = mc.AtomicReply(prop.msg.id, m.OK, result.applied, result.value, result.old, result.number,
                               version, found=result.found)
        self._finish(prop, reply, now_ms, out)

    def _fail(self, prop: _Proposal, status: int, message: str, now_ms: int, out: list[Any]) -> None:
        if status != m.INVALID:
            self.core.stats["lost"] += 1
        what = mc.OP_NAMES[prop.msg.op]
        self._finish(prop, mc.AtomicReply(prop.msg.id, status, message=f"linearizable {what}: {message}"),
                     now_ms, out)

    def _finish(self, prop: _Proposal, reply: mc.AtomicReply, now_ms: int, out: list[Any]) -> None:
        if self.props.pop(prop.pid, None) is None:
            return
        prop.to(DONE)
        self._answer_conn(prop.conn, plain_reply(reply) if prop.msg.plain else reply, now_ms, out)
        if self.active.get(prop.key) == prop.pid:
            del self.active[prop.key]
            waiting = self.queued.get(prop.key)
            while waiting:
                nxt = self.props.get(waiting.popleft())
                if nxt is not None and nxt.phase == QUEUED:
                    self.active[prop.key] = nxt.pid
                    self._start(nxt, now_ms, out)
                    break
            if not waiting:
                self.queued.pop(prop.key, None)

    def _answer_conn(self, conn: object, reply: mc.AtomicReply | m.Reply, now_ms: int, out: list[Any]) -> None:
        if conn is _SELF:
            return
        out.append(Respond(conn, reply))


def install(core: NodeCore) -> Paxos:
    return Paxos(core)


__all__ = [
    "ATTEMPTS_MAX", "BACKOFF_MS_BASE", "BACKOFF_MS_MAX", "FORWARDS_INFLIGHT_MAX", "PROPOSALS_INFLIGHT_MAX",
    "Paxos", "PaxosStore", "Phase", "atomic_from_plain", "install", "newest_version", "parent_ctx", "parent_of",
    "plain_reply",
]
