"""A node's settings and the levels its requests run at.

``NodeSettings`` is what the shell's config (or a test) hands ``NodeCore``.
``Levels`` turns a request's R or W (a count, a name such as "QUORUM", or the node
default) into a count on the ring in force, and says which replica sets a key's
round must satisfy while a ring change moves it (``joint_sets``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..errors import InvalidRequestError, UnavailableError
from . import messages as m
from .clock import MAX_CLOCK_SKEW_MS_DEFAULT
from .consistency import resolve
from .hints import HintSettings
from .membership import DetectorSettings
from .ring import Ring

if TYPE_CHECKING:
    from .node import NodeCore

#: ((name, replicas, count), ...): the current and the future replica set of a key
#: a ring change moves, each with the count it must reach.
JointSets = tuple[tuple[str, tuple[str, ...], int], ...]


class NodeSettings(NamedTuple):
    node_id: str
    n: int = 3
    r: int | str = 2
    w: int | str = 2
    timeout_ms_read: int = 2_000
    timeout_ms_write: int = 2_000
    vnodes: int = 256
    address: str = ""
    generation: int = 0
    seeds: tuple[str, ...] = ()
    detector: DetectorSettings = DetectorSettings()
    gossip_interval_ms: int = 500
    #: Send a read to one more replica when the first ones have not answered within
    #: this long (Cassandra's speculative retry); 0 turns it off.
    speculative_retry_ms: int = 20
    read_repair: bool = True
    #: Sloppy quorum (Dynamo, Riak's default): fallbacks standing in for down primaries
    #: count towards R and W. False makes every request primaries-only (Riak pr/pw).
    #: A level of ALL always means every *primary*, whatever this says.
    sloppy_quorum: bool = True
    #: Send every read to all live primaries, not just the R best (Riak's way: more
    #: load, more read repair; Cassandra's way, the default, sends to R plus a
    #: speculative extra when one is slow).
    read_all_replicas: bool = False
    hints: HintSettings = HintSettings()
    timeout_ms_inspect: int = 1_000
    rng_seed: int = 0
    #: Start as the replacement of a dead node with this node's id (``replacing``).
    replace: bool = False
    #: How long a node that starts joining, replacing or leaving waits for gossip to
    #: tell every coordinator before it streams (2 gossip rounds and some).
    settle_ms: int = 2_000
    #: CockroachDB's max-offset rule: a node whose clock is further than this off
    #: from most live peers refuses to coordinate writes (core/clock.py); 0: off.
    max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS_DEFAULT
    #: The shell's tombstone GC grace (0: GC off). A session floor older than it may
    #: name a purged tombstone, so a read finding no copy at all honours it.
    tombstone_gc_grace_ms: int = 0
    #: After a start, how long a client request that needs an up-to-date ring (a
    #: strict Get/Put, a linearizable op, a typed update, a scan) waits for the node
    #: to hear the tables of a majority of members (``RingSync``) before it is
    #: answered UNAVAILABLE rather than served by a ring that may be stale.
    timeout_ms_ring_sync: int = 2_000


def level_from_wire(code: int) -> int | str | None:
    if code == m.LEVEL_DEFAULT:
        return None
    if code < 0:
        try:
            return m.LEVEL_NAMES[code]
        except KeyError:
            raise InvalidRequestError(f"unknown consistency level code {code}") from None
    return code


class Levels:
    """R and W as counts on the ring ``core`` routes by (``core.ring``/``future_ring``)."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.settings = core.settings
        # A bad R or W fails here, at startup; later ring changes never raise (rebuild).
        resolve(self.settings.r, self.settings.n, 1, "R")
        resolve(self.settings.w, self.settings.n, 1, "W")

    def rebuild(self) -> None:
        """The membership changed: the ring(s) and the default R/W on it."""
        core, s = self.core, self.settings
        members = core.membership.ring_members()
        core.ring = Ring(members, s.n, s.vnodes) if members else None
        future = core.membership.future_ring_members()
        core.future_ring = Ring(future, s.n, s.vnodes) if future and future != members else None
        n = core.replication_factor()
        core.default_r = self._default_count(s.r, n, "R")
        core.default_w = self._default_count(s.w, n, "W")

    def _default_count(self, level: int | str, n: int, what: str) -> int:
        """The configured R or W as a count on an ``n``-replica ring. Never raises: this
        runs inside gossip handling. An integer larger than a shrunken ring is kept (each
        request then fails UNAVAILABLE, saying why: ``count``); the configured N
        accepts it (checked at startup)."""
        try:
            return resolve(level, n, 1, what)
        except InvalidRequestError:
            return resolve(level, self.settings.n, 1, what)

    def count(self, level: int | str | None, n: int, default: int, what: str) -> int:
        """A request's R or W on an ``n``-replica ring. Impossible even with the
        configured N: the client's fault (InvalidRequestError). Possible with the
        configured N but not with the ring as it is now: UnavailableError."""
        configured = self.settings.n
        try:
            return resolve(level, n, default, what)
        except InvalidRequestError:
            if n >= configured:
                raise
            count = resolve(level, configured, default, what)
            raise UnavailableError(f"{what}={count} needs {count} replicas but the ring has only {n} "
                                   f"node{'s' if n > 1 else ''} (N={configured} configured)") from None

    def joint_sets(self, key: bytes, primaries: tuple[str, ...], level: int | str | None, needed: int,
                   is_get: bool) -> JointSets | None:
        """While a ring change moves ``key``: its current and future replica sets, each
        with the count it needs, ``(("current", set, R|W), ("future", set, R|W))``;
        None otherwise. Both sets must reach their count (docs/failures.md, "Ring
        changes": why that keeps strict quorums intersecting across the change)."""
        future_ring = self.core.future_ring
        if future_ring is None:
            return None
        future = future_ring.preference_list(key)
        if set(future) == set(primaries):
            return None
        need = needed
        if len(future) != len(primaries):  # the ring grows past, or shrinks below, N
            if level is None:
                level = self.settings.r if is_get else self.settings.w
            try:
                need = resolve(level, len(future), 1, "R" if is_get else "W")
            except InvalidRequestError:
                need = min(needed, len(future))
        return (("current", primaries, needed), ("future", future, need))
