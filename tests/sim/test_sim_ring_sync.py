"""A node down across a join restarts with the older ring it saved: until it has
heard a majority's membership tables it must not coordinate strict requests
(``core.membership.RingSync``; docs/ring-changes.md, "Restarts").

Scenario (5 nodes, N=3, primary-only R=W=2, the simulator's real NodeCores): d is
down when n6 starts joining, so it never hears of it; d restarts while n6 streams
(n6 retries d, its source, until d is back) and all gossip to and from d is lost,
so d still routes by the five-node ring when n6 turns up. A write through x, by
the six-node ring, is acked by x and n6 (its copy to y slow); then a strict read
through d, its read from x slow, asks {d, y}: on the core before the fix it
returned NOT_FOUND — a strict stale read. Now d holds the read until it has heard
a majority (then it routes by the six-node ring and finds the write), or answers
UNAVAILABLE after ``timeout_ms_ring_sync``.
"""

from __future__ import annotations

import functools

from quorumkv.core import messages as m
from quorumkv.core.membership import UP
from quorumkv.core.ring import Ring
from quorumkv.sim.scenario import Scenario, acked, find_key

N = 3
FIVE = [f"n{i}" for i in range(1, 6)]


def _key():
    """A key n6 takes over from an old replica d (d displaced, x and y kept)."""
    r5, r6 = Ring(FIVE, N), Ring(sorted(FIVE + ["n6"]), N)
    return find_key(lambda k: "n6" in r6.preference_list(k))


def _scenario(heal_gossip_after_ms: int | None):
    sc = Scenario()
    cl = sc.cluster
    key = _key()
    p5, p6 = Ring(FIVE, N).preference_list(key), Ring(sorted(FIVE + ["n6"]), N).preference_list(key)
    (d,) = [z for z in p5 if z not in p6]
    x, y = [z for z in p6 if z != "n6"]
    cl.crash(d)
    n6 = cl.join()
    sc.run_for(1_500)  # settled (1 s), streaming: d, a source, is down and retried
    assert cl.status(n6) != UP
    to_d = sc.drop((m.Gossip, m.GossipAck), to=d)
    from_d = sc.drop((m.Gossip, m.GossipAck), src=d)
    cl.restart(d)
    sc.run_until(lambda: cl.status(n6) == UP and all(
        "n6" in cl.cores[z].membership.ring_members() for z in cl.live() if z != d), what="n6 up")
    stale_ring = cl.cores[d].membership.ring_members()
    synced_before = cl.cores[d].ring_sync.synced
    sc.slow(x, y, (m.RepWrite,), by_ms=5_000)
    sc.slow(d, x, (m.RepRead,), by_ms=5_000)
    put = sc.put(x, key, b"NEW", level=2)
    sc.run_for(1)  # the read begins strictly after the ack
    if heal_gossip_after_ms is not None:
        def heal():
            for rule in (to_d, from_d):
                if rule in cl.net.rules:  # check() may have cleared them already
                    sc.unrule(rule)
        cl.at(heal_gossip_after_ms * 1000, heal)
    get = sc.get(d, key, level=2, client=1)
    return sc, d, stale_ring, synced_before, put, get


@functools.cache
def _refused():
    return _scenario(heal_gossip_after_ms=None)


@functools.cache
def _waits():
    return _scenario(heal_gossip_after_ms=300)


def test_scenario_sets_the_stage_a_restarted_node_routes_by_the_ring_it_saved() -> None:
    sc, d, stale_ring, synced_before, put, get = _refused()
    assert "n6" not in stale_ring and synced_before is False
    assert acked(put) and put.complete_us < get.invoke_us


# Regression: a node down across a join, restarted, coordinated a strict read by its
#   saved (older) ring before gossip reached it and missed an acked write (failed before the fix).
def test_a_restarted_node_refuses_strict_reads_until_it_has_heard_a_majority() -> None:
    sc, d, stale_ring, synced_before, put, get = _refused()
    assert get.outcome != "ok" and get.status == m.UNAVAILABLE, get
    assert "timeout_ms_ring_sync" in get.message, get.message
    core = sc.cluster.cores[d]
    assert core.stats["ring_sync_refused"] >= 1 and not core.ring_sync.synced
    verdict = sc.check()
    assert verdict.stale_reads == 0 and verdict.lost_acked_writes == 0, verdict.examples


def test_a_restarted_node_serves_the_held_read_by_the_new_ring_once_synced() -> None:
    sc, d, stale_ring, synced_before, put, get = _waits()
    assert acked(get) and get.value == b"NEW", get
    core = sc.cluster.cores[d]
    assert core.ring_sync.synced and "n6" in core.membership.ring_members()
    assert core.stats["ring_sync_waits"] >= 1 and core.stats["ring_sync_refused"] == 0
    verdict = sc.check()
    assert verdict.stale_reads == 0 and verdict.lost_acked_writes == 0, verdict.examples
