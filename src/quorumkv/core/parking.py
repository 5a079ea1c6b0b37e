"""Client requests held while a restarted node's ring is not yet synced.

A (re)started node's ring may be older than the cluster's: requests that route by
it and promise more than a weak read wait until it has heard a majority's tables
(``RingSync``, docs/ring-changes.md, "Restarts"), at most ``timeout_ms_ring_sync``
and RING_SYNC_PARKED_MAX of them; then they are served in arrival order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, UnavailableError
from . import dynamic
from . import messages as m
from .consistency import resolve
from .levels import level_from_wire
from .membership import RingSync
from .messages_cas import Atomic, AtomicReply
from .messages_scan import Scan
from .messages_typed import Update

if TYPE_CHECKING:
    from .node import NodeCore

#: Client requests a node holds while its ring is not yet synced after a start: one
#: client pipeline's worth (CLIENT_PIPELINE_MAX). Normally the wait is one gossip
#: round trip; past the bound a request is answered UNAVAILABLE at once rather than
#: queued without limit.
RING_SYNC_PARKED_MAX = 1_000
#: Client request types that always wait for the ring sync: linearizable operations,
#: typed updates and scans route by the ring and promise more than a weak read. A
#: Get/Put waits only when it asks R + W > N (``_strict``).
RING_SYNC_GATED = (Atomic, Update, Scan)

Out = list[Any]


class Parking:
    def __init__(self, core: NodeCore, now_ms: int, synced: bool) -> None:
        self.core = core
        self.ring_sync = RingSync(core.membership, now_ms, synced)
        self.parked: deque[tuple[int, Any, Any]] = deque()  # (deadline_ms, conn, msg), arrival order
        core.add_busy_probe(lambda: bool(self.parked))
        core.stats.update({"ring_synced": int(self.ring_sync.synced), "ring_sync_ms": 0, "ring_sync_waits": 0,
                           "ring_sync_refused": 0})

    def holds(self, conn: Any, msg: Any, now_ms: int, out: Out) -> bool:
        """The ring is not synced yet: True if ``msg`` is held (or refused) here."""
        t = type(msg)
        if t is m.Get or t is m.Put:
            if not self._strict(msg):
                return False
        elif t not in RING_SYNC_GATED:
            return False
        core = self.core
        if len(self.parked) >= RING_SYNC_PARKED_MAX:
            self._refuse(conn, msg, f"node {core.node_id} restarted and has not yet heard the "
                         f"membership of a majority of the cluster; RING_SYNC_PARKED_MAX="
                         f"{RING_SYNC_PARKED_MAX} requests already wait for it", now_ms, out)
            return True
        core.stats["ring_sync_waits"] += 1
        self.parked.append((now_ms + core.settings.timeout_ms_ring_sync, conn, msg))
        return True

    def _strict(self, msg: m.Get | m.Put) -> bool:
        """A Get/Put that asks R + W > N (or a freshness/latency target): it must not
        be coordinated by a ring that may be stale. A request whose level is invalid
        is not held: the coordinator says why at once."""
        core = self.core
        if core.ring is None or dynamic.wants_target(msg):
            return True
        n = core.ring.n
        is_get = type(msg) is m.Get
        try:
            level = level_from_wire(msg.r if isinstance(msg, m.Get) else msg.w)
            needed = resolve(level, n, core.default_r if is_get else core.default_w, "R" if is_get else "W")
        except (InvalidRequestError, UnavailableError):
            return False
        return (needed + core.default_w if is_get else core.default_r + needed) > n

    def _refuse(self, conn: Any, msg: Any, text: str, now_ms: int, out: Out) -> None:
        core = self.core
        core.stats["ring_sync_refused"] += 1
        core.stats["requests"] += 1
        if type(msg) is Atomic and not msg.plain:
            core.respond(conn, AtomicReply(msg.id, m.UNAVAILABLE, message=text), now_ms, out)
        else:  # a plain Get/Put made linearizable by the node default expects a plain Reply
            core.respond(conn, m.Reply(msg.id, m.UNAVAILABLE, message=text), now_ms, out)

    def tick(self, now_ms: int, out: Out) -> None:
        """Answer the held requests whose ``timeout_ms_ring_sync`` has passed."""
        parked = self.parked
        if not parked:
            return
        core = self.core
        heard = len(core.ring_sync.heard)
        needed = RingSync.needed(core.membership)
        while parked and parked[0][0] <= now_ms:
            _, conn, msg = parked.popleft()
            self._refuse(conn, msg, (
                f"node {core.node_id} restarted and its ring may be stale: it has heard the membership of "
                f"{heard} of the {needed} peers it needs (a majority of the cluster) within "
                f"timeout_ms_ring_sync={core.settings.timeout_ms_ring_sync}; try another node or again "
                "later"), now_ms, out)

    def synced(self, now_ms: int, out: Out) -> None:
        """A majority's tables are merged: serve what waited, in arrival order."""
        core = self.core
        core.stats["ring_synced"] = 1  # in ``status``; no log line: most starts sync in one round trip
        core.stats["ring_sync_ms"] = now_ms - core.ring_sync.since_ms
        parked, self.parked = self.parked, deque()
        for _, conn, msg in parked:  # (a request, delivered again)
            out.extend(core.on_request(conn, msg, now_ms))
