"""QuorumRound: deciding as replies arrive, through every boundary."""

from __future__ import annotations

import pytest

from quorumkv.core.quorum import LOST, PENDING, WON, QuorumRound
from quorumkv.core.version import Record, Version

R3 = ("n1", "n2", "n3")


def run(kind, needed, events, replicas=R3):
    """events: ("ok", replica) | ("fail", replica, reason) | ("expire",). Returns the
    round and the status after every event."""
    rnd = QuorumRound(kind, replicas, needed)
    trail = []
    for ev in events:
        if ev[0] == "ok":
            trail.append(rnd.add_ok(ev[1], *ev[2:]))
        elif ev[0] == "fail":
            trail.append(rnd.add_failure(ev[1], ev[2]))
        else:
            trail.append(rnd.expire())
        assert trail[-1] == rnd.status
    return rnd, trail


CASES = [
    # (needed, events, expected status trail)
    (1, [("ok", "n1")], [WON]),
    (2, [("ok", "n1"), ("ok", "n2")], [PENDING, WON]),
    (3, [("ok", "n1"), ("ok", "n2"), ("ok", "n3")], [PENDING, PENDING, WON]),
    # failures up to the slack keep it pending; one more loses
    (2, [("fail", "n1", "x"), ("ok", "n2"), ("ok", "n3")], [PENDING, PENDING, WON]),
    (2, [("fail", "n1", "x"), ("fail", "n2", "y")], [PENDING, LOST]),
    (3, [("fail", "n3", "down")], [LOST]),
    (1, [("fail", "n1", "a"), ("fail", "n2", "b"), ("ok", "n3")], [PENDING, PENDING, WON]),
    (1, [("fail", "n1", "a"), ("fail", "n2", "b"), ("fail", "n3", "c")], [PENDING, PENDING, LOST]),
    # late replies after the decision do not change the status
    (2, [("ok", "n1"), ("ok", "n2"), ("fail", "n3", "late")], [PENDING, WON, WON]),
    (2, [("fail", "n1", "a"), ("fail", "n2", "b"), ("ok", "n3")], [PENDING, LOST, LOST]),
    (1, [("ok", "n1"), ("expire",)], [WON, WON]),
    # duplicates are ignored (an ok then a failure from the same replica, or twice ok)
    (2, [("ok", "n1"), ("ok", "n1"), ("ok", "n1")], [PENDING, PENDING, PENDING]),
    (2, [("ok", "n1"), ("fail", "n1", "x"), ("fail", "n2", "y")], [PENDING, PENDING, PENDING]),
    (2, [("fail", "n1", "x"), ("ok", "n1"), ("fail", "n1", "z")], [PENDING, PENDING, PENDING]),
    # unknown replicas are ignored
    (1, [("ok", "n9"), ("fail", "zz", "x")], [PENDING, PENDING]),
    # deadline
    (2, [("ok", "n1"), ("expire",)], [PENDING, LOST]),
    (1, [("expire",)], [LOST]),
]


@pytest.mark.parametrize("kind", ["read", "write"])
@pytest.mark.parametrize("needed,events,trail", CASES)
def test_status_trail(kind, needed, events, trail):
    _, got = run(kind, needed, events)
    assert got == trail


def test_duplicates_and_unknown_not_counted():
    rnd, _ = run("write", 3, [("ok", "n1"), ("ok", "n1"), ("ok", "bogus"), ("fail", "n1", "x")])
    assert rnd.oks == ["n1"]
    assert rnd.failures == {}
    assert rnd.outstanding == ["n2", "n3"]
    assert not rnd.complete


def test_late_replies_recorded_but_status_kept():
    rnd, _ = run("write", 2, [("ok", "n1"), ("ok", "n2"), ("fail", "n3", "boom")])
    assert rnd.status == WON
    assert rnd.complete
    assert rnd.failures == {"n3": "boom"}


def test_expire_marks_silent_replicas_timed_out():
    rnd, _ = run("write", 3, [("ok", "n1"), ("fail", "n2", "refused"), ("expire",)])
    # n2 already failed -> LOST before expire; expire still marks n3
    assert rnd.status == LOST
    assert rnd.failures == {"n2": "refused", "n3": "timed out"}
    assert rnd.timed_out
    assert rnd.complete and rnd.outstanding == []


def test_timed_out_false_without_expiry():
    rnd, _ = run("write", 3, [("fail", "n2", "connection refused")])
    assert rnd.status == LOST and not rnd.timed_out


def test_expire_after_win_keeps_won():
    rnd, _ = run("read", 1, [("ok", "n1", None), ("expire",)])
    assert rnd.status == WON
    assert rnd.timed_out  # the stragglers did time out, but the round was won


@pytest.mark.parametrize("needed", [0, -1, 4, 100])
def test_needed_outside_range_raises(needed):
    with pytest.raises(ValueError):
        QuorumRound("write", R3, needed)


@pytest.mark.parametrize("needed", [1, 2, 3])
def test_needed_inside_range_ok(needed):
    assert QuorumRound("write", R3, needed).status == PENDING


def rec(ts, node, value):
    return Record(Version(ts, node), value)


def test_read_result_is_newest_record():
    old, new, tomb = rec(1, "n1", b"old"), rec(5, "n2", b"new"), rec(3, "n3", None)
    rnd, _ = run("read", 3, [("ok", "n1", old), ("ok", "n2", new), ("ok", "n3", tomb)])
    assert rnd.status == WON
    assert rnd.result() == new


def test_read_result_tie_broken_by_node_and_tombstone_wins_if_newer():
    a, b = rec(5, "n1", b"a"), rec(5, "n2", None)
    rnd, _ = run("read", 2, [("ok", "n1", a), ("ok", "n3", b)])
    assert rnd.result() == b


def test_read_result_none_when_no_copies():
    rnd, _ = run("read", 2, [("ok", "n1", None), ("ok", "n2", None)])
    assert rnd.status == WON and rnd.result() is None


def test_read_result_ignores_failed_and_duplicate_replies():
    good, dup = rec(2, "n1", b"good"), rec(9, "n1", b"dup")
    rnd, _ = run("read", 1, [("ok", "n1", good), ("ok", "n1", dup), ("fail", "n2", "x")])
    assert rnd.result() == good


def test_write_does_not_store_records():
    rnd, _ = run("write", 1, [("ok", "n1", rec(1, "n1", b"x"))])
    assert rnd.records == {}


# --------------------------------------------------------------- error messages
def test_error_message_after_timeout_counts():
    rnd, _ = run("write", 3, [("ok", "n1"), ("ok", "n2"), ("expire",)])
    assert rnd.error_message() == "write needed 3 acks, got 2 (n3 timed out)"


def test_error_message_read_uses_replies():
    rnd, _ = run("read", 2, [("ok", "n2", None), ("expire",)])
    assert rnd.error_message() == "read needed 2 replies, got 1 (n1 timed out, n3 timed out)"


def test_error_message_decided_early_says_at_most():
    rnd, _ = run("write", 3, [("fail", "n2", "connection refused")])
    assert rnd.status == LOST
    assert rnd.error_message() == "write needed 3 acks, at most 2 possible (n2 connection refused)"


def test_error_message_decided_early_with_some_oks():
    rnd, _ = run("write", 3, [("ok", "n1"), ("fail", "n3", "down")])
    assert rnd.error_message() == "write needed 3 acks, at most 2 possible (n3 down)"


def test_error_message_all_failed_sorted_detail():
    rnd, _ = run("read", 2, [("fail", "n3", "c"), ("fail", "n1", "a"), ("fail", "n2", "b")])
    # LOST after the second failure; the third is a late reply but still recorded.
    assert rnd.error_message() == "read needed 2 replies, got 0 (n1 a, n2 b, n3 c)"


def test_error_message_without_failures_has_no_detail():
    rnd = QuorumRound("write", R3, 2)
    assert rnd.error_message() == "write needed 2 acks, at most 3 possible"
