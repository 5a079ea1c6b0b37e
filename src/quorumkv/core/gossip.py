"""Heartbeats, SWIM probes and gossip rounds: what drives ``Membership``.

``Membership`` (core/membership.py) holds the table and the failure detector; this
module sends and receives the messages that feed them, once per protocol period
(``DetectorSettings.heartbeat_interval_ms``) and gossip interval, and tells the
node when the ring changed or a restarted node has heard a majority (``RingSync``).

Every heartbeat carries the sender's table digest; a gossip round (push-pull, whole
tables) goes only to peers whose last digest differed from ours
(``Membership.gossip_targets``), so a cluster whose tables agree sends no gossip at
all. A node that is not ring-synced yet, or joining, or that knows no peer, gossips
as before: to every peer not heard from yet, to its seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import messages as m
from .effects import Log, SaveMembers, Send
from .levels import NodeSettings
from .membership import ALIVE, JOINING, LEFT, REPLACING, UP, Membership

if TYPE_CHECKING:
    from .node import NodeCore

SEED_PREFIX = "seed:"  # peer name of a seed address whose node id we don't know yet
#: Peers a node gossips its table to per gossip round (memberlist's GossipNodes: 3).
GOSSIP_FANOUT = 2

Out = list[Any]


def starting_membership(settings: NodeSettings, members: dict[str, str], now_ms: int,
                        departed: dict[str, tuple[str, int, int]] | None,
                        known: dict[str, tuple[str, int, int, str]] | None) -> Membership:
    """The table a node starts from: its config's ``members``, what it knew before a
    restart (``known``, and ``departed`` from older state files)."""
    address = settings.address or members[settings.node_id]
    # A node that knows only itself but has seeds is joining an existing cluster.
    joining = bool(settings.seeds) and len(members) == 1
    status = REPLACING if settings.replace else JOINING if joining else UP
    return Membership(settings.node_id, address, settings.generation, members, settings.detector, now_ms, status,
                      {**{n: (*e, LEFT) for n, e in (departed or {}).items()}, **(known or {})})


class Gossiper:
    def __init__(self, core: NodeCore, now_ms: int) -> None:
        self.core = core
        self.membership = core.membership
        self.settings = core.settings
        self.next_heartbeat_ms = now_ms
        self.next_gossip_ms = now_ms
        self._known_saved = self.membership.known_key()
        core.handle_requests({m.Heartbeat: self.on_heartbeat, m.Gossip: self.on_gossip})
        core.handle_responses({m.GossipAck: self.on_gossip_ack})
        #: suspicion timeouts restarted by an indirect probe; ring (re)builds
        core.stats.update({"suspects_vouched": 0, "membership_changes": 0})

    def next_wakeup_ms(self) -> int:
        if self.settings.gossip_interval_ms >= self.settings.detector.heartbeat_interval_ms:
            # gossip rides the protocol period's wake-up (see tick): one wake-up per
            # period, not two
            return self.next_heartbeat_ms
        return min(self.next_heartbeat_ms, self.next_gossip_ms)

    # --------------------------------------------------------------- messages
    def on_heartbeat(self, conn: Any, msg: m.Heartbeat, now_ms: int, out: Out) -> None:
        core = self.core
        core.clock.on_heartbeat(msg, now_ms)
        tr = self.membership.on_heartbeat(msg.node, msg.generation, now_ms, msg.digest)
        if tr is not None:
            self._transition(tr, out)
        self._on_probe(msg, now_ms, out)

    def on_gossip(self, conn: Any, msg: m.Gossip, now_ms: int, out: Out) -> None:
        core = self.core
        core.clock.observe_remote(msg.hlc, now_ms)
        self.merge(msg.endpoints, now_ms, out)
        core.respond(conn, m.GossipAck(msg.id, self.membership.table(), core.hlc.last), now_ms, out)

    def on_gossip_ack(self, peer: str, msg: m.GossipAck, now_ms: int, out: Out) -> None:
        core = self.core
        core.clock.observe_remote(msg.hlc, now_ms)
        self.merge(msg.endpoints, now_ms, out)
        if not core.ring_sync.synced and core.ring_sync.heard_from(peer, self.membership, now_ms):
            core.parking.synced(now_ms, out)

    def merge(self, endpoints: Any, now_ms: int, out: Out) -> None:
        core = self.core
        ms = self.membership
        before = (ms.ring_members(), ms.future_ring_members())
        ms.merge(endpoints, now_ms)
        me = ms.me
        if me.status in (JOINING, REPLACING) and len(ms.endpoints) > 1:
            # Admitted: we have the cluster's table. Stream our ranges' data, then go up.
            core.ring_change.start_pull("join" if me.status == JOINING else "replace", now_ms, out)
        if (ms.ring_members(), ms.future_ring_members()) != before:
            core.ring_changed(now_ms, out)
        if not core.ring_sync.synced and core.ring_sync.update(ms, now_ms):
            core.parking.synced(now_ms, out)  # members left: fewer answers make a majority
        # Persist what we know of the others — who joined, is joining, was replaced,
        # is leaving or has left — so a restart (even of the whole cluster, with
        # config files that list the initial members) routes by the ring we knew,
        # never by an older one: coordinators that disagree on a key's replicas
        # without a joint round break quorum intersection (docs/ring-changes.md,
        # "Restarts"; simulator seeds 72, 218 and 906).
        key = ms.known_key()
        if key != self._known_saved:
            self._known_saved = key
            out.append(SaveMembers(ms.known()))

    def _heartbeat(self, now_ms: int, probe: bool = False, ask: str = "", vouch: str = "") -> m.Heartbeat:
        core = self.core
        return m.Heartbeat(0, core.node_id, self.membership.me.generation, core.hlc.last, core.wall_ms(now_ms), probe, ask, vouch,
                           self.membership.digest())

    def _on_probe(self, msg: m.Heartbeat, now_ms: int, out: Out) -> None:
        """The SWIM side of a heartbeat (core/membership.py): answer a probe, pass a
        suspect's answer on to whoever asked us to probe it, probe for a peer, note a
        helper's vouch. Only members get anything back."""
        ms = self.membership
        sender = msg.node
        if sender not in ms.detectors:
            return
        if msg.probe:
            out.append(Send(sender, self._heartbeat(now_ms)))
        for requester in ms.relayed_to(sender, now_ms):
            out.append(Send(requester, self._heartbeat(now_ms, vouch=sender)))
        if msg.ask and ms.ask_relay(msg.ask, sender, now_ms):
            out.append(Send(msg.ask, self._heartbeat(now_ms, probe=True)))
        if msg.vouch and ms.vouch(msg.vouch, now_ms):
            self.core.stats["suspects_vouched"] += 1

    # ------------------------------------------------------------------ timer
    def tick(self, now_ms: int, out: Out) -> None:
        ms = self.membership
        core = self.core
        if now_ms >= self.next_heartbeat_ms:
            self.next_heartbeat_ms = now_ms + self.settings.detector.heartbeat_interval_ms
            probe = self._heartbeat(now_ms, probe=True)
            targets = ms.probe_targets(core.rng)
            for peer in targets:
                out.append(Send(peer, probe))
            for suspect in ms.suspects(core.rng):  # direct and indirect probes (SWIM), bounded
                if suspect not in targets:
                    out.append(Send(suspect, probe))
                for helper in ms.helpers_for(suspect, core.rng):
                    out.append(Send(helper, self._heartbeat(now_ms, ask=suspect)))
            ms.expire_relays(now_ms)
        if now_ms >= self.next_gossip_ms:
            # on schedule, not from now: rounds taken at the next protocol period's
            # tick still average one per gossip interval
            self.next_gossip_ms += self.settings.gossip_interval_ms
            if self.next_gossip_ms <= now_ms:
                self.next_gossip_ms = now_ms + self.settings.gossip_interval_ms
            table = ms.table()
            if core.ring_sync.synced:
                peers = ms.gossip_targets(core.rng, GOSSIP_FANOUT)  # those whose digest differs: idle, none
            else:  # every member not heard from yet: a majority's answers in one round trip
                peers = core.ring_sync.unheard(ms)
            if ms.me.status == JOINING or not (peers or core.ring_sync.synced and ms.peers()):
                peers += [SEED_PREFIX + s for s in self.settings.seeds if s != ms.me.address]
            for peer in peers:
                out.append(Send(peer, m.Gossip(0, table, core.hlc.last)))
        for tr in ms.check(now_ms):
            self._transition(tr, out)

    @staticmethod
    def _transition(tr: Any, out: Out) -> None:
        level = "info" if tr.new == ALIVE else "warning"
        out.append(Log(level, tr.event, {"peer": tr.node, "was": tr.was}))
