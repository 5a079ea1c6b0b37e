"""Membership by push-pull gossip, and failure detection by phi accrual.

Two kinds of state, kept apart on purpose (as in Cassandra), each an enum:

* **Gossiped** (``Endpoint``, ``Status``): what a node says about itself — address,
  status (joining / up / leaving / left / replacing: its part in the ring), its
  ``generation`` (set when the process starts: a restart gets a new, larger one) and
  a ``version`` it bumps whenever it changes something. Merge rule: the entry with
  the larger ``(generation, version)`` wins, so a rumour from before a restart — or
  an older rumour in general — always loses. Only the node itself bumps its own
  entry, along ``STATUS_TRANSITIONS``.
* **Local** liveness (``Liveness``: alive / suspect / down): each node's own
  judgement from the heartbeats it receives directly, through a phi-accrual detector
  (core/detector.py), along ``LIVENESS_TRANSITIONS``. Never gossiped: a partition
  should not let one side declare the other dead for everyone. ``cluster status``
  shows an alive member whose status is up as "up" (``state_of``).

Gossip is digest-driven: every heartbeat carries the sender's ``digest()`` (a hash
of its whole table), so two nodes whose tables agree exchange nothing more; a node
gossips its table (push-pull) only to peers whose last digest differed from its own
(``gossip_targets``). An idle cluster sends no tables at all, and a change spreads
along the probes, which reach every peer every probe cycle (memberlist's push-pull
sync, with the comparison made cheap by the digest).

Heartbeats are SWIM-style probes (Das et al. 2002; memberlist's probe loop), not
all-to-all: every protocol period (``heartbeat_interval_ms``) a node probes
``PROBE_FANOUT`` peers, taken round-robin from a random order of its peers
(``probe_targets``), and each probed peer answers with a heartbeat of its own. A
probe received and an answer received both feed the sender's detector, so a node
hears from each peer about every ``peers / PROBE_FANOUT`` periods, and a node sends
and receives O(1) heartbeats per period however large the cluster (all-to-all was
O(n) per node, O(n^2) in all).

A node is suspected when phi crosses ``phi_suspect`` and declared down when it has
stayed suspect for ``suspect_to_down_ms``; one heartbeat makes it alive again. While
a peer is suspect the node probes it directly each period (at most
``SUSPECTS_PROBED_MAX`` suspects a period) and asks ``INDIRECT_PROBES`` other live
peers to probe it too (SWIM's indirect probe); a helper that hears from the suspect
vouches for it, which restarts the suspicion timeout (``vouch``) instead of making
it alive: routing needs a direct link, so a peer only this node cannot reach stays
suspect (not routed to) rather than going down. Liveness stays local: suspicion is
not disseminated (memberlist gossips it).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import NamedTuple

import msgspec

from .detector import PHI_WINDOW, DetectorSettings, PhiDetector
from .rand import SplitMix64
from .ringsync import RingSync

__all__ = ["PHI_WINDOW", "DetectorSettings", "PhiDetector", "RingSync"]  # re-exported


class Status(StrEnum):
    """What a node gossips about itself (the values are the wire's)."""

    JOINING = "joining"  # streaming its ranges in; not on the ring yet
    UP = "up"  # owns its ranges
    LEAVING = "leaving"  # decommissioning: still owns its ranges, streaming them out
    LEFT = "left"  # gone for good (kept so a restart does not bring it back)
    REPLACING = "replacing"  # took a dead node's id: takes writes, not reads, until streamed


class Liveness(StrEnum):
    """This node's own judgement of a peer (never gossiped, never on the wire)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DOWN = "down"

    @property
    def shown(self) -> str:
        """The word ``cluster status``, metrics and logs use ("up" for alive)."""
        return Status.UP.value if self is Liveness.ALIVE else self.value


JOINING, UP, LEAVING, LEFT, REPLACING = Status.JOINING, Status.UP, Status.LEAVING, Status.LEFT, Status.REPLACING
ALIVE, SUSPECT, DOWN = Liveness.ALIVE, Liveness.SUSPECT, Liveness.DOWN
STATUSES = tuple(Status)
#: A node's own status changes (``set_status``), the ring-change steps
#: (docs/ring-changes.md); setting the status it has again is allowed (a retried step).
STATUS_TRANSITIONS: dict[Status, frozenset[Status]] = {
    JOINING: frozenset({UP, LEAVING}),  # streamed in; or decommissioned before it was admitted
    REPLACING: frozenset({UP, LEAVING}),
    UP: frozenset({LEAVING}),
    LEAVING: frozenset({LEFT}),
    LEFT: frozenset(),
}
#: Liveness changes: phi crosses the threshold, the suspicion times out, a heartbeat.
LIVENESS_TRANSITIONS: dict[Liveness, frozenset[Liveness]] = {
    ALIVE: frozenset({SUSPECT}),
    SUSPECT: frozenset({DOWN, ALIVE}),
    DOWN: frozenset({ALIVE}),
}
#: statuses whose node owns ranges on the ring now (a replacement takes over the
#: dead node's id and so its ranges at once; it receives writes but not reads until
#: it has streamed the data)
RING_STATUSES = (UP, LEAVING, REPLACING)
#: statuses whose node owns ranges once the ring changes in progress complete
FUTURE_RING_STATUSES = (UP, JOINING, REPLACING)

#: Gossip tables are sent whole; this bounds their size (and the cluster's).
MEMBERS_MAX = 256
#: Peers probed per protocol period (memberlist probes 1 per 1 s; 2 per 200 ms keeps
#: a 3-node cluster all-to-all and a dead peer of a 12-node one noticed in ~3 s).
PROBE_FANOUT = 2
#: Other live peers asked to probe a suspect, per period while it is suspect
#: (memberlist's IndirectChecks: 3).
INDIRECT_PROBES = 3
#: Suspects probed (directly and through helpers) per period at most: when many
#: peers are suspect at once (a cluster starting, a partition) probing them all every
#: period would be O(n) messages per node per period again, O(n^2) with the helpers'
#: probes — a storm that slowed a 32-node start-up 2x. memberlist probes one node per
#: period; the rest are still probed in the round-robin order.
SUSPECTS_PROBED_MAX = 2
#: Indirect-probe requests a helper remembers at once (target, requester): one per
#: possible member pair would be MEMBERS_MAX^2; requests expire after the suspicion
#: timeout and a requester asks at most INDIRECT_PROBES helpers per suspect per period.
RELAYS_MAX = 4 * MEMBERS_MAX
#: The "no digest" value of a heartbeat (a sender that does not send one): never a
#: reason to gossip.
NO_DIGEST = 0


class Endpoint(msgspec.Struct, array_like=True, frozen=True):
    node: str
    address: str
    generation: int
    version: int
    status: str  # a Status value; kept a str on the wire so a newer peer's status is skipped, not fatal

    def newer_than(self, other: "Endpoint | None") -> bool:
        return other is None or (self.generation, self.version) > (other.generation, other.version)


def table_digest(entries: list[Endpoint]) -> int:
    """A 63-bit hash of a membership table, the same in every process for the same
    entries in any order (never ``NO_DIGEST``): equal digests mean equal tables."""
    data = msgspec.msgpack.encode(sorted(entries, key=lambda e: e.node))
    return (int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1) or 1


class _Table(dict[str, Endpoint]):
    """The endpoints by node, counting its changes (``epoch``): what is derived from
    the table (its digest, the probe order) is recomputed only after a change."""

    epoch = 0

    def __setitem__(self, node: str, entry: Endpoint) -> None:
        assert entry.node == node, (node, entry)
        if self.get(node) != entry:
            self.epoch += 1
        super().__setitem__(node, entry)

    def __delitem__(self, node: str) -> None:
        self.epoch += 1
        super().__delitem__(node)


class Transition(NamedTuple):
    node: str
    old: Liveness
    new: Liveness

    @property
    def event(self) -> str:
        """The log event: node_up, node_suspect or node_down."""
        return f"node_{self.new.shown}"

    @property
    def was(self) -> str:
        return self.old.shown


class Membership:
    """One node's view of the cluster: gossiped endpoints plus local liveness."""

    def __init__(self, self_id: str, address: str, generation: int, bootstrap: dict[str, str],
                 settings: DetectorSettings, now_ms: int, status: str = UP,
                 known: dict[str, tuple[str, int, int, str]] | None = None) -> None:
        """``known``: the table this node had before it restarted (``known()``,
        persisted by the shell), node -> (address, generation, version, status). It
        wins over the configured members (generation 0): a member that joined, was
        replaced (new address), is joining or leaving, or has left since the config
        was written keeps that state across a restart — even a whole-cluster one,
        when nobody else is left to gossip it (docs/ring-changes.md, "Restarts")."""
        assert status in STATUSES, status
        self.self_id = self_id
        self.settings = settings
        self.endpoints = _Table()
        for node, addr in bootstrap.items():
            if node != self_id:
                # Configured members are assumed up at generation 0 until they speak.
                self.endpoints[node] = Endpoint(node, addr, 0, 0, UP)
        for node, (addr, gen, ver, was) in (known or {}).items():
            if node != self_id and was in STATUSES and len(self.endpoints) < MEMBERS_MAX:
                entry = Endpoint(node, addr, gen, ver, was)
                if entry.newer_than(self.endpoints.get(node)):
                    self.endpoints[node] = entry
        self.endpoints[self_id] = Endpoint(self_id, address, generation, 1, Status(status))
        self.detectors: dict[str, PhiDetector] = {}
        self.liveness: dict[str, Liveness] = {}
        self.suspect_since: dict[str, int] = {}
        self._probe_order: list[str] = []  # peers in a random order, probed round-robin
        self._probe_next = 0
        self._probe_epoch = -1  # the table's epoch when _probe_order was last checked
        self._digest = (-1, NO_DIGEST)  # (the table's epoch, its digest)
        #: the digest each peer's last heartbeat carried (forgotten once we gossip to it)
        self.peer_digests: dict[str, int] = {}
        #: indirect probes asked of us: (target, requester) -> expiry (ms)
        self.relays: dict[tuple[str, str], int] = {}
        for node in self.endpoints:
            if node != self_id:
                self._watch(node, now_ms)

    def _watch(self, node: str, now_ms: int) -> None:
        # our round-robin probes reach it (and its answer us) once per cycle of
        # peers / PROBE_FANOUT periods
        cycle = max(1, -(-(len(self.endpoints) - 1) // PROBE_FANOUT))
        self.detectors[node] = PhiDetector(self.settings, now_ms, self.settings.heartbeat_interval_ms * cycle)
        self.liveness[node] = ALIVE

    def _judge(self, node: str, new: Liveness) -> Transition:
        old = self.liveness[node]
        assert new in LIVENESS_TRANSITIONS[old], (node, old, new)
        self.liveness[node] = new
        return Transition(node, old, new)

    # -- own state --------------------------------------------------------------
    @property
    def me(self) -> Endpoint:
        return self.endpoints[self.self_id]

    def set_status(self, status: Status) -> None:
        me = self.me
        assert status == me.status or status in STATUS_TRANSITIONS[Status(me.status)], (me.status, status)
        self.endpoints[self.self_id] = msgspec.structs.replace(me, version=me.version + 1, status=status)

    def beat(self) -> Endpoint:
        """Bump our version (a heartbeat) and return our entry."""
        me = self.me
        self.endpoints[self.self_id] = msgspec.structs.replace(me, version=me.version + 1)
        return self.endpoints[self.self_id]

    # -- gossip -----------------------------------------------------------------
    def merge(self, entries: list[Endpoint], now_ms: int) -> bool:
        """Merge a gossiped table. Returns True when the ring membership changed."""
        before = self.ring_members()
        for entry in entries[:MEMBERS_MAX]:
            if entry.node == self.self_id:
                # Someone holds a newer rumour about us (e.g. from before our restart
                # with a clock that went back): out-bump it, SWIM's refutation.
                me = self.me
                if entry.newer_than(me):
                    self.endpoints[self.self_id] = Endpoint(
                        me.node, me.address, max(me.generation, entry.generation),
                        max(me.version, entry.version) + 1, me.status)
                continue
            if entry.status not in STATUSES:
                continue
            cur = self.endpoints.get(entry.node)
            if entry.newer_than(cur):
                if cur is None and len(self.endpoints) >= MEMBERS_MAX:
                    continue
                self.endpoints[entry.node] = entry
                if entry.node not in self.detectors:
                    self._watch(entry.node, now_ms)
        return self.ring_members() != before

    def table(self) -> list[Endpoint]:
        return list(self.endpoints.values())

    def digest(self) -> int:
        """``table_digest`` of our table, recomputed only after it changed."""
        epoch, value = self._digest
        if epoch != self.endpoints.epoch:
            value = table_digest(self.table())
            self._digest = (self.endpoints.epoch, value)
        return value

    def gossip_targets(self, rng: SplitMix64, count: int) -> list[str]:
        """Peers to push-pull our table with this round: at most ``count`` of those
        whose last heartbeat carried a digest other than ours (none when the tables
        agree: an idle cluster gossips nothing). Their digests are forgotten: a peer is
        gossiped to again only once a later heartbeat says it still differs."""
        mine = self.digest()
        differ = [p for p in self.peers() if self.peer_digests.get(p, mine) not in (mine, NO_DIGEST)]
        chosen = differ if len(differ) <= count else rng.sample(differ, count)
        for peer in chosen:
            del self.peer_digests[peer]
        return chosen

    def known(self) -> dict[str, tuple[str, int, int, str]]:
        """What a restart must not forget (``SaveMembers``): every other node's
        node -> (address, generation, version, status), the departed included."""
        return {n: (e.address, e.generation, e.version, e.status) for n, e in self.endpoints.items()
                if n != self.self_id}

    def known_key(self) -> dict[str, tuple[str, int, str]]:
        """The part of ``known()`` that changes the ring or the routes to it (not the
        version, which every heartbeat bumps): saved again only when this changes."""
        return {n: (e.address, e.generation, e.status) for n, e in self.endpoints.items()
                if n != self.self_id}

    def departures(self) -> dict[str, tuple[str, int, int]]:
        """Members known to have left: node -> (address, generation, version)."""
        return {n: (e.address, e.generation, e.version) for n, e in self.endpoints.items()
                if e.status == LEFT and n != self.self_id}

    # -- failure detection --------------------------------------------------------
    def on_heartbeat(self, node: str, generation: int, now_ms: int, digest: int = NO_DIGEST) -> Transition | None:
        """A heartbeat from ``node`` (``digest``: its table's, for ``gossip_targets``)."""
        det = self.detectors.get(node)
        if det is None:
            return None  # not a member we know (yet): gossip will introduce it
        det.heartbeat(now_ms)
        if digest != NO_DIGEST:
            self.peer_digests[node] = digest
        self.suspect_since.pop(node, None)
        if self.liveness[node] != ALIVE:
            return self._judge(node, ALIVE)
        return None

    # -- probing (SWIM) -----------------------------------------------------------
    def probe_targets(self, rng: SplitMix64, count: int = PROBE_FANOUT) -> list[str]:
        """The peers to probe this period: the next ``count`` of a random order of
        ``peers()``, round-robin (every peer is probed once per ``peers / count``
        periods, a new member within a cycle of joining the order)."""
        order = self._probe_order
        if self._probe_epoch != self.endpoints.epoch:
            self._probe_epoch = self.endpoints.epoch
            peers = self.peers()
            if len(order) != len(peers) or set(order) != set(peers):
                # membership changed: keep the order of those still here (a reshuffle could
                # leave a peer unprobed for two cycles), new ones at random places
                live = set(peers)
                order[:] = [n for n in order if n in live]
                for node in peers:
                    if node not in order:
                        order.insert(rng.randrange(len(order) + 1), node)
                self._probe_next = 0
        if len(order) <= count:
            return list(order)
        out: list[str] = []
        for _ in range(count):
            self._probe_next %= len(order)
            out.append(order[self._probe_next])
            self._probe_next += 1
        return out

    def suspects(self, rng: SplitMix64 | None = None, count: int = SUSPECTS_PROBED_MAX) -> list[str]:
        """Suspect peers; with ``rng``, at most ``count`` of them picked at random
        (the ones to probe this period)."""
        if SUSPECT not in self.liveness.values():  # the common case, every period: one C-level scan
            return []
        found = [n for n, st in self.liveness.items() if st == SUSPECT and self.endpoints[n].status != LEFT]
        return found if rng is None or len(found) <= count else rng.sample(found, count)

    def helpers_for(self, target: str, rng: SplitMix64, count: int = INDIRECT_PROBES) -> list[str]:
        """Live peers to ask to probe ``target`` for us (SWIM's indirect probe)."""
        live = [n for n in self.peers() if n != target and self.liveness.get(n) == ALIVE]
        return rng.sample(live, count)

    def ask_relay(self, target: str, requester: str, now_ms: int) -> bool:
        """``requester`` asks us to probe ``target``; False when refused (unknown
        nodes, or the table is full)."""
        if target not in self.detectors or requester not in self.detectors or target == requester:
            return False
        key = (target, requester)
        if key not in self.relays and len(self.relays) >= RELAYS_MAX:
            self.expire_relays(now_ms)
            if len(self.relays) >= RELAYS_MAX:
                return False
        self.relays[key] = now_ms + self.settings.suspect_to_down_ms
        return True

    def relayed_to(self, target: str, now_ms: int) -> list[str]:
        """We heard from ``target``: the requesters waiting for that news (forgotten)."""
        if not self.relays:
            return []
        out = [req for (t, req), exp in self.relays.items() if t == target and exp >= now_ms]
        for key in [k for k in self.relays if k[0] == target]:
            del self.relays[key]
        return out

    def expire_relays(self, now_ms: int) -> None:
        for key in [k for k, exp in self.relays.items() if exp < now_ms]:
            del self.relays[key]

    def vouch(self, node: str, now_ms: int) -> bool:
        """A helper heard from suspect ``node``: restart its suspicion timeout (it stays
        suspect: we cannot reach it ourselves). True when it was suspect."""
        if self.liveness.get(node) != SUSPECT:
            return False
        self.suspect_since[node] = now_ms
        return True

    def check(self, now_ms: int) -> list[Transition]:
        out = []
        s = self.settings
        for node, det in self.detectors.items():
            old = self.liveness[node]
            if old == ALIVE:
                if det.may_cross(now_ms) and det.suspicious(now_ms) and self.endpoints[node].status != LEFT:
                    self.suspect_since[node] = now_ms
                    out.append(self._judge(node, SUSPECT))
            elif (old == SUSPECT and now_ms - self.suspect_since[node] >= s.suspect_to_down_ms
                  and self.endpoints[node].status != LEFT):
                out.append(self._judge(node, DOWN))
        return out

    # -- views ------------------------------------------------------------------
    def is_alive(self, node: str) -> bool:
        return node == self.self_id or self.liveness.get(node) == ALIVE

    def ring_members(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, e in self.endpoints.items() if e.status in RING_STATUSES))

    def future_ring_members(self) -> tuple[str, ...]:
        """The ring once joins complete and leaving nodes are gone (Cassandra's pending ranges)."""
        return tuple(sorted(n for n, e in self.endpoints.items() if e.status in FUTURE_RING_STATUSES))

    def serves_reads(self, node: str) -> bool:
        """Alive and holding its data: a replacement still streaming takes writes only."""
        e = self.endpoints.get(node)
        return self.is_alive(node) and (e is None or e.status != REPLACING)

    def peers(self) -> list[str]:
        """Everyone we exchange heartbeats with: every known node but us and the departed."""
        return [n for n, e in self.endpoints.items() if n != self.self_id and e.status != LEFT]

    def state_of(self, node: str) -> str:
        """What ``cluster status`` shows: joining/leaving/left/replacing, else up/suspect/down."""
        e = self.endpoints.get(node)
        if e is None:
            return "unknown"
        if e.status != UP:
            return e.status
        return ALIVE.shown if node == self.self_id else self.liveness.get(node, ALIVE).shown

    def address_of(self, node: str) -> str | None:
        e = self.endpoints.get(node)
        return e.address if e else None
