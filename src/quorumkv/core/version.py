"""Versions: hybrid logical clock timestamps with a node-id tie-break.

A version orders writes to one key: the pair ``(ts, node)`` compared
lexicographically gives last-writer-wins. ``ts`` is an HLC timestamp (Kulkarni et
al., "Logical Physical Clocks", 2014) packed into one integer: the physical part in
milliseconds shifted left by ``LOGICAL_BITS`` plus a logical counter. It never goes
backwards on a node, even when the wall clock does, and it moves past any timestamp
the node has seen from others, so causally later writes get larger versions.

``Version.ctx`` is reserved for a causal context (vector clock) when siblings are
enabled; LWW comparison ignores it.
"""

from __future__ import annotations

import msgspec

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


class Version(msgspec.Struct, frozen=True, array_like=True, order=False):
    ts: int
    node: str
    ctx: dict[str, int] | None = None

    def key(self) -> tuple[int, str]:
        return (self.ts, self.node)

    def newer_than(self, other: "Version | None") -> bool:
        if other is None:
            return True
        return (self.ts, self.node) > (other.ts, other.node)

    @property
    def wall_ms(self) -> int:
        return self.ts >> LOGICAL_BITS

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.ts & LOGICAL_MASK}@{self.node}"


class Record(msgspec.Struct, frozen=True, array_like=True):
    """What a replica stores for a key: a version and a value, or a tombstone."""

    version: Version
    value: bytes | None  # None: tombstone (a delete is a version, not a removal)
    #: Absolute expiry (wall-clock ms, 0 = never). It travels with the version, so
    #: every replica expires the value at the same moment, and an expired record
    #: still outranks the older versions that repair might otherwise bring back.
    expires_ms: int = 0

    @property
    def tombstone(self) -> bool:
        return self.value is None

    def live_at(self, now_ms: int) -> bool:
        """True when the record holds a value that has not expired at ``now_ms``."""
        return self.value is not None and (self.expires_ms == 0 or now_ms < self.expires_ms)


def newest(records) -> Record | None:
    """The newest of an iterable of records (None entries are skipped)."""
    best: Record | None = None
    for rec in records:
        if rec is not None and (best is None or rec.version.newer_than(best.version)):
            best = rec
    return best


def pack_ts(wall_ms: int, logical: int) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


class HLC:
    """Hybrid logical clock. Pure: the caller passes the wall-clock reading."""

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def now(self, wall_ms: int) -> int:
        """A timestamp for a local event (a write this node coordinates)."""
        candidate = wall_ms << LOGICAL_BITS
        if candidate > self.last:
            self.last = candidate
        else:
            # Wall clock stalled or went back: advance the logical part. When the
            # counter is exhausted the physical part moves on by one ms; still monotonic.
            self.last += 1
        return self.last

    def observe(self, remote_ts: int, wall_ms: int) -> None:
        """Merge a timestamp seen in a message so later local events order after it."""
        if remote_ts > self.last:
            self.last = remote_ts
        candidate = wall_ms << LOGICAL_BITS
        if candidate > self.last:
            self.last = candidate
