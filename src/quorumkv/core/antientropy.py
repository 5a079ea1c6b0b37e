"""Anti-entropy with Merkle trees, and tombstone GC that cannot resurrect a delete.

Pure, like the rest of the core: ``install(core, settings, now_ms)`` registers this
family's handlers on a ``NodeCore`` (its extension points) and returns the
``AntiEntropy`` object. Nothing here runs unless the shell installs it (the
simulator does not).

**A session** syncs this node (A, the initiator) with one peer (B) over the keys
both replicate under the current ring — ``{k : A and B in preference_list(k)}``:

====================  =========================================================
stage                 what happens
====================  =========================================================
``scan1``             A scans its storage (``ScanLocal``, in chunks) and folds
                      every shared key's ``(key, version)`` into a Merkle tree
                      (``core/merkle.py``); tombstones included. It also picks
                      tombstone-GC candidates on the way.
``tree``              A sends its leaves (``AETree``); B builds its own tree the
                      same way, descends both from the root to the differing
                      leaves, scans again for its keys in them and answers
                      ``AETreeResp`` (whole leaves, bounded; ``truncated`` when
                      more differ).
``scan2``             A scans for its own keys in those leaves and decides per
                      key (``merkle.compare_entries``): push where A is newer or
                      B lacks it, pull where B is newer or A lacks it.
``repair``            ``AEExchange`` batches (``keys_per_message``), paced by a
                      token bucket (``repair_per_s``): B stores the pushed
                      records (write-if-newer) and returns the pulled ones, which
                      A stores. The session ends when all are durable.
====================  =========================================================

Like Cassandra's validation compaction, trees are built by scanning at sync time
(two scans per side when something differs, one when nothing does), not kept
incrementally: simple, no write-path cost, memory bounded by the leaf count and
``session_keys_max``. A *pass* is a list of peers; each peer gets sessions until
one ends without truncation. Periodically (``interval_ms``) a node runs a
one-peer pass with the next live peer (round robin); ``Repair`` runs a pass over
every peer it shares ranges with and answers with the summary.

**Tombstone GC** (``gc_*`` functions below are the rule): the key's first primary
drives it. A tombstone is a candidate once older than ``gc_grace_ms`` (which the
shell requires to be >= the maximum hint age, so no hint carrying an older value
can still be replayed) while the ring has not changed for as long. The driver asks
every other ring member — not only the other primaries — whether it is safe: a
primary must hold that tombstone or something newer, any other member must hold
nothing older (``gc_holds``). Only if all say yes, it asks each (and itself) to
purge the record *exactly* at that version (compare-and-delete). A member that is
down, wiped, or holding an older value — a replica that missed the delete, or a
*leftover* copy on a node that lost the range in a join and was never cleaned up
(``quorumkv cleanup``, ``core/cleanup.py``) — stops the purge; never a timer alone.
Leftovers are never a source either: anti-entropy compares only keys both sides
replicate, streaming sends only keys the source replicates (``core/ringchange.py``),
reads and read repair go to replicas, and hints only to their owner.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from . import messages_ae as m
from .hints import TokenBucket
from .merkle import LEAF_BITS_DEFAULT, BucketCollector, MerkleTree, compare_entries, diff, leaf_of
from .effects import Log, Respond, Send, StoreWrite
from .ring import Ring, token
from .version import Record, Version

#: Sessions one pass runs against one peer at most (each repairs up to
#: ``session_keys_max`` keys), so a pass always ends.
SESSIONS_PER_PEER_MAX = 1_000
#: Bytes of (key, version) entries kept in memory by one session's second scan.
SESSION_ENTRY_BYTES_MAX = 32 * 1024 * 1024
#: Per-entry overhead assumed when sizing entries and records against the bounds.
ENTRY_OVERHEAD_BYTES = 40
#: Peers' exchanges this node serves at once (each holds one message of records,
#: <= message_bytes_max, until its storage work is done). A peer's session has one
#: exchange in flight, so this is 16 peers syncing with us at once; past it the
#: exchange is refused "busy" and the peer's session ends and retries next pass.
EXCHANGES_SERVING_MAX = 16


class AESettings(NamedTuple):
    #: A session with the next live peer this often; 0 turns periodic sync off
    #: (``Repair`` still works). Cassandra leaves repair to the operator; Riak's
    #: active anti-entropy exchanges continuously — this is the middle.
    interval_ms: int = 60_000
    #: Keys pushed + pulled per second at most (token bucket): repair never starves
    #: client traffic.
    repair_per_s: int = 5_000
    #: Keys per AEExchange message at most.
    keys_per_message: int = 500
    #: Bytes of records per message at most (well under FRAME_BYTES_MAX).
    message_bytes_max: int = 4 * 1024 * 1024
    #: Differing keys one session handles at most; the rest go to the next session.
    session_keys_max: int = 20_000
    leaf_bits: int = LEAF_BITS_DEFAULT
    #: Records per storage scan chunk (between chunks the event loop runs).
    scan_chunk_keys: int = 1_000
    #: A peer that does not answer a session step within this long fails the session.
    request_timeout_ms: int = 60_000
    #: Peers' trees built concurrently at most; more get "busy".
    responders_max: int = 2
    #: Repair requests queued at most while a pass runs.
    repairs_queued_max: int = 16
    gc: bool = True
    #: A tombstone younger than this is never purged (>= the max hint age).
    gc_grace_ms: int = 4 * 3600 * 1000
    #: Tombstones checked per GC round at most.
    gc_keys_per_round_max: int = 1_000


# --- effects (executed by the shell: shell/antientropy.py) -----------------------
class ScanLocal(NamedTuple):
    """Next ``limit`` records of this scan (a new scan on first use of ``token``):
    ``on_store_done(token, True, (chunk, last))`` with ``chunk`` a list of
    ``(key, record)``. ``limit`` 0 abandons the scan."""

    token: object
    limit: int


class ReadMany(NamedTuple):
    """``on_store_done(token, True, [record or None per key])``."""

    token: object
    keys: list


class PurgeMany(NamedTuple):
    """Delete each ``(key, version)`` only if the stored record is exactly that
    tombstone; ``on_store_done(token, True, purged_count)``."""

    token: object
    entries: list


AE_EFFECTS = (ScanLocal, ReadMany, PurgeMany)

STAT_NAMES = ("ae_passes", "ae_sessions", "ae_sessions_failed", "ae_buckets_compared",
              "ae_buckets_differing", "ae_keys_compared", "ae_keys_pushed", "ae_keys_pulled",
              "gc_rounds", "gc_tombstones_checked", "gc_tombstones_confirmed", "tombstones_purged")
#: What a pass summary (RepairReply.summary) reports.
SUMMARY_NAMES = ("sessions", "buckets_compared", "buckets_differing", "keys_compared",
                 "keys_pushed", "keys_pulled")


# --- pure helpers -----------------------------------------------------------------
def ring_digest(ring: Ring) -> int:
    return token(("|".join(ring.nodes) + f"/{ring.n}/{ring.vnodes}").encode())


def plist_of_token(ring: Ring, tok: int) -> tuple[str, ...]:
    return ring.preference_list_of_token(tok)


def shares_ranges(ring: Ring, a: str, b: str) -> bool:
    return any(a in pl and b in pl for pl in ring._plists)  # noqa: SLF001


def gc_candidate(rec: Record, plist: tuple[str, ...], me: str, now_ms: int, grace_ms: int) -> bool:
    """A tombstone this node should try to purge: it is the key's first primary
    (one driver per key) and the tombstone is older than the grace period."""
    return rec.value is None and bool(plist) and plist[0] == me and now_ms - rec.version.wall_ms >= grace_ms


def gc_holds(local: Record | None, version: Version, replica: bool = True) -> bool:
    """A node's answer to a GC check. A replica: it holds that tombstone or something
    newer. Any other ring member: it holds nothing older — a leftover copy of a range
    it lost (no cleanup ran) could become a replica again or be read one day, so an
    older one stops the purge until ``quorumkv cleanup`` drops it."""
    if local is None:
        return not replica
    return not version.newer_than(local.version)


def gc_confirmed(others: tuple[str, ...], held_by: set[str]) -> bool:
    """Purge only when every other ring member said yes (``gc_holds``)."""
    return all(p in held_by for p in others)


def purge_applies(local: Record | None, version: Version) -> bool:
    """What every engine's ``purge`` checks: the stored record is exactly that tombstone."""
    return local is not None and local.value is None and local.version.key() == version.key()


# --- state ------------------------------------------------------------------------
class _Pass:
    __slots__ = ("conn", "req_id", "peers", "peer_sessions", "summary", "synced", "failed", "periodic")

    def __init__(self, conn, req_id: int, peers: list[str], periodic: bool) -> None:
        self.conn = conn
        self.req_id = req_id
        self.peers = deque(peers)
        self.peer_sessions = 0
        self.summary = dict.fromkeys(SUMMARY_NAMES, 0)
        self.synced: list[str] = []
        self.failed: dict[str, str] = {}
        self.periodic = periodic


class _Session:
    __slots__ = ("sid", "peer", "stage", "tree", "deadline_ms", "theirs", "theirs_truncated", "collector",
                 "push", "pull", "inflight", "reading", "pending_pull", "local_writes", "truncated",
                 "gc_candidates")

    def __init__(self, sid: int, peer: str, leaf_bits: int) -> None:
        self.sid = sid
        self.peer = peer
        self.stage = "scan1"
        self.tree = MerkleTree(leaf_bits)
        self.deadline_ms = 0
        self.theirs: dict[bytes, Version] = {}
        self.theirs_truncated = False
        self.collector: BucketCollector | None = None
        self.push: deque = deque()
        self.pull: deque = deque()
        self.inflight = 0  # id of the AEExchange awaiting its answer, 0 = none
        self.reading = False  # a ReadMany for push records is out
        self.pending_pull: list[bytes] = []
        self.local_writes = 0
        self.truncated = False
        self.gc_candidates: list = []


class _Responder:
    __slots__ = ("conn", "req_id", "peer", "theirs", "tree", "collector", "nodes_compared", "deadline_ms")

    def __init__(self, conn, req_id, peer, theirs: MerkleTree, deadline_ms: int) -> None:
        self.conn = conn
        self.req_id = req_id
        self.peer = peer
        self.theirs = theirs
        self.tree = MerkleTree(theirs.leaf_bits)
        self.collector: BucketCollector | None = None
        self.nodes_compared = 0
        self.deadline_ms = deadline_ms


class _GcRound:
    __slots__ = ("candidates", "waiting", "held", "deadline_ms", "purging")

    def __init__(self, candidates, deadline_ms) -> None:
        self.candidates = candidates  # [(key, version, others)]
        self.waiting: dict[int, tuple[str, list]] = {}  # request id -> (peer, [(key, version)])
        self.held: dict[bytes, set[str]] = {}
        self.deadline_ms = deadline_ms
        self.purging = False


def install(core, settings: AESettings, now_ms: int) -> "AntiEntropy":
    return AntiEntropy(core, settings, now_ms)


class AntiEntropy:
    def __init__(self, core, settings: AESettings, now_ms: int) -> None:
        self.core = core
        self.s = settings
        for name in STAT_NAMES:
            core.stats.setdefault(name, 0)
        core.handle_requests({m.AETree: self._on_tree, m.AEExchange: self._on_exchange,  # noqa: SLF001
                                       m.AEGc: self._on_gc, m.Repair: self._on_repair})
        core.handle_responses({m.AETreeResp: self._on_tree_resp,  # noqa: SLF001
                                        m.AEExchangeResp: self._on_exchange_resp, m.AEGcResp: self._on_gc_resp})
        core.handle_stored("ae", self._on_store)  # noqa: SLF001
        core.add_ticker(self._tick)  # noqa: SLF001
        self.bucket = TokenBucket(settings.repair_per_s, now_ms)
        self.session: _Session | None = None
        self.pass_: _Pass | None = None
        self.repairs: deque = deque()  # (conn, req_id) waiting for a pass
        self.responders: dict[int, _Responder] = {}
        self.serving: dict[int, list] = {}  # exchange id -> [conn, req_id, writes_left, records, error, read_done]
        self.gc_round: _GcRound | None = None
        self._rr = 0
        jitter = core.rng.randrange(max(settings.interval_ms // 4, 1))
        self.next_periodic_ms = now_ms + settings.interval_ms + jitter
        self._ring_nodes = core.ring.nodes if core.ring is not None else ()
        self.ring_stable_since_ms = now_ms

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

    def _shared(self, tok: int, peer: str) -> bool:
        pl = plist_of_token(self.core.ring, tok)
        return peer in pl and self.core.node_id in pl

    # ------------------------------------------------------------ passes, ticks
    def _tick(self, now_ms: int, out: list) -> None:
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
            elif s.stage == "repair":
                self._pump(s, now_ms, out)
        for rid, r in list(self.responders.items()):
            if now_ms >= r.deadline_ms:
                del self.responders[rid]
                out.append(ScanLocal(("ae", None, rid, "rscan", rid), 0))
        g = self.gc_round
        if g is not None and not g.purging and now_ms >= g.deadline_ms:
            self._gc_decide(now_ms, out)
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

    def _on_repair(self, conn, msg, now_ms: int, out: list) -> None:
        if len(self.repairs) >= self.s.repairs_queued_max:
            out.append(Respond(conn, m.RepairReply(msg.id, self.core.node_id, False, message=(
                f"busy: repairs_queued_max={self.s.repairs_queued_max} repairs already queued"))))
            return
        self.repairs.append((conn, msg.id))
        if self.pass_ is None:
            self._tick(now_ms, out)

    def _start_pass(self, conn, req_id: int, peers: list[str], periodic: bool, now_ms: int, out: list) -> None:
        self.pass_ = _Pass(conn, req_id, peers, periodic)
        out.append(Log("info", "ae_pass_started", {"peers": peers, "periodic": periodic}))
        self._next_peer(now_ms, out)

    def _next_peer(self, now_ms: int, out: list) -> None:
        p = self.pass_
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
            self._tick(now_ms, out)

    # ----------------------------------------------------------- initiator side
    def _start_session(self, peer: str, now_ms: int, out: list) -> None:
        sid = self.core.new_op_id()
        self.session = _Session(sid, peer, self.s.leaf_bits)
        self.pass_.peer_sessions += 1
        out.append(ScanLocal(("ae", None, sid, "scan1", sid), self.s.scan_chunk_keys))

    def _end_session(self, s: _Session, now_ms: int, out: list, error: str = "") -> None:
        if self.session is not s:
            return
        self.session = None
        p = self.pass_
        if s.stage in ("scan1", "scan2"):
            out.append(ScanLocal(("ae", None, s.sid, s.stage, s.sid), 0))
        if error:
            self.core.stats["ae_sessions_failed"] += 1
            out.append(Log("warning", "ae_session_failed", {"peer": s.peer, "stage": s.stage, "error": error}))
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

    def _scan1_chunk(self, s: _Session, chunk: list, last: bool, now_ms: int, out: list) -> None:
        me, peer, ring = self.core.node_id, s.peer, self.core.ring
        st = self.s
        gc_on = st.gc and now_ms - self.ring_stable_since_ms >= st.gc_grace_ms and self.gc_round is None
        compared = 0
        for key, rec in chunk:
            tok = token(key)
            pl = plist_of_token(ring, tok)
            if peer in pl and me in pl:
                s.tree.add_entry(tok, key, rec.version)
                compared += 1
            if (gc_on and len(s.gc_candidates) < st.gc_keys_per_round_max
                    and gc_candidate(rec, pl, me, now_ms, st.gc_grace_ms)):
                s.gc_candidates.append((key, rec.version, pl[1:]))
        self._count("keys_compared", compared)
        if not last:
            out.append(ScanLocal(("ae", None, s.sid, "scan1", s.sid), st.scan_chunk_keys))
            return
        s.stage = "tree"
        s.deadline_ms = now_ms + st.request_timeout_ms
        out.append(Send(peer, m.AETree(s.sid, me, ring_digest(ring), st.leaf_bits, s.tree.leaves_bytes())))
        if s.gc_candidates and self.gc_round is None:
            self._gc_start(s.gc_candidates, now_ms, out)
            s.gc_candidates = []

    def _on_tree_resp(self, peer: str, msg, now_ms: int, out: list) -> None:
        s = self.session
        if s is None or s.sid != msg.id or s.stage != "tree":
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
        s.stage = "scan2"
        s.deadline_ms = 0
        out.append(ScanLocal(("ae", None, s.sid, "scan2", s.sid), self.s.scan_chunk_keys))

    def _scan2_chunk(self, s: _Session, chunk: list, last: bool, now_ms: int, out: list) -> None:
        col, bits, peer = s.collector, self.s.leaf_bits, s.peer
        for key, rec in chunk:
            tok = token(key)
            leaf = leaf_of(tok, bits)
            if leaf in col.wanted and self._shared(tok, peer):
                col.add(leaf, (key, rec.version), len(key) + ENTRY_OVERHEAD_BYTES)
        if not last:
            out.append(ScanLocal(("ae", None, s.sid, "scan2", s.sid), self.s.scan_chunk_keys))
            return
        kept = col.wanted
        mine = dict(col.collected())
        theirs = {}
        for key, ver in s.theirs.items():
            tok = token(key)
            if leaf_of(tok, bits) in kept and self._shared(tok, peer):
                theirs[key] = ver
        push, pull = compare_entries(mine, theirs)
        s.theirs = {}
        s.push, s.pull = deque(push), deque(pull)
        s.truncated = s.theirs_truncated or col.truncated
        s.collector = None
        s.stage = "repair"
        self._pump(s, now_ms, out)

    def _pump(self, s: _Session, now_ms: int, out: list) -> None:
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
            out.append(ReadMany(("ae", None, s.sid, "pushread", push), push))
        else:
            self._send_exchange(s, [], now_ms, out)

    def _send_exchange(self, s: _Session, records: list, now_ms: int, out: list) -> None:
        rid = self.core.new_op_id()
        s.inflight = rid
        s.deadline_ms = now_ms + self.s.request_timeout_ms
        out.append(Send(s.peer, m.AEExchange(rid, records, s.pending_pull)))

    def _push_read(self, s: _Session, keys: list, records: list, now_ms: int, out: list) -> None:
        s.reading = False
        batch, size = [], 0
        for i, (key, rec) in enumerate(zip(keys, records)):
            if rec is None:
                continue  # gone since the scan (purged): nothing to push
            rec_size = len(key) + len(rec.value or b"") + ENTRY_OVERHEAD_BYTES
            if batch and size + rec_size > self.s.message_bytes_max:
                s.push.extendleft(reversed(keys[i:]))
                break
            batch.append((key, rec))
            size += rec_size
        self._send_exchange(s, batch, now_ms, out)

    def _on_exchange_resp(self, peer: str, msg, now_ms: int, out: list) -> None:
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
            self.core.hlc.observe(rec.version.ts, now_ms)
            s.local_writes += 1
            out.append(StoreWrite(("ae", None, s.sid, "pullstore", s.sid), key, rec))
        self._pump(s, now_ms, out)

    # ------------------------------------------------------------ responder side
    def _on_tree(self, conn, msg, now_ms: int, out: list) -> None:
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
        self.responders[rid] = _Responder(conn, msg.id, msg.node, theirs, now_ms + self.s.request_timeout_ms)
        out.append(ScanLocal(("ae", None, rid, "rscan", rid), self.s.scan_chunk_keys))

    def _rscan_chunk(self, rid: int, chunk: list, last: bool, now_ms: int, out: list) -> None:
        r = self.responders.get(rid)
        if r is None:
            return
        me, ring, bits = self.core.node_id, self.core.ring, r.tree.leaf_bits
        col = r.collector
        for key, rec in chunk:
            tok = token(key)
            if col is None:
                pl = plist_of_token(ring, tok)
                if r.peer in pl and me in pl:
                    r.tree.add_entry(tok, key, rec.version)
            else:
                leaf = leaf_of(tok, bits)
                if leaf in col.wanted and self._shared(tok, r.peer):
                    col.add(leaf, (key, rec.version), len(key) + ENTRY_OVERHEAD_BYTES)
        if not last:
            out.append(ScanLocal(("ae", None, rid, "rscan", rid), self.s.scan_chunk_keys))
            return
        if col is None:
            leaves, r.nodes_compared = diff(r.theirs, r.tree)
            if leaves:
                r.collector = BucketCollector(leaves, self.s.session_keys_max, self.s.message_bytes_max)
                out.append(ScanLocal(("ae", None, rid, "rscan", rid), self.s.scan_chunk_keys))
                return
            reply = m.AETreeResp(r.req_id, True, nodes_compared=r.nodes_compared)
        else:
            reply = m.AETreeResp(r.req_id, True, leaves=col.leaves(), entries=col.collected(),
                                 truncated=col.truncated, nodes_compared=r.nodes_compared)
        del self.responders[rid]
        out.append(Respond(r.conn, reply))

    def _on_exchange(self, conn, msg, now_ms: int, out: list) -> None:
        if len(self.serving) >= EXCHANGES_SERVING_MAX:
            out.append(Respond(conn, m.AEExchangeResp(msg.id, False, f"busy (EXCHANGES_SERVING_MAX="
                                                                     f"{EXCHANGES_SERVING_MAX})")))
            return
        xid = self.core.new_op_id()
        state = self.serving[xid] = [conn, msg.id, len(msg.records), None, "", not msg.keys, len(msg.records)]
        for key, rec in msg.records:
            self.core.hlc.observe(rec.version.ts, now_ms)
            out.append(StoreWrite(("ae", None, xid, "xstore", xid), key, rec))
        if msg.keys:
            out.append(ReadMany(("ae", None, xid, "xread", msg.keys), msg.keys))
        self._exchange_maybe_done(xid, state, out)

    def _exchange_maybe_done(self, xid: int, state: list, out: list) -> None:
        conn, req_id, writes_left, found, error, read_done, stored = state
        if writes_left or not read_done:
            return
        del self.serving[xid]
        if error:
            out.append(Respond(conn, m.AEExchangeResp(req_id, False, error)))
            return
        records, deferred, size = [], [], 0
        for key, rec in found or []:
            if rec is None:
                continue
            rec_size = len(key) + len(rec.value or b"") + ENTRY_OVERHEAD_BYTES
            if records and size + rec_size > self.s.message_bytes_max:
                deferred.append(key)
                continue
            records.append((key, rec))
            size += rec_size
        out.append(Respond(conn, m.AEExchangeResp(req_id, True, "", stored, records, deferred)))

    # ---------------------------------------------------------------- storage
    def _on_store(self, token_, ok: bool, result, now_ms: int, out: list) -> None:
        _, _, ref, what, extra = token_
        s = self.session
        if what in ("scan1", "scan2"):
            if s is None or s.sid != ref or s.stage != what:
                return
            if not ok:
                return self._end_session(s, now_ms, out, error=f"scan failed: {result}")
            chunk, last = result
            (self._scan1_chunk if what == "scan1" else self._scan2_chunk)(s, chunk, last, now_ms, out)
        elif what == "rscan":
            r = self.responders.get(ref)
            if r is not None and not ok:
                del self.responders[ref]
                out.append(Respond(r.conn, m.AETreeResp(r.req_id, False, f"scan failed: {result}")))
            elif ok:
                self._rscan_chunk(ref, result[0], result[1], now_ms, out)
        elif what == "pushread":
            if s is not None and s.sid == ref:
                if not ok:
                    return self._end_session(s, now_ms, out, error=f"read failed: {result}")
                self._push_read(s, extra, result, now_ms, out)
        elif what == "pullstore":
            if s is not None and s.sid == ref:
                s.local_writes -= 1
                if not ok:
                    return self._end_session(s, now_ms, out, error=f"store failed: {result}")
                self._pump(s, now_ms, out)
        elif what in ("xstore", "xread"):
            state = self.serving.get(ref)
            if state is None:
                return
            if not ok:
                state[4] = str(result)
            if what == "xstore":
                state[2] -= 1
            else:
                state[3] = list(zip(extra, result)) if ok else []
                state[5] = True
            self._exchange_maybe_done(ref, state, out)
        elif what == "gcread":  # a ring member answering a GC check
            conn, req_id, entries = extra
            ring, me = self.core.ring, self.core.node_id
            held = [ok and ring is not None and gc_holds(rec, ver, me in ring.preference_list(key))
                    for rec, (key, ver) in zip(result if ok else [None] * len(entries), entries)]
            out.append(Respond(conn, m.AEGcResp(req_id, held)))
        elif what == "purge":
            conn, req_id = extra
            if ok:
                self.core.stats["tombstones_purged"] += result
            if conn is not None:
                out.append(Respond(conn, m.AEGcResp(req_id, [])))
            elif self.gc_round is not None:
                self.gc_round = None  # the driver's own purge is durable: round over

    # -------------------------------------------------------------- tombstone GC
    def _gc_start(self, candidates: list, now_ms: int, out: list) -> None:
        core = self.core
        members = tuple(p for p in core.ring.nodes if p != core.node_id) if core.ring is not None else ()
        if not all(core.is_alive(p) for p in members):
            return  # a down member may hold a primary's copy or a leftover: not now
        # Every member is asked (primaries: hold it; the others: hold nothing older).
        cands = [(key, ver, members) for key, ver, _ in candidates]
        if not cands:
            return
        self.core.stats["gc_rounds"] += 1
        self.core.stats["gc_tombstones_checked"] += len(cands)
        g = self.gc_round = _GcRound(cands, now_ms + self.s.request_timeout_ms)
        by_peer: dict[str, list] = {}
        for key, ver, others in cands:
            for p in others:
                by_peer.setdefault(p, []).append((key, ver))
        for peer, entries in by_peer.items():
            rid = self.core.new_op_id()
            g.waiting[rid] = (peer, entries)
            out.append(Send(peer, m.AEGc(rid, entries, False)))
        if not g.waiting:
            self._gc_decide(now_ms, out)

    def _on_gc_resp(self, peer: str, msg, now_ms: int, out: list) -> None:
        g = self.gc_round
        if g is None or g.purging or msg.id not in g.waiting:
            return
        who, entries = g.waiting.pop(msg.id)
        for (key, _), held in zip(entries, msg.held):
            if held:
                g.held.setdefault(key, set()).add(who)
        if not g.waiting:
            self._gc_decide(now_ms, out)

    def _gc_decide(self, now_ms: int, out: list) -> None:
        """All answers are in (or the deadline passed: silence counts as "no")."""
        g = self.gc_round
        g.purging = True
        confirmed = [(k, v, others) for k, v, others in g.candidates if gc_confirmed(others, g.held.get(k, set()))]
        if not confirmed:
            self.gc_round = None
            return
        self.core.stats["gc_tombstones_confirmed"] += len(confirmed)
        by_peer: dict[str, list] = {}
        for key, ver, others in confirmed:
            for p in others:
                by_peer.setdefault(p, []).append((key, ver))
        for peer, entries in by_peer.items():
            out.append(Send(peer, m.AEGc(self.core.new_op_id(), entries, True)))
        out.append(PurgeMany(("ae", None, 0, "purge", (None, 0)), [(k, v) for k, v, _ in confirmed]))
        out.append(Log("info", "tombstones_purged", {"count": len(confirmed)}))

    def _on_gc(self, conn, msg, now_ms: int, out: list) -> None:
        entries = list(msg.entries)
        if msg.purge:
            out.append(PurgeMany(("ae", None, msg.id, "purge", (conn, msg.id)), entries))
        else:
            out.append(ReadMany(("ae", None, msg.id, "gcread", (conn, msg.id, entries)), [k for k, _ in entries]))
