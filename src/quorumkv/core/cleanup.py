"""Cleanup: drop the records this node no longer replicates (Cassandra's ``nodetool
cleanup``).

A join moves ranges away from the nodes that held them; they keep their copies
(streaming copies, it never deletes). Such a *leftover* is never read, streamed,
repaired or handed off (only replicas are sources: ``ringchange``, ``antientropy``),
but it takes disk space and it holds tombstone GC back: a tombstone is purged only
when no node holds an older copy of its key (``antientropy.gc_holds``). ``Cleanup``
drops them:

* refused while a ring change is in progress (a join, replace or decommission
  anywhere in the cluster, or this node's own) — the ranges are moving;
* scans the local store in key order, ``CLEANUP_SCAN_KEYS`` per step, paced by a
  token bucket of ``keys_per_s`` (default ``CLEANUP_KEYS_PER_S``) so client traffic
  keeps its share of the disk;
* for every record whose key's preference list (current ring) does not name this
  node, asks the engine to delete it *at exactly that version* (``DropMany``,
  compare-and-delete: a write that arrived since the scan is kept);
* stops (``cleanup_aborted``) if the ring changes while it runs;
* reports progress in the node's statistics: ``cleanup_running``, ``cleanup_dry_run``,
  ``cleanup_keys_scanned``, ``cleanup_keys_not_replicated`` (found),
  ``cleanup_keys_dropped``, ``cleanup_runs``, ``cleanup_aborted``.

``dry_run`` scans and counts the same way and drops nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from . import messages as m
from .effects import Log, ScanRange
from .hints import TokenBucket
from .messages_ring import Cleanup as CleanupMsg
from .ring import Ring
from .tokens import StoreKind
from .version import Version

if TYPE_CHECKING:
    from .node import NodeCore
    from .ringchange import RingChange

#: Keys scanned per step (one ScanRange; bounds the memory of one step).
CLEANUP_SCAN_KEYS = 512
#: Keys scanned per second at most by default: a full scan of 10 M keys takes ~30 min
#: and leaves the disk to client traffic (Cassandra runs cleanup as a throttled
#: compaction for the same reason).
CLEANUP_KEYS_PER_S = 5_000

STAT_NAMES = ("cleanup_running", "cleanup_dry_run", "cleanup_keys_scanned", "cleanup_keys_not_replicated",
              "cleanup_keys_dropped", "cleanup_runs", "cleanup_aborted")


class DropMany(NamedTuple):
    """Delete each ``(key, version)`` only if the stored record is exactly that
    version (value or tombstone); ``on_store_done(token, True, dropped_count)``."""

    token: object
    entries: list[tuple[bytes, Version]]


def not_replicated(ring: Ring | None, me: str, key: bytes) -> bool:
    """A record this node holds but does not replicate under ``ring`` (a leftover)."""
    return ring is not None and me not in ring.preference_list(key)


class Cleanup:
    def __init__(self, core: NodeCore, ring_change: RingChange) -> None:
        self.core = core
        self.ring_change = ring_change
        for name in STAT_NAMES:
            core.stats.setdefault(name, 0)
        self.stats = core.stats
        self.running = False
        self.dry_run = False
        self.after: bytes | None = None
        self.busy = False  # a scan or a drop is out
        self.ring_nodes: tuple[str, ...] = ()
        self.bucket: TokenBucket | None = None
        self.keys_per_s = CLEANUP_KEYS_PER_S
        core.handle_requests({CleanupMsg: self._on_request})
        core.handle_stored(StoreKind.CLEANUP_SCAN, self._on_scan)
        core.handle_stored(StoreKind.CLEANUP_DROP, self._on_dropped)
        core.add_ticker(self.tick)

    def refusal(self) -> str:
        """Why a cleanup cannot start now, or ""."""
        core = self.core
        if core.ring is None:
            return "this node has no ring yet"
        if self.ring_change.in_progress():
            return f"a {self.ring_change.mode} of this node is in progress"
        if core.future_ring is not None:
            return "a ring change is in progress (a node is joining or leaving); run cleanup when it is done"
        if core.node_id not in core.ring.nodes:
            return f"{core.node_id} is not a ring member"
        return ""

    def _on_request(self, conn: object, msg: CleanupMsg, now_ms: int, out: list[Any]) -> None:
        core = self.core
        if self.running:
            core.respond(conn, m.Reply(msg.id, m.OK, message=(
                f"a cleanup is already running on {core.node_id} "
                f"(scanned {self.stats['cleanup_keys_scanned']})")), now_ms, out)
            return
        why = self.refusal()
        if why:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message=f"cleanup refused: {why}"), now_ms, out)
            return
        if msg.keys_per_s < 0:
            core.respond(conn, m.Reply(msg.id, m.INVALID, message="keys_per_s must be >= 0"), now_ms, out)
            return
        self.running = True
        self.dry_run = msg.dry_run
        self.keys_per_s = msg.keys_per_s or CLEANUP_KEYS_PER_S
        self.bucket = TokenBucket(self.keys_per_s, now_ms)
        self.after = None
        self.busy = False
        assert core.ring is not None  # refusal() checked it
        self.ring_nodes = core.ring.nodes
        for name in ("cleanup_keys_scanned", "cleanup_keys_not_replicated", "cleanup_keys_dropped"):
            self.stats[name] = 0
        self.stats["cleanup_running"] = 1
        self.stats["cleanup_dry_run"] = int(msg.dry_run)
        out.append(Log("info", "cleanup_started", {"dry_run": msg.dry_run, "keys_per_s": self.keys_per_s}))
        core.respond(conn, m.Reply(msg.id, m.OK, message=(
            f"cleanup{' (dry run)' if msg.dry_run else ''} started on {core.node_id} "
            f"at {self.keys_per_s} keys/s")), now_ms, out)
        self.tick(now_ms, out)

    def _stop(self, out: list[Any], aborted: str = "") -> None:
        self.running = False
        self.stats["cleanup_running"] = 0
        self.stats["cleanup_runs"] += 1
        fields = {k: self.stats[k] for k in ("cleanup_keys_scanned", "cleanup_keys_not_replicated",
                                             "cleanup_keys_dropped")}
        if aborted:
            self.stats["cleanup_aborted"] += 1
            out.append(Log("warning", "cleanup_aborted", {"reason": aborted, **fields}))
        else:
            out.append(Log("info", "cleanup_done", {"dry_run": self.dry_run, **fields}))

    def tick(self, now_ms: int, out: list[Any]) -> None:
        if not self.running or self.busy:
            return
        core = self.core
        if core.ring is None or core.ring.nodes != self.ring_nodes or core.future_ring is not None:
            self._stop(out, "the ring changed")
            return
        assert self.bucket is not None, "a running cleanup has its bucket"
        got = self.bucket.take(CLEANUP_SCAN_KEYS, now_ms)
        if got <= 0:
            return
        self.busy = True
        out.append(ScanRange((StoreKind.CLEANUP_SCAN, None, 0, got), self.after, got))

    def _on_scan(self, token: tuple[Any, ...], ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        self.busy = False
        if not self.running:
            return
        if not ok:
            self._stop(out, f"scan failed: {result}")
            return
        limit = token[3]
        core = self.core
        self.stats["cleanup_keys_scanned"] += len(result)
        ring = core.ring
        if ring is None or ring.nodes != self.ring_nodes:
            self._stop(out, "the ring changed")
            return
        drop = [(k, r.version) for k, r in result if not_replicated(ring, core.node_id, k)]
        self.stats["cleanup_keys_not_replicated"] += len(drop)
        done = len(result) < limit
        if result:
            self.after = result[-1][0]
        if drop and not self.dry_run:
            self.busy = True
            out.append(DropMany((StoreKind.CLEANUP_DROP, None, 0, done), drop))
            return
        if done:
            self._stop(out)

    def _on_dropped(self, token: tuple[Any, ...], ok: bool, result: Any, now_ms: int, out: list[Any]) -> None:
        self.busy = False
        if not self.running:
            return
        if not ok:
            self._stop(out, f"drop failed: {result}")
            return
        self.stats["cleanup_keys_dropped"] += int(result)
        if token[3]:
            self._stop(out)
