"""Ring changes with streaming: join, replace, decommission (issue: "a new node takes
the failed node's place and receives its data").

Statuses drive everything (see ``membership``):

* **join** — a node started with seeds and no members is ``joining``. Once gossip
  admitted it, it waits ``settle_ms`` (so every coordinator knows it is joining and
  sends it the writes for its future ranges — Cassandra's pending ranges), then
  *pulls*, batch by batch, from every node that replicates some key it will own
  (``pull_sources``), the records it will replicate in the future ring; then it
  turns ``up`` and the ring changes.
* **replace** — a node started with ``replace = true`` takes a dead node's id (so its
  tokens and ranges) with a new generation and address, status ``replacing``: a
  ring member that takes writes but serves no reads. It pulls every record it
  replicates from the live members that share its ranges, then turns ``up``.
* **decommission** — asked by a ``Decommission`` request, a node turns ``leaving``,
  waits ``settle_ms``, then *pushes* each record it replicates to the nodes that
  gain it in the ring without it (acked, a bounded window in flight), then turns
  ``left``.

**Only replicas are sources.** A node streams a record only if *it* replicates the
key under its current ring *and* the receiver will (``_on_source_scan``,
``_on_push_scan``). A copy left behind on a node that lost the range (there is no
automatic cleanup: ``core/cleanup.py`` is the operator's ``quorumkv cleanup``) may be
older than a tombstone the replicas have since purged; streaming it would bring the
deleted key back.

**Nothing is skipped.** A join or replace finishes only when every needed source
streamed to its end and every record was stored: a failed batch is asked for again
from the same cursor (resume), a failed source is retried with back-off
(``STREAM_RETRY_MS_MIN`` doubling up to ``STREAM_RETRY_MS_MAX``) while the other
sources go on. A decommission finishes only when every record was acked by its new
owner: failed pushes are retried with the same back-off, as often as it takes. The
operator's way out is ``Decommission(force=True)``: each record then gets at most
``STREAM_FORCE_ATTEMPTS_MAX`` attempts and the ones that still fail are counted
(``stream_undelivered``) and left behind. A decommission that would leave fewer
live nodes than N is refused unless forced.

While a change is in progress every write also goes to the nodes that will own the
key afterwards, so no acknowledged write misses the new owner. Streaming is
idempotent (replicas keep the newest version), so an interrupted join, replace or
decommission is simply run again.
"""

from __future__ import annotations

import heapq
from collections import deque

from . import messages as m
from .cleanup import Cleanup
from .effects import Log, SaveBootstrapped, ScanRange, Send, StoreWrite
from .hints import record_size
from .messages_ring import Decommission, RingPlan, StreamBatch, StreamRequest
from .membership import LEAVING, LEFT, UP
from .ring import Ring

#: Keys a source scans per StreamRequest (bounds one batch's memory and latency).
STREAM_SCAN_KEYS = 512
#: Records a decommissioning node has in flight to new owners at once.
STREAM_PUSH_WINDOW = 256
#: Records a decommissioning node holds waiting for delivery (queued, in flight or
#: waiting for a retry) before it stops scanning for more: a down new owner makes
#: the leaving node wait, not grow without bound. One scan adds at most
#: ``STREAM_SCAN_KEYS`` x N entries, so this leaves room for several scans.
STREAM_BACKLOG_MAX = 16 * STREAM_SCAN_KEYS
#: ... and the bytes of their records (keys + values) at most.
STREAM_BACKLOG_BYTES_MAX = 64 * 1024 * 1024
#: A stream request or push without an answer after this long has failed.
STREAM_TIMEOUT_MS = 5_000
#: Back-off between attempts on a failed source or push: doubles from the minimum up
#: to the maximum and keeps trying (a down node is waited for, never skipped) — the
#: bound is on the rate, like Cassandra's hint replay after a node returns.
STREAM_RETRY_MS_MIN = 500
STREAM_RETRY_MS_MAX = 30_000
#: With ``force``, attempts per record before it is given up and counted undelivered.
STREAM_FORCE_ATTEMPTS_MAX = 3


def retry_delay_ms(failures: int) -> int:
    """Back-off after ``failures`` consecutive failures (>= 1)."""
    return min(STREAM_RETRY_MS_MIN << min(max(failures - 1, 0), 16), STREAM_RETRY_MS_MAX)


def _intervals(old: Ring, new: Ring):
    """(share of the token space, old preference list, new preference list) per
    elementary interval of the union of both rings' tokens."""
    points = sorted(set(old.tokens) | set(new.tokens))
    space = float(1 << 64)
    prev = points[-1] - (1 << 64)
    for tok in points:
        yield (tok - prev) / space, old.preference_list_of_token(tok), new.preference_list_of_token(tok)
        prev = tok


def plan_moves(old_members, new_members, n: int, vnodes: int) -> list[tuple[str, str, float]]:
    """Share of the token space (0..1) whose replica moves ``from`` -> ``to``.

    Exact for the ring: walks every elementary interval of the union of both rings'
    tokens. ``from`` is the old replica the new owner would typically stream from
    (the first old replica that is also kept), or "-" when none is kept.
    """
    moves: dict[tuple[str, str], float] = {}
    for length, before, after in _intervals(Ring(old_members, n, vnodes), Ring(new_members, n, vnodes)):
        gained = [x for x in after if x not in before]
        if not gained:
            continue
        kept = [x for x in before if x in after]
        source = kept[0] if kept else (before[0] if before else "-")
        for g in gained:
            moves[(source, g)] = moves.get((source, g), 0.0) + length
    return sorted(((a, b, round(f, 6)) for (a, b), f in moves.items()), key=lambda x: (-x[2], x[0], x[1]))


def under_replicated_share(members, n: int, vnodes: int) -> float:
    """Share of the key space (0..1) with fewer than ``n`` replicas in the ring of
    ``members`` (the ring clamps N to its size)."""
    if not members:
        return 1.0
    return 0.0 if len(set(members)) >= n else 1.0


def pull_sources(current: Ring, target: Ring, me: str) -> list[str]:
    """The nodes a joining/replacing ``me`` must stream from: every current replica
    of every key ``me`` replicates in ``target`` (a source sends only keys it
    replicates, so any other node would have nothing to send)."""
    needed: set[str] = set()
    for _, before, after in _intervals(current, target):
        if me in after:
            needed.update(x for x in before if x != me)
    return sorted(needed)


class RingChange:
    """The streaming half of a ring change, attached to one NodeCore."""

    def __init__(self, core, settle_ms: int) -> None:
        self.core = core
        self.settle_ms = settle_ms
        self.mode: str | None = None  # join | replace | decommission
        self.state = "idle"  # idle | settling | streaming | done
        self.start_after_ms = 0
        # pull (join / replace). ``sources[0]`` is the source of the request out.
        self.sources: list[str] = []
        self.cursor: dict[str, bytes | None] = {}  # source -> resume after this key
        self.failures: dict[str, int] = {}  # source -> consecutive failures
        self.retry_at: dict[str, int] = {}  # source -> not before this time (ms)
        self.request_id = 0
        self.request_deadline_ms = 0
        self.pending_writes = 0
        self.batch_failed = False
        self.batch_next: bytes | None = None
        self.batch_last = False
        # push (decommission)
        self.force = False
        self.push_after: bytes | None = None
        self.push_scanning = False
        self.push_scan_done = False
        self.push_inflight: dict[int, tuple[str, bytes, object, int, int]] = {}  # op -> (peer, key, rec, tries, deadline)
        self.push_ready: deque = deque()  # (peer, key, rec, tries)
        self.push_waiting: list = []  # heap of (due_ms, seq, (peer, key, rec, tries))
        self._seq = 0
        self.backlog_bytes = 0
        self._rings: dict[tuple, Ring] = {}
        self.stats = core.stats
        for name in ("stream_sources_total", "stream_sources_done", "stream_keys_scanned",
                     "stream_keys_received", "stream_keys_sent", "stream_failures", "stream_pending",
                     "stream_undelivered", "stream_done"):
            self.stats.setdefault(name, 0)
        core.handle_requests({StreamRequest: self._on_stream_request})
        core.handle_requests({Decommission: self._on_decommission})
        core.handle_responses({StreamBatch: self._on_batch})
        core.handle_stored("sr", self._on_source_scan)
        core.handle_stored("sw", self._on_stored)
        core.handle_stored("ds", self._on_push_scan)
        core.add_ticker(self.tick)
        self.cleanup = Cleanup(core, self)

    # ------------------------------------------------------------------ helpers
    def _ring(self, members) -> Ring:
        key = tuple(sorted(members))
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) > 8:
                self._rings.clear()
            ring = self._rings[key] = Ring(key, self.core.settings.n, self.core.settings.vnodes)
        return ring

    def _log(self, out, event, level="info", **fields):
        out.append(Log(level, event, fields))

    def in_progress(self) -> bool:
        """A join, replace or decommission of this node is under way."""
        return self.state in ("settling", "streaming")

    # ------------------------------------------------------------ source side
    def _on_stream_request(self, conn, msg, now_ms, out) -> None:
        if not msg.members or msg.limit <= 0:
            self.core.respond(conn, StreamBatch(msg.id, [], None, 0), now_ms, out)
            return
        limit = min(msg.limit, STREAM_SCAN_KEYS)
        out.append(ScanRange(("sr", conn, msg.id, msg.target, tuple(msg.members), limit), msg.after, limit))

    def _on_source_scan(self, token, ok, result, now_ms, out) -> None:
        _, conn, req_id, target, members, limit = token
        if not ok:
            self.core.respond(conn, m.Error(req_id, f"scan failed: {result}"), now_ms, out)
            return
        core = self.core
        target_ring = self._ring(members)
        mine = core.ring
        me = core.node_id
        # Only what we replicate now: a leftover of a range we lost is never a source.
        records = [(k, r) for k, r in result
                   if mine is not None and me in mine.preference_list(k) and target in target_ring.preference_list(k)]
        next_after = result[-1][0] if len(result) >= limit else None
        core.respond(conn, StreamBatch(req_id, records, next_after, len(result)), now_ms, out)

    # --------------------------------------------------- receiving side (pull)
    def start_pull(self, mode: str, now_ms: int, out: list) -> None:
        if self.state != "idle":
            return
        self.mode = mode
        self.state = "settling"
        self.start_after_ms = now_ms + self.settle_ms
        self._log(out, f"{mode}_started", settle_ms=self.settle_ms)

    def _target_members(self) -> list[str]:
        ms = self.core.membership
        if self.mode == "join":
            return sorted(set(ms.future_ring_members()) | {self.core.node_id})
        return list(ms.ring_members())

    def _begin_streaming(self, now_ms, out) -> None:
        core = self.core
        members = core.membership.ring_members()
        if members:
            current = self._ring(members)
            self.sources = pull_sources(current, self._ring(self._target_members()), core.node_id)
        else:
            self.sources = []
        self.cursor = dict.fromkeys(self.sources)
        self.failures = {}
        self.retry_at = {}
        self.stats["stream_sources_total"] = len(self.sources)
        self.stats["stream_sources_done"] = 0
        self.state = "streaming"
        self._log(out, f"{self.mode}_streaming", sources=list(self.sources))
        self._request_next(now_ms, out)

    def _request_next(self, now_ms, out) -> None:
        if not self.sources:
            self._finish_pull(now_ms, out)
            return
        ready = next((s for s in self.sources if self.retry_at.get(s, 0) <= now_ms), None)
        if ready is None:
            return  # every source left is backing off: the tick asks again
        self.sources.remove(ready)
        self.sources.insert(0, ready)
        core = self.core
        self.request_id = core.new_op_id()
        self.request_deadline_ms = now_ms + STREAM_TIMEOUT_MS
        out.append(Send(ready, StreamRequest(self.request_id, core.node_id, self._target_members(),
                                             self.cursor.get(ready), STREAM_SCAN_KEYS)))

    def _on_batch(self, peer, msg, now_ms, out) -> None:
        if self.state != "streaming" or msg.id != self.request_id or not self.sources or peer != self.sources[0]:
            return
        self.request_id = 0
        self.stats["stream_keys_scanned"] += msg.scanned
        self.batch_next = msg.next_after
        self.batch_last = msg.next_after is None
        self.batch_failed = False
        self.pending_writes = len(msg.records)
        for key, record in msg.records:
            out.append(StoreWrite(("sw", None, 0), key, record))
        if not msg.records:
            self._batch_stored(now_ms, out)

    def _on_stored(self, token, ok, result, now_ms, out) -> None:
        if ok:
            self.stats["stream_keys_received"] += 1
        else:
            self.stats["stream_failures"] += 1
            self.batch_failed = True
        self.pending_writes -= 1
        if self.pending_writes == 0:
            self._batch_stored(now_ms, out)

    def _batch_stored(self, now_ms, out) -> None:
        """Persist before asking for more: a batch is durable before the cursor moves.
        A batch with a failed store is asked for again (resume, never skip)."""
        source = self.sources[0]
        if self.batch_failed:
            self._source_failed(now_ms, out, "storing a streamed record failed")
            return
        self.failures.pop(source, None)
        if self.batch_last:
            self.sources.pop(0)
            self.cursor.pop(source, None)
            self.stats["stream_sources_done"] += 1
        else:
            self.cursor[source] = self.batch_next
        self._request_next(now_ms, out)

    def _source_failed(self, now_ms, out, reason: str) -> None:
        self.request_id = 0
        source = self.sources[0]
        failures = self.failures[source] = self.failures.get(source, 0) + 1
        delay = retry_delay_ms(failures)
        self.retry_at[source] = now_ms + delay
        self.stats["stream_failures"] += 1
        self._log(out, "stream_source_retry", "warning", source=source, reason=reason, failures=failures,
                  retry_in_ms=delay)
        self._request_next(now_ms, out)  # another source may be ready meanwhile

    def _finish_pull(self, now_ms, out) -> None:
        core = self.core
        self.state = "done"
        self.stats["stream_done"] = 1
        core.membership.set_status(UP)
        core.ring_changed(now_ms, out)
        out.append(SaveBootstrapped(core.members()))  # a restart comes back as a member
        self._log(out, f"{self.mode}_completed", received=self.stats["stream_keys_received"])

    # ------------------------------------------------------ decommission (push)
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

    def _on_decommission(self, conn, msg, now_ms, out) -> None:
        core = self.core
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
        if self.in_progress() and self.mode != "decommission":
            core.respond(conn, m.Reply(msg.id, m.INVALID,
                                        message=f"a {self.mode} is in progress"), now_ms, out)
            return
        if self.cleanup.running:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message="a cleanup is running; wait for it "
                                        "to finish"), now_ms, out)
            return
        if self.mode == "decommission" and self.in_progress():
            if msg.force and not self.force:
                self.force = True
                for _, _, entry in self.push_waiting:  # retry now, within the forced attempts
                    self.push_ready.append(entry)
                self.push_waiting = []
                self._log(out, "decommission_forced", "warning", pending=self._backlog())
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
        self.mode = "decommission"
        self.state = "settling"
        self.force = msg.force
        self.start_after_ms = now_ms + self.settle_ms
        self.push_after = None
        self.push_scan_done = False
        self.push_ready.clear()
        self.push_waiting = []
        self.backlog_bytes = 0
        self.stats["stream_done"] = 0
        self.stats["stream_undelivered"] = 0
        ms.set_status(LEAVING)
        core.ring_changed(now_ms, out)
        self._log(out, "decommission_started", settle_ms=self.settle_ms, force=self.force)
        text = f"{core.node_id} is {ms.me.status}"
        if warning:
            text += f" (forced: {warning})"
        core.respond(conn, m.Reply(msg.id, m.OK, message=text), now_ms, out)

    def _backlog(self) -> int:
        return len(self.push_inflight) + len(self.push_ready) + len(self.push_waiting)

    def _push_scan(self, out) -> None:
        self.push_scanning = True
        out.append(ScanRange(("ds", None, 0), self.push_after, STREAM_SCAN_KEYS))

    def _on_push_scan(self, token, ok, result, now_ms, out) -> None:
        self.push_scanning = False
        if self.mode != "decommission" or self.state != "streaming":
            return
        if not ok:
            self.stats["stream_failures"] += 1
            return  # the tick scans again from the same cursor
        core = self.core
        ms = core.membership
        me = core.node_id
        current = self._ring(ms.ring_members())
        future = self._ring([x for x in ms.future_ring_members() if x != me])
        self.stats["stream_keys_scanned"] += len(result)
        for key, record in result:
            before = current.preference_list(key)
            if me not in before:
                continue  # a leftover of a range we lost long ago: not ours to hand over
            for node in future.preference_list(key):
                if node not in before:
                    self.push_ready.append((node, key, record, 0))
                    self.backlog_bytes += record_size(key, record.value)
        if len(result) < STREAM_SCAN_KEYS:
            self.push_scan_done = True
        else:
            self.push_after = result[-1][0]
        self._pump(now_ms, out)

    def _pump(self, now_ms, out) -> None:
        core = self.core
        while self.push_waiting and self.push_waiting[0][0] <= now_ms:
            self.push_ready.append(heapq.heappop(self.push_waiting)[2])
        while self.push_ready and len(self.push_inflight) < STREAM_PUSH_WINDOW:
            node, key, record, tries = self.push_ready.popleft()
            op_id = core.new_op_id()
            self.push_inflight[op_id] = (node, key, record, tries, now_ms + STREAM_TIMEOUT_MS)
            out.append(Send(node, m.RepWrite(op_id, key, record)))
        self.stats["stream_pending"] = self._backlog()

    def on_push_ack(self, op_id, ok, now_ms, out) -> bool:
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
                self._log(out, "stream_record_undelivered", "warning", target=node, attempts=tries)
            else:
                self._seq += 1
                heapq.heappush(self.push_waiting, (now_ms + retry_delay_ms(tries), self._seq,
                                                   (node, key, record, tries)))
        self._pump(now_ms, out)
        return True

    def _finish_push(self, now_ms, out) -> None:
        core = self.core
        self.state = "done"
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
        self._log(out, "decommission_completed", level, sent=self.stats["stream_keys_sent"],
                  undelivered=self.stats["stream_undelivered"], forced=self.force)

    def _push_tick(self, now_ms, out) -> None:
        for op_id, (node, key, rec, tries, deadline) in list(self.push_inflight.items()):
            if deadline <= now_ms:
                self.on_push_ack(op_id, False, now_ms, out)
        self._pump(now_ms, out)
        if self.push_scanning:
            return
        if not self.push_scan_done:
            room = (self._backlog() + STREAM_SCAN_KEYS * self.core.settings.n <= STREAM_BACKLOG_MAX
                    and self.backlog_bytes < STREAM_BACKLOG_BYTES_MAX)
            if room:
                self._push_scan(out)
        elif not self._backlog():
            self._finish_push(now_ms, out)

    # ---------------------------------------------------------------- ticking
    def tick(self, now_ms, out) -> None:
        if self.state == "settling" and now_ms >= self.start_after_ms:
            if self.mode == "decommission":
                self.state = "streaming"
                self._push_scan(out)
            else:
                self._begin_streaming(now_ms, out)
            return
        if self.state != "streaming":
            return
        if self.mode == "decommission":
            self._push_tick(now_ms, out)
            return
        if self.request_id and now_ms >= self.request_deadline_ms:
            self._source_failed(now_ms, out, "timed out")
        elif not self.request_id and self.pending_writes == 0:
            self._request_next(now_ms, out)

    def on_request_failed(self, op_id, now_ms, out, reason: str) -> bool:
        if self.state == "streaming" and op_id == self.request_id and op_id:
            self._source_failed(now_ms, out, reason)
            return True
        return self.on_push_ack(op_id, False, now_ms, out)

    def status_mode(self) -> str:
        return f"{self.mode or '-'}:{self.state}"


__all__ = ["RingChange", "ScanRange", "plan_moves", "pull_sources", "retry_delay_ms"]
