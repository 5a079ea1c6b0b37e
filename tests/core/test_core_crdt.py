"""Convergent types (core/crdt.py) and the typed-record resolve rule (core/typed.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core import crdt, typed
from quorumkv.core.merkle import compare_entries, entry_hash
from quorumkv.core.version import Record, Version

NODES = ["a", "b", "c"]
elems = st.sampled_from([b"x", b"y", b"z"])


def replicate(history, apply, merge, empty):
    """Three replicas; each step updates one (as its coordinator) or merges one into another."""
    states = [empty] * 3
    for i, j, op in history:
        states[i] = apply(states[i], NODES[i], op) if op is not None else merge(states[i], states[j])
    return states


def lattice_laws(a, b, c, merge):
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a
    assert crdt.encode(merge(a, b)) == crdt.encode(merge(b, a))


counter_ops = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2),
                                 st.one_of(st.none(), st.integers(-1000, 1000))), max_size=30)


@settings(max_examples=200, deadline=None)
@given(counter_ops)
def test_pn_counter_laws_and_value(history):
    states = replicate(history, lambda s, n, d: crdt.counter_incr(s, n, d), crdt.counter_merge, crdt.PNCounter())
    lattice_laws(*states, crdt.counter_merge)
    total = crdt.counter_merge(crdt.counter_merge(states[0], states[1]), states[2])
    # the converged value counts every increment exactly once: each was made on its
    # coordinator's own state, which only grows
    assert crdt.counter_value(total) == sum(op for i, j, op in history if op is not None)


set_ops = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2),
                             st.one_of(st.none(), st.tuples(st.booleans(), elems))), max_size=30)


def _set_apply(s, node, op):
    add, elem = op
    return crdt.set_add(s, node, [elem]) if add else crdt.set_remove(s, [elem])


@settings(max_examples=200, deadline=None)
@given(set_ops)
def test_or_set_laws(history):
    states = replicate(history, _set_apply, crdt.set_merge, crdt.ORSet())
    lattice_laws(*states, crdt.set_merge)


def test_or_set_add_wins_over_a_concurrent_remove():
    base = crdt.set_add(crdt.ORSet(), "a", [b"milk"])
    removed = crdt.set_remove(base, [b"milk"])          # replica a removes what it saw
    readded = crdt.set_add(base, "b", [b"milk"])        # replica b adds it again concurrently
    assert crdt.set_members(crdt.set_merge(removed, readded)) == [b"milk"]
    assert crdt.set_members(crdt.set_merge(removed, base)) == []  # an observed add stays removed


map_ops = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2),
                             st.one_of(st.none(), st.tuples(elems, st.one_of(st.none(), elems)))), max_size=30)


def _map_apply(mp, node, op):
    field, value = op
    return crdt.map_set(mp, crdt.map_next_ts(mp, 0), node, {field: value})


@settings(max_examples=200, deadline=None)
@given(map_ops)
def test_lww_map_laws(history):
    states = replicate(history, _map_apply, crdt.map_merge, crdt.LWWMap())
    lattice_laws(*states, crdt.map_merge)


def test_lww_map_delete_is_not_undone_by_an_older_set():
    old = crdt.map_set(crdt.LWWMap(), 5, "a", {b"f": b"1"})
    deleted = crdt.map_set(old, 6, "b", {b"f": None})
    assert crdt.map_items(crdt.map_merge(old, deleted)) == []
    assert crdt.map_get(crdt.map_merge(deleted, crdt.map_set(deleted, 7, "c", {b"f": b"2"})), b"f") == b"2"


def test_counter_overflow_is_refused():
    c = crdt.counter_incr(crdt.PNCounter(), "a", crdt.INT64_MAX)
    with pytest.raises(ValueError, match="overflow"):
        crdt.counter_incr(c, "a", 1)


# ------------------------------------------------------------------ resolve
def _rec(ts, kind, state, node="n1"):
    return typed.typed_record(Version(ts, node), kind, state)


def test_resolve_merges_same_kind_and_never_refuses_an_older_one():
    a = _rec(10, typed.SET, crdt.set_add(crdt.ORSet(), "n1", [b"x"]))
    b = _rec(5, typed.SET, crdt.set_add(crdt.ORSet(), "n2", [b"y"]), node="n2")
    merged, newer = typed.resolve(a, b)
    assert newer is None and merged.version.key() == a.version.key()
    assert crdt.set_members(typed.decode(typed.SET, merged.value)) == [b"x", b"y"]
    assert typed.resolve(merged, b) == (None, None)  # already included: nothing to write
    assert typed.resolve(merged, merged) == (None, None)


def test_resolve_is_lww_between_plain_records_and_across_types():
    lww_old = Record(Version(1, "n1"), b"v")
    lww_new = Record(Version(9, "n1"), b"w")
    assert typed.resolve(lww_old, lww_new) == (lww_new, None)
    assert typed.resolve(lww_new, lww_old) == (None, lww_new.version)
    counter = _rec(5, typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), "n1", 3))
    assert typed.resolve(counter, lww_new) == (lww_new, None)  # SET on a counter: newer wins
    assert typed.resolve(lww_new, counter) == (None, lww_new.version)


def test_read_result_merges_replies_and_repairs_the_ones_that_differ():
    a = _rec(10, typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), "n1", 2))
    b = _rec(10, typed.COUNTER, crdt.counter_incr(crdt.PNCounter(), "n2", 5), node="n1")
    out = typed.read_result([a, b, None])
    assert crdt.counter_value(typed.decode(typed.COUNTER, out.value)) == 7
    assert typed.needs_repair(out, a) and typed.needs_repair(out, b) and typed.needs_repair(out, None)
    assert not typed.needs_repair(out, out)
    # an older typed record under a newer plain write is overwritten, not merged in
    plain = Record(Version(20, "n3"), b"s")
    assert typed.read_result([a, plain]) is plain


def test_merkle_sees_different_states_under_one_version_and_moves_them_both_ways():
    a = _rec(10, typed.SET, crdt.set_add(crdt.ORSet(), "n1", [b"x"]))
    b = _rec(10, typed.SET, crdt.set_add(crdt.ORSet(), "n2", [b"y"]), node="n1")
    assert a.version.key() == b.version.key()
    assert entry_hash(b"k", a.version) != entry_hash(b"k", b.version)
    assert compare_entries({b"k": a.version}, {b"k": b.version}) == ([b"k"], [b"k"])
    assert compare_entries({b"k": a.version}, {b"k": a.version}) == ([], [])
    plain = Version(10, "n1")
    assert entry_hash(b"k", plain) == entry_hash(b"k", Version(10, "n1"))  # LWW hashes unchanged


def test_state_of_refuses_another_live_type():
    live = Record(Version(1, "n1"), b"text")
    with pytest.raises(typed.WrongTypeError, match="WRONGTYPE"):
        typed.state_of(live, typed.SET, now_ms=0)
    assert typed.state_of(Record(Version(1, "n1"), None), typed.SET, 0) == crdt.ORSet()
    expired = Record(Version(1, "n1"), b"text", expires_ms=5)
    assert typed.state_of(expired, typed.COUNTER, now_ms=10) == crdt.PNCounter()


def test_a_caspaxos_record_is_not_typed_and_stays_last_writer_wins():
    """CASPaxos records name their parent state in ``Version.ctx`` (core/paxos.py); only
    a ``"t"`` in ctx makes a record typed. Before the two features met, a plain read of
    a CAS-written key with replicas one accept apart raised KeyError in read_result and
    the round never answered (tests/io/test_resp_atomic.py::test_atomic_string_commands)."""
    from quorumkv.core import typed
    from quorumkv.core.paxos import parent_ctx
    from quorumkv.core.version import Record, Version

    first = Record(Version(10, "n1", parent_ctx(None)), b"v1")
    second = Record(Version(20, "n2", parent_ctx(first)), b"v2")
    assert second.version.ctx and not second.version.typed and typed.kind_of(second) == typed.LWW
    assert typed.read_result([first, second]) is second
    assert typed.read_result([second, first]) is second
    assert typed.resolve(first, second) == (second, None)
    assert typed.resolve(second, first) == (None, Version(20, "n2"))
    assert typed.needs_repair(second, first) and not typed.needs_repair(second, second)
def test_a_ctx_without_a_type_tag_is_a_plain_record():
    """Other protocols keep their own entries in Version.ctx (CASPaxos: the parent);
    such records stay last-writer-wins everywhere."""
    a = Record(Version(5, "n1", {"^n2": 3}), b"5")
    b = Record(Version(7, "n2", {"^n1": 5}), b"6")
    assert not typed.is_typed(a.version) and typed.kind_of(a) == typed.LWW
    assert typed.read_result([a, b]) is b
    assert typed.needs_repair(b, a) and not typed.needs_repair(b, b)
    assert typed.resolve(a, b) == (b, None) and typed.resolve(b, a) == (None, Version(7, "n2"))
