"""What a node tells an operator: ``Inspect`` (every node's copy of one key, without
repair), ``Status`` (the membership as this node sees it, and its counters), ``Ping``.

An inspect is a round like a read — it counts towards ROUNDS_INFLIGHT_MAX and has
a deadline (``timeout_ms_inspect``) — sent to every member as a RepPeek; it answers
once all replied or the deadline passed, with whatever came back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from . import messages as m
from .quorum import QuorumRound
from .rounds import Op, Out, Rounds
from .routing import write_targets
from .validation import validate_key
from .version import Record, newest

if TYPE_CHECKING:
    from .node import NodeCore


class Inspector:
    def __init__(self, core: NodeCore, rounds: Rounds) -> None:
        self.core = core
        self.rounds = rounds
        core.handle_requests({m.Inspect: self.on_request, m.Ping: self.on_ping, m.Status: self.on_status})

    def on_ping(self, conn: Any, msg: m.Ping, now_ms: int, out: Out) -> None:
        core = self.core
        core.respond(conn, m.Pong(msg.id, core.node_id, core.replication_factor(), core.default_r, core.default_w,
                                  core.members(), ring=list(core.membership.ring_members()),
                                  vnodes=core.settings.vnodes), now_ms, out)

    def on_status(self, conn: Any, msg: m.Status, now_ms: int, out: Out) -> None:
        self.core.respond(conn, status_reply(self.core, msg.id, now_ms), now_ms, out)

    def on_request(self, conn: Any, msg: m.Inspect, now_ms: int, out: Out) -> None:
        core = self.core
        try:
            validate_key(msg.key)
        except InvalidRequestError as exc:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message=str(exc)), now_ms, out)
            return
        if self.rounds.refuse_overloaded(conn, msg.id, now_ms, out):  # an inspect is a round like any other
            return
        nodes = sorted(set(core.membership.peers()) | {core.node_id})
        rnd = QuorumRound("inspect", tuple(nodes), len(nodes))
        op = Op(core.new_op_id(), "inspect", rnd, conn, msg.id, now_ms + core.settings.timeout_ms_inspect, "",
                msg.key)
        self.rounds.open(op, self)
        for node in nodes:
            self.rounds.send(op, node, m.RepPeek(op.op_id, msg.key), now_ms, out)

    def on_reply(self, op_id: int, peer: str, msg: Any, now_ms: int, out: Out) -> None:
        op = self.core.ops.get(op_id)
        if op is None:
            return
        self.rounds.replied(op, peer, now_ms)
        if type(msg) is m.RepPeekResp:
            op.round.add_ok(peer, (msg.record, msg.hints))  # type: ignore[arg-type]
        else:
            op.round.add_failure(peer, f"sent unexpected {type(msg).__name__}")
        self._finish(op, now_ms, out)

    def on_send_failed(self, op_id: int, peer: str, msg: Any, reason: str, now_ms: int, out: Out) -> None:
        op = self.core.ops.get(op_id)
        if op is not None:
            self.on_peer_lost(op, peer, reason, now_ms, out)

    def on_peer_lost(self, op: Op, peer: str, reason: str, now_ms: int, out: Out) -> None:
        if peer in op.round.outstanding:
            op.round.add_failure(peer, reason)
            self._finish(op, now_ms, out)

    def expire(self, op: Op, now_ms: int, out: Out) -> None:
        op.round.expire()
        self._finish(op, now_ms, out)

    def _finish(self, op: Op, now_ms: int, out: Out) -> None:
        if op.round.complete and self.rounds.close(op, True):
            op.reply = self._reply(op)
            self.rounds.answer(op, now_ms, out)

    def _reply(self, op: Op) -> m.InspectReply:
        core = self.core
        key = op.key
        state = core.membership.state_of
        ring = core.ring
        primaries = list(ring.preference_list(key)) if ring is not None else []
        planned = {}
        if ring is not None:
            planned = {node: owner for node, owner in write_targets(
                tuple(primaries), ring.extended_list(key), core.membership.is_alive) if owner}
        records: dict[str, Any] = op.round.records  # node -> (record, [(owner, hint record), ...])
        failures = op.round.failures
        views = []
        all_records: list[Record | None] = []
        for node in primaries:
            answered = node in records
            rec = records[node][0] if answered else None
            all_records.append(rec)
            views.append(_view(node, "primary", state(node), answered, rec, error=failures.get(node, "")))
        for node in sorted(op.round.replicas):
            if node in primaries:
                continue
            hints = records[node][1] if node in records else []
            if hints or node in planned:
                best = newest(rec for _, rec in hints)
                owner = hints[0][0] if hints else planned.get(node)
                all_records.append(best)
                views.append(_view(node, "fallback", state(node), node in records, best,
                                   hint_for=owner, error=failures.get(node, "")))
        top = newest(all_records)
        return m.InspectReply(op.req_id, key, core.node_id, primaries, views, str(top.version) if top else None)


def _view(node: str, role: str, state: str, answered: bool, rec: Record | None, hint_for: str | None = None,
          error: str = "") -> m.ReplicaView:
    if rec is None:
        return m.ReplicaView(node, role, state, answered, None, False, None, 0, hint_for, error)
    return m.ReplicaView(node, role, state, answered, str(rec.version), rec.value is None,
                         None if rec.value is None else len(rec.value), rec.expires_ms, hint_for, error)


def status_reply(core: NodeCore, req_id: int, now_ms: int) -> m.StatusReply:
    ms = core.membership
    views = []
    for node, e in sorted(ms.endpoints.items()):
        det = ms.detectors.get(node)
        phi = round(det.phi(now_ms), 2) if det is not None else 0.0
        views.append(m.MemberView(node, e.address, ms.state_of(node), e.status, e.generation,
                                  e.version, phi, core.clock.offset_of(node)))
    return m.StatusReply(req_id, core.node_id, views, list(ms.ring_members()), statistics(core),
                         {o: c for o, (c, _) in core.hints_held.items() if c > 0})


def statistics(core: NodeCore) -> dict[str, Any]:
    return dict(core.stats, rounds_open=len(core.ops), hints_held=sum(c for c, _ in core.hints_held.values()))
