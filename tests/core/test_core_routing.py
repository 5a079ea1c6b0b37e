"""Replica choice: sloppy-quorum write targets and load-ranked read targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core.ring import Ring
from quorumkv.core.routing import EWMA_ALPHA, LATENCY_MS_UNKNOWN, LoadTracker, read_targets, write_targets

PRIMARIES = ("p1", "p2", "p3")
RING = ("p1", "p2", "p3", "f1", "f2", "f3", "f4")


def alive_except(*dead):
    return lambda n: n not in dead


# ---------------------------------------------------------------- writes
@pytest.mark.parametrize(
    "dead,expected",
    [
        ((), [("p1", None), ("p2", None), ("p3", None)]),
        (("p2",), [("p1", None), ("p3", None), ("f1", "p2")]),
        (("p1", "p3"), [("p2", None), ("f1", "p1"), ("f2", "p3")]),
        (("p1", "p2", "p3"), [("f1", "p1"), ("f2", "p2"), ("f3", "p3")]),
        # A dead non-primary is skipped: the next live one in ring order stands in.
        (("p2", "f1"), [("p1", None), ("p3", None), ("f2", "p2")]),
        (("p1", "p2", "p3", "f2"), [("f1", "p1"), ("f3", "p2"), ("f4", "p3")]),
        # Not enough live non-primaries: the dead primaries left over get no fallback.
        (("p1", "p2", "p3", "f1", "f2"), [("f3", "p1"), ("f4", "p2")]),
        (("p1", "p2", "p3", "f1", "f2", "f3", "f4"), []),
    ],
)
def test_write_targets_fallbacks(dead, expected):
    got = write_targets(PRIMARIES, RING, alive_except(*dead))
    assert got == expected
    fallbacks = [n for n, owner in got if owner]
    assert len(set(fallbacks)) == len(fallbacks)
    assert not set(fallbacks) & set(PRIMARIES)
    assert all(owner in dead for _, owner in got if owner)


@pytest.mark.parametrize("dead", [(), ("p2",), ("p1", "p3"), ("p1", "p2", "p3")])
def test_write_targets_primary_only(dead):
    got = write_targets(PRIMARIES, RING, alive_except(*dead), primary_only=True)
    assert got == [(p, None) for p in PRIMARIES if p not in dead]


def test_write_targets_ring_order_not_alphabetical():
    ring = ("p1", "p2", "p3", "zz", "aa", "mm")
    assert write_targets(PRIMARIES, ring, alive_except("p1", "p2")) == [("p3", None), ("zz", "p1"), ("aa", "p2")]


@settings(max_examples=200, deadline=None)
@given(nodes=st.integers(min_value=1, max_value=8), n=st.integers(min_value=1, max_value=5),
       dead_mask=st.integers(min_value=0, max_value=255), key=st.binary(min_size=1, max_size=8))
def test_write_targets_invariants_on_real_rings(nodes, n, dead_mask, key):
    names = [f"n{i}" for i in range(nodes)]
    ring = Ring(names, n, vnodes=4)
    dead = {names[i] for i in range(nodes) if dead_mask >> i & 1}
    alive = alive_except(*dead)
    prim = ring.preference_list(key)
    ext = ring.extended_list(key)
    got = write_targets(prim, ext, alive)
    nodes_used = [t for t, _ in got]
    assert len(set(nodes_used)) == len(nodes_used)
    assert all(alive(t) for t in nodes_used)
    live_prim = [p for p in prim if alive(p)]
    assert [t for t, o in got if o is None] == live_prim
    spare = [x for x in ext if x not in prim and alive(x)]
    assert len(got) == len(live_prim) + min(len(prim) - len(live_prim), len(spare))
    # Fallbacks are the first live non-primaries in ring order, paired with dead primaries in order.
    assert [(t, o) for t, o in got if o] == list(zip(spare, [p for p in prim if not alive(p)]))


# ------------------------------------------------------------------ load
def test_load_tracker_ewma_and_inflight():
    lt = LoadTracker()
    assert lt.score("x") == LATENCY_MS_UNKNOWN
    lt.sent("x")
    lt.sent("x")
    assert lt.score("x") == LATENCY_MS_UNKNOWN * 3
    lt.done("x", 10.0)
    assert lt.latency_ms["x"] == 10.0 and lt.inflight["x"] == 1
    lt.done("x", 20.0)
    assert lt.latency_ms["x"] == pytest.approx(10.0 + EWMA_ALPHA * 10.0)
    assert lt.inflight["x"] == 0
    lt.done("x", None)  # never below zero, latency untouched
    assert lt.inflight["x"] == 0 and lt.latency_ms["x"] == pytest.approx(12.0)
    lt.done("y", 0.0)
    assert lt.score("y") == 0.1  # floor


def tracker(lat=None, inflight=None):
    lt = LoadTracker()
    lt.latency_ms.update(lat or {})
    lt.inflight.update(inflight or {})
    return lt


# ------------------------------------------------------------------ reads
@pytest.mark.parametrize(
    "lat,inflight,self_id,dead,expected",
    [
        # Unmeasured: all tie; self first, then preference order.
        ({}, {}, "x", (), ["p1", "p2", "p3"]),
        ({}, {}, "p3", (), ["p3", "p1", "p2"]),
        # By latency EWMA.
        ({"p1": 5.0, "p2": 1.0, "p3": 3.0}, {}, "x", (), ["p2", "p3", "p1"]),
        # Requests in flight multiply the score: p2 1 ms x 4 > p1 3 ms x 1.
        ({"p1": 3.0, "p2": 1.0, "p3": 3.5}, {"p2": 3}, "x", (), ["p1", "p3", "p2"]),
        # Self wins a tie on score but not a worse score.
        ({"p1": 2.0, "p2": 2.0, "p3": 2.0}, {}, "p2", (), ["p2", "p1", "p3"]),
        ({"p1": 1.0, "p2": 2.0, "p3": 2.0}, {}, "p2", (), ["p1", "p2", "p3"]),
        # Sub-0.1 ms latencies tie at the floor.
        ({"p1": 0.01, "p2": 0.05, "p3": 0.09}, {}, "p3", (), ["p3", "p1", "p2"]),
        # Dead primaries are left out; fallbacks come after every live primary.
        ({"p1": 50.0, "p3": 1.0}, {}, "x", ("p2",), ["p3", "p1", "f1"]),
        ({}, {}, "x", ("p1", "p2"), ["p3", "f1", "f2"]),
    ],
)
def test_read_targets_ranking(lat, inflight, self_id, dead, expected):
    got = read_targets(PRIMARIES, RING, alive_except(*dead), tracker(lat, inflight), self_id)
    assert [node for node, _ in got] == expected
    for node, owner in got:
        if node in PRIMARIES:
            assert owner is None
        else:
            assert owner in dead
    live_prims = [n for n, o in got if o is None]
    assert all(o is None for n, o in got[:len(live_prims)])  # primaries first


@pytest.mark.parametrize("dead", [(), ("p2",), ("p1", "p2", "p3")])
def test_read_targets_primary_only_has_no_fallbacks(dead):
    got = read_targets(PRIMARIES, RING, alive_except(*dead), tracker(), "x", primary_only=True)
    assert all(owner is None for _, owner in got)
    assert sorted(n for n, _ in got) == [p for p in PRIMARIES if p not in dead]


def test_read_targets_follow_load_changes():
    lt = LoadTracker()
    for _ in range(3):
        lt.sent("p1")
        lt.done("p1", 40.0)
        lt.sent("p2")
        lt.done("p2", 2.0)
        lt.sent("p3")
        lt.done("p3", 4.0)
    assert [n for n, _ in read_targets(PRIMARIES, RING, alive_except(), lt, "p1")] == ["p2", "p3", "p1"]
    for _ in range(20):  # p1 recovers, p2 slows down
        lt.sent("p1")
        lt.done("p1", 1.0)
        lt.sent("p2")
        lt.done("p2", 30.0)
    assert [n for n, _ in read_targets(PRIMARIES, RING, alive_except(), lt, "x")] == ["p1", "p3", "p2"]
