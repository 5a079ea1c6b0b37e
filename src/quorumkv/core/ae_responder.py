"""Anti-entropy, the peer's (B's) side of a session (``core/antientropy.py``):
build our tree over the keys we share with the initiator, answer the differing
leaves with our entries in them (``AETree``), then serve its exchanges — store what
it pushes (write-if-newer), read what it pulls (``AEExchange``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import messages_ae as m
from .ae_common import (
    ENTRY_OVERHEAD_BYTES, EXCHANGES_SERVING_MAX, AeStep, AESettings, ReadMany, ScanLocal, ae_token,
    plist_of_token, record_bytes, ring_digest, shared,
)
from .effects import Respond, StoreWrite
from .merkle import BucketCollector, MerkleTree, diff, leaf_of
from .ring import token
from .version import Record

if TYPE_CHECKING:
    from .node import NodeCore


@dataclass(slots=True)
class TreeBuild:
    """A peer's tree request being answered: our tree first, then (``collector``) our
    entries in the leaves that differ."""

    conn: object
    req_id: int
    peer: str
    theirs: MerkleTree
    deadline_ms: int
    tree: MerkleTree = field(init=False)
    collector: BucketCollector | None = None
    nodes_compared: int = 0

    def __post_init__(self) -> None:
        self.tree = MerkleTree(self.theirs.leaf_bits)


@dataclass(slots=True)
class ServedExchange:
    """A peer's ``AEExchange`` being served: answered once every pushed record is
    stored and the pulled ones are read."""

    conn: object
    req_id: int
    writes_left: int  # pushed records not yet stored
    stored: int  # pushed records in the exchange (the answer's count)
    read_done: bool  # the pulled records were read (or none were asked for)
    found: list[tuple[bytes, Record | None]] | None = None  # the pulled keys' records
    error: str = ""


class AeResponder:
    def __init__(self, core: NodeCore, settings: AESettings) -> None:
        self.core = core
        self.s = settings
        self.responders: dict[int, TreeBuild] = {}
        self.serving: dict[int, ServedExchange] = {}  # exchange id -> its state

    def tick(self, now_ms: int, out: list[Any]) -> None:
        for rid, r in list(self.responders.items()):
            if now_ms >= r.deadline_ms:
                del self.responders[rid]
                out.append(ScanLocal(ae_token(rid, AeStep.RSCAN, rid), 0))

    # ---------------------------------------------------------------- the tree
    def on_tree(self, conn: object, msg: m.AETree, now_ms: int, out: list[Any]) -> None:
        ring = self.core.ring
        error = ""
        if ring is None or ring_digest(ring) != msg.ring_digest:
            error = "ring differs"  # a membership change is spreading: try later
        elif len(self.responders) >= self.s.responders_max:
            error = f"busy (responders_max={self.s.responders_max})"
        else:
            try:
                theirs = MerkleTree.from_leaves_bytes(msg.leaf_bits, msg.leaves)
            except ValueError as exc:
                error = str(exc)
        if error:
            out.append(Respond(conn, m.AETreeResp(msg.id, False, error)))
            return
        rid = self.core.new_op_id()
        self.responders[rid] = TreeBuild(conn, msg.id, msg.node, theirs, now_ms + self.s.request_timeout_ms)
        out.append(ScanLocal(ae_token(rid, AeStep.RSCAN, rid), self.s.scan_chunk_keys))

    def on_scanned(self, rid: int, ok: bool, result: Any, out: list[Any]) -> None:
        r = self.responders.get(rid)
        if r is not None and not ok:
            del self.responders[rid]
            out.append(Respond(r.conn, m.AETreeResp(r.req_id, False, f"scan failed: {result}")))
        elif ok:
            self._chunk(rid, result[0], result[1], out)

    def _chunk(self, rid: int, chunk: list[tuple[bytes, Record]], last: bool, out: list[Any]) -> None:
        r = self.responders.get(rid)
        if r is None:
            return
        me, ring, bits = self.core.node_id, self.core.ring, r.tree.leaf_bits
        assert ring is not None
        col = r.collector
        for key, rec in chunk:
            tok = token(key)
            if col is None:
                pl = plist_of_token(ring, tok)
                if r.peer in pl and me in pl:
                    r.tree.add_entry(tok, key, rec.version)
            else:
                leaf = leaf_of(tok, bits)
                if leaf in col.wanted and shared(self.core, tok, r.peer):
                    col.add(leaf, (key, rec.version), len(key) + ENTRY_OVERHEAD_BYTES)
        if not last:
            out.append(ScanLocal(ae_token(rid, AeStep.RSCAN, rid), self.s.scan_chunk_keys))
            return
        if col is None:
            leaves, r.nodes_compared = diff(r.theirs, r.tree)
            if leaves:
                r.collector = BucketCollector(leaves, self.s.session_keys_max, self.s.message_bytes_max)
                out.append(ScanLocal(ae_token(rid, AeStep.RSCAN, rid), self.s.scan_chunk_keys))
                return
            reply = m.AETreeResp(r.req_id, True, nodes_compared=r.nodes_compared)
        else:
            entries: list[Any] = col.collected()  # (key, version) pairs, added above
            reply = m.AETreeResp(r.req_id, True, leaves=col.leaves(), entries=entries,
                                 truncated=col.truncated, nodes_compared=r.nodes_compared)
        del self.responders[rid]
        out.append(Respond(r.conn, reply))

    # ------------------------------------------------------------ the exchanges
    def on_exchange(self, conn: object, msg: m.AEExchange, now_ms: int, out: list[Any]) -> None:
        if len(self.serving) >= EXCHANGES_SERVING_MAX:
            out.append(Respond(conn, m.AEExchangeResp(msg.id, False, f"busy (EXCHANGES_SERVING_MAX="
                                                                     f"{EXCHANGES_SERVING_MAX})")))
            return
        xid = self.core.new_op_id()
        state = self.serving[xid] = ServedExchange(conn, msg.id, len(msg.records), len(msg.records), not msg.keys)
        for key, rec in msg.records:
            self.core.hlc.observe(rec.version.ts, self.core.wall_ms(now_ms))
            out.append(StoreWrite(ae_token(xid, AeStep.XSTORE, xid), key, rec))
        if msg.keys:
            out.append(ReadMany(ae_token(xid, AeStep.XREAD, msg.keys), msg.keys))
        self._maybe_done(xid, state, out)

    def on_stored(self, xid: int, step: AeStep, extra: Any, ok: bool, result: Any, out: list[Any]) -> None:
        state = self.serving.get(xid)
        if state is None:
            return
        if not ok:
            state.error = str(result)
        if step == AeStep.XSTORE:
            state.writes_left -= 1
            assert state.writes_left >= 0
        else:
            assert step == AeStep.XREAD and not state.read_done
            state.found = list(zip(extra, result)) if ok else []
            state.read_done = True
        self._maybe_done(xid, state, out)

    def _maybe_done(self, xid: int, state: ServedExchange, out: list[Any]) -> None:
        if state.writes_left or not state.read_done:
            return
        del self.serving[xid]
        if state.error:
            out.append(Respond(state.conn, m.AEExchangeResp(state.req_id, False, state.error)))
            return
        records: list[tuple[bytes, Record]] = []
        deferred: list[bytes] = []
        size = 0
        for key, rec in state.found or []:
            if rec is None:
                continue
            rec_size = record_bytes(key, rec)
            if records and size + rec_size > self.s.message_bytes_max:
                deferred.append(key)
                continue
            records.append((key, rec))
            size += rec_size
        out.append(Respond(state.conn, m.AEExchangeResp(state.req_id, True, "", state.stored, records, deferred)))

