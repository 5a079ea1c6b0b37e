"""The read coordinator: a Get from the client's request to its answer and read repair.

riak_kv_get_core's shape: ``start`` sends to R replicas (plus spares held back for
a speculative retry or a failed replica), ``on_reply`` adds a result, ``progress``
asks "can we stop waiting?" (won, or hopeless), and ``final_action`` *returns* the
read-repair writes; ``NodeCore.apply`` sends them. A blocking repair
(``Get.blocking_repair``) holds the answer until every repair is acked or failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, UnavailableError
from . import messages as m
from .consistency import weak_warning
from .effects import Send, StoreRead
from .limits import KEY_BYTES_MAX
from .quorum import LOST, PENDING, WON, QuorumRound
from .rounds import LOCAL_READ, Coordinator, Op, Out, Repair, Rounds
from .routing import joint_read_targets, read_targets
from .typed import needs_repair, read_result
from .version import Record

if TYPE_CHECKING:
    from .node import NodeCore


class ReadCoordinator(Coordinator):
    def __init__(self, core: NodeCore, rounds: Rounds) -> None:
        super().__init__(core, rounds)
        self._fast_fifo = rounds.fast_deadlines[1]
        core.handle_requests({m.Get: self.on_client})
        core.handle_stored(LOCAL_READ, self.local_done)

    # ------------------------------------------------------------------ start
    def on_client(self, conn: Any, msg: m.Get, now_ms: int, out: Out) -> None:
        self.stats["requests"] += 1
        if self.core.clock.admit(conn, msg, now_ms, out):
            self.coordinate(conn, msg, now_ms, out)

    def coordinate(self, conn: Any, msg: m.Get, now_ms: int, out: Out) -> None:
        """Open a read round for ``msg`` (or answer why not)."""
        try:
            op = self.start_fast(conn, msg, now_ms, out) or self.start(conn, msg, now_ms, out)
        except (InvalidRequestError, UnavailableError) as exc:
            return self.rounds.refuse(conn, msg.id, exc, now_ms, out)
        if msg.floor is not None and op is not None and op.op_id in self.ops:
            self.core.clock.note_read(op.op_id, msg.floor)

    def start_fast(self, conn: Any, msg: m.Get, now_ms: int, out: Out) -> Op | None:
        """The common case without the general machinery: the default R, no dynamic
        target, no ring change, every primary of the key live and serving reads. The
        coordinator's own replica is read by a storage effect whose completion comes
        straight back (LOCAL_READ). The same targets, round and reply as ``start``;
        None (nothing done): take the general path."""
        core = self.core
        ring = core.ring
        if ring is None or core.future_ring is not None or len(self.ops) >= self.rounds.open_max:
            return None
        key = msg.key
        if (not key or len(key) > KEY_BYTES_MAX or msg.r != m.LEVEL_DEFAULT or msg.target_p_fresh
                or msg.target_within_ms or self.settings.read_all_replicas):
            return None
        primaries = ring.preference_list(key)
        n = ring.n
        me = core.node_id
        needed = core.default_r
        candidates = read_targets(primaries, (), core.membership.serves_reads, core.load, me, True)
        if len(candidates) != n or not 1 <= needed <= n:
            return None  # a primary is down or still streaming (fallbacks, spares); or a bad R
        targets = candidates[:needed]
        op_id = core.new_op_id()
        deadline = now_ms + self.settings.timeout_ms_read
        op = Op(op_id, "read", QuorumRound("read", tuple(node for node, _ in targets), needed), conn, msg.id,
                deadline, weak_warning(needed, core.default_w, n) or "", key)
        op.spares = candidates[needed:]
        op.blocking_repair = msg.blocking_repair
        self.ops[op_id] = op
        self.owners[op_id] = self
        self._fast_fifo.append((deadline, op_id))
        stats = self.stats
        stats["reads"] += 1
        sent_ms = op.sent_ms
        load_sent = core.load.sent
        for node, _ in targets:
            sent_ms[node] = now_ms
            load_sent(node)
            if node == me:
                stats["replica_reads"] += 1
                out.append(StoreRead((LOCAL_READ, None, op_id), key))
            else:
                out.append(Send(node, m.RepRead(op_id, key, "")))
        return op  # no progress here: nothing has answered yet, and needed >= 1

    def start(self, conn: Any, msg: m.Get, now_ms: int, out: Out) -> Op | None:
        """The general path: any level, fallbacks, joint rounds during a ring change."""
        rounds = self.rounds
        plan = rounds.plan(conn, msg, now_ms, out)
        if plan is None:
            return None
        core = self.core
        read_all = self.settings.read_all_replicas
        candidates = read_targets(plan.primaries, plan.ring_order, core.membership.serves_reads, core.load,
                                  core.node_id, plan.primary_only)
        if plan.joint is not None:
            targets, spares = joint_read_targets(candidates, [(frozenset(g), c) for _, g, c in plan.joint],
                                                 read_all)
        else:
            fanout = plan.needed
            if read_all:
                fanout = max(fanout, sum(1 for _, owner in candidates if owner is None))
            targets, spares = candidates[:fanout], candidates[fanout:]
        op, _unreachable = rounds.open_planned(plan, "read", conn, msg, targets, spares, self)
        self.stats["reads"] += 1
        op.blocking_repair = msg.blocking_repair
        for node, owner in targets:
            self.send_read(op, node, owner, now_ms, out)
        self.progress(op, now_ms, out)
        return op

    def send_read(self, op: Op, node: str, owner: str | None, now_ms: int, out: Out) -> None:
        """Ask one more replica (``owner``: the primary a fallback stands in for)."""
        if owner:
            op.hint_for[node] = owner
        op.round.add_replica(node)
        self.rounds.send(op, node, m.RepRead(op.op_id, op.key, owner or ""), now_ms, out)

    # ---------------------------------------------------------------- replies
    def local_done(self, token: Any, ok: bool, result: Any, now_ms: int, out: Out) -> None:
        """Our own replica's read for round ``token[2]`` (LOCAL_READ)."""
        resp = m.RepReadResp(token[2], ok, result if ok else None, "" if ok else str(result))
        self.on_reply(token[2], self.node_id, resp, now_ms, out)

    def on_reply(self, op_id: int, peer: str, msg: Any, now_ms: int, out: Out) -> None:
        op = self.ops.get(op_id)
        if op is None:
            return  # closed already
        sent = op.sent_ms.get(peer)  # (inline: every reply takes this path)
        self.load.done(peer, (now_ms - sent) if sent is not None else None)
        t = type(msg)
        if t is m.RepReadResp:
            if msg.ok:
                if msg.record is not None:
                    self.hlc.observe(msg.record.version.ts, now_ms + self.core.wall_offset_ms)
                op.round.add_ok(peer, msg.record)
            else:
                self._replica_failed(op, peer, f"failed: {msg.error}", now_ms, out)
        elif t is m.RepWriteAck and peer in op.repairs_pending:  # a blocking repair's ack
            return self._repair_settled(op, peer, now_ms, out)
        else:
            op.round.add_failure(peer, f"sent unexpected {t.__name__}")
        self.progress(op, now_ms, out)

    def on_send_failed(self, op_id: int, peer: str, msg: Any, reason: str, now_ms: int, out: Out) -> None:
        op = self.ops.get(op_id)
        if op is None:
            return
        if type(msg) is m.RepWrite:
            # A read's RepWrite is a blocking repair: it will never be acked, stop waiting.
            if peer in op.repairs_pending:
                self._repair_settled(op, peer, now_ms, out)
        elif peer in op.round.outstanding:
            self._replica_failed(op, peer, reason, now_ms, out)
            self.progress(op, now_ms, out)

    def on_peer_lost(self, op: Op, peer: str, reason: str, now_ms: int, out: Out) -> None:
        if peer in op.repairs_pending:  # a blocking repair's target is gone: don't wait for it
            self._repair_settled(op, peer, now_ms, out)
        if peer in op.round.outstanding:
            self._replica_failed(op, peer, reason, now_ms, out)
            self.progress(op, now_ms, out)

    def _replica_failed(self, op: Op, node: str, reason: str, now_ms: int, out: Out) -> None:
        """A replica failed: bring in a spare first, so the round never gives up early."""
        if op.spares and op.round.status == PENDING:
            if op.round.groups is None:
                spare, owner = op.spares.pop(0)
                self.send_read(op, spare, owner, now_ms, out)
            else:
                self._top_up(op, node, now_ms, out)
        op.round.add_failure(node, reason)

    def _top_up(self, op: Op, failing: str, now_ms: int, out: Out) -> None:
        """Joint read losing ``failing``: bring in spares until each replica set can
        still reach its count (the set ``failing`` was in, or both)."""
        while op.spares:
            short = op.round.wanting(exclude=failing)
            i = next((i for i, (node, _) in enumerate(op.spares) if any(node in g for g in short)), None)
            if i is None:
                return
            spare, owner = op.spares.pop(i)
            self.send_read(op, spare, owner, now_ms, out)

    def speculate(self, now_ms: int, out: Out) -> None:
        """Cassandra's speculative retry: a read whose replicas are slow asks a spare."""
        delay = self.settings.speculative_retry_ms
        for op in list(self.ops.values()):
            if (op.kind == "read" and not op.speculated and op.spares and op.round.status == PENDING
                    and now_ms - min(op.sent_ms.values(), default=now_ms) >= delay):
                op.speculated = True
                self.stats["speculative_retries"] += 1
                spare, owner = self._next_spare(op)
                self.send_read(op, spare, owner, now_ms, out)

    def _next_spare(self, op: Op) -> tuple[str, str | None]:
        """The spare to bring in: in a joint round, one of a replica set still short."""
        for i, (node, _owner) in enumerate(op.spares):
            if op.round.short_of(node):
                return op.spares.pop(i)
        return op.spares.pop(0)

    # ------------------------------------------------------------ the outcome
    def progress(self, op: Op, now_ms: int, out: Out) -> None:
        rnd = op.round
        if op.reply is None and rnd.status != PENDING:
            core = self.core
            if rnd.status == WON and core.clock.floors and core.clock.read_floor(op, now_ms, out):
                return  # the session's floor is not met yet (core/clock.py)
            if rnd.status == WON:
                self.stats["won"] += 1
                rec = read_result(rnd.records.values())  # typed records: the merge (core/typed.py)
                if rec is None or not rec.live_at(self.core.wall_ms(now_ms)):  # missing, deleted or expired
                    op.reply = m.Reply(op.req_id, m.NOT_FOUND, None, rec.version if rec else None,
                                       "not found", op.warning, r_used=rnd.needed)
                else:
                    op.reply = m.Reply(op.req_id, m.OK, rec.value, rec.version, "", op.warning,
                                       rec.expires_ms, r_used=rnd.needed)
                if op.blocking_repair and self.settings.read_repair:
                    repairs = self.final_action(op, rec, reply_id=op.op_id)
                    op.repairs_pending = {r.node for r in repairs}
                    core.apply(repairs, now_ms, out)
            else:
                self.stats["lost"] += 1
                if rnd.timed_out:
                    self.stats["timeouts"] += 1
                op.reply = self.rounds.lost_reply(op)
            if not op.repairs_pending:  # answer (inline: Rounds.answer)
                assert not op.answered, f"op {op.op_id} answered twice"
                op.answered = True
                core.respond(op.conn, op.reply, now_ms, out)
        self.finish(op, now_ms, out)

    def finish(self, op: Op, now_ms: int, out: Out, expired: bool = False) -> None:
        """Close ``op`` once nothing more is to come (every reply, or decided lost,
        or its deadline); then a fire-and-forget read repair."""
        rnd = op.round
        complete = rnd.complete
        if not (complete or expired or rnd.status == LOST):
            return
        if op.repairs_pending and not expired:
            return
        if not self.rounds.close(op, complete):
            return
        assert op.answered, f"read {op.op_id} closed without an answer"
        if rnd.status == WON and not op.blocking_repair and self.settings.read_repair:
            self.core.apply(self.final_action(op, read_result(rnd.records.values()), reply_id=0), now_ms, out)

    def final_action(self, op: Op, newest_rec: Record | None, reply_id: int) -> list[Repair]:
        """Read repair: the newest version, to write back to the primaries that
        answered with less. ``reply_id`` 0 is fire-and-forget (acks are ignored);
        otherwise the acks come back to this op (blocking repair). Fallbacks are not
        repaired: they only hold hints."""
        if newest_rec is None:
            return []
        msg = m.RepWrite(reply_id, op.key, newest_rec)
        repairs = [Repair(node, msg) for node, rec in op.round.records.items()
                   if node not in op.hint_for and needs_repair(newest_rec, rec)]
        self.stats["read_repairs"] += len(repairs)
        return repairs

    def _repair_settled(self, op: Op, peer: str, now_ms: int, out: Out) -> None:
        """A blocking repair to ``peer`` was acked, failed or lost: stop waiting for it."""
        op.repairs_pending.discard(peer)
        if not op.repairs_pending and op.reply is not None and not op.answered:
            self.rounds.answer(op, now_ms, out)
        self.finish(op, now_ms, out)

    def expire(self, op: Op, now_ms: int, out: Out) -> None:
        """``op``'s deadline passed."""
        op.round.expire()
        self.progress(op, now_ms, out)
        if not op.answered:  # waited for blocking repair in vain
            self.rounds.answer(op, now_ms, out)
        self.finish(op, now_ms, out, expired=True)
