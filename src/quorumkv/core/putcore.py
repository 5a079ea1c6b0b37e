"""The write coordinator: a Put (or delete) from the client's request to its answer.

riak_kv_put_core's shape: ``start`` stamps the record and sends it to the key's W
targets (fallbacks standing in for down primaries), ``on_reply`` adds an ack,
``progress`` asks "can we stop waiting?". A replica that holds a newer version
does not count towards W; a round lost that way is re-stamped above it
(``RESTAMPS_MAX``, docs/consistency.md, "Acked writes in real-time order"). What
a round leaves undelivered — replicas known down, silent at the deadline, or
failed — becomes ``Hint`` values that ``NodeCore.apply`` keeps here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, UnavailableError
from . import messages as m
from .consistency import weak_warning
from .effects import Send, StoreWrite
from .limits import KEY_BYTES_MAX, VALUE_BYTES_MAX
from .quorum import LOST, PENDING, WON, QuorumRound
from .rounds import LOCAL_WRITE, Coordinator, Hint, Op, Out, Rounds
from .routing import write_targets
from .typed import is_typed
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore

#: Times a client write is re-stamped at most (docs/consistency.md, "Acked writes
#: in real-time order"): a replica that holds a newer version of the key does not
#: apply ours and says so (``RepWriteAck.newer``); such acks do not count towards W,
#: and once the round cannot be won without them the write is sent again under a
#: fresh timestamp above the newest version they named. One re-stamp usually
#: suffices; the replicas of a key (N=3) can hold at most 3 different newer ones.
#: Past the bound (other writes to the key keep landing newer versions: writes
#: concurrent with this one) newer acks count towards W, as acks did before.
#: (NodeCore builds its WriteCoordinator with node.RESTAMPS_MAX, this re-exported.)
RESTAMPS_MAX = 3


class WriteCoordinator(Coordinator):
    def __init__(self, core: NodeCore, rounds: Rounds, restamps_max: int) -> None:
        super().__init__(core, rounds)
        #: RESTAMPS_MAX, as the node was built with it
        self.restamps_max = restamps_max
        self._fast_fifo = rounds.fast_deadlines[0]
        self.restamps_waiting: set[int] = set()  # op ids waiting for the HLC ceiling (_restamp)
        core.handle_requests({m.Put: self.on_client})
        core.handle_stored(LOCAL_WRITE, self.local_done)
        core.add_ticker(self.restamp_tick)

    # ------------------------------------------------------------------ start
    def on_client(self, conn: Any, msg: m.Put, now_ms: int, out: Out) -> None:
        self.stats["requests"] += 1
        if self.core.clock.admit(conn, msg, now_ms, out):
            self.coordinate(conn, msg, now_ms, out)

    def coordinate(self, conn: Any, msg: m.Put, now_ms: int, out: Out) -> None:
        """Open a write round for ``msg`` (or answer why not). A typed write
        (``TypedPut``, core/typed_coord.py) carries the record its primary made."""
        try:
            if self.start_fast(conn, msg, now_ms, out) is None:
                self.start(conn, msg, now_ms, out)
        except (InvalidRequestError, UnavailableError) as exc:
            self.rounds.refuse(conn, msg.id, exc, now_ms, out)

    def _record(self, msg: m.Put, now_ms: int) -> Record:
        record: Record | None = getattr(msg, "record", None)  # a TypedPut's
        if record is not None:
            return record
        wall_ms = now_ms + self.core.wall_offset_ms  # TTLs and versions are wall time
        expires = wall_ms + msg.ttl_ms if msg.ttl_ms and msg.value is not None else 0
        return Record(Version(self.hlc.now(wall_ms), self.node_id), msg.value, expires)

    def start_fast(self, conn: Any, msg: m.Put, now_ms: int, out: Out) -> Op | None:
        """The common case without the general machinery: the default W, no latency
        target, no ring change, every primary of the key live. The coordinator's own
        replica is written by a storage effect whose completion comes straight back
        (LOCAL_WRITE). The same targets, round and reply as ``start``; None (nothing
        done): take the general path."""
        core = self.core
        ring = core.ring
        if ring is None or core.future_ring is not None or len(self.ops) >= self.rounds.open_max:
            return None
        if type(msg) is not m.Put:
            return None  # a TypedPut (core/typed_coord.py) takes the general path, as it always has
        key = msg.key
        value = msg.value
        if (not key or len(key) > KEY_BYTES_MAX or msg.w != m.LEVEL_DEFAULT or msg.target_latency_ms
                or msg.ttl_ms < 0 or (value is not None and len(value) > VALUE_BYTES_MAX)):
            return None
        primaries = ring.preference_list(key)
        n = ring.n
        needed = core.default_w
        alive = core.membership.is_alive
        for p in primaries:
            if not alive(p):
                return None
        if not 1 <= needed <= n:
            return None  # the general path says why
        op_id = core.new_op_id()
        deadline = now_ms + self.settings.timeout_ms_write
        op = Op(op_id, "write", QuorumRound("write", primaries, needed), conn, msg.id, deadline,
                weak_warning(core.default_r, needed, n) or "", key)
        self.ops[op_id] = op
        self.owners[op_id] = self
        self._fast_fifo.append((deadline, op_id))
        stats = self.stats
        stats["writes"] += 1
        record = op.record = self._record(msg, now_ms)
        op.targets = ([(p, None) for p in primaries], [])
        me = core.node_id
        sent_ms = op.sent_ms
        load_sent = core.load.sent
        for node in primaries:
            sent_ms[node] = now_ms
            load_sent(node)
            if node == me:
                stats["replica_writes"] += 1
                out.append(StoreWrite((LOCAL_WRITE, None, op_id), key, record))
            else:
                out.append(Send(node, m.RepWrite(op_id, key, record, "")))
        return op  # no progress here: nothing has answered yet, and needed >= 1

    def start(self, conn: Any, msg: m.Put, now_ms: int, out: Out) -> Op | None:
        """The general path: any level, fallbacks, joint rounds during a ring change."""
        plan = self.rounds.plan(conn, msg, now_ms, out)
        if plan is None:
            return None
        targets = write_targets(plan.primaries, plan.ring_order, self.core.membership.is_alive,
                                plan.primary_only)
        op, unreachable = self.rounds.open_planned(plan, "write", conn, msg, targets, [], self)
        self.stats["writes"] += 1
        op.record = self._record(msg, now_ms)
        op.targets = (targets, unreachable)
        for node, owner in targets:
            if owner:
                op.hint_for[node] = owner
                self.stats["hinted_writes"] += 1
        self._send_attempt(op, now_ms, out)
        return op

    def _send_attempt(self, op: Op, now_ms: int, out: Out) -> None:
        """Send ``op.record`` to its targets; known-down primaries with no fallback
        standing in get a hint kept here."""
        record = op.record
        assert record is not None
        targets, unreachable = op.targets
        for node, owner in targets:
            self.rounds.send(op, node, m.RepWrite(op.op_id, op.key, record, owner or ""), now_ms, out)
        self.core.apply([Hint(p, op.key, record) for p in unreachable], now_ms, out)
        self.progress(op, now_ms, out)

    # ---------------------------------------------------------------- replies
    def local_done(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        """Our own replica's write for round ``token[2]`` (LOCAL_WRITE) is durable, or
        failed: the ack a peer would send, taken directly."""
        ack = m.RepWriteAck(token[2], ok, "" if ok else str(result),
                            newer=result if ok and type(result) is Version else None)
        self.on_reply(token[2], self.node_id, ack, now_ms, out)

    def on_reply(self, op_id: int, peer: str, msg: Any, now_ms: int, out: Out) -> None:
        op = self.ops.get(op_id)
        if op is None:
            return  # closed already, or an earlier attempt of a re-stamped write
        sent = op.sent_ms.get(peer)  # (inline: every reply takes this path)
        self.load.done(peer, (now_ms - sent) if sent is not None else None)
        rnd = op.round
        if type(msg) is not m.RepWriteAck:
            rnd.add_failure(peer, f"sent unexpected {type(msg).__name__}")
        elif not msg.ok:
            rnd.add_failure(peer, f"failed: {msg.error}")
        elif msg.newer is None:
            rnd.add_ok(peer)
        else:  # not applied: the replica holds a newer version
            self.core.clock.observe_remote(msg.newer.ts, now_ms)
            if op.restamps >= self.restamps_max:
                rnd.add_ok(peer)
            else:  # not counted towards W: a round lost this way is re-stamped (_restamp)
                if op.newer is None or msg.newer.newer_than(op.newer):
                    op.newer = msg.newer
                rnd.add_failure(peer, f"holds newer version {msg.newer}")
        self.progress(op, now_ms, out)

    def on_send_failed(self, op_id: int, peer: str, msg: Any, reason: str, now_ms: int, out: Out) -> None:
        op = self.ops.get(op_id)
        if op is not None:
            self.on_peer_lost(op, peer, reason, now_ms, out)

    def on_peer_lost(self, op: Op, peer: str, reason: str, now_ms: int, out: Out) -> None:
        """A replica failed: it gets a hint kept here (Cassandra's coordinator does the
        same), so a node that died before the detector noticed still gets every write
        it missed once it is back."""
        if peer in op.round.outstanding:
            if op.record is not None:
                self.core.apply([Hint(op.hint_for.get(peer, peer), op.key, op.record)], now_ms, out)
            op.round.add_failure(peer, reason)
            self.progress(op, now_ms, out)

    # ------------------------------------------------------------ the outcome
    def progress(self, op: Op, now_ms: int, out: Out) -> None:
        rnd = op.round
        if op.reply is None and rnd.status != PENDING:
            if rnd.status == LOST and op.newer is not None and self._restamp(op, now_ms, out):
                return  # sent again above the newer version, or waiting to (RESTAMPS_MAX)
            record = op.record
            assert record is not None
            if rnd.status == WON:
                self.stats["won"] += 1
                op.reply = m.Reply(op.req_id, m.OK, record.value if is_typed(record.version) else None,
                                   record.version, "", op.warning, w_used=rnd.needed)  # typed: new state
            else:
                self.stats["lost"] += 1
                if rnd.timed_out:
                    self.stats["timeouts"] += 1
                op.reply = self.rounds.lost_reply(op)
            assert not op.answered, f"op {op.op_id} answered twice"  # answer (inline: Rounds.answer)
            op.answered = True
            self.core.respond(op.conn, op.reply, now_ms, out)
        complete = rnd.complete
        if complete or rnd.status == LOST:
            assert op.answered, f"write {op.op_id} closed without an answer"
            self.rounds.close(op, complete)

    def expire(self, op: Op, now_ms: int, out: Out) -> None:
        """``op``'s deadline passed: the replicas still silent get a hint kept here."""
        record = op.record
        assert record is not None
        self.core.apply([Hint(op.hint_for.get(node, node), op.key, record) for node in op.round.outstanding],
                        now_ms, out)
        op.round.expire()
        self.progress(op, now_ms, out)
        self.rounds.close(op, op.round.complete)

    def _restamp(self, op: Op, now_ms: int, out: Out) -> bool:
        """A write round lost because replicas hold a newer version (``op.newer``):
        send the write again, as a new attempt (a new op id: the old attempt's acks
        are ignored), stamped above it. Strict quorums intersect, so a write acked
        with W applied copies is newer than every write acked before it began
        (docs/consistency.md, "Acked writes in real-time order"). A timestamp beyond
        the durable ceiling waits for the next save, as a new write would
        (core/clock.py). False: not possible (bound reached, deadline passed)."""
        waiting = self.restamps_waiting
        if op.restamps >= self.restamps_max or op.round.timed_out or now_ms >= op.deadline_ms:
            waiting.discard(op.op_id)
            return False
        clock = self.core.clock
        if clock.durable is not None and not clock.may_issue(now_ms):
            clock.save(now_ms, out)
            waiting.add(op.op_id)  # restamp_tick tries again
            return True
        waiting.discard(op.op_id)
        old = op.round
        done = self.load.done
        for node in old.outstanding:  # the old attempt's acks will be ignored
            done(node, None)
        self.rounds.renumber(op, self)
        op.restamps += 1
        op.newer = None
        self.stats["write_restamps"] += 1
        rec = op.record
        assert rec is not None
        op.record = Record(Version(self.hlc.now(self.core.wall_ms(now_ms)), self.node_id, rec.version.ctx), rec.value,
                           rec.expires_ms)
        op.round = QuorumRound(old.kind, old.replicas, old.needed, old.groups)
        for p in op.targets[1]:
            op.round.add_failure(p, "down")
        self._send_attempt(op, now_ms, out)
        return True

    def restamp_tick(self, now_ms: int, out: Out) -> None:
        for op_id in list(self.restamps_waiting):
            op = self.ops.get(op_id)
            if op is None:
                self.restamps_waiting.discard(op_id)
            else:
                self.progress(op, now_ms, out)
