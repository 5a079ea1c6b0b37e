"""Linearizable operations per key without a leader: CASPaxos and ABD reads.

Pure, like the rest of the core: ``install(core)`` registers this family's handlers
on a ``NodeCore`` (its extension points) and returns the ``Paxos`` object. The change
functions and the acceptor's rules are in ``casops.py``. Messages
are in ``messages_cas.py``; the acceptor's durable steps are the ``PaxosStore``
effect, which the shell runs on the storage engine (``shell/storage.py``).

**Acceptors** are the key's primary replicas (during a ring change: the current *and*
the future ones; every round needs a majority of each set — joint quorums, as the
plain rounds use, docs/failures.md "Ring changes"). An acceptor keeps, per key, its
record (the ordinary LWW record: version + value) and a *promise* (a ballot). Ballots
and versions are one order: a ballot is ``Version(HLC timestamp, node id)``, unique
per node across restarts (the durable HLC ceiling, core/clock.py). The acceptor's
rules, each executed atomically by the storage engine and durable before the answer:

* ``prepare(b)``: if ``b`` is above both the promise and the record's version, promise
  ``b``. Answer the record and the promise either way.
* ``accept(rec)``: store ``rec`` iff its version is above the record's version and not
  below the promise ("applied"; the very same version again also counts as applied).
* A *plain* replica write (RepWrite: client writes, read repair, hints, streaming,
  anti-entropy) obeys the same rule: a version below the promise is not stored and
  is reported as ``newer`` (the coordinator re-stamps above it, core/node.py).

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
from typing import NamedTuple

from msgspec.structs import replace as msgspec_replace

from ..errors import InvalidRequestError
from . import messages as m
from . import messages_cas as mc
from .effects import Respond, Send, StoreRead
from .node import SELF as _SELF  # the connection token of requests a node sends to itself
from .quorum import LOST, PENDING, QuorumRound
from .casops import _KEEP, OpResult, apply_op, validate_atomic
from .version import Record, Version, newest

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
#: Requests this node has forwarded to their key's home and awaits answers for.
FORWARDS_INFLIGHT_MAX = 10_000
class PaxosStore(NamedTuple):
    """Effect: run an acceptor step atomically and durably on ``key``, then
    ``on_store_done(token, ok, result)``. ``op`` "prepare" (``ballot``): result
    ``(promised: bool, record | None, promise | None)``. ``op`` "accept" (``record``):
    result ``(applied: bool, stored version | None, promise | None)``."""

    token: object
    op: str
    key: bytes
    ballot: Version | None
    record: Record | None


class _Proposal:
    __slots__ = ("pid", "conn", "msg", "key", "deadline_ms", "phase", "round", "ballot", "attempt",
                 "retry_at_ms", "pending", "result", "cur", "groups", "replicas", "needed", "why")

    def __init__(self, pid, conn, msg, deadline_ms) -> None:
        self.pid = pid
        self.conn = conn
        self.msg = msg
        self.key = msg.key
        self.deadline_ms = deadline_ms
        self.phase = "idle"  # idle (waiting to start an attempt), read, writeback, prepare, accept
        self.round: QuorumRound | None = None
        self.ballot: Version | None = None
        self.attempt = 0
        self.retry_at_ms = 0
        #: (ballot, OpResult) of a phase 2 that may have been applied by some acceptor
        self.pending: tuple[Version, OpResult] | None = None
        self.result: OpResult | None = None
        self.cur: Record | None = None
        self.groups = None
        self.replicas: tuple[str, ...] = ()
        self.needed = 0
        self.why = ""  # the last attempt's failure, for the final error message


STAT_NAMES = ("lin_reads", "lin_reads_fast", "lin_writebacks", "cas_ops", "cas_forwarded", "cas_attempts", "cas_accepts_skipped",
              "cas_retries", "cas_unknown", "paxos_prepares", "paxos_accepts", "paxos_refused")


class Paxos:
    def __init__(self, core) -> None:
        self.core = core
        self.props: dict[int, _Proposal] = {}
        # One proposal per key at a time from this node: proposals of one coordinator
        # would otherwise only duel each other's ballots. The others wait in order.
        self.active: dict[bytes, int] = {}  # key -> pid of the proposal running
        self.queued: dict[bytes, deque] = {}  # key -> pids waiting behind it
        core.handle_requests({
            mc.Atomic: self._on_client, mc.PxRead: self._on_read, mc.PxPrepare: self._on_prepare,
            mc.PxAccept: self._on_accept})
        core.handle_responses({
            mc.PxReadResp: self._on_reply, mc.PxPromise: self._on_reply, mc.PxAccepted: self._on_reply,
            mc.AtomicReply: self._on_forward_reply})
        self.forwards: dict[int, tuple] = {}  # fid -> (conn, client's id, deadline_ms, home)
        for kind in ("xr", "xp", "xa"):
            core.handle_stored(kind, self._stored)
        core.add_ticker(self._tick)  # noqa: SLF001
        core.add_busy_probe(lambda: bool(self.props or self.forwards))
        core.stats.update({name: 0 for name in STAT_NAMES})

    # ------------------------------------------------------------- acceptor side
    def _on_read(self, conn, msg, now_ms: int, out: list) -> None:
        out.append(StoreRead(("xr", conn, msg.id), msg.key))

    def _on_prepare(self, conn, msg, now_ms: int, out: list) -> None:
        self.core.stats["paxos_prepares"] += 1
        self.core.clock.observe_remote(msg.ballot.ts, now_ms)
        out.append(PaxosStore(("xp", conn, msg.id), "prepare", msg.key, msg.ballot, None))

    def _on_accept(self, conn, msg, now_ms: int, out: list) -> None:
        self.core.stats["paxos_accepts"] += 1
        self.core.clock.observe_remote(msg.record.version.ts, now_ms)
        out.append(PaxosStore(("xa", conn, msg.id), "accept", msg.key, None, msg.record))

    def _stored(self, token, ok: bool, result, now_ms: int, out: list) -> None:
        kind, conn, req_id = token[:3]
        if kind == "xr":
            reply = mc.PxReadResp(req_id, ok, result if ok else None, "" if ok else str(result))
        elif kind == "xp":
            if ok:
                promised, record, promise = result
                reply = mc.PxPromise(req_id, True, promised, record, promise)
            else:
                reply = mc.PxPromise(req_id, False, error=str(result))
        else:
            if ok:
                applied, stored, promise = result
                reply = mc.PxAccepted(req_id, True, applied, stored, promise)
            else:
                reply = mc.PxAccepted(req_id, False, error=str(result))
        if ok and ((kind == "xp" and not reply.promised) or (kind == "xa" and not reply.applied)):
            self.core.stats["paxos_refused"] += 1
        self.core.respond(conn, reply, now_ms, out)

    # ------------------------------------------------------------ proposer side
    def _on_client(self, conn, msg, now_ms: int, out: list) -> None:
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
                prop.phase = "queued"
                self.queued.setdefault(msg.key, deque()).append(pid)
                return
            self.active[msg.key] = pid
        self._start(prop, now_ms, out)

    def _refuse(self, conn, msg, status: int, message: str, now_ms: int, out: list) -> None:
        reply = mc.AtomicReply(msg.id, status, message=message)
        self._answer_conn(conn, plain_reply(reply) if msg.plain else reply, now_ms, out)

    # A key's changes go to one proposer, its *home* — the first primary that is up —
    # which runs them one at a time (``active``/``queued``): proposers on different
    # nodes would otherwise duel (each prepare voiding the other's accept), and a
    # proposer that loses a duel after an uncertain phase 2 can only answer "outcome
    # unknown". Safety never depends on it: two nodes that both think they are home
    # are two proposers, which Paxos allows. Reads are not forwarded.
    def _home(self, key: bytes) -> str | None:
        core = self.core
        for node in core.ring.preference_list(key):
            if node == core.node_id or core.membership.is_alive(node):
                return node
        return None

    def _forward(self, conn, msg, now_ms: int, out: list) -> bool:
        home = self._home(msg.key)
        if home is None or home == self.core.node_id or len(self.forwards) >= FORWARDS_INFLIGHT_MAX:
            return False
        fid = self.core.new_op_id()
        # Our deadline is later than the home's own (it answers at its timeout_ms_write).
        self.forwards[fid] = (conn, msg.id, now_ms + 2 * self.core.settings.timeout_ms_write, home)
        self.core.stats["cas_forwarded"] += 1
        out.append(Send(home, msgspec_replace(msg, id=fid, forwarded=True)))
        return True

    def _on_forward_reply(self, peer: str, msg, now_ms: int, out: list) -> None:
        entry = self.forwards.pop(msg.id, None)
        if entry is None or entry[3] != peer:
            if entry is not None:
                self.forwards[msg.id] = entry  # not from the node it went to: ignored
            return
        conn, client_id, _deadline, _home = entry
        self._answer_conn(conn, msgspec_replace(msg, id=client_id), now_ms, out)

    def _forward_tick(self, now_ms: int, out: list) -> None:
        for fid, (conn, client_id, deadline, home) in list(self.forwards.items()):
            if now_ms >= deadline:
                del self.forwards[fid]
                self.core.stats["cas_unknown"] += 1
                self._answer_conn(conn, mc.AtomicReply(client_id, m.TIMEOUT, message=(
                    f"outcome unknown: forwarded to the key's home {home}, which did not answer")), now_ms, out)

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
        groups = None
        if joint is not None:
            replicas += tuple(x for x in joint[1][1] if x not in replicas)
            groups = tuple((name, frozenset(g), len(g) // 2 + 1) for name, g, _ in joint)
        prop.replicas, prop.needed, prop.groups = replicas, needed, groups
        return True

    def _start(self, prop: _Proposal, now_ms: int, out: list) -> None:
        """Begin the next attempt: a read round (OP_GET) or phase 1."""
        if not self._targets(prop):
            return self._fail(prop, m.UNAVAILABLE, f"node {self.core.node_id} has no ring", now_ms, out)
        prop.attempt += 1
        if prop.msg.op == mc.OP_GET:
            prop.phase = "read"
            prop.round = QuorumRound("read", prop.replicas, prop.needed, prop.groups)
            self._broadcast(prop, lambda: mc.PxRead(prop.pid, prop.key), now_ms, out)
            return
        clock = self.core.clock
        if clock.durable is not None and not clock._may_issue(now_ms):  # noqa: SLF001 - wait for the ceiling
            clock._save(now_ms, out)  # noqa: SLF001
            prop.phase = "idle"
            prop.retry_at_ms = now_ms
            prop.attempt -= 1
            return
        self.core.stats["cas_attempts"] += 1
        prop.ballot = Version(self.core.hlc.now(now_ms), self.core.node_id)
        prop.phase = "prepare"
        prop.round = QuorumRound("read", prop.replicas, prop.needed, prop.groups)
        self._broadcast(prop, lambda: mc.PxPrepare(prop.pid, prop.key, prop.ballot), now_ms, out)

    def _broadcast(self, prop: _Proposal, make, now_ms: int, out: list) -> None:
        core = self.core
        pid = prop.pid
        rnd = prop.round
        for node in rnd.replicas:
            msg = make()
            if node == core.node_id:
                out.extend(core.on_request(_SELF, msg, now_ms))
            else:
                out.append(Send(node, msg))
            if self.props.get(pid) is not prop or prop.round is not rnd:
                return  # this phase ended synchronously (a one-node ring answers at once)

    def _on_reply(self, peer: str, msg, now_ms: int, out: list) -> None:
        prop = self.props.get(msg.id)
        if prop is None or prop.round is None or prop.round.complete:
            return  # late, or for a finished attempt
        if prop.round.status != PENDING and prop.phase != "accept":
            return  # decided; only a lost phase 2 waits for every answer (_progress)
        rnd = prop.round
        t = type(msg)
        if not msg.ok:
            rnd.add_failure(peer, f"failed: {msg.error}")
        elif t is mc.PxReadResp and prop.phase == "read":
            if msg.record is not None:
                self.core.clock.observe_remote(msg.record.version.ts, now_ms)
            rnd.add_ok(peer, msg.record)
        elif t is mc.PxPromise and prop.phase == "prepare":
            if msg.promised:
                rnd.add_ok(peer, msg.record)
            else:
                seen = newest_version(msg.promise, msg.record.version if msg.record else None)
                if seen is not None:
                    self.core.clock.observe_remote(seen.ts, now_ms)
                rnd.add_failure(peer, f"refused: promised or holds {seen}")
        elif t is mc.PxAccepted and prop.phase in ("accept", "writeback"):
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

    def _progress(self, prop: _Proposal, now_ms: int, out: list) -> None:
        rnd = prop.round
        if rnd.status == PENDING:
            return
        phase = prop.phase
        if rnd.status == LOST:
            if phase == "accept":
                if not rnd.complete and not rnd.timed_out:
                    return  # wait for every acceptor: if none stored it, a retry is clean
                if rnd.oks or any(not why.startswith("refused") for why in rnd.failures.values()):
                    # Some acceptor stored it, or may have: a retry must not apply it twice.
                    prop.pending = (prop.ballot, prop.result)
            prop.why = rnd.error_message()
            return self._retry(prop, now_ms, out)
        # WON
        if phase == "read":
            records = list(rnd.records.values())
            cur = newest(records)
            if _agree(records):
                self.core.stats["lin_reads_fast"] += 1
                return self._answer_read(prop, cur, now_ms, out)
            self.core.stats["lin_writebacks"] += 1
            prop.cur = cur
            prop.phase = "writeback"
            prop.round = QuorumRound("write", prop.replicas, prop.needed, prop.groups)
            return self._broadcast(prop, lambda: mc.PxAccept(prop.pid, prop.key, cur), now_ms, out)
        if phase == "writeback":
            return self._answer_read(prop, prop.cur, now_ms, out)
        if phase == "prepare":
            return self._prepared(prop, now_ms, out)
        if phase == "accept":
            if prop.result.error:  # the state is chosen now; the operation itself is refused
                return self._fail(prop, m.INVALID, prop.result.error, now_ms, out)
            return self._answer(prop, prop.result, prop.ballot, now_ms, out)

    def _prepared(self, prop: _Proposal, now_ms: int, out: list) -> None:
        records = list(prop.round.records.values())
        cur = newest(records)
        agree = _agree(records)
        result = None
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
            new, result = apply_op(prop.msg, cur, now_ms)
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
        prop.phase = "accept"
        prop.round = QuorumRound("write", prop.replicas, prop.needed, prop.groups)
        self._broadcast(prop, lambda: mc.PxAccept(prop.pid, prop.key, record), now_ms, out)

    def _retry(self, prop: _Proposal, now_ms: int, out: list) -> None:
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
        prop.phase = "idle"
        prop.round = None
        prop.retry_at_ms = now_ms + 1 + self.core.rng.randrange(span)

    def _tick(self, now_ms: int, out: list) -> None:
        if self.forwards:
            self._forward_tick(now_ms, out)
        for prop in list(self.props.values()):
            if prop.phase == "queued":
                if now_ms >= prop.deadline_ms:
                    self._fail(prop, m.UNAVAILABLE, "not started: timed out waiting behind this node's other "
                               "operations on the key", now_ms, out)
            elif prop.phase == "idle":
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
    def _answer_read(self, prop: _Proposal, cur: Record | None, now_ms: int, out: list) -> None:
        live = cur is not None and cur.live_at(now_ms)
        reply = mc.AtomicReply(prop.msg.id, m.OK if live else m.NOT_FOUND, value=cur.value if live else None,
                               version=cur.version if cur else None, expires_ms=cur.expires_ms if live else 0,
                               found=live)
        self._finish(prop, reply, now_ms, out)

    def _answer(self, prop: _Proposal, result: OpResult, version: Version | None, now_ms: int, out: list) -> None:
        self.core.stats["won"] += 1
        reply = mc.AtomicReply(prop.msg.id, m.OK, result.applied, result.value, result.old, result.number,
                               version, found=result.found)
        self._finish(prop, reply, now_ms, out)

    def _fail(self, prop: _Proposal, status: int, message: str, now_ms: int, out: list) -> None:
        if status != m.INVALID:
            self.core.stats["lost"] += 1
        what = mc.OP_NAMES[prop.msg.op]
        self._finish(prop, mc.AtomicReply(prop.msg.id, status, message=f"linearizable {what}: {message}"),
                     now_ms, out)

    def _finish(self, prop: _Proposal, reply, now_ms: int, out: list) -> None:
        if self.props.pop(prop.pid, None) is None:
            return
        prop.phase = "done"
        if prop.msg.plain:
            reply = plain_reply(reply)
        self._answer_conn(prop.conn, reply, now_ms, out)
        if self.active.get(prop.key) == prop.pid:
            del self.active[prop.key]
            waiting = self.queued.get(prop.key)
            while waiting:
                nxt = self.props.get(waiting.popleft())
                if nxt is not None and nxt.phase == "queued":
                    self.active[prop.key] = nxt.pid
                    self._start(nxt, now_ms, out)
                    break
            if not waiting:
                self.queued.pop(prop.key, None)

    def _answer_conn(self, conn, reply, now_ms: int, out: list) -> None:
        if conn is _SELF:
            return
        out.append(Respond(conn, reply))


def atomic_from_plain(msg) -> mc.Atomic:
    """A client's plain Get/Put as a linearizable operation (the node's default mode,
    ``consistency = "linearizable"``); answered with a plain Reply (``plain_reply``).
    Levels, targets and session floors are moot: a majority of primaries decides."""
    if type(msg) is m.Get:
        return mc.Atomic(msg.id, msg.key, mc.OP_GET, plain=True)
    return mc.Atomic(msg.id, msg.key, mc.OP_SET, msg.value, ttl_ms=msg.ttl_ms, plain=True)


def plain_reply(reply: mc.AtomicReply) -> m.Reply:
    return m.Reply(reply.id, reply.status, reply.value, reply.version, reply.message, "", reply.expires_ms)


def _agree(records: list) -> bool:
    """Every answer carried the same version (or none had a record)."""
    keys = {r.version.key() if r is not None else None for r in records}
    return len(keys) <= 1


_PARENT_PREFIX = "^"  # Version.ctx key of a CASPaxos record's parent: "^" + node -> ts


def parent_ctx(cur: Record | None) -> dict[str, int] | None:
    if cur is None:
        return None
    return {_PARENT_PREFIX + cur.version.node: cur.version.ts}


def parent_of(version: Version) -> tuple[int, str] | None:
    """The (ts, node) of the state a CASPaxos record was derived from; None when
    unknown (a plain write, or a state derived from no record)."""
    ctx = version.ctx
    if not ctx or len(ctx) != 1:
        return None
    (name, ts), = ctx.items()
    if not name.startswith(_PARENT_PREFIX):
        return None
    return (ts, name[len(_PARENT_PREFIX):])


def newest_version(a: Version | None, b: Version | None) -> Version | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.newer_than(a) else a


def install(core) -> Paxos:
    return Paxos(core)
