"""Membership by push-pull gossip, and failure detection by phi accrual.

Two kinds of state, kept apart on purpose (as in Cassandra):

* **Gossiped** (``Endpoint``): what a node says about itself — address, status
  (joining / up / leaving / left), its ``generation`` (set when the process starts:
  a restart gets a new, larger one) and a ``version`` it bumps whenever it changes
  something. Merge rule: the entry with the larger ``(generation, version)`` wins,
  so a rumour from before a restart — or an older rumour in general — always loses.
  Only the node itself bumps its own entry.
* **Local** liveness (up / suspect / down): each node's own judgement from the
  heartbeats it receives directly, through a phi-accrual detector (Hayashibara et
  al. 2004; Akka's and Cassandra's variant). Never gossiped: a partition should not
  let one side declare the other dead for everyone.

Heartbeats are SWIM-style probes (Das et al. 2002; memberlist's probe loop), not
all-to-all: every protocol period (``heartbeat_interval_ms``) a node probes
``PROBE_FANOUT`` peers, taken round-robin from a random order of its peers
(``probe_targets``), and each probed peer answers with a heartbeat of its own. A
probe received and an answer received both feed the sender's detector, so a node
hears from each peer about every ``peers / PROBE_FANOUT`` periods, and a node sends
and receives O(1) heartbeats per period however large the cluster (all-to-all was
O(n) per node, O(n^2) in all).

A node is suspected when phi crosses ``phi_suspect`` and declared down when it has
stayed suspect for ``suspect_to_down_ms``; one heartbeat makes it up again. While a
peer is suspect the node probes it directly each period (at most ``SUSPECTS_PROBED_MAX``
suspects a period) and asks
``INDIRECT_PROBES`` other live peers to probe it too (SWIM's indirect probe); a
helper that hears from the suspect vouches for it, which restarts the suspicion
timeout (``vouch``) instead of making it up: routing needs a direct link, so a peer
only this node cannot reach stays suspect (not routed to) rather than going down.
Liveness stays local: suspicion is not disseminated (memberlist gossips it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec

from .rand import SplitMix64

JOINING, UP, LEAVING, LEFT, REPLACING = "joining", "up", "leaving", "left", "replacing"
ALIVE, SUSPECT, DOWN = "up", "suspect", "down"
STATUSES = (JOINING, UP, LEAVING, LEFT, REPLACING)
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
#: Heartbeat intervals remembered per peer by the detector (Akka: 1000; fewer
#: adapts faster after a change of load, 100 is plenty on a LAN).
PHI_WINDOW = 100


class Endpoint(msgspec.Struct, array_like=True, frozen=True):
    node: str
    address: str
    generation: int
    version: int
    status: str

    def newer_than(self, other: "Endpoint | None") -> bool:
        return other is None or (self.generation, self.version) > (other.generation, other.version)


class DetectorSettings(NamedTuple):
    heartbeat_interval_ms: int = 200
    phi_suspect: float = 8.0
    #: Floor on the interval deviation, so a perfectly regular peer is not
    #: suspected after one late beat (Akka min-std-deviation, default 100 ms).
    min_std_ms: float = 50.0
    #: Pause tolerated before phi starts rising (GC, scheduling; Akka default 3 s,
    #: far too slow for a quorum store on a LAN).
    acceptable_pause_ms: float = 300.0
    suspect_to_down_ms: int = 1_000


class PhiDetector:
    __slots__ = ("intervals", "last_ms", "settings", "_mean_ms", "_std_ms", "_sum", "_sumsq")

    def __init__(self, settings: DetectorSettings, now_ms: int, expected_ms: int | None = None) -> None:
        self.settings = settings
        # Seed with the expected interval so phi is meaningful from the start (with
        # SWIM probing a peer is heard from once per probe cycle at least, not every
        # period: seeding with the period would suspect it before it learns better,
        # and intervals are not learned while suspect).
        self.intervals: list[float] = [float(expected_ms or settings.heartbeat_interval_ms)] * 2
        self.last_ms = now_ms
        self._sum = sum(self.intervals)
        self._sumsq = sum(x * x for x in self.intervals)
        self._stats()

    def _stats(self) -> None:
        """Mean and deviation of the window from running sums, kept from one heartbeat
        to the next: phi is evaluated on every tick for every peer, the window changes
        only when a heartbeat arrives."""
        n = len(self.intervals)
        mean = self._sum / n
        var = max(self._sumsq / n - mean * mean, 0.0)  # intervals are ~1e2..1e4 ms: no cancellation trouble
        self._mean_ms = mean + self.settings.acceptable_pause_ms
        self._std_ms = max(math.sqrt(var), self.settings.min_std_ms)

    def heartbeat(self, now_ms: int) -> None:
        interval = now_ms - self.last_ms
        # A silence that made the peer suspect (an outage, a long pause) is not a
        # sample of its rhythm: learning it would blind the detector to the next
        # failure for minutes (Akka records intervals only while the peer is available).
        available = self.phi(now_ms) < self.settings.phi_suspect
        self.last_ms = now_ms
        if interval <= 0 or not available:
            return
        x = float(interval)
        self.intervals.append(x)
        self._sum += x
        self._sumsq += x * x
        if len(self.intervals) > PHI_WINDOW:
            old = self.intervals.pop(0)
            self._sum -= old
            self._sumsq -= old * old
        self._stats()

    def phi(self, now_ms: int) -> float:
        mean, std = self._mean_ms, self._std_ms
        elapsed = now_ms - self.last_ms
        # Logistic approximation of the normal CDF (Akka's PhiAccrualFailureDetector):
        # phi = -log10(1 - F(elapsed)) = softplus(z) / ln 10, computed without overflow.
        y = (elapsed - mean) / std
        z = y * (1.5976 + 0.070566 * y * y)
        softplus = z if z > 30 else math.log1p(math.exp(z))
        return softplus / math.log(10)


class Transition(NamedTuple):
    node: str
    old: str
    new: str


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
        self.self_id = self_id
        self.settings = settings
        self.endpoints: dict[str, Endpoint] = {}
        for node, addr in bootstrap.items():
            if node != self_id:
                # Configured members are assumed up at generation 0 until they speak.
                self.endpoints[node] = Endpoint(node, addr, 0, 0, UP)
        for node, (addr, gen, ver, was) in (known or {}).items():
            if node != self_id and was in STATUSES and len(self.endpoints) < MEMBERS_MAX:
                entry = Endpoint(node, addr, gen, ver, was)
                if entry.newer_than(self.endpoints.get(node)):
                    self.endpoints[node] = entry
        self.endpoints[self_id] = Endpoint(self_id, address, generation, 1, status)
        self.detectors: dict[str, PhiDetector] = {}
        self.liveness: dict[str, str] = {}
        self.suspect_since: dict[str, int] = {}
        self._probe_order: list[str] = []  # peers in a random order, probed round-robin
        self._probe_next = 0
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

    # -- own state --------------------------------------------------------------
    @property
    def me(self) -> Endpoint:
        return self.endpoints[self.self_id]

    def set_status(self, status: str) -> None:
        me = self.me
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
    def on_heartbeat(self, node: str, generation: int, now_ms: int) -> Transition | None:
        det = self.detectors.get(node)
        if det is None:
            return None  # not a member we know (yet): gossip will introduce it
        det.heartbeat(now_ms)
        old = self.liveness.get(node, ALIVE)
        self.suspect_since.pop(node, None)
        if old != ALIVE:
            self.liveness[node] = ALIVE
            return Transition(node, old, ALIVE)
        return None

    # -- probing (SWIM) -----------------------------------------------------------
    def probe_targets(self, rng: SplitMix64, count: int = PROBE_FANOUT) -> list[str]:
        """The peers to probe this period: the next ``count`` of a random order of
        ``peers()``, round-robin (every peer is probed once per ``peers / count``
        periods, a new member within a cycle of joining the order)."""
        peers = self.peers()
        if len(peers) <= count:
            return peers
        order = self._probe_order
        if len(order) != len(peers) or set(order) != set(peers):
            # membership changed: keep the order of those still here (a reshuffle could
            # leave a peer unprobed for two cycles), new ones at random places
            live = set(peers)
            order[:] = [n for n in order if n in live]
            for node in peers:
                if node not in order:
                    order.insert(rng.randrange(len(order) + 1), node)
            self._probe_next = 0
        out: list[str] = []
        for _ in range(count):
            self._probe_next %= len(order)
            out.append(order[self._probe_next])
            self._probe_next += 1
        return out

    def suspects(self, rng: SplitMix64 | None = None, count: int = SUSPECTS_PROBED_MAX) -> list[str]:
        """Suspect peers; with ``rng``, at most ``count`` of them picked at random
        (the ones to probe this period)."""
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
            if self.endpoints[node].status == LEFT:
                continue
            old = self.liveness[node]
            if old == ALIVE and det.phi(now_ms) >= s.phi_suspect:
                self.liveness[node] = SUSPECT
                self.suspect_since[node] = now_ms
                out.append(Transition(node, old, SUSPECT))
            elif old == SUSPECT and now_ms - self.suspect_since[node] >= s.suspect_to_down_ms:
                self.liveness[node] = DOWN
                out.append(Transition(node, old, DOWN))
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
        """What ``cluster status`` shows: joining/leaving/left, else up/suspect/down."""
        e = self.endpoints.get(node)
        if e is None:
            return "unknown"
        if e.status in (JOINING, LEAVING, LEFT, REPLACING):
            return e.status
        return ALIVE if node == self.self_id else self.liveness.get(node, ALIVE)

    def address_of(self, node: str) -> str | None:
        e = self.endpoints.get(node)
        return e.address if e else None


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

