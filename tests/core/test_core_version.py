"""Versions (ts, node) ordering, newest(), tombstones and the hybrid logical clock."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core.version import (
    HLC,
    LOGICAL_BITS,
    LOGICAL_MASK,
    Record,
    Version,
    newest,
    pack_ts,
)


def V(ts, node="n1"):
    return Version(ts, node)


@pytest.mark.parametrize(
    "a,b,a_newer",
    [
        (V(2, "a"), V(1, "z"), True),  # ts dominates node
        (V(1, "z"), V(2, "a"), False),
        (V(5, "b"), V(5, "a"), True),  # equal ts: node id breaks the tie
        (V(5, "a"), V(5, "b"), False),
        (V(5, "a"), V(5, "a"), False),  # equal: not newer (strict)
        (V(5, "n10"), V(5, "n9"), False),  # string order, not numeric: "n1..." < "n9"
    ],
)
def test_newer_than_orders_by_ts_then_node(a, b, a_newer):
    assert a.newer_than(b) is a_newer
    assert (a.key() > b.key()) is a_newer


def test_anything_is_newer_than_none():
    assert V(0, "").newer_than(None)


def test_ctx_is_ignored_by_lww_order():
    a = Version(7, "n1", {"n1": 3})
    b = Version(7, "n1", None)
    assert not a.newer_than(b) and not b.newer_than(a)


def test_wall_ms_and_str():
    v = Version(pack_ts(1234, 5), "n2")
    assert v.wall_ms == 1234
    assert v.ts & LOGICAL_MASK == 5
    assert str(v) == "1234.5@n2"


def test_newest_picks_max_and_skips_none():
    r1 = Record(V(1, "a"), b"one")
    r2 = Record(V(3, "a"), b"three")
    r3 = Record(V(3, "b"), None)  # tombstone, newest by tie-break
    assert newest([]) is None
    assert newest([None, None]) is None
    assert newest([r1, None, r2]) is r2
    assert newest([r3, r1, r2]) is r3
    assert newest([r2, r3, r1]) is r3
    assert newest(iter([None, r1])) is r1


def test_newest_keeps_first_of_equal_versions():
    a = Record(V(4, "x"), b"a")
    b = Record(V(4, "x"), b"b")
    assert newest([a, b]) is a


def test_tombstone_record():
    t = Record(V(1), None)
    assert t.tombstone and t.value is None
    live = Record(V(1), b"")
    assert not live.tombstone  # empty value is a value, not a delete
    # Survives the wire as a tombstone, distinct from b"".
    enc, dec = msgspec.msgpack.encode, msgspec.msgpack.Decoder(Record).decode
    assert dec(enc(t)) == t and dec(enc(t)).value is None
    assert dec(enc(live)).value == b""


def test_hlc_follows_wall_clock_when_it_advances():
    c = HLC()
    assert c.now(100) == 100 << LOGICAL_BITS
    assert c.now(101) == 101 << LOGICAL_BITS


def test_hlc_stalled_or_backwards_clock_bumps_logical():
    c = HLC()
    t1 = c.now(100)
    t2 = c.now(100)
    t3 = c.now(50)
    assert t1 < t2 < t3
    assert t3 >> LOGICAL_BITS == 100  # physical part did not go back
    assert t3 & LOGICAL_MASK == 2


def test_hlc_logical_overflow_stays_monotonic():
    c = HLC(pack_ts(10, LOGICAL_MASK))
    t = c.now(10)
    assert t == pack_ts(11, 0)
    assert c.now(10) > t


def test_hlc_observe_moves_past_remote():
    c = HLC()
    c.now(100)
    remote = pack_ts(5_000, 7)
    c.observe(remote, 100)
    assert c.now(100) > remote
    # Observing something older changes nothing.
    before = c.last
    c.observe(pack_ts(1, 0), 0)
    assert c.last == before


def test_hlc_observe_with_newer_wall_uses_wall():
    c = HLC()
    c.observe(pack_ts(5, 0), 10)
    assert c.now(10) > pack_ts(10, 0)


def test_hlc_restart_seed():
    c = HLC(pack_ts(1_000, 3))
    assert c.now(10) > pack_ts(1_000, 3)


events = st.lists(
    st.one_of(
        st.tuples(st.just("now"), st.integers(0, 2**40)),
        st.tuples(st.just("observe"), st.integers(0, 2**40), st.integers(0, 2**56)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_hlc_now_strictly_increasing_and_past_observed(evts):
    c = HLC()
    last_now = -1
    max_seen = -1
    for ev in evts:
        if ev[0] == "now":
            t = c.now(ev[1])
            assert t > last_now
            assert t > max_seen  # later than anything observed before
            assert t >= ev[1] << LOGICAL_BITS  # never behind the wall clock
            last_now = t
            max_seen = max(max_seen, t)
        else:
            _, wall, remote = ev
            c.observe(remote, wall)
            max_seen = max(max_seen, remote)


def test_hlc_peek_is_what_now_returns_without_issuing():
    c = HLC()
    for wall in (100, 100, 50, 200, 199):
        p = c.peek(wall)
        assert c.last < p  # nothing issued by peeking
        assert c.now(wall) == p


def test_hlc_limit_is_never_passed():
    c = HLC()
    c.limit = pack_ts(100, 1)
    assert c.now(100) == pack_ts(100, 0)
    assert c.now(100) == pack_ts(100, 1)
    with pytest.raises(AssertionError):
        c.now(100)  # the owner must wait for a higher ceiling (core/clock.py)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["now", "save", "restart"]), st.integers(-3_000, 3_000)),
                min_size=1, max_size=80))
def test_ceiling_discipline_never_reissues_across_restarts(steps):
    """The rule core/clock.py follows, on HLC alone: issue only within (floor, ceiling];
    save ceilings ahead; a restart (from storage that knows none of the issued
    timestamps) takes the saved ceiling as its floor. Every timestamp ever issued is
    then larger than every one issued before, whatever the wall clock does."""
    wall = 1_000_000
    saved = 0
    c, floor = HLC(), 0
    c.limit = saved
    issued = []
    for kind, jump in steps:
        wall = max(0, wall + jump)
        if kind == "save":
            saved = max(saved, (max(wall, c.last >> LOGICAL_BITS) + 1_000) << LOGICAL_BITS)
            c.limit = saved
        elif kind == "restart":
            c, floor = HLC(0), saved
            c.limit = saved
        elif floor < c.peek(wall) <= saved:
            t = c.now(wall)
            assert not issued or t > issued[-1]
            issued.append(t)
