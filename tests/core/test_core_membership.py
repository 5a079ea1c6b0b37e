"""Membership: phi-accrual detector, liveness transitions, gossip merge rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core import messages as m
from quorumkv.core.membership import (
    ALIVE,
    DOWN,
    JOINING,
    LEAVING,
    LEFT,
    MEMBERS_MAX,
    REPLACING,
    SUSPECT,
    UP,
    DetectorSettings,
    Endpoint,
    Membership,
    PhiDetector,
    Transition,
)
from quorumkv.core.node import Log, NodeCore, NodeSettings, Respond, SaveMembers

NOW = 1_700_000_000_000
DS = DetectorSettings()  # 200 ms beats, phi 8, min std 50, pause 300, suspect->down 1 s
INTERVAL = DS.heartbeat_interval_ms
ADDR = {"a": "10.0.0.1:1", "b": "10.0.0.2:1", "c": "10.0.0.3:1"}


def regular(det: PhiDetector, start: int, beats: int, interval: int = INTERVAL) -> int:
    t = start
    for _ in range(beats):
        t += interval
        det.heartbeat(t)
    return t


# ------------------------------------------------------------------ detector
def test_phi_is_about_zero_right_after_a_heartbeat_and_rises_with_silence():
    det = PhiDetector(DS, NOW)
    t = regular(det, NOW, 20)
    assert det.phi(t) < 1e-6
    silences = [0, 100, 200, 400, 500, 600, 700, 800, 1_000, 2_000, 10_000]
    phis = [det.phi(t + s) for s in silences]
    assert all(b > a for a, b in zip(phis, phis[1:])), phis  # strictly rising
    assert phis[-1] > DS.phi_suspect


@pytest.mark.parametrize("jitter", [0, 20, 50])
def test_regular_peer_not_suspected_within_interval_plus_acceptable_pause(jitter):
    det = PhiDetector(DS, NOW)
    t = NOW
    for i in range(60):  # beats alternately early and late by `jitter`
        t += INTERVAL + (jitter if i % 2 else -jitter)
        det.heartbeat(t)
    limit = INTERVAL + DS.acceptable_pause_ms
    assert det.phi(t + limit) < 1.0
    assert det.phi(t + limit) < DS.phi_suspect
    # ... but it is suspected within a couple of acceptable pauses more.
    assert det.phi(t + limit + 2 * DS.acceptable_pause_ms) >= DS.phi_suspect


def test_phi_ignores_non_increasing_timestamps():
    det = PhiDetector(DS, NOW)
    t = regular(det, NOW, 5)
    before = list(det.intervals)
    det.heartbeat(t)  # duplicate timestamp
    det.heartbeat(t - 50)  # clock went back
    assert det.intervals == before


@settings(max_examples=300, deadline=None)
@given(elapsed=st.integers(min_value=-10**15, max_value=10**15),
       beats=st.lists(st.integers(min_value=1, max_value=10**9), max_size=30))
def test_phi_finite_and_non_negative_for_any_elapsed(elapsed, beats):
    det = PhiDetector(DS, NOW)
    t = NOW
    for b in beats:
        t += b
        det.heartbeat(t)
    phi = det.phi(t + elapsed)
    assert math.isfinite(phi) and phi >= 0.0


@settings(max_examples=100, deadline=None)
@given(a=st.integers(min_value=0, max_value=10**13), b=st.integers(min_value=0, max_value=10**13))
def test_phi_monotonic_in_elapsed(a, b):
    det = PhiDetector(DS, NOW)
    t = regular(det, NOW, 10)
    lo, hi = sorted((a, b))
    assert det.phi(t + lo) <= det.phi(t + hi)


def test_phi_of_huge_silence_is_finite_and_large():
    det = PhiDetector(DS, NOW)
    t = regular(det, NOW, 10)
    phi = det.phi(t + 10**12)
    assert math.isfinite(phi) and phi > 1e6


# --------------------------------------------------------------- liveness
def three(now=NOW, me="a", **kw) -> Membership:
    return Membership(me, ADDR[me], 5, ADDR, DetectorSettings(**kw), now)


def test_check_transitions_exactly_suspect_then_down_then_up():
    ms = three()
    t = NOW
    # b and c beat regularly for 2 s: nothing happens.
    for _ in range(10):
        t += INTERVAL
        ms.on_heartbeat("b", 0, t)
        ms.on_heartbeat("c", 0, t)
        assert ms.check(t) == []
    last_b = t
    # b goes silent (SIGKILL); c keeps beating. Step 10 ms at a time.
    suspected_at = None
    down_at = None
    while down_at is None:
        t += 10
        if (t - last_b) % INTERVAL == 0:
            assert ms.on_heartbeat("c", 0, t) is None
        trs = ms.check(t)
        if suspected_at is None and trs:
            assert trs == [Transition("b", ALIVE, SUSPECT)]
            suspected_at = t
            assert ms.liveness["b"] == SUSPECT and not ms.is_alive("b")
            assert ms.state_of("b") == SUSPECT
        elif trs:
            assert trs == [Transition("b", SUSPECT, DOWN)]
            down_at = t
        else:
            assert trs == []
        assert t - last_b < 10_000, "never declared down"
    # Suspected after interval + pause, well before 1 s of silence with these settings.
    assert INTERVAL + DS.acceptable_pause_ms < suspected_at - last_b <= 1_000
    assert down_at - suspected_at == DS.suspect_to_down_ms
    assert ms.state_of("b") == DOWN and ms.is_alive("c")
    # One heartbeat brings it back, exactly once.
    t2 = t + 5
    assert ms.on_heartbeat("b", 0, t2) == Transition("b", DOWN, ALIVE)
    assert ms.on_heartbeat("b", 0, t2 + INTERVAL) is None
    assert ms.is_alive("b") and ms.state_of("b") == ALIVE


def test_heartbeat_while_suspect_returns_up_and_resets_suspicion_clock():
    ms = three()
    trs = ms.check(NOW + 5_000)
    assert sorted(trs) == [Transition("b", ALIVE, SUSPECT), Transition("c", ALIVE, SUSPECT)]
    assert ms.on_heartbeat("b", 0, NOW + 5_100) == Transition("b", SUSPECT, ALIVE)
    for t in range(NOW + 5_300, NOW + 6_000, INTERVAL):  # b keeps beating
        assert ms.on_heartbeat("b", 0, t) is None
    # c goes down after suspect_to_down_ms; b is not touched.
    assert ms.check(NOW + 5_999) == []
    assert ms.check(NOW + 6_000) == [Transition("c", SUSPECT, DOWN)]
    assert ms.liveness["b"] == ALIVE


def test_re_failure_after_a_long_outage_is_detected_promptly():
    """The long silence of an outage must not teach the detector that long silences
    are normal (Akka records an interval only while the peer is available; Cassandra
    ignores intervals above a maximum)."""
    ms = Membership("a", ADDR["a"], 5, {"a": ADDR["a"], "b": ADDR["b"]}, DS, NOW)
    t = NOW
    for _ in range(10):
        t += INTERVAL
        ms.on_heartbeat("b", 0, t)
    t += 3_600_000  # b is down for an hour
    assert ms.check(t - 1_800_000) == [Transition("b", ALIVE, SUSPECT)]
    assert ms.check(t - 1_000_000) == [Transition("b", SUSPECT, DOWN)]
    assert ms.on_heartbeat("b", 0, t) == Transition("b", DOWN, ALIVE)
    for _ in range(5):  # back for a second, then killed again
        t += INTERVAL
        ms.on_heartbeat("b", 0, t)
    assert ms.check(t + 1_000) == [Transition("b", ALIVE, SUSPECT)]
    assert ms.check(t + 2_000) == [Transition("b", SUSPECT, DOWN)]


def test_left_nodes_are_not_judged_and_not_peers():
    ms = three()
    ms.merge([Endpoint("c", ADDR["c"], 1, 1, LEFT)], NOW)
    assert ms.check(NOW + 60_000) == [Transition("b", ALIVE, SUSPECT)]
    assert ms.peers() == ["b"]
    assert ms.state_of("c") == LEFT


def test_heartbeat_from_unknown_node_ignored():
    ms = three()
    assert ms.on_heartbeat("zz", 1, NOW) is None
    assert "zz" not in ms.detectors


# -------------------------------------------------------------- gossip merge
def E(node, gen, ver, status=UP, addr=None):
    return Endpoint(node, addr or ADDR.get(node, "x:1"), gen, ver, status)


@pytest.mark.parametrize(
    "current,incoming,wins",
    [
        ((3, 5), (3, 6), True),  # same generation, newer version
        ((3, 5), (3, 5), False),  # identical: no change
        ((3, 5), (3, 4), False),  # older version
        ((3, 5), (4, 0), True),  # restart: new generation, version reset
        ((3, 5), (2, 999), False),  # stale rumour from before a restart, even with a big version
        ((0, 0), (1, 1), True),  # bootstrap placeholder replaced once the node speaks
    ],
)
def test_merge_larger_generation_version_wins(current, incoming, wins):
    ms = three()
    ms.merge([E("b", *current, UP, "old:1")], NOW)
    ms.endpoints["b"] = E("b", *current, UP, "old:1")
    ms.merge([E("b", *incoming, LEAVING, "new:1")], NOW)
    got = ms.endpoints["b"]
    if wins:
        assert (got.generation, got.version, got.status, got.address) == (*incoming, LEAVING, "new:1")
    else:
        assert got == E("b", *current, UP, "old:1")
    assert E("b", *incoming).newer_than(E("b", *current)) is wins


def test_restarted_node_overrides_left_status():
    ms = three()
    ms.merge([E("b", 3, 9, LEFT)], NOW)
    assert "b" not in ms.ring_members()
    changed = ms.merge([E("b", 4, 1, UP, "10.9.9.9:1")], NOW)
    assert changed
    assert ms.endpoints["b"] == E("b", 4, 1, UP, "10.9.9.9:1")
    assert ms.address_of("b") == "10.9.9.9:1"


@pytest.mark.parametrize(
    "rumour,expect_gen,expect_ver",
    [
        ((5, 1), 5, 1),  # same as ours: no bump
        ((5, 0), 5, 1),  # older: ignored
        ((4, 99), 5, 1),  # older generation: ignored
        ((5, 7), 5, 8),  # newer version of our generation: out-bump past it
        ((9, 3), 9, 4),  # a generation from the future: adopt it and out-bump
    ],
)
def test_merge_refutes_newer_rumours_about_ourselves(rumour, expect_gen, expect_ver):
    ms = three()  # we are "a", generation 5, version 1
    assert (ms.me.generation, ms.me.version) == (5, 1)
    ms.merge([E("a", *rumour, LEFT, "evil:1")], NOW)
    me = ms.me
    assert (me.generation, me.version) == (expect_gen, expect_ver)
    assert me.status == UP and me.address == ADDR["a"]  # the rumour's content is never taken
    assert "a" not in ms.detectors


def test_beat_and_set_status_bump_our_version():
    ms = three()
    v = ms.me.version
    assert ms.beat().version == v + 1
    ms.set_status(LEAVING)
    assert (ms.me.version, ms.me.status) == (v + 2, LEAVING)
    assert "a" in ms.ring_members()  # leaving still owns ranges


def test_merge_ignores_unknown_statuses():
    ms = three()
    before = ms.endpoints["b"]
    assert ms.merge([E("b", 9, 9, "zombie"), E("d", 1, 1, "weird")], NOW) is False
    assert ms.endpoints["b"] == before
    assert "d" not in ms.endpoints and "d" not in ms.detectors


def test_merge_introduces_new_member_with_a_fresh_detector():
    ms = three()
    assert ms.merge([E("d", 1, 1, UP, "10.0.0.4:1")], NOW + 10_000) is True
    assert ms.liveness["d"] == ALIVE
    assert ms.detectors["d"].last_ms == NOW + 10_000
    assert ms.detectors["d"].phi(NOW + 10_000) < 1e-6
    assert "d" in ms.peers()


def test_members_max_bound():
    ms = three()
    flood = [E(f"x{i:04d}", 1, 1) for i in range(MEMBERS_MAX * 2)]
    ms.merge(flood, NOW)
    assert len(ms.endpoints) == MEMBERS_MAX
    assert len(ms.detectors) == MEMBERS_MAX - 1
    # Known members still get updates when the table is full.
    ms.merge([E("b", 7, 7, LEAVING)], NOW)
    assert ms.endpoints["b"].status == LEAVING
    # A second flood adds nothing.
    ms.merge([E(f"y{i}", 1, 1) for i in range(10)], NOW)
    assert len(ms.endpoints) == MEMBERS_MAX


@pytest.mark.parametrize(
    "status,in_ring",
    [(UP, True), (LEAVING, True), (JOINING, False), (LEFT, False)],
)
def test_ring_members_only_up_or_leaving(status, in_ring):
    ms = three()
    changed = ms.merge([E("d", 1, 1, status)], NOW)
    assert changed is in_ring
    assert ("d" in ms.ring_members()) is in_ring
    assert ms.ring_members() == tuple(sorted(ms.ring_members()))
    assert ms.state_of("d") == (ALIVE if status == UP else status)


def test_state_of_unknown_and_self():
    ms = three()
    assert ms.state_of("nobody") == "unknown"
    assert ms.state_of("a") == ALIVE and ms.is_alive("a")


# ------------------------------------------------ joining through NodeCore
def test_joining_node_streams_then_becomes_up_when_it_merges_a_cluster_table():
    from quorumkv.core.messages_ring import StreamBatch, StreamRequest
    from quorumkv.core.node import Send, StoreWrite
    from quorumkv.core.version import Record, Version

    core = NodeCore(NodeSettings("d", seeds=("10.0.0.1:1",), address="10.0.0.4:1", settle_ms=100),
                    {"d": "10.0.0.4:1"}, now_ms=NOW)
    assert core.membership.me.status == JOINING
    assert core.ring is None
    # While joining it gossips to its seeds.
    eff = core.tick(NOW)
    assert any(getattr(e, "peer", "") == "seed:10.0.0.1:1" for e in eff)
    peer = object()
    table = [E("a", 1, 3), E("b", 1, 3), E("c", 1, 3)]
    eff = core.on_request(peer, m.Gossip(7, table), NOW + 1)
    # Admitted, but still joining: the ring is the old one, the future ring has us.
    assert core.membership.me.status == JOINING
    assert core.ring is not None and core.ring.nodes == ("a", "b", "c")
    assert core.future_ring is not None and core.future_ring.nodes == ("a", "b", "c", "d")
    logs = [e.event for e in eff if type(e) is Log]
    assert "join_started" in logs and "ring_changed" in logs
    (resp,) = [e for e in eff if type(e) is Respond]
    assert resp.conn is peer and type(resp.msg) is m.GossipAck and resp.msg.id == 7
    # After the settle time it pulls from every current member, one after another.
    t = NOW + 200
    record = Record(Version(5 << 16, "a"), b"v")
    eff = core.tick(t)
    for source in ("a", "b", "c"):
        # the next request goes out as soon as the previous batch is durable
        (req,) = [e for e in eff if type(e) is Send and type(e.msg) is StreamRequest]
        assert req.peer == source and req.msg.target == "d" and sorted(req.msg.members) == ["a", "b", "c", "d"]
        eff = core.on_response(source, StreamBatch(req.msg.id, [(b"k-" + source.encode(), record)], None, 1), t)
        (sw,) = [e for e in eff if type(e) is StoreWrite]
        assert core.membership.me.status == JOINING  # not before the batch is durable
        eff = core.on_store_done(sw.token, True, None, t)
        t += 1
    # All sources streamed: up, and the ring now has us.
    me = core.membership.me
    assert me.status == UP and core.ring.nodes == ("a", "b", "c", "d") and core.future_ring is None
    assert core.stats["stream_keys_received"] == 3 and core.stats["stream_done"] == 1
    assert "join_completed" in [e.event for e in eff if type(e) is Log]


def test_joining_node_stays_joining_when_the_table_has_only_itself():
    core = NodeCore(NodeSettings("d", seeds=("10.0.0.1:1",), address="10.0.0.4:1"), {"d": "10.0.0.4:1"},
                    now_ms=NOW)
    core.on_request(object(), m.Gossip(1, [E("d", 0, 0, JOINING, "10.0.0.4:1")]), NOW)
    assert core.membership.me.status == JOINING and core.ring is None
    (reply,) = core.on_request(object(), m.Get(3, b"k"), NOW)
    assert reply.msg.status == m.UNAVAILABLE and "joining" in reply.msg.message


def test_gossip_ack_merged_by_coordinator_rebuilds_ring():
    core = NodeCore(NodeSettings("a", vnodes=8), {"a": ADDR["a"], "b": ADDR["b"]}, now_ms=NOW)
    assert core.ring.nodes == ("a", "b")
    eff = core.on_response("b", m.GossipAck(0, [E("c", 2, 1, UP, ADDR["c"])]), NOW)
    assert core.ring.nodes == ("a", "b", "c")
    assert core.stats["membership_changes"] == 1
    assert [e.event for e in eff if type(e) is Log] == ["ring_changed"]
    # The same table again changes nothing.
    assert core.on_response("b", m.GossipAck(0, [E("c", 2, 1, UP, ADDR["c"])]), NOW) == []


# ------------------------------------------- the known table survives a restart
def _saved(eff) -> list[dict]:
    return [e.members for e in eff if type(e) is SaveMembers]


def test_departures_are_saved_when_learned_and_a_restarted_core_keeps_them_out_of_the_ring():
    """Issue 10 (found by the simulator): 'left' was not persisted, so a node whose
    configured members still list a departed node put it back in its ring at a
    whole-cluster restart. The core now asks the shell to save what it knows of
    every member (``SaveMembers``) and starts from it."""
    members = {"a": ADDR["a"], "b": ADDR["b"], "c": ADDR["c"]}
    core = NodeCore(NodeSettings("a", n=2, vnodes=8), members, now_ms=NOW)
    eff = core.on_response("b", m.GossipAck(0, [E("c", 7, 40, LEAVING)]), NOW)
    assert _saved(eff) == [{"b": (ADDR["b"], 0, 0, UP), "c": (ADDR["c"], 7, 40, LEAVING)}]
    assert core.on_response("b", m.GossipAck(0, [E("c", 7, 41, LEAVING)]), NOW) == []  # a heartbeat: no save
    eff = core.on_response("b", m.GossipAck(0, [E("c", 7, 42, LEFT)]), NOW)
    (saved,) = _saved(eff)
    assert saved["c"] == (ADDR["c"], 7, 42, LEFT)
    assert core.on_response("b", m.GossipAck(0, [E("c", 7, 42, LEFT)]), NOW) == []  # nothing new: no save

    restarted = NodeCore(NodeSettings("a", n=2, vnodes=8, generation=NOW + 1), members, now_ms=NOW + 1,
                         known=saved)
    assert restarted.ring.nodes == ("a", "b")
    assert restarted.membership.state_of("c") == LEFT and "c" not in restarted.membership.peers()
    # A stale rumour from before the departure loses; the departed node started
    # again (a new generation: it joins afresh) wins, and the saved table follows.
    assert restarted.on_response("b", m.GossipAck(0, [E("c", 7, 30, UP)]), NOW + 2) == []
    eff = restarted.on_response("b", m.GossipAck(0, [E("c", 9, 1, JOINING)]), NOW + 3)
    assert [s["c"][3] for s in _saved(eff)] == [JOINING]
    assert restarted.membership.state_of("c") == JOINING


def test_an_older_state_files_departures_still_keep_a_departed_node_out():
    """``departed`` (node -> address, generation, version: what node-state.json
    held before ``SaveMembers``) is read as members known as left."""
    members = {"a": ADDR["a"], "b": ADDR["b"], "c": ADDR["c"]}
    core = NodeCore(NodeSettings("a", n=2, vnodes=8, generation=NOW), members, now_ms=NOW,
                    departed={"c": (ADDR["c"], 7, 41)})
    assert core.ring.nodes == ("a", "b") and core.membership.state_of("c") == LEFT


def test_a_departure_known_only_from_the_table_is_saved_too():
    """A node that joins after a departure learns the departed member from the table
    (its ring never held it) — and still lists it among its members, so it must
    remember it as left."""
    core = NodeCore(NodeSettings("a", n=2, vnodes=8), {"a": ADDR["a"], "b": ADDR["b"]}, now_ms=NOW)
    eff = core.on_response("b", m.GossipAck(0, [E("c", 7, 41, LEFT)]), NOW)
    assert core.ring.nodes == ("a", "b") and not [e for e in eff if type(e) is Log]  # no ring change
    assert [s["c"] for s in _saved(eff)] == [(ADDR["c"], 7, 41, LEFT)]
    assert "c" in core.members()


def test_a_restarted_core_routes_by_the_ring_it_knew_not_by_its_config():
    """Soak seeds 72, 218 and 906 (issue 10's known gap): a member that joined after
    the config files were written, or a replacement's new address, was forgotten at
    a restart until gossip brought it back; meanwhile the restarted coordinator
    routed by the older ring, and its quorums missed writes acked under the newer
    one. Now the restarted core starts from the saved table: the joined member is in
    its ring, the replacement at its new address, a joining or leaving member still
    makes its rounds joint."""
    members = {x: ADDR[x] for x in "abc"}
    core = NodeCore(NodeSettings("a", n=2, vnodes=8), members, now_ms=NOW)
    eff = core.on_response("b", m.GossipAck(0, [E("d", 5, 3, UP, "10.0.0.4:1"),
                                                E("c", 6, 2, REPLACING, "10.0.0.33:1"),
                                                E("e", 8, 1, JOINING, "10.0.0.5:1")]), NOW)
    saved = _saved(eff)[-1]
    assert core.ring.nodes == ("a", "b", "c", "d") and core.future_ring.nodes == ("a", "b", "c", "d", "e")

    restarted = NodeCore(NodeSettings("a", n=2, vnodes=8, generation=NOW + 1), members, now_ms=NOW + 1,
                         known=saved)
    assert restarted.ring.nodes == core.ring.nodes
    assert restarted.future_ring is not None and restarted.future_ring.nodes == core.future_ring.nodes
    assert restarted.address_of("c") == "10.0.0.33:1" and restarted.address_of("d") == "10.0.0.4:1"
    assert restarted.membership.state_of("c") == REPLACING and restarted.membership.me.status == UP
    # The control: the config alone (what a restart used before) routes by another ring.
    forgetful = NodeCore(NodeSettings("a", n=2, vnodes=8, generation=NOW + 1), members, now_ms=NOW + 1)
    assert forgetful.ring.nodes == ("a", "b", "c") and forgetful.future_ring is None
