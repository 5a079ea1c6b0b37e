"""NodeCore.next_deadline_ms: when an idle shell may sleep until, and when it may not."""

from __future__ import annotations

from quorumkv.core import messages as m
from quorumkv.core.node import NodeCore, NodeSettings, Send, StoreWrite

MEMBERS = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}
NOW = 1_700_000_000_000


def make() -> NodeCore:
    return NodeCore(NodeSettings("n1"), MEMBERS, now_ms=NOW)


def test_idle_core_sleeps_until_its_next_heartbeat_or_gossip():
    core = make()
    core.tick(NOW)  # sends the first heartbeat and gossip, arms the next ones
    due = core.next_deadline_ms(NOW + 1)
    hb, gossip = core.settings.detector.heartbeat_interval_ms, core.settings.gossip_interval_ms
    assert due == NOW + min(hb, gossip)
    # ticking at that deadline is what sends the next heartbeat
    effects = core.tick(due)
    assert any(type(e.msg) is m.Heartbeat for e in effects if hasattr(e, "msg"))
    assert core.next_deadline_ms(due) > due


def test_a_round_in_flight_asks_for_the_busy_cadence_until_it_finishes():
    core = make()
    core.tick(NOW)
    effects = core.on_request("c", m.Put(1, b"k", b"v"), NOW + 1)
    assert core.ops
    assert core.next_deadline_ms(NOW + 2) == NOW + 2
    for eff in effects:  # every replica, local and remote, acknowledges
        if type(eff) is StoreWrite:
            core.on_store_done(eff.token, True, None, NOW + 3)
        elif type(eff) is Send and type(eff.msg) is m.RepWrite:
            core.on_response(eff.peer, m.RepWriteAck(eff.msg.id, True), NOW + 3)
    assert not core.ops
    assert core.next_deadline_ms(NOW + 4) > NOW + 4


def test_hints_held_or_a_busy_protocol_family_keep_the_cadence_up():
    core = make()
    core.tick(NOW)
    core.hints_held["n2"] = [1, 10]
    assert core.next_deadline_ms(NOW + 1) == NOW + 1
    core.hints_held["n2"] = [0, 0]
    assert core.next_deadline_ms(NOW + 1) > NOW + 1
    flag = []
    core._busy_probes.append(lambda: bool(flag))
    flag.append(1)
    assert core.next_deadline_ms(NOW + 1) == NOW + 1


def test_phi_from_running_sums_matches_the_window_recomputed():
    import math
    import random

    from quorumkv.core.membership import PHI_WINDOW, DetectorSettings, PhiDetector

    s = DetectorSettings()
    rng = random.Random(7)
    det = PhiDetector(s, 0)
    now = 0
    for _ in range(3 * PHI_WINDOW):
        now += rng.randint(150, 260)
        det.heartbeat(now)
    xs = det.intervals
    assert len(xs) == PHI_WINDOW
    mean = sum(xs) / len(xs)
    std = max(math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)), s.min_std_ms)
    for elapsed in (0, 200, 500, 900, 2_000):
        y = (elapsed - (mean + s.acceptable_pause_ms)) / std
        z = y * (1.5976 + 0.070566 * y * y)
        expected = (z if z > 30 else math.log1p(math.exp(z))) / math.log(10)
        assert math.isclose(det.phi(now + elapsed), expected, rel_tol=1e-9, abs_tol=1e-12)
