"""Ring sync after a start: whether a node that just started may trust its ring
(docs/ring-changes.md, "Restarts"). Moved out of core/membership.py, which
re-exports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .membership import Membership


class RingSync:
    """Whether a node that just started may trust its ring (docs/ring-changes.md,
    "Restarts"). A restarted node starts from the table it saved, which misses every
    ring change that happened while it was down; routing strict requests by it
    breaks quorum intersection. So it is *unsynced* until it has merged the tables
    of a majority of the members it knows, itself included: push-pull gossip
    exchanges it started since this start (a ``GossipAck`` from each of
    ``needed()`` distinct peers). Why a majority, not one peer: a peer may be as
    stale as we are (down across the same change, or restarted with us); every node
    that was live while a change settled knows it, so unless half the members were
    down for the whole of it, any majority includes one that knows. It needs no
    special case for a whole-cluster restart (each node hears from the others), and
    a node that knows no other member (a single-node cluster, or a new node that
    will take its whole table from a seed) is synced at once. Synced stays synced
    until the process stops: from then on gossip keeps the ring current, as for
    any live node."""

    __slots__ = ("heard", "synced", "since_ms", "synced_ms")

    def __init__(self, membership: "Membership", now_ms: int, synced: bool = False) -> None:
        self.heard: set[str] = set()
        self.since_ms = now_ms
        self.synced_ms: int | None = now_ms if synced else None
        self.synced = synced
        self.update(membership, now_ms)

    @staticmethod
    def needed(membership: "Membership") -> int:
        """Peers to hear from: a majority of the non-departed members, ourselves
        counted (3 members: 1 peer; 5: 2; 6: 3)."""
        return (len(membership.peers()) + 1) // 2

    def heard_from(self, peer: str, membership: "Membership", now_ms: int) -> bool:
        """``peer`` answered our gossip (its table is merged). True when this makes us synced."""
        if self.synced or peer not in membership.endpoints or peer == membership.self_id:
            return False
        self.heard.add(peer)
        return self.update(membership, now_ms)

    def update(self, membership: "Membership", now_ms: int) -> bool:
        if self.synced:
            return False
        live = set(membership.peers())
        if len(self.heard & live) >= self.needed(membership):
            self.synced = True
            self.synced_ms = now_ms
            self.heard = set()
            return True
        return False

    def unheard(self, membership: "Membership") -> list[str]:
        """Peers to gossip to while unsynced: every member not heard from yet."""
        return [p for p in membership.peers() if p not in self.heard]

