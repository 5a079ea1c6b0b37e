"""Versions: hybrid logical clock timestamps with a node-id tie-break.

A version orders writes to one key: the pair ``(ts, node)`` compared
lexicographically gives last-writer-wins. ``ts`` is an HLC timestamp (Kulkarni et
al., "Logical Physical Clocks", 2014) packed into one integer: the physical part in
milliseconds shifted left by ``LOGICAL_BITS`` plus a logical counter. It never goes
backwards on a node, even when the wall clock does, and it moves past any timestamp
the node has seen from others, so causally later writes get larger versions.

Two guarantees the clock alone cannot give are added around it: a *durable ceiling*
(``core/clock.py``: the node never issues a timestamp above one it has persisted, and
starts above it after a restart, so its clock never runs backwards across restarts)
and *session floors* (``SessionContext`` below: a client's later write is stamped
above every version it has seen, whatever the coordinator's wall clock says).

``Version.ctx`` is None for plain last-writer-wins records. A *typed* record
(counter, set, map, causal sibling set: core/typed.py) carries its type tag and a
digest of its state there (``{"t": kind, "h": digest}``); comparisons by version
ignore it, and its string form shows it (``…@n1 set#1a2b3c4d``) so ``inspect``
tells replicas holding different states of one version apart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import msgspec

LOGICAL_BITS = 16
_KIND_NAMES = {1: "causal", 2: "counter", 3: "set", 4: "map"}  # core/typed.py's kinds, for __str__
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
    def typed(self) -> bool:
        """A typed record's version (core/typed.py: counter, set, map, siblings): its
        ``ctx`` carries the kind ``"t"``. A CASPaxos record's ``ctx`` names its parent
        (core/paxos.py) and is *not* typed: it stays last-writer-wins."""
        return self.ctx is not None and "t" in self.ctx

    @property
    def wall_ms(self) -> int:
        return self.ts >> LOGICAL_BITS

    def __str__(self) -> str:
        base = f"{self.wall_ms}.{self.ts & LOGICAL_MASK}@{self.node}"
        if self.typed and self.ctx is not None:  # a typed record: its type and state digest (core/typed.py)
            kind = _KIND_NAMES.get(self.ctx["t"], str(self.ctx["t"]))
            return f"{base} {kind}#{self.ctx.get('h', 0) >> 31:08x}"
        return base


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


def newest(records: Iterable[Record | None]) -> Record | None:
    """The newest of an iterable of records (None entries are skipped)."""
    best: Record | None = None
    for rec in records:
        if rec is not None and (best is None or rec.version.newer_than(best.version)):
            best = rec
    return best


def pack_ts(wall_ms: int, logical: int) -> int:
    return (wall_ms << LOGICAL_BITS) | logical


class HLC:
    """Hybrid logical clock. Pure: the caller passes the wall-clock reading.

    ``limit`` (None: none) is the durable ceiling the owner has persisted: ``now``
    never returns a timestamp above it (the owner checks ``peek`` first and waits
    for a higher ceiling; reaching past it is a bug, so it is asserted).
    """

    __slots__ = ("last", "limit")

    def __init__(self, last: int = 0) -> None:
        self.last = last
        self.limit: int | None = None

    def peek(self, wall_ms: int) -> int:
        """The timestamp ``now(wall_ms)`` would return, without issuing it."""
        return max(wall_ms << LOGICAL_BITS, self.last + 1)

    def now(self, wall_ms: int) -> int:
        """A timestamp for a local event (a write this node coordinates)."""
        candidate = wall_ms << LOGICAL_BITS
        if candidate > self.last:
            self.last = candidate
        else:
            # Wall clock stalled or went back: advance the logical part. When the
            # counter is exhausted the physical part moves on by one ms; still monotonic.
            self.last += 1
        assert self.limit is None or self.last <= self.limit, (self.last, self.limit)
        return self.last

    def observe(self, remote_ts: int, wall_ms: int) -> None:
        """Merge a timestamp seen in a message so later local events order after it."""
        if remote_ts > self.last:
            self.last = remote_ts
        candidate = wall_ms << LOGICAL_BITS
        if candidate > self.last:
            self.last = candidate


#: Keys whose floor one session remembers (least recently used forgotten first). A
#: forgotten key keeps monotonic writes (the session-wide floor) but its reads fall
#: back to what R + W > N gives. 4,096 keys of 64 bytes is ~0.5 MB per session.
SESSION_KEYS_MAX = 4_096


class SessionContext:
    """Bayou's session guarantees, client side (Terry et al., 1994).

    A session remembers the newest version it has seen — overall (``floor_ts``)
    and per key (``floor(key)``) — from its writes' replies and its reads' replies.
    It sends ``floor_ts`` with every write (``Put.after_ts``): the coordinator moves
    its HLC past it before stamping, so the write is newer than everything the
    session saw (monotonic writes, writes-follow-reads), whatever the coordinator's
    wall clock says. It sends the key's floor with every read (``Get.floor``): the
    coordinator answers only with that version or a newer one (read-your-writes,
    monotonic reads). Pure and small: ``Client``, ``AsyncClient`` and the RESP
    front end (one per connection) each keep one.
    """

    __slots__ = ("floor_ts", "_keys", "keys_max")

    def __init__(self, keys_max: int = SESSION_KEYS_MAX) -> None:
        self.floor_ts = 0
        self._keys: OrderedDict[bytes, Version] = OrderedDict()
        self.keys_max = keys_max

    def floor(self, key: bytes) -> Version | None:
        """The newest version of ``key`` this session has seen (None: none remembered)."""
        return self._keys.get(key)

    def saw(self, key: bytes, version: Version | None) -> None:
        """A reply named ``version`` for ``key`` (a write's version, or a read's)."""
        if version is None:
            return
        if version.ts > self.floor_ts:
            self.floor_ts = version.ts
        cur = self._keys.get(key)
        if cur is None or version.newer_than(cur):
            self._keys[key] = Version(version.ts, version.node)
        if cur is not None or key in self._keys:
            self._keys.move_to_end(key)
        while len(self._keys) > self.keys_max:
            self._keys.popitem(last=False)

    def reset(self) -> None:
        """Forget everything (a new session)."""
        self.floor_ts = 0
        self._keys.clear()

    def keys_remembered(self) -> int:
        """Keys whose floor is remembered (no ``__len__``: an empty session must not be falsy)."""
        return len(self._keys)
