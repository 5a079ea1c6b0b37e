"""Anti-entropy, the initiator's (A's) side (``core/antientropy.py`` tells the
story): passes over peers, and one session at a time with the pass's current peer
through the stages ``scan1 -> tree -> scan2 -> repair`` (``SESSION_TRANSITIONS``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

from . import messages_ae as m
from .ae_common import (
    ENTRY_OVERHEAD_BYTES, SESSION_ENTRY_BYTES_MAX, SESSIONS_PER_PEER_MAX, SUMMARY_NAMES, AeStep, AESettings,
    ReadMany, RepairAsk, ScanLocal, ae_token, plist_of_token, record_bytes, ring_digest, shared, shares_ranges,
)
from .ae_gc import GcCandidate, TombstoneGc, gc_candidate
from .effects import Log, Respond, Send, StoreWrite
from .hints import TokenBucket
from .merkle import BucketCollector, MerkleTree, compare_entries, leaf_of
from .ring import token
from .version import Record, Version

if TYPE_CHECKING:
    from .node import NodeCore


class SessionStage(StrEnum):
    SCAN1 = "scan1"  # scanning: our tree, and tombstone-GC candidates
    TREE = "tree"  # our leaves sent (AETree): waiting for the differing ones
    SCAN2 = "scan2"  # scanning for our entries in the differing leaves
    REPAIR = "repair"  # exchanging records, paced by the token bucket


#: The only moves a session makes; it can end (fail, or finish) in any stage.
SESSION_TRANSITIONS: dict[SessionStage, frozenset[SessionStage]] = {
    SessionStage.SCAN1: frozenset({SessionStage.TREE}),
    SessionStage.TREE: frozenset({SessionStage.SCAN2}),
    SessionStage.SCAN2: frozenset({SessionStage.REPAIR}),
    SessionStage.REPAIR: frozenset(),
}
#: The storage step of each scanning stage (its chunks' token).
_SCAN_STEP = {SessionStage.SCAN1: AeStep.SCAN1, SessionStage.SCAN2: AeStep.SCAN2}


class Pass:
    __slots__ = ("conn", "req_id", "peers", "peer_sessions", "summary", "synced", "failed", "periodic")

    def __init__(self, conn: object, req_id: int, peers: list[str], periodic: bool) -> None:
        self.conn = conn
        self.req_id = req_id
        self.peers = deque(peers)
        self.peer_sessions = 0
        self.summary = dict.fromkeys(SUMMARY_NAMES, 0)
        self.synced: list[str] = []
        self.failed: dict[str, str] = {}
        self.periodic = periodic


@dataclass(slots=True)
class Session:
    sid: int
    peer: str
    tree: MerkleTree
    stage: SessionStage = SessionStage.SCAN1
    deadline_ms: int = 0
    theirs: dict[bytes, Version] = field(default_factory=dict)
    theirs_truncated: bool = False
    collector: BucketCollector | None = None
    push: deque[bytes] = field(default_factory=deque)
    pull: deque[bytes] = field(default_factory=deque)
    inflight: int = 0  # id of the AEExchange awaiting its answer, 0 = none
    reading: bool = False  # a ReadMany for push records is out
    pending_pull: list[bytes] = field(default_factory=list)
    local_writes: int = 0
    truncated: bool = False
    gc_candidates: list[GcCandidate] = field(default_factory=list)

    def to(self, stage: SessionStage) -> None:
        assert stage in SESSION_TRANSITIONS[self.stage], f"session {self.stage} -> {stage}"
        self.stage = stage


class Initiator:
    def __init__(self, core: NodeCore, settings: AESettings, gc: TombstoneGc, now_ms: int) -> None:
        self.core = core
        self.s = settings
        self.gc = gc
        self.bucket = TokenBucket(settings.repair_per_s, now_ms)
        self.session: Session | None = None
        self.pass_: Pass | None = None
        self.repairs: deque[RepairAsk] = deque()  # waiting for a pass
        self._rr = 0
        jitter = core.rng.randrange(max(settings.interval_ms // 4, 1))
        self.next_periodic_ms = now_ms + settings.interval_ms + jitter
        self._ring_nodes = core.ring.nodes if core.ring is not None else ()
        self.ring_stable_since_ms = now_ms
        #: The whole anti-entropy tick (AntiEntropy._tick): run when a pass ends or a
        #: Repair arrives while idle, so queued work starts in the same step.
        self.tick_all: Callable[[int, list[Any]], None] = self.tick_passes

    # ------------------------------------------------------------------ helpers
    def _count(self, name: str, n: int = 1) -> None:
        self.core.stats["ae_" + name] += n
        if self.pass_ is not None:
            self.pass_.summary[name] += n

    def _peers(self) -> list[str]:
        ring, me = self.core.ring, self.core.node_id
        if ring is None or me not in ring.nodes:
            return []
        return [p for p in ring.nodes if p != me and shares_ranges(ring, me, p)]

    # ------------------------------------------------------------ passes, ticks
    def tick_session(self, now_ms: int, out: list[Any]) -> None:
        ring = self.core.ring
        nodes = ring.nodes if ring is not None else ()
        if nodes != self._ring_nodes:
            self._ring_nodes = nodes
            self.ring_stable_since_ms = now_ms
        s = self.session
        if s is not None:
            if s.deadline_ms and now_ms >= s.deadline_ms:
                self._end_session(s, now_ms, out, error="timed out")
            elif not self.core.is_alive(s.peer):
                self._end_session(s, now_ms, out, error="peer down")
            elif s.stage == SessionStage.REPAIR:
                self._pump(s, now_ms, out)

    def tick_passes(self, now_ms: int, out: list[Any]) -> None:
        if self.pass_ is None:
            if self.repairs:
                conn, req_id = self.repairs.popleft()
                self._start_pass(conn, req_id, self._peers(), False, now_ms, out)
            elif self.s.interval_ms and now_ms >= self.next_periodic_ms:
                self.next_periodic_ms = now_ms + self.s.interval_ms
                alive = [p for p in self._peers() if self.core.is_alive(p)]
                if alive:
                    self._rr = (self._rr + 1) % len(alive)
                    self._start_pass(None, 0, [alive[self._rr]], True, now_ms, out)

    def on_repair(self, conn: object, msg: m.Repair, now_ms: int, out: list[Any]) -> None:
        if len(self.repairs) >= self.s.repairs_queued_max:
            out.append(Respond(conn, m.RepairReply(msg.id, self.core.node_id, False, message=(
                f"busy: repairs_queued_max={self.s.repairs_queued_max} repairs already queued"))))
            return
        self.repairs.append(RepairAsk(conn, msg.id))
        if self.pass_ is None:
            self.tick_all(now_ms, out)

    def _start_pass(self, conn: object, req_id: int, peers: list[str], periodic: bool, now_ms: int,
                    out: list[Any]) -> None:
        assert self.pass_ is None and self.session is None
        self.pass_ = Pass(conn, req_id, peers, periodic)
        out.append(Log("info", "ae_pass_started", {"peers": peers, "periodic": periodic}))
        self._next_peer(now_ms, out)

    def _next_peer(self, now_ms: int, out: list[Any]) -> None:
        p = self.pass_
        assert p is not None
        while p.peers:
            peer = p.peers[0]
            if self.core.is_alive(peer):
                self._start_session(peer, now_ms, out)
                return
            p.peers.popleft()
            p.failed[peer] = "down"
        self.pass_ = None
        self.core.stats["ae_passes"] += 1
        out.append(Log("info", "ae_pass_done", {**p.summary, "synced": p.synced, "failed": p.failed}))
        if p.conn is not None:
            out.append(Respond(p.conn, m.RepairReply(p.req_id, self.core.node_id, not p.failed, dict(p.summary),
                                                     p.synced, p.failed)))
        if self.repairs:
            self.tick_all(now_ms, out)

    # ------------------------------------------------------------------ session
    def _start_session(self, peer: str, now_ms: int, out: list[Any]) -> None:
        assert self.pass_ is not None and self.session is None
        sid = self.core.new_op_id()
        self.session = Session(sid, peer, MerkleTree(self.s.leaf_bits))
        self.pass_.peer_sessions += 1
        out.append(ScanLocal(ae_token(sid, AeStep.SCAN1, sid), self.s.scan_chunk_keys))

    def _end_session(self, s: Session, now_ms: int, out: list[Any], error: str = "") -> None:
        if self.session is not s:
            return
        self.session = None
        p = self.pass_
        assert p is not None, "a session runs inside a pass"
        step = _SCAN_STEP.get(s.stage)
        if step is not None:
            out.append(ScanLocal(ae_token(s.sid, step, s.sid), 0))
        if error:
            self.core.stats["ae_sessions_failed"] += 1
            out.append(Log("warning", "ae_session_failed", {"peer": s.peer, "stage": s.stage.value, "error": error}))
            p.peers.popleft()
            p.peer_sessions = 0
            p.failed[s.peer] = error
        else:
            self._count("sessions")
            # Truncated: the same peer again, the next session takes the rest.
            if not (s.truncated and p.peer_sessions < SESSIONS_PER_PEER_MAX):
                p.peers.popleft()
                p.peer_sessions = 0
                p.synced.append(s.peer)
        self._next_peer(now_ms, out)

    def _scan1_chunk(self, s: Session, chunk: list[tuple[bytes, Record]], last: bool, now_ms: int,
                     out: list[Any]) -> None:
        me, peer, ring = self.core.node_id, s.peer, self.core.ring
        assert ring is not None
        st = self.s
        gc_on = st.gc and now_ms - self.ring_stable_since_ms >= st.gc_grace_ms and self.gc.round is None
        wall_ms = self.core.wall_ms(now_ms)  # the grace is measured against version (wall) time
        compared = 0
        for key, rec in chunk:
            tok = token(key)
            pl = plist_of_token(ring, tok)
            if peer in pl and me in pl:
                s.tree.add_entry(tok, key, rec.version)
                compared += 1
            if (gc_on and len(s.gc_candidates) < st.gc_keys_per_round_max
                    and gc_candidate(rec, pl, me, wall_ms, st.gc_grace_ms)):
                s.gc_candidates.append(GcCandidate(key, rec.version, pl[1:]))
        self._count("keys_compared", compared)
        if not last:
            out.append(ScanLocal(ae_token(s.sid, AeStep.SCAN1, s.sid), st.scan_chunk_keys))
            return
        s.to(SessionStage.TREE)
        s.deadline_ms = now_ms + st.request_timeout_ms
        out.append(Send(peer, m.AETree(s.sid, me, ring_digest(ring), st.leaf_bits, s.tree.leaves_bytes())))
        if s.gc_candidates and self.gc.round is None:
            self.gc.start(s.gc_candidates, now_ms, out)
            s.gc_candidates = []

    def on_tree_resp(self, peer: str, msg: m.AETreeResp, now_ms: int, out: list[Any]) -> None:
        s = self.session
        if s is None or s.sid != msg.id or s.stage != SessionStage.TREE:
            return
        if not msg.ok:
            return self._end_session(s, now_ms, out, error=msg.error or "refused")
        self._count("buckets_compared", msg.nodes_compared)
        self._count("buckets_differing", len(msg.leaves))
        if not msg.leaves:
            s.truncated = msg.truncated
            return self._end_session(s, now_ms, out)
        s.theirs = dict(msg.entries)
        s.theirs_truncated = msg.truncated
        s.collector = BucketCollector(msg.leaves, self.s.session_keys_max, SESSION_ENTRY_BYTES_MAX)
        s.to(SessionStage.SCAN2)
        s.deadline_ms = 0
        out.append(ScanLocal(ae_token(s.sid, AeStep.SCAN2, s.sid), self.s.scan_chunk_keys))

    def _scan2_chunk(self, s: Session, chunk: list[tuple[bytes, Record]], last: bool, now_ms: int,
                     out: list[Any]) -> None:
        col, bits, peer = s.collector, self.s.leaf_bits, s.peer
        assert col is not None
        for key, rec in chunk:
            tok = token(key)
            leaf = leaf_of(tok, bits)
            if leaf in col.wanted and shared(self.core, tok, peer):
                col.add(leaf, (key, rec.version), len(key) + ENTRY_OVERHEAD_BYTES)
        if not last:
            out.append(ScanLocal(ae_token(s.sid, AeStep.SCAN2, s.sid), self.s.scan_chunk_keys))
            return
        kept = col.wanted
        mine: dict[bytes, Version] = dict(col.collected())  # type: ignore[arg-type]  # (key, version) pairs
        theirs = {}
        for key, ver in s.theirs.items():
            tok = token(key)
            if leaf_of(tok, bits) in kept and shared(self.core, tok, peer):
                theirs[key] = ver
        push, pull = compare_entries(mine, theirs)
        s.theirs = {}
        s.push, s.pull = deque(push), deque(pull)
        s.truncated = s.theirs_truncated or col.truncated
        s.collector = None
        s.to(SessionStage.REPAIR)
        self._pump(s, now_ms, out)

    def _pump(self, s: Session, now_ms: int, out: list[Any]) -> None:
        """Send the next exchange batch if none is out and the rate allows."""
        if s.inflight or s.reading:
            return
        if not s.push and not s.pull:
            if not s.local_writes:
                self._end_session(s, now_ms, out)
            return
        want = min(self.s.keys_per_message, len(s.push) + len(s.pull))
        got = self.bucket.take(want, now_ms)
        if not got:
            return  # the next tick tries again
        push = [s.push.popleft() for _ in range(min(got, len(s.push)))]
        s.pending_pull = [s.pull.popleft() for _ in range(min(got - len(push), len(s.pull)))]
        if push:
            s.reading = True
            out.append(ReadMany(ae_token(s.sid, AeStep.PUSHREAD, push), push))
        else:
            self._send_exchange(s, [], now_ms, out)

    def _send_exchange(self, s: Session, records: list[tuple[bytes, Record]], now_ms: int, out: list[Any]) -> None:
        rid = self.core.new_op_id()
        s.inflight = rid
        s.deadline_ms = now_ms + self.s.request_timeout_ms
        out.append(Send(s.peer, m.AEExchange(rid, records, s.pending_pull)))

    def _push_read(self, s: Session, keys: list[bytes], records: list[Record | None], now_ms: int,
                   out: list[Any]) -> None:
        s.reading = False
        batch: list[tuple[bytes, Record]] = []
        size = 0
        for i, (key, rec) in enumerate(zip(keys, records)):
            if rec is None:
                continue  # gone since the scan (purged): nothing to push
            rec_size = record_bytes(key, rec)
            if batch and size + rec_size > self.s.message_bytes_max:
                s.push.extendleft(reversed(keys[i:]))
                break
            batch.append((key, rec))
            size += rec_size
        self._send_exchange(s, batch, now_ms, out)

    def on_exchange_resp(self, peer: str, msg: m.AEExchangeResp, now_ms: int, out: list[Any]) -> None:
        s = self.session
        if s is None or s.inflight != msg.id:
            return
        s.inflight = 0
        s.deadline_ms = 0
        if not msg.ok:
            return self._end_session(s, now_ms, out, error=msg.error or "exchange failed")
        self._count("keys_pushed", msg.stored)
        self._count("keys_pulled", len(msg.records))
        s.pull.extendleft(reversed(msg.deferred))
        for key, rec in msg.records:
            self.core.hlc.observe(rec.version.ts, self.core.wall_ms(now_ms))
            s.local_writes += 1
            out.append(StoreWrite(ae_token(s.sid, AeStep.PULLSTORE, s.sid), key, rec))
        self._pump(s, now_ms, out)

    # ---------------------------------------------------------------- storage
    def on_stored(self, sid: int, step: AeStep, extra: Any, ok: bool, result: Any, now_ms: int,
                  out: list[Any]) -> None:
        s = self.session
        if s is None or s.sid != sid:
            return
        if step == AeStep.SCAN1 or step == AeStep.SCAN2:
            if _SCAN_STEP.get(s.stage) != step:
                return
            if not ok:
                return self._end_session(s, now_ms, out, error=f"scan failed: {result}")
            chunk, last = result
            (self._scan1_chunk if step == AeStep.SCAN1 else self._scan2_chunk)(s, chunk, last, now_ms, out)
        elif step == AeStep.PUSHREAD:
            if not ok:
                return self._end_session(s, now_ms, out, error=f"read failed: {result}")
            self._push_read(s, extra, result, now_ms, out)
        else:
            assert step == AeStep.PULLSTORE, step
            s.local_writes -= 1
            assert s.local_writes >= 0
            if not ok:
                return self._end_session(s, now_ms, out, error=f"store failed: {result}")
            self._pump(s, now_ms, out)
