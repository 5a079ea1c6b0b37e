"""Ring changes, the pull side (``core/ringchange.py``): a joining or replacing node
streams, batch by batch, from every source it needs (``StreamPull``); every node
answers such requests with the records it replicates (``StreamSource``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as m
from .effects import SaveBootstrapped, ScanRange, Send, StoreWrite
from .membership import UP
from .messages_ring import StreamBatch, StreamRequest
from .rc_common import (
    STREAM_SCAN_KEYS, STREAM_TIMEOUT_MS, RingChangeMode, RingChangeStage, SourceScanToken, pull_sources,
    retry_delay_ms,
)
from .tokens import StoreKind

if TYPE_CHECKING:
    from .node import NodeCore
    from .ringchange import RingChange


class StreamSource:
    """Any node: answer a StreamRequest with what it replicates of the asked range."""

    def __init__(self, core: NodeCore, rc: RingChange) -> None:
        self.core = core
        self.rc = rc

    def on_stream_request(self, conn: object, msg: StreamRequest, now_ms: int, out: list[Any]) -> None:
        if not msg.members or msg.limit <= 0:
            self.core.respond(conn, StreamBatch(msg.id, [], None, 0), now_ms, out)
            return
        limit = min(msg.limit, STREAM_SCAN_KEYS)
        tok = SourceScanToken(StoreKind.STREAM_SOURCE, conn, msg.id, msg.target, tuple(msg.members), limit)
        out.append(ScanRange(tok, msg.after, limit))

    def on_scanned(self, token: SourceScanToken, ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        _, conn, req_id, target, members, limit = token
        if not ok:
            self.core.respond(conn, m.Error(req_id, f"scan failed: {result}"), now_ms, out)
            return
        core = self.core
        target_ring = self.rc.ring_of(members)
        mine = core.ring
        me = core.node_id
        # Only what we replicate now: a leftover of a range we lost is never a source.
        records = [(k, r) for k, r in result
                   if mine is not None and me in mine.preference_list(k) and target in target_ring.preference_list(k)]
        next_after = result[-1][0] if len(result) >= limit else None
        core.respond(conn, StreamBatch(req_id, records, next_after, len(result)), now_ms, out)


class StreamPull:
    """The joining/replacing node's side. ``sources[0]`` is the source of the request out."""

    def __init__(self, core: NodeCore, rc: RingChange) -> None:
        self.core = core
        self.rc = rc
        self.stats = core.stats
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

    def _target_members(self) -> list[str]:
        ms = self.core.membership
        if self.rc.mode == RingChangeMode.JOIN:
            return sorted(set(ms.future_ring_members()) | {self.core.node_id})
        return list(ms.ring_members())

    def begin(self, now_ms: int, out: list[Any]) -> None:
        core = self.core
        rc = self.rc
        members = core.membership.ring_members()
        if members:
            current = rc.ring_of(members)
            self.sources = pull_sources(current, rc.ring_of(self._target_members()), core.node_id)
        else:
            self.sources = []
        self.cursor = dict.fromkeys(self.sources)
        self.failures = {}
        self.retry_at = {}
        self.stats["stream_sources_total"] = len(self.sources)
        self.stats["stream_sources_done"] = 0
        rc.to(RingChangeStage.STREAMING)
        rc.log(out, f"{rc.mode}_streaming", sources=list(self.sources))
        self._request_next(now_ms, out)

    def _request_next(self, now_ms: int, out: list[Any]) -> None:
        if not self.sources:
            self._finish(now_ms, out)
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

    def on_batch(self, peer: str, msg: StreamBatch, now_ms: int, out: list[Any]) -> None:
        if (self.rc.state != RingChangeStage.STREAMING or msg.id != self.request_id or not self.sources
                or peer != self.sources[0]):
            return
        self.request_id = 0
        self.stats["stream_keys_scanned"] += msg.scanned
        self.batch_next = msg.next_after
        self.batch_last = msg.next_after is None
        self.batch_failed = False
        self.pending_writes = len(msg.records)
        for key, record in msg.records:
            out.append(StoreWrite((StoreKind.STREAM_WRITE, None, 0), key, record))
        if not msg.records:
            self._batch_stored(now_ms, out)

    def on_stored(self, token: object, ok: bool, result: object, now_ms: int, out: list[Any]) -> None:
        if ok:
            self.stats["stream_keys_received"] += 1
        else:
            self.stats["stream_failures"] += 1
            self.batch_failed = True
        self.pending_writes -= 1
        if self.pending_writes == 0:
            self._batch_stored(now_ms, out)

    def _batch_stored(self, now_ms: int, out: list[Any]) -> None:
        """Persist before asking for more: a batch is durable before the cursor moves.
        A batch with a failed store is asked for again (resume, never skip)."""
        assert self.pending_writes == 0, "the cursor moves only once the whole batch is stored"
        source = self.sources[0]
        if self.batch_failed:
            self.source_failed(now_ms, out, "storing a streamed record failed")
            return
        self.failures.pop(source, None)
        if self.batch_last:
            self.sources.pop(0)
            self.cursor.pop(source, None)
            self.stats["stream_sources_done"] += 1
        else:
            self.cursor[source] = self.batch_next
        self._request_next(now_ms, out)

    def source_failed(self, now_ms: int, out: list[Any], reason: str) -> None:
        self.request_id = 0
        source = self.sources[0]
        failures = self.failures[source] = self.failures.get(source, 0) + 1
        delay = retry_delay_ms(failures)
        self.retry_at[source] = now_ms + delay
        self.stats["stream_failures"] += 1
        self.rc.log(out, "stream_source_retry", "warning", source=source, reason=reason, failures=failures,
                    retry_in_ms=delay)
        self._request_next(now_ms, out)  # another source may be ready meanwhile

    def _finish(self, now_ms: int, out: list[Any]) -> None:
        core = self.core
        self.rc.to(RingChangeStage.DONE)
        self.stats["stream_done"] = 1
        core.membership.set_status(UP)
        core.ring_changed(now_ms, out)
        out.append(SaveBootstrapped(core.members()))  # a restart comes back as a member
        self.rc.log(out, f"{self.rc.mode}_completed", received=self.stats["stream_keys_received"])

    def tick(self, now_ms: int, out: list[Any]) -> None:
        if self.request_id and now_ms >= self.request_deadline_ms:
            self.source_failed(now_ms, out, "timed out")
        elif not self.request_id and self.pending_writes == 0:
            self._request_next(now_ms, out)

