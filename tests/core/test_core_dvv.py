"""Dotted version vector sets (core/dvv.py): the lattice laws, and no lost write."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core import dvv

NODES = ["a", "b", "c"]

# A history: each step is either a write coordinated by replica i with the context a
# client read from replica j (or no context), or a sync of replica j into replica i.
step = st.one_of(
    st.tuples(st.just("w"), st.integers(0, 2), st.one_of(st.none(), st.integers(0, 2)), st.booleans()),
    st.tuples(st.just("s"), st.integers(0, 2), st.integers(0, 2), st.booleans()),
)


def run(history):
    states = [dvv.EMPTY] * 3
    writes = []  # (dot, value, ctx it saw)
    for n, (kind, i, j, flag) in enumerate(history):
        if kind == "w":
            ctx = dvv.context(states[j]) if j is not None else {}
            value = None if flag and j is not None else f"v{n}".encode()  # some writes are deletes
            states[i] = dvv.update(states[i], ctx, value, NODES[i], siblings_max=1_000)
            dot = (NODES[i], states[i].vv[NODES[i]])
            writes.append((dot, value, ctx))
        else:
            states[i] = dvv.sync(states[i], states[j])
            if flag:
                states[j] = dvv.sync(states[j], states[i])
    return states, writes


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=30))
def test_sync_is_commutative_associative_idempotent(history):
    (a, b, c), _ = run(history)
    assert dvv.sync(a, b) == dvv.sync(b, a)
    assert dvv.sync(dvv.sync(a, b), c) == dvv.sync(a, dvv.sync(b, c))
    assert dvv.sync(a, a) == a
    assert dvv.encode(dvv.sync(a, b)) == dvv.encode(dvv.sync(b, a))  # canonical bytes


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_no_write_is_lost_only_superseded(history):
    """Every write is a sibling of the converged state, or a later write's context saw it."""
    states, writes = run(history)
    final = dvv.sync(dvv.sync(states[0], states[1]), states[2])
    present = {(s.node, s.counter): s.value for s in final.siblings}
    for dot, value, _ctx in writes:
        if dot in present:
            assert present[dot] == value
            continue
        superseded = value is None or any(
            dot[1] <= ctx.get(dot[0], 0) for _, _, ctx in writes)
        assert superseded, f"write {dot}={value!r} vanished without a write that saw it"
    for s in final.siblings:  # and nothing appears that nobody wrote
        assert any(d == (s.node, s.counter) and v == s.value for d, v, _ in writes)


def test_two_concurrent_writes_become_siblings_and_a_resolution_supersedes_both():
    base = dvv.update(dvv.EMPTY, {}, b"v0", "a")
    ctx = dvv.context(base)
    a = dvv.update(base, ctx, b"from-client-1", "a")
    b = dvv.update(base, ctx, b"from-client-2", "b")  # a different coordinator, same context
    both = dvv.sync(a, b)
    assert sorted(dvv.values(both)) == [b"from-client-1", b"from-client-2"]
    resolved = dvv.update(both, dvv.context(both), b"merged", "c")
    assert dvv.values(resolved) == [b"merged"]
    # a replica that only had one of the siblings learns the resolution and drops it
    assert dvv.values(dvv.sync(a, resolved)) == [b"merged"]


def test_write_without_context_adds_a_sibling():
    s = dvv.update(dvv.EMPTY, {}, b"x", "a")
    s = dvv.update(s, {}, b"y", "a")
    assert dvv.values(s) == [b"x", b"y"]


def test_delete_keeps_its_context_and_no_stale_replica_resurrects():
    s = dvv.update(dvv.EMPTY, {}, b"x", "a")
    stale = s
    deleted = dvv.update(s, dvv.context(s), None, "b")
    assert dvv.values(deleted) == [] and deleted.vv  # gone, context kept
    assert dvv.values(dvv.sync(stale, deleted)) == []
    concurrent = dvv.update(stale, {}, b"new", "c")  # never saw the delete
    assert dvv.values(dvv.sync(concurrent, deleted)) == [b"new"]


def test_context_is_bounded_by_coordinators_not_clients():
    s = dvv.EMPTY
    for i in range(500):  # 500 clients, each writing its resolution through one of 3 nodes
        s = dvv.update(s, dvv.context(s), f"client-{i}".encode(), NODES[i % 3])
    assert len(s.vv) == 3 and dvv.values(s) == [b"client-499"]


def test_sibling_limit_refuses_and_a_resolution_still_passes():
    s = dvv.EMPTY
    for i in range(dvv.SIBLINGS_MAX):
        s = dvv.update(s, {}, str(i).encode(), "a")
    with pytest.raises(dvv.SiblingLimitError, match="SIBLINGS_MAX"):
        dvv.update(s, {}, b"one too many", "a")
    assert len(dvv.values(s)) == dvv.SIBLINGS_MAX  # nothing dropped
    assert dvv.values(dvv.update(s, dvv.context(s), b"resolved", "b")) == [b"resolved"]


def test_context_codec_rejects_garbage():
    assert dvv.decode_context(None) == {}
    assert dvv.decode_context(dvv.encode_context({"a": 3})) == {"a": 3}
    with pytest.raises(ValueError, match="malformed causal context"):
        dvv.decode_context(b"\xc1not msgpack")
    with pytest.raises(ValueError, match="outside its context"):
        dvv.decode(dvv.encode(dvv.DVVSet({}, [dvv.Sibling("a", 1, b"x")])))
