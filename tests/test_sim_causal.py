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
