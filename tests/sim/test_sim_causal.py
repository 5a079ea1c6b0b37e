"""Causal mode in the simulator: no acknowledged write lost under faults (issue 15)."""

from __future__ import annotations

import pytest

from quorumkv.core import dvv, typed
from quorumkv.sim.causal import SWEEP_FAULTS, run_causal
from quorumkv.sim.checker import check_causal
from quorumkv.sim.config import SimConfig
from quorumkv.sim.history import OK, History, Op
from quorumkv.core.version import Version


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_causal_mode_loses_no_acknowledged_write_under_faults(seed):
    res = run_causal(SimConfig(seed=seed, ops=1_500, faults=SWEEP_FAULTS, swarm=True))
    v = res.verdict
    assert v.acked_writes > 0 and v.keys_with_siblings > 0  # concurrency really happened
    assert v.ok, (res.summary(), v.examples)


def _final(key, values, ts=1):
    state = dvv.EMPTY
    for i, value in enumerate(values):
        state = dvv.update(state, {}, value, f"n{i}")
    rec = typed.typed_record(Version(ts, "n1"), typed.CAUSAL, state)
    op = Op(999, -1, "get", key, rec.value, "n1", 0, 3, OK, 10, rec.version)
    return op


def test_the_checker_catches_a_lost_write_and_a_resurrection():
    """The checker itself: a write nobody saw must be a final sibling; a value an acked
    write saw must not be."""
    h = History()
    w1 = h.invoke(Op(1, 0, "put", b"k", b"a", "n1", 0, 2, OK, 5))
    w2 = h.invoke(Op(2, 1, "put", b"k", b"b", "n1", 0, 2, OK, 5))
    saw = {1: frozenset(), 2: frozenset()}
    quiet = lambda key: {}  # noqa: E731 - replicas agree
    assert check_causal(h, {b"k": _final(b"k", [b"a", b"b"])}, saw, quiet).ok
    lost = check_causal(h, {b"k": _final(b"k", [b"b"])}, saw, quiet)
    assert lost.lost_acked_writes == 1 and lost.examples["lost_acked_write"][0]["write"]["value"] == "a"
    # w2 saw "a": "a" gone is fine (superseded), "a" still there is a resurrection
    saw[2] = frozenset({b"a"})
    fine = check_causal(h, {b"k": _final(b"k", [b"b"])}, saw, quiet)
    assert fine.ok and fine.superseded == 1
    back = check_causal(h, {b"k": _final(b"k", [b"a", b"b"])}, saw, quiet)
    assert back.resurrections == 1 and not back.ok
    assert w1.value == b"a" and w2.value == b"b"


def test_counters_and_sets_lose_nothing_under_faults():
    from quorumkv.sim.causal import run_crdt

    verdict, injected = run_crdt(SimConfig(seed=4, ops=1_500, faults=SWEEP_FAULTS, swarm=True))
    assert verdict.acked_increments > 0 and verdict.acked_adds > 0
    assert verdict.ok, (verdict, injected)


def test_the_crdt_checker_catches_a_lost_add_and_a_miscount():
    from quorumkv.core import crdt
    from quorumkv.sim.causal import check_crdt

    h = History()
    h.invoke(Op(1, 0, "put", b"s", b"m1", "n1", 0, 2, OK, 5))
    h.invoke(Op(2, 0, "put", b"s", b"m2", "n1", 0, 2, OK, 5))
    h.invoke(Op(3, 0, "put", b"c", None, "n1", 0, 2, OK, 5))
    h.invoke(Op(4, 0, "put", b"c", None, "n1", 0, 2, "unknown", 5))

    def fin(key, kind, state):
        rec = typed.typed_record(Version(9, "n1"), kind, state)
        return Op(99, -1, "get", key, rec.value, "n1", 0, 3, OK, 10, rec.version)

    both = crdt.set_add(crdt.ORSet(), "n1", [b"m1", b"m2"])
    one = crdt.set_add(crdt.ORSet(), "n1", [b"m1"])
    two = crdt.counter_incr(crdt.PNCounter(), "n1", 2)
    three = crdt.counter_incr(crdt.PNCounter(), "n1", 3)
    quiet = lambda key: {}  # noqa: E731
    assert check_crdt(h, {b"s": fin(b"s", typed.SET, both), b"c": fin(b"c", typed.COUNTER, two)}, quiet).ok
    bad = check_crdt(h, {b"s": fin(b"s", typed.SET, one), b"c": fin(b"c", typed.COUNTER, three)}, quiet)
    assert bad.adds_lost == 1 and bad.counters_wrong == 1 and not bad.ok
