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

Its parts: ``rc_common.py`` (bounds, stages and their transition table, planning),
``rc_pull.py`` (join/replace, and every node's source side), ``rc_push.py``
(decommission); ``RingChange`` here holds the stage and wires them to the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .cleanup import Cleanup
from .effects import Log, ScanRange
from .messages_ring import Decommission, StreamBatch, StreamRequest
from .rc_common import (
    RINGS_CACHED_MAX, STAGE_TRANSITIONS, STREAM_BACKLOG_BYTES_MAX, STREAM_BACKLOG_MAX, STREAM_FORCE_ATTEMPTS_MAX,
    STREAM_PUSH_WINDOW, STREAM_RETRY_MS_MAX, STREAM_RETRY_MS_MIN, STREAM_SCAN_KEYS, STREAM_TIMEOUT_MS,
    InflightPush, PushEntry, RingChangeMode, RingChangeStage, plan_moves, pull_sources, retry_delay_ms,
    under_replicated_share,
)
from .rc_pull import StreamPull, StreamSource
from .rc_push import DecommissionPush
from .ring import Ring
from .tokens import StoreKind

if TYPE_CHECKING:
    from .node import NodeCore

# Module names for the idle stages: ``tick`` runs on every tick of every node, and a
# global is read faster than an enum member (which goes through the metaclass).
_IDLE, _DONE = RingChangeStage.IDLE, RingChangeStage.DONE

STAT_NAMES = ("stream_sources_total", "stream_sources_done", "stream_keys_scanned", "stream_keys_received",
              "stream_keys_sent", "stream_failures", "stream_pending", "stream_undelivered", "stream_done")


class RingChange:
    """The streaming half of a ring change, attached to one NodeCore."""

    def __init__(self, core: NodeCore, settle_ms: int) -> None:
        self.core = core
        self.settle_ms = settle_ms
        self.mode: RingChangeMode | None = None
        self.state = RingChangeStage.IDLE
        self.start_after_ms = 0
        self._rings: dict[tuple[str, ...], Ring] = {}
        self.stats = core.stats
        for name in STAT_NAMES:
            self.stats.setdefault(name, 0)
        self.source = StreamSource(core, self)
        self.pull = StreamPull(core, self)
        self.push = DecommissionPush(core, self)
        core.handle_requests({StreamRequest: self.source.on_stream_request, Decommission: self.push.on_decommission})
        core.handle_responses({StreamBatch: self.pull.on_batch})
        core.handle_stored(StoreKind.STREAM_SOURCE, self.source.on_scanned)
        core.handle_stored(StoreKind.STREAM_WRITE, self.pull.on_stored)
        core.handle_stored(StoreKind.DECOMMISSION_SCAN, self.push.on_scanned)
        core.add_ticker(self.tick)
        self.cleanup = Cleanup(core, self)

    # ------------------------------------------------------------------ helpers
    def to(self, stage: RingChangeStage) -> None:
        assert stage in STAGE_TRANSITIONS[self.state], f"ring change {self.state} -> {stage}"
        self.state = stage

    def ring_of(self, members: Iterable[str]) -> Ring:
        key = tuple(sorted(members))
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) > RINGS_CACHED_MAX:
                self._rings.clear()
            ring = self._rings[key] = Ring(key, self.core.settings.n, self.core.settings.vnodes)
        return ring

    def log(self, out: list[Any], event: str, level: str = "info", **fields: Any) -> None:
        out.append(Log(level, event, fields))

    def in_progress(self) -> bool:
        """A join, replace or decommission of this node is under way."""
        return self.state in (RingChangeStage.SETTLING, RingChangeStage.STREAMING)

    # What the core reads of the parts (node.py: failed sends, peers down, busy).
    @property
    def sources(self) -> list[str]:
        return self.pull.sources

    @property
    def request_id(self) -> int:
        return self.pull.request_id

    @property
    def push_inflight(self) -> dict[int, InflightPush]:
        return self.push.push_inflight

    # ------------------------------------------------------------------- start
    def start_pull(self, mode: str, now_ms: int, out: list[Any]) -> None:
        if self.state != RingChangeStage.IDLE:
            return
        self.mode = RingChangeMode(mode)
        assert self.mode != RingChangeMode.DECOMMISSION, "a decommission pushes"
        self.to(RingChangeStage.SETTLING)
        self.start_after_ms = now_ms + self.settle_ms
        self.log(out, f"{self.mode}_started", settle_ms=self.settle_ms)

    # ---------------------------------------------------------------- ticking
    def tick(self, now_ms: int, out: list[Any]) -> None:
        state = self.state
        if state is _IDLE or state is _DONE:
            return  # every tick of every node comes here: the common case first
        if state == RingChangeStage.SETTLING and now_ms >= self.start_after_ms:
            if self.mode == RingChangeMode.DECOMMISSION:
                self.to(RingChangeStage.STREAMING)
                self.push.scan(out)
            else:
                self.pull.begin(now_ms, out)
            return
        if state != RingChangeStage.STREAMING:
            return
        if self.mode == RingChangeMode.DECOMMISSION:
            self.push.tick(now_ms, out)
        else:
            self.pull.tick(now_ms, out)

    def on_push_ack(self, op_id: int, ok: bool, now_ms: int, out: list[Any]) -> bool:
        """Called by the core for RepWriteAck / send failures of our pushes; True if ours."""
        return self.push.on_push_ack(op_id, ok, now_ms, out)

    def on_request_failed(self, op_id: int, now_ms: int, out: list[Any], reason: str) -> bool:
        if self.state == RingChangeStage.STREAMING and op_id == self.pull.request_id and op_id:
            self.pull.source_failed(now_ms, out, reason)
            return True
        return self.push.on_push_ack(op_id, False, now_ms, out)

    def status_mode(self) -> str:
        return f"{self.mode or '-'}:{self.state}"


__all__ = [
    "STREAM_BACKLOG_BYTES_MAX", "STREAM_BACKLOG_MAX", "STREAM_FORCE_ATTEMPTS_MAX", "STREAM_PUSH_WINDOW",
    "STREAM_RETRY_MS_MAX", "STREAM_RETRY_MS_MIN", "STREAM_SCAN_KEYS", "STREAM_TIMEOUT_MS", "PushEntry",
    "RingChange", "RingChangeMode", "RingChangeStage", "ScanRange", "plan_moves", "pull_sources",
    "retry_delay_ms", "under_replicated_share",
]
