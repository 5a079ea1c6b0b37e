"""SWIM-style failure detection in the core: round-robin probes, answers, indirect
probes of suspects and their vouches (core/membership.py, NodeCore._on_probe)."""

from __future__ import annotations

from collections import Counter

from quorumkv.core import messages as m
from quorumkv.core.membership import (
    ALIVE,
    DOWN,
    INDIRECT_PROBES,
    PROBE_FANOUT,
    RELAYS_MAX,
    SUSPECT,
    DetectorSettings,
    Membership,
)
from quorumkv.core.node import NodeCore, NodeSettings, Send
from quorumkv.core.rand import SplitMix64

NOW = 1_700_000_000_000
DS = DetectorSettings()
PERIOD = DS.heartbeat_interval_ms


def members(count: int) -> dict[str, str]:
    return {f"n{i}": f"127.0.0.1:{7000 + i}" for i in range(1, count + 1)}


def heartbeats(effects) -> list[Send]:
    return [e for e in effects if type(e) is Send and type(e.msg) is m.Heartbeat]


def test_each_period_probes_a_bounded_number_of_peers_and_a_cycle_covers_every_peer():
    core = NodeCore(NodeSettings("n1", rng_seed=7), members(12), now_ms=NOW)
    peers = set(core.membership.peers())
    cycle = len(peers) // PROBE_FANOUT + (len(peers) % PROBE_FANOUT > 0)
    probed: Counter = Counter()
    t = NOW
    for _ in range(3 * cycle):
        sent = [e for e in heartbeats(core.tick(t)) if e.msg.probe]
        assert len(sent) == PROBE_FANOUT  # not one per peer: traffic per node is constant
        probed.update(e.peer for e in sent)
        for p in peers:  # everyone is alive (a suspect would be probed every period)
            core.on_request("c", m.Heartbeat(0, p, 1), t + 1)
        t += PERIOD
    assert set(probed) == peers
    # round-robin: over whole cycles every peer is probed equally often (±1 at a reshuffle seam)
    assert max(probed.values()) - min(probed.values()) <= 1


def test_small_cluster_probes_every_peer_every_period():
    core = NodeCore(NodeSettings("n1"), members(1 + PROBE_FANOUT), now_ms=NOW)
    sent = {e.peer for e in heartbeats(core.tick(NOW)) if e.msg.probe}
    assert sent == set(core.membership.peers())


def test_a_probe_is_answered_and_feeds_both_detectors_and_the_clock_estimate():
    core = NodeCore(NodeSettings("n1"), members(3), now_ms=NOW)
    out = core.on_request("c", m.Heartbeat(0, "n2", 1, 0, NOW - 5, True), NOW + 10)
    answers = heartbeats(out)
    assert [(a.peer, a.msg.probe, a.msg.node) for a in answers] == [("n2", False, "n1")]
    assert answers[0].msg.wall_ms == NOW + 10  # the answer carries our clock for theirs
    assert core.membership.detectors["n2"].last_ms == NOW + 10
    assert core.clock.offset_of("n2") == -15
    # an answer (not a probe) is not answered again: no ping-pong
    assert heartbeats(core.on_request("c", m.Heartbeat(0, "n2", 1, 0, NOW), NOW + 20)) == []
    # nor is anything from a node outside the membership
    assert heartbeats(core.on_request("c", m.Heartbeat(0, "stranger", 1, 0, NOW, True), NOW + 20)) == []


def _suspect(core: NodeCore, target: str, now: int) -> int:
    """Let everyone but ``target`` answer, until ``target`` is suspect; returns the time."""
    t = now
    for _ in range(100):
        for p in core.membership.peers():
            if p != target:
                core.on_request("c", m.Heartbeat(0, p, 1), t)
        core.tick(t)
        if core.membership.liveness[target] == SUSPECT:
            return t
        t += PERIOD // 2
    raise AssertionError("never suspected")


def test_a_suspect_is_probed_directly_and_through_helpers_who_vouch_when_it_answers():
    ms5 = members(5)
    a = NodeCore(NodeSettings("n1", rng_seed=3), ms5, now_ms=NOW)
    t = _suspect(a, "n2", NOW)
    out = a.tick(t + PERIOD)
    sent = heartbeats(out)
    assert any(s.peer == "n2" and s.msg.probe for s in sent)
    asks = [s for s in sent if s.msg.ask == "n2"]
    assert len(asks) == min(INDIRECT_PROBES, 3) and "n2" not in {s.peer for s in asks}
    # a helper probes the suspect for the asker ...
    helper = NodeCore(NodeSettings(asks[0].peer, rng_seed=4), ms5, now_ms=t)
    out = helper.on_request("c", asks[0].msg, t + PERIOD + 1)
    assert [(s.peer, s.msg.probe) for s in heartbeats(out)] == [("n2", True)]
    # ... and when it answers, vouches for it, once
    out = helper.on_request("c", m.Heartbeat(0, "n2", 1), t + PERIOD + 2)
    vouches = [s for s in heartbeats(out) if s.msg.vouch]
    assert [(s.peer, s.msg.vouch) for s in vouches] == [("n1", "n2")]
    assert not [s for s in heartbeats(helper.on_request("c", m.Heartbeat(0, "n2", 1), t + PERIOD + 3))
                if s.msg.vouch]
    # the vouch restarts the suspicion timeout: still suspect (no direct link), not down
    a.on_request("c", vouches[0].msg, t + DS.suspect_to_down_ms - 1)
    assert a.stats["suspects_vouched"] == 1
    a.tick(t + DS.suspect_to_down_ms + 1)
    assert a.membership.liveness["n2"] == SUSPECT
    # without further vouches it goes down one timeout after the last
    a.tick(t + 2 * DS.suspect_to_down_ms)
    assert a.membership.liveness["n2"] == DOWN


def test_a_dead_peer_of_a_large_cluster_is_found_down_and_the_rest_stay_up():
    """Virtual time: every live peer answers our probes and probes us round-robin
    (as the real ones would); one is dead. It goes down, nobody else is suspected."""
    ms12 = members(12)
    core = NodeCore(NodeSettings("n1", rng_seed=11), ms12, now_ms=NOW)
    others = {p: Membership(p, ms12[p], 1, ms12, DS, NOW) for p in ms12 if p != "n1"}
    rngs = {p: SplitMix64(i) for i, p in enumerate(others)}
    dead = "n7"
    t = NOW
    suspected = set()
    for _ in range(200):  # 40 s of protocol periods
        for s in heartbeats(core.tick(t)):
            if s.peer != dead and (s.msg.probe or s.msg.ask):
                core.on_request("c", m.Heartbeat(0, s.peer, 1), t + 1)  # its answer
        for p, view in others.items():
            if p != dead and "n1" in view.probe_targets(rngs[p]):
                core.on_request("c", m.Heartbeat(0, p, 1, 0, 0, True), t + 2)
        suspected |= {n for n, st in core.membership.liveness.items() if st != ALIVE}
        if core.membership.liveness[dead] == DOWN:
            break
        t += PERIOD
    assert core.membership.liveness[dead] == DOWN
    assert suspected == {dead}


def test_relay_requests_are_bounded_and_expire():
    ms = Membership("n1", "x", 1, members(3), DS, NOW)
    assert ms.ask_relay("n2", "n3", NOW)
    assert not ms.ask_relay("n2", "n2", NOW)  # nobody probes itself for itself
    assert not ms.ask_relay("stranger", "n3", NOW)
    ms.relays.update({(f"t{i}", "n3"): NOW + 10 for i in range(RELAYS_MAX - 1)})
    assert not ms.ask_relay("n3", "n2", NOW)  # full
    assert ms.ask_relay("n3", "n2", NOW + DS.suspect_to_down_ms + 1)  # the stale ones expired to make room
    assert len(ms.relays) <= RELAYS_MAX
    assert ms.relayed_to("n3", NOW + DS.suspect_to_down_ms + 2) == ["n2"]
    assert ms.relayed_to("n3", NOW + DS.suspect_to_down_ms + 3) == []


def test_an_idle_core_wakes_once_per_period_and_gossip_keeps_its_average_rate():
    core = NodeCore(NodeSettings("n1"), members(12), now_ms=NOW)
    t, wakeups, rounds = NOW, 0, 0
    end = NOW + 100 * core.settings.gossip_interval_ms
    while t < end:
        out = core.tick(t)
        wakeups += 1
        rounds += any(type(e) is Send and type(e.msg) is m.Gossip for e in out)
        for p in core.membership.peers():  # everyone answers: nobody is suspect
            core.on_request("c", m.Heartbeat(0, p, 1), t + 1)
        t = core.next_deadline_ms(t + 1)
    assert wakeups <= (end - NOW) // PERIOD + 1  # one wake-up per protocol period
    assert abs(rounds - 100) <= 1  # one gossip round per gossip interval on average


def test_many_suspects_at_once_are_probed_a_bounded_number_per_period():
    from quorumkv.core.membership import SUSPECTS_PROBED_MAX

    core = NodeCore(NodeSettings("n1", rng_seed=5), members(32), now_ms=NOW)
    ms = core.membership
    for p in ms.peers()[:20]:  # a cluster starting: most others are suspect at once
        ms.liveness[p] = SUSPECT
        ms.suspect_since[p] = NOW
    core._next_heartbeat_ms = NOW + 1
    sent = heartbeats(core.tick(NOW + 1))
    asked = {s.msg.ask for s in sent if s.msg.ask}
    assert len(asked) == SUSPECTS_PROBED_MAX
    assert len(sent) <= PROBE_FANOUT + SUSPECTS_PROBED_MAX * (1 + INDIRECT_PROBES)
