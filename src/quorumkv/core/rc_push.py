"""Ring changes, the push side (``core/ringchange.py``): a ``Decommission`` request
turns this node ``leaving``; after ``settle_ms`` it scans what it replicates and
pushes each record to the nodes that gain it in the ring without it — acked, a
bounded window in flight, a bounded backlog, failed pushes retried with back-off
(or given up after ``STREAM_FORCE_ATTEMPTS_MAX`` attempts when forced) — then
turns ``left``."""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any

from . import messages as m
from .effects import ScanRange, Send
from .hints import record_size
from .membership import LEAVING, LEFT
from .messages_ring import Decommission, RingPlan
from .rc_common import (
    STREAM_BACKLOG_BYTES_MAX, STREAM_BACKLOG_MAX, STREAM_FORCE_ATTEMPTS_MAX, STREAM_PUSH_WINDOW, STREAM_SCAN_KEYS,
    STREAM_TIMEOUT_MS, InflightPush, PushEntry, RingChangeMode, RingChangeStage, plan_moves, retry_delay_ms,
    under_replicated_share,
)
from .tokens import StoreKind
from .version import Record

if TYPE_CHECKING:
    from .node import NodeCore
    from .ringchange import RingChange


class DecommissionPush:
    def __init__(self, core: NodeCore, rc: RingChange) -> None:
        self.core = core
        self.rc = rc
        self.stats = core.stats
        self.force = False
        self.push_after: bytes | None = None
        self.push_scanning = False
        self.push_scan_done = False
        self.push_inflight: dict[int, InflightPush] = {}  # op id -> the push it acks
        self.push_ready: deque[PushEntry] = deque()
        self.push_waiting: list[tuple[int, int, PushEntry]] = []  # heap of (due_ms, seq, entry)
        self._seq = 0
        self.backlog_bytes = 0

    # --------------------------------------------------------------- the request
    def _live_remaining(self) -> tuple[list[str], list[str]]:
        core = self.core
        remaining = [x for x in core.membership.ring_members() if x != core.node_id]
        return remaining, [x for x in remaining if core.membership.is_alive(x)]

    def _under_replication(self, remaining: list[str], live: list[str]) -> str:
        """What leaving would do to N, or "" when every key keeps N live replicas."""
        core = self.core
        n = core.settings.n
        if len(live) >= n:
            return ""
        me = core.node_id
        if len(remaining) < n:
            share = under_replicated_share(remaining, n, core.settings.vnodes)
            return (f"under-replication: after {me} leaves, {len(remaining)} node(s) remain for N={n}: "
                    f"{share * 100:.2f}% of the key space keeps only {len(remaining)} replica(s)")
        down = sorted(set(remaining) - set(live))
        return (f"under-replication: {len(live)} live node(s) would remain for N={n} "
                f"({', '.join(down)} down): their new replicas wait until they return")

    def on_decommission(self, conn: object, msg: Decommission, now_ms: int, out: list[Any]) -> None:
        core = self.core
        rc = self.rc
        ms = core.membership
        remaining, live = self._live_remaining()
        warning = self._under_replication(remaining, live)
        if msg.dry_run:
            moves = plan_moves(ms.ring_members(), remaining, core.settings.n, core.settings.vnodes) if remaining else []
            note = warning + ("; decommission refuses this without --force" if warning else "")
            core.respond(conn, RingPlan(msg.id, moves, note), now_ms, out)
            return
        if not remaining:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message="the last node cannot leave"), now_ms, out)
            return
        if rc.in_progress() and rc.mode != RingChangeMode.DECOMMISSION:
            core.respond(conn, m.Reply(msg.id, m.INVALID,
                                        message=f"a {rc.mode} is in progress"), now_ms, out)
            return
        if rc.cleanup.running:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message="a cleanup is running; wait for it "
                                        "to finish"), now_ms, out)
            return
        if rc.mode == RingChangeMode.DECOMMISSION and rc.in_progress():
            if msg.force and not self.force:
                self.force = True
                for _, _, entry in self.push_waiting:  # retry now, within the forced attempts
                    self.push_ready.append(entry)
                self.push_waiting = []
                rc.log(out, "decommission_forced", "warning", pending=self.backlog())
            text = f"{core.node_id} is {ms.me.status}"
            if self.force:
                text += (f" (forced: a record still failing after {STREAM_FORCE_ATTEMPTS_MAX} attempts is left "
                         "undelivered)")
            core.respond(conn, m.Reply(msg.id, m.OK, message=text), now_ms, out)
            return
        if ms.me.status == LEFT:
            core.respond(conn, m.Reply(msg.id, m.OK, message=f"{core.node_id} is left"), now_ms, out)
            return
        if warning and not msg.force:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message=(
                f"refusing to decommission {core.node_id}: {warning}; add a node first, or pass "
                "--force to accept it")), now_ms, out)
            return
        rc.mode = RingChangeMode.DECOMMISSION
        rc.to(RingChangeStage.SETTLING)
        self.force = msg.force
        rc.start_after_ms = now_ms + rc.settle_ms
        self.push_after = None
        self.push_scan_done = False
        self.push_ready.clear()
        self.push_waiting = []
        self.backlog_bytes = 0
        self.stats["stream_done"] = 0
        self.stats["stream_undelivered"] = 0
        ms.set_status(LEAVING)
        core.ring_changed(now_ms, out)
        rc.log(out, "decommission_started", settle_ms=rc.settle_ms, force=self.force)
        text = f"{core.node_id} is {ms.me.status}"
        if warning:
            text += f" (forced: {warning})"
        core.respond(conn, m.Reply(msg.id, m.OK, message=text), now_ms, out)

    # ------------------------------------------------------------------ pushing
    def backlog(self) -> int:
        return len(self.push_inflight) + len(self.push_ready) + len(self.push_waiting)

    def scan(self, out: list[Any]) -> None:
        assert not self.push_scanning, "one decommission scan at a time"
        self.push_scanning = True
        out.append(ScanRange((StoreKind.DECOMMISSION_SCAN, None, 0), self.push_after, STREAM_SCAN_KEYS))

    def on_scanned(self, token: object, ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        self.push_scanning = False
        rc = self.rc
        if rc.mode != RingChangeMode.DECOMMISSION or rc.state != RingChangeStage.STREAMING:
            return
        if not ok:
            self.stats["stream_failures"] += 1
            return  # the tick scans again from the same cursor
        core = self.core
        ms = core.membership
        me = core.node_id
        current = rc.ring_of(ms.ring_members())
        future = rc.ring_of([x for x in ms.future_ring_members() if x != me])
        self.stats["stream_keys_scanned"] += len(result)
        record: Record
        for key, record in result:
            before = current.preference_list(key)
            if me not in before:
                continue  # a leftover of a range we lost long ago: not ours to hand over
            for node in future.preference_list(key):
                if node not in before:
                    self.push_ready.append(PushEntry(node, key, record, 0))
                    self.backlog_bytes += record_size(key, record.value)
        if len(result) < STREAM_SCAN_KEYS:
            self.push_scan_done = True
        else:
            self.push_after = result[-1][0]
        self._pump(now_ms, out)

    def _pump(self, now_ms: int, out: list[Any]) -> None:
        core = self.core
        while self.push_waiting and self.push_waiting[0][0] <= now_ms:
            self.push_ready.append(heapq.heappop(self.push_waiting)[2])
        while self.push_ready and len(self.push_inflight) < STREAM_PUSH_WINDOW:
            node, key, record, tries = self.push_ready.popleft()
            op_id = core.new_op_id()
            self.push_inflight[op_id] = InflightPush(node, key, record, tries, now_ms + STREAM_TIMEOUT_MS)
            out.append(Send(node, m.RepWrite(op_id, key, record)))
        self.stats["stream_pending"] = self.backlog()

    def on_push_ack(self, op_id: int, ok: bool, now_ms: int, out: list[Any]) -> bool:
        """Called by the core for RepWriteAck / send failures of our pushes; True if ours."""
        entry = self.push_inflight.pop(op_id, None)
        if entry is None:
            return False
        node, key, record, tries, _ = entry
        if ok:
            self.stats["stream_keys_sent"] += 1
            self.backlog_bytes -= record_size(key, record.value)
        else:
            self.stats["stream_failures"] += 1
            tries += 1
            if self.force and tries >= STREAM_FORCE_ATTEMPTS_MAX:
                self.stats["stream_undelivered"] += 1
                self.backlog_bytes -= record_size(key, record.value)
                self.rc.log(out, "stream_record_undelivered", "warning", target=node, attempts=tries)
            else:
                self._seq += 1
                heapq.heappush(self.push_waiting, (now_ms + retry_delay_ms(tries), self._seq,
                                                   PushEntry(node, key, record, tries)))
        self._pump(now_ms, out)
        return True

    def _finish(self, now_ms: int, out: list[Any]) -> None:
        core = self.core
        assert not self.backlog(), "a decommission finishes only with nothing left to deliver"
        self.rc.to(RingChangeStage.DONE)
        self.stats["stream_done"] = 1
        self.stats["stream_pending"] = 0
        core.membership.set_status(LEFT)
        core.ring_changed(now_ms, out)
        # Tell every member at once, not by gossip rounds: the others persist our
        # departure (SaveMembers) when they learn it, and until then a whole-cluster
        # restart would put us back in their rings (the operator stops us now).
        table = core.membership.table()
        for peer in core.membership.peers():
            out.append(Send(peer, m.Gossip(0, table, core.hlc.last)))
        level = "warning" if self.stats["stream_undelivered"] else "info"
        self.rc.log(out, "decommission_completed", level, sent=self.stats["stream_keys_sent"],
                    undelivered=self.stats["stream_undelivered"], forced=self.force)

    def tick(self, now_ms: int, out: list[Any]) -> None:
        for op_id, push in list(self.push_inflight.items()):
            if push.deadline_ms <= now_ms:
                self.on_push_ack(op_id, False, now_ms, out)
        self._pump(now_ms, out)
        if self.push_scanning:
            return
        if not self.push_scan_done:
            room = (self.backlog() + STREAM_SCAN_KEYS * self.core.settings.n <= STREAM_BACKLOG_MAX
                    and self.backlog_bytes < STREAM_BACKLOG_BYTES_MAX)
            if room:
                self.scan(out)
        elif not self.backlog():
            self._finish(now_ms, out)
