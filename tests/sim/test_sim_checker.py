"""The history checker judges by real time and unique values, never by versions.

Hand-written histories: each case is the smallest story that separates a correct
judgement from a version-based one.
"""

from __future__ import annotations

from quorumkv.core.version import Version
from quorumkv.sim.checker import check
from quorumkv.sim.history import FAIL, OK, UNKNOWN, History, Op

K = b"k"


class _H:
    def __init__(self) -> None:
        self.h = History()
        self.next_id = 1

    def op(self, kind: str, value, t0: int, t1: int, outcome: str = OK, client: int = 0, ts: int = 0,
           no_effect: bool = False) -> Op:
        op = Op(self.next_id, client, kind, K, value, "n1", t0, 2)
        self.next_id += 1
        self.h.invoke(op)
        self.h.complete(op, outcome, t1, version=Version(ts, "n1") if ts else None, no_effect=no_effect)
        return op

    def final(self, value) -> dict:
        op = Op(self.next_id, -1, "get", K, None, "n1", 10_000, 3)
        self.h.invoke(op)
        self.h.complete(op, OK, 10_001, value=value)
        return {K: op}

    def verdict(self, final_value, judge_reads: bool = True):
        return check(self.h, self.final(final_value), lambda key: {}, judge_reads=judge_reads)


def test_later_write_that_lost_to_an_earlier_one_is_lost_whatever_the_versions() -> None:
    h = _H()
    h.op("put", b"v1", 0, 10, ts=900)   # coordinator clock ahead: the bigger version
    h.op("put", b"v2", 20, 30, ts=100)  # invoked after v1's ack, acked
    v = h.verdict(b"v1")
    assert v.lost_acked_writes == 1
    assert v.examples["lost_acked_write"][0]["write"]["value"] == "v2"


def test_concurrent_writes_may_win_either_way() -> None:
    for final in (b"v1", b"v2"):
        h = _H()
        h.op("put", b"v1", 0, 50)
        h.op("put", b"v2", 20, 30)  # overlaps v1
        assert h.verdict(final).lost_acked_writes == 0, final


def test_a_write_that_failed_or_is_unknown_may_land_any_time_after_it_began() -> None:
    for outcome in (FAIL, UNKNOWN):
        h = _H()
        h.op("put", b"old", 0, 5, outcome=outcome)  # no ack: may have landed later
        h.op("put", b"v1", 10, 20)
        assert h.verdict(b"old").lost_acked_writes == 0, outcome


def test_an_acked_write_superseded_by_one_acked_before_it_began_is_lost() -> None:
    h = _H()
    h.op("put", b"old", 0, 5)
    h.op("put", b"v1", 10, 20)
    assert h.verdict(b"old").lost_acked_writes == 1


def test_not_found_at_the_end_needs_a_delete_not_before_the_write() -> None:
    h = _H()
    h.op("del", None, 0, 5)
    h.op("put", b"v1", 10, 20)
    assert h.verdict(None).lost_acked_writes == 1  # the only delete was acked before v1 began
    h = _H()
    h.op("put", b"v1", 10, 20)
    h.op("del", None, 15, 30)  # concurrent delete may win
    assert h.verdict(None).lost_acked_writes == 0
    h = _H()
    h.op("put", b"v1", 10, 20)
    h.op("del", None, 1, 2, outcome=FAIL, no_effect=True)  # refused: explains nothing
    assert h.verdict(None).lost_acked_writes == 1


def test_value_deleted_then_back_is_a_resurrection() -> None:
    h = _H()
    h.op("put", b"old", 0, 5)
    h.op("del", None, 10, 20)
    v = h.verdict(b"old")
    assert v.resurrections == 1 and v.lost_acked_writes == 0
    h = _H()
    h.op("put", b"old", 0, 15)
    h.op("del", None, 10, 20)  # concurrent with the put: either may win
    assert h.verdict(b"old").resurrections == 0


def test_stale_read_by_real_time() -> None:
    h = _H()
    h.op("put", b"v1", 0, 10, ts=900)
    h.op("put", b"v2", 20, 30, ts=100)
    read = h.op("get", None, 40, 45)  # began after v2's ack
    read.value = b"v1"
    v = h.verdict(b"v2")
    assert v.stale_reads == 1
    # a read that overlapped v2's write may return v1
    h = _H()
    h.op("put", b"v1", 0, 10)
    h.op("put", b"v2", 20, 30)
    read = h.op("get", None, 25, 45)
    read.value = b"v1"
    assert h.verdict(b"v2").stale_reads == 0


def test_not_found_read_after_acked_put_is_stale_unless_a_delete_explains_it() -> None:
    h = _H()
    h.op("put", b"v1", 0, 10)
    h.op("get", None, 20, 25)  # not found
    assert h.verdict(b"v1").stale_reads == 1
    h = _H()
    h.op("put", b"v1", 0, 10)
    h.op("del", None, 15, 40, outcome=UNKNOWN)  # may have landed before the read
    h.op("get", None, 20, 25)
    assert h.verdict(None).stale_reads == 0


def test_read_of_a_value_deleted_before_it_began_is_a_resurrection_when_reads_are_judged() -> None:
    def story(judge: bool):
        h = _H()
        h.op("put", b"old", 0, 5)
        h.op("del", None, 10, 20)
        read = h.op("get", None, 30, 35)
        read.value = b"old"
        return h.verdict(None, judge_reads=judge)
    judged, unjudged = story(True), story(False)
    assert judged.resurrections == 1 and judged.stale_reads == 1
    assert unjudged.resurrections == 0 and unjudged.stale_reads == 1  # still reported as stale


def test_value_nobody_wrote_is_flagged() -> None:
    h = _H()
    h.op("put", b"v1", 0, 10)
    assert h.verdict(b"phantom").unknown_values == 1
