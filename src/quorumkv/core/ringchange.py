"""Ring changes with streaming: join, replace, decommission (issue: "a new node takes
the failed node's place and receives its data").

Statuses drive everything (see ``membership``):

* **join** — a node started with seeds and no members is ``joining``. Once gossip
  admitted it, it waits ``settle_ms`` (so every coordinator knows it is joining and
  sends it the writes for its future ranges — Cassandra's pending ranges), then
  *pulls* from every current ring member the records it will replicate in the
  future ring, batch by batch; then it turns ``up`` and the ring changes.
* **replace** — a node started with ``replace = true`` takes a dead node's id (so its
  tokens and ranges) with a new generation and address, status ``replacing``: a
  ring member that takes writes but serves no reads. It pulls every record it
  replicates from the live members, then turns ``up``.
* **decommission** — asked by a ``Decommission`` request, a node turns ``leaving``,
  waits ``settle_ms``, then *pushes* each of its records to the nodes that gain it
  in the ring without it (acked, a bounded window in flight), then turns ``left``.

While a change is in progress every write also goes to the nodes that will own the
key afterwards, so no acknowledged write misses the new owner. Streaming is
idempotent (replicas keep the newest version), so an interrupted join, replace or
decommission is simply run again.
"""

from __future__ import annotations

from . import messages as m
from .effects import Log, ScanRange, Send, StoreWrite
from .messages_ring import Decommission, RingPlan, StreamBatch, StreamRequest
from .membership import LEAVING, LEFT, UP
from .ring import Ring

#: Keys a source scans per StreamRequest (bounds one batch's memory and latency).
STREAM_SCAN_KEYS = 512
#: Records a decommissioning node has in flight to new owners at once.
STREAM_PUSH_WINDOW = 256
#: Attempts per source / record before giving up on it (anti-entropy repairs the rest).
STREAM_RETRIES_MAX = 5
#: A stream request or push without an answer after this long is retried.
STREAM_TIMEOUT_MS = 5_000
#: Pause before retrying a failed source.
STREAM_RETRY_MS = 500


def plan_moves(old_members, new_members, n: int, vnodes: int) -> list[tuple[str, str, float]]:
    """Share of the token space (0..1) whose replica moves ``from`` -> ``to``.

    Exact for the ring: walks every elementary interval of the union of both rings'
    tokens. ``from`` is the old replica the new owner would typically stream from
    (the first old replica that is also kept), or "-" when none is kept.
    """
    old = Ring(old_members, n, vnodes)
    new = Ring(new_members, n, vnodes)
    points = sorted(set(old.tokens) | set(new.tokens))
    space = float(1 << 64)
    moves: dict[tuple[str, str], float] = {}
    prev = points[-1] - (1 << 64)
    for tok in points:
        length = (tok - prev) / space
        prev = tok
        before = old.preference_list_of_token(tok)
        after = new.preference_list_of_token(tok)
        gained = [x for x in after if x not in before]
        if not gained:
            continue
        kept = [x for x in before if x in after]
        source = kept[0] if kept else (before[0] if before else "-")
        for g in gained:
            moves[(source, g)] = moves.get((source, g), 0.0) + length
    return sorted(((a, b, round(f, 6)) for (a, b), f in moves.items()), key=lambda x: (-x[2], x[0], x[1]))


class RingChange:
    """The streaming half of a ring change, attached to one NodeCore."""

    def __init__(self, core, settle_ms: int) -> None:
        self.core = core
        self.settle_ms = settle_ms
        self.mode: str | None = None  # join | replace | decommission
        self.state = "idle"  # idle | settling | streaming | done
        self.start_after_ms = 0
        # pull (join / replace)
        self.sources: list[str] = []
        self.sources_ok = 0
        self.source_retries = 0
        self.after: bytes | None = None
        self.request_id = 0
        self.request_deadline_ms = 0
        self.retry_at_ms = 0
        self.pending_writes = 0
        self.batch_next: bytes | None = None
        self.batch_last = False
        # push (decommission)
        self.push_after: bytes | None = None
        self.push_scanning = False
        self.push_scan_done = False
        self.push_inflight: dict[int, tuple[str, bytes, object, int, int]] = {}  # op -> (peer, key, rec, tries, deadline)
        self.push_retry: list[tuple[str, bytes, object, int]] = []
        self._rings: dict[tuple, Ring] = {}
        self.stats = core.stats
        for name in ("stream_sources_total", "stream_sources_done", "stream_keys_scanned",
                     "stream_keys_received", "stream_keys_sent", "stream_failures", "stream_done"):
            self.stats.setdefault(name, 0)
        core._request_handlers[StreamRequest] = self._on_stream_request
        core._request_handlers[Decommission] = self._on_decommission
        core._response_handlers[StreamBatch] = self._on_batch
        core._store_handlers["sr"] = self._on_source_scan
        core._store_handlers["sw"] = self._on_stored
        core._store_handlers["ds"] = self._on_push_scan
        core._tickers.append(self.tick)

    # ------------------------------------------------------------------ helpers
    def _ring(self, members) -> Ring:
        key = tuple(sorted(members))
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) > 8:
                self._rings.clear()
            ring = self._rings[key] = Ring(key, self.core.settings.n, self.core.settings.vnodes)
        return ring

    def _log(self, out, event, **fields):
        out.append(Log("info", event, fields))

    # ------------------------------------------------------------ source side
    def _on_stream_request(self, conn, msg, now_ms, out) -> None:
        if not msg.members or msg.limit <= 0:
            self.core._respond(conn, StreamBatch(msg.id, [], None, 0), now_ms, out)
            return
        out.append(ScanRange(("sr", conn, msg.id, msg.target, tuple(msg.members)), msg.after,
                             min(msg.limit, STREAM_SCAN_KEYS)))

    def _on_source_scan(self, token, ok, result, now_ms, out) -> None:
        _, conn, req_id, target, members = token
        if not ok:
            self.core._respond(conn, m.Error(req_id, f"scan failed: {result}"), now_ms, out)
            return
        ring = self._ring(members)
        records = [(k, r) for k, r in result if target in ring.preference_list(k)]
        limit = STREAM_SCAN_KEYS
        next_after = result[-1][0] if len(result) >= limit else None
        self.core._respond(conn, StreamBatch(req_id, records, next_after, len(result)), now_ms, out)

    # --------------------------------------------------- receiving side (pull)
    def start_pull(self, mode: str, now_ms: int, out: list) -> None:
        if self.state != "idle":
            return
        self.mode = mode
        self.state = "settling"
        self.start_after_ms = now_ms + self.settle_ms
        self._log(out, f"{mode}_started", settle_ms=self.settle_ms)

    def _begin_streaming(self, now_ms, out) -> None:
        core = self.core
        ms = core.membership
        me = core.node_id
        # Every current member may hold the newest version of some key we will own:
        # pull from all of them (replicas keep the newest). A source that stays
        # unreachable is skipped after STREAM_RETRIES_MAX attempts.
        self.sources = [n for n in ms.ring_members() if n != me]
        self.sources_ok = 0
        self.stats["stream_sources_total"] = len(self.sources)
        self.stats["stream_sources_done"] = 0
        self.state = "streaming"
        self.after = None
        self.source_retries = 0
        self._request_next(now_ms, out)

    def _target_members(self) -> list[str]:
        ms = self.core.membership
        if self.mode == "join":
            return sorted(set(ms.future_ring_members()) | {self.core.node_id})
        return list(ms.ring_members())

    def _request_next(self, now_ms, out) -> None:
        if not self.sources:
            self._finish_pull(now_ms, out)
            return
        core = self.core
        self.request_id = core._new_op_id()
        self.request_deadline_ms = now_ms + STREAM_TIMEOUT_MS
        out.append(Send(self.sources[0], StreamRequest(self.request_id, core.node_id, self._target_members(),
                                                            self.after, STREAM_SCAN_KEYS)))

    def _on_batch(self, peer, msg, now_ms, out) -> None:
        if self.state != "streaming" or msg.id != self.request_id or not self.sources or peer != self.sources[0]:
            return
        self.request_id = 0
        self.stats["stream_keys_scanned"] += msg.scanned
        self.batch_next = msg.next_after
        self.batch_last = msg.next_after is None
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
        self.pending_writes -= 1
        if self.pending_writes == 0:
            self._batch_stored(now_ms, out)

    def _batch_stored(self, now_ms, out) -> None:
        """Persist before asking for more: a batch is durable before the cursor moves."""
        if self.batch_last:
            self.sources.pop(0)
            self.sources_ok += 1
            self.stats["stream_sources_done"] += 1
            self.after = None
            self.source_retries = 0
        else:
            self.after = self.batch_next
        self._request_next(now_ms, out)

    def _source_failed(self, now_ms, out, reason: str) -> None:
        self.request_id = 0
        self.source_retries += 1
        self.stats["stream_failures"] += 1
        if self.source_retries > STREAM_RETRIES_MAX:
            source = self.sources.pop(0)
            self._log(out, "stream_source_skipped", source=source, reason=reason)
            self.after = None
            self.source_retries = 0
            self._request_next(now_ms, out)
        else:
            self.retry_at_ms = now_ms + STREAM_RETRY_MS

    def _finish_pull(self, now_ms, out) -> None:
        core = self.core
        if not self.sources_ok and [n for n in core.membership.ring_members() if n != core.node_id]:
            # Nobody could be streamed from: do not take ownership empty-handed.
            self.state = "settling"
            self.start_after_ms = now_ms + self.settle_ms
            out.append(Log("warning", f"{self.mode}_no_source", {"retry_in_ms": self.settle_ms}))
            return
        self.state = "done"
        self.stats["stream_done"] = 1
        core.membership.set_status(UP)
        core._ring_changed(now_ms, out)
        self._log(out, f"{self.mode}_completed", received=self.stats["stream_keys_received"])

    # ------------------------------------------------------ decommission (push)
    def _on_decommission(self, conn, msg, now_ms, out) -> None:
        core = self.core
        ms = core.membership
        remaining = [n for n in ms.ring_members() if n != core.node_id]
        if msg.dry_run:
            moves = plan_moves(ms.ring_members(), remaining, core.settings.n, core.settings.vnodes) if remaining else []
            core._respond(conn, RingPlan(msg.id, moves), now_ms, out)
            return
        if not remaining:
            core._respond(conn, m.Reply(msg.id, m.INVALID, message="the last node cannot leave"), now_ms, out)
            return
        if self.state not in ("idle", "done") and self.mode != "decommission":
            core._respond(conn, m.Reply(msg.id, m.INVALID,
                                        message=f"a {self.mode} is in progress"), now_ms, out)
            return
        if self.mode != "decommission" or self.state == "done" and ms.me.status != LEFT:
            self.mode = "decommission"
            self.state = "settling"
            self.start_after_ms = now_ms + self.settle_ms
            self.push_after = None
            self.push_scan_done = False
            self.stats["stream_done"] = 0
            ms.set_status(LEAVING)
            core._ring_changed(now_ms, out)
            self._log(out, "decommission_started", settle_ms=self.settle_ms)
        core._respond(conn, m.Reply(msg.id, m.OK, message=f"{core.node_id} is {ms.me.status}"), now_ms, out)

    def _push_scan(self, out) -> None:
        self.push_scanning = True
        out.append(ScanRange(("ds", None, 0), self.push_after, STREAM_SCAN_KEYS))

    def _on_push_scan(self, token, ok, result, now_ms, out) -> None:
        self.push_scanning = False
        if not ok:
            self.stats["stream_failures"] += 1
            return
        core = self.core
        ms = core.membership
        current = self._ring(ms.ring_members())
        future = self._ring([n for n in ms.future_ring_members() if n != core.node_id])
        self.stats["stream_keys_scanned"] += len(result)
        for key, record in result:
            before = current.preference_list(key)
            for node in future.preference_list(key):
                if node not in before:
                    self.push_retry.append((node, key, record, 0))
        if len(result) < STREAM_SCAN_KEYS:
            self.push_scan_done = True
        else:
            self.push_after = result[-1][0]
        self._pump(now_ms, out)

    def _pump(self, now_ms, out) -> None:
        core = self.core
        while self.push_retry and len(self.push_inflight) < STREAM_PUSH_WINDOW:
            node, key, record, tries = self.push_retry.pop(0)
            op_id = core._new_op_id()
            self.push_inflight[op_id] = (node, key, record, tries, now_ms + STREAM_TIMEOUT_MS)
            out.append(Send(node, m.RepWrite(op_id, key, record)))

    def on_push_ack(self, op_id, ok, now_ms, out) -> bool:
        """Called by the core for RepWriteAck / send failures of our pushes; True if ours."""
        entry = self.push_inflight.pop(op_id, None)
        if entry is None:
            return False
        node, key, record, tries, _ = entry
        if ok:
            self.stats["stream_keys_sent"] += 1
        elif tries + 1 < STREAM_RETRIES_MAX:
            self.push_retry.append((node, key, record, tries + 1))
        else:
            self.stats["stream_failures"] += 1
        self._pump(now_ms, out)
        return True

    def _finish_push(self, now_ms, out) -> None:
        core = self.core
        self.state = "done"
        self.stats["stream_done"] = 1
        core.membership.set_status(LEFT)
        core._ring_changed(now_ms, out)
        self._log(out, "decommission_completed", sent=self.stats["stream_keys_sent"])

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
            for op_id, (node, key, rec, tries, deadline) in list(self.push_inflight.items()):
                if deadline <= now_ms:
                    self.on_push_ack(op_id, False, now_ms, out)
            if self.push_retry:
                self._pump(now_ms, out)
            elif not self.push_inflight:
                if self.push_scan_done:
                    self._finish_push(now_ms, out)
                elif not self.push_scanning:
                    self._push_scan(out)
            return
        if self.request_id and now_ms >= self.request_deadline_ms:
            self._source_failed(now_ms, out, "timed out")
        elif not self.request_id and self.pending_writes == 0 and self.retry_at_ms and now_ms >= self.retry_at_ms:
            self.retry_at_ms = 0
            self._request_next(now_ms, out)

    def on_request_failed(self, op_id, now_ms, out, reason: str) -> bool:
        if self.state == "streaming" and op_id == self.request_id and op_id:
            self._source_failed(now_ms, out, reason)
            return True
        return self.on_push_ack(op_id, False, now_ms, out)

    def status_mode(self) -> str:
        return f"{self.mode or '-'}:{self.state}"


__all__ = ["RingChange", "ScanRange", "plan_moves"]
