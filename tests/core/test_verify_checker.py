"""The linearizability checker on hand-built histories: valid ones, invalid ones (with
their counter-example), unknown outcomes, and the time budget."""

from __future__ import annotations

import time

from quorumkv.verify.checker import INVALID, UNKNOWN, VALID, Op, check, counterexample, linearizable


def op(p, f, value, t0, t1, typ="ok", result=None, key="k"):
    return Op(p, f, key, value, t0, t1 if typ != "info" else None, typ, result)


FAR = time.monotonic() + 60


def test_sequential_register_is_valid_and_a_stale_read_is_not():
    h = [op(0, "write", 1, 0, 1), op(1, "read", None, 2, 3, result=1), op(0, "write", 2, 4, 5),
         op(1, "read", None, 6, 7, result=2)]
    assert linearizable(h, "register", FAR) == VALID
    stale = h[:3] + [op(1, "read", None, 6, 7, result=1)]  # read after write 2 completed returns 1
    assert linearizable(stale, "register", FAR) == INVALID
    ce = counterexample(stale, "register", FAR)
    assert ce[-1].f == "read" and ce[-1].result == 1 and any(o.value == 2 for o in ce)


def test_concurrent_ops_may_order_either_way():
    h = [op(0, "write", 1, 0, 10), op(1, "read", None, 1, 2, result=1), op(2, "read", None, 3, 4, result=None)]
    # read 1 then read None: the write cannot have taken effect before the first read and
    # not after the second... it is concurrent with both, but reads are ordered: invalid
    assert linearizable(h, "register", FAR) == INVALID
    h2 = [op(0, "write", 1, 0, 10), op(1, "read", None, 1, 2, result=None), op(2, "read", None, 3, 4, result=1)]
    assert linearizable(h2, "register", FAR) == VALID


def test_info_write_may_or_may_not_have_happened_and_fail_never_did():
    seen = [op(0, "write", 7, 0, None, "info"), op(1, "read", None, 5, 6, result=7)]
    unseen = [op(0, "write", 7, 0, None, "info"), op(1, "read", None, 5, 6, result=None)]
    assert linearizable(seen, "register", FAR) == VALID
    assert linearizable(unseen, "register", FAR) == VALID
    failed = [op(0, "write", 7, 0, 1, "fail"), op(1, "read", None, 5, 6, result=7)]
    assert linearizable(failed, "register", FAR) == INVALID


def test_cas_register():
    h = [op(0, "write", 0, 0, 1), op(1, "cas", (0, 1), 2, 3, result=True), op(2, "cas", (0, 2), 4, 5, result=False),
         op(0, "read", None, 6, 7, result=1)]
    assert linearizable(h, "cas-register", FAR) == VALID
    lost_update = [op(0, "write", 0, 0, 1), op(1, "cas", (0, 1), 2, 3, result=True),
                   op(2, "cas", (0, 2), 4, 5, result=True)]  # both "won" the same expected value
    assert linearizable(lost_update, "cas-register", FAR) == INVALID


def test_counter():
    h = [op(0, "incr", 1, 0, 1, result=1), op(1, "incr", 1, 0.5, 2, result=2), op(2, "incr", 5, 3, None, "info"),
         op(0, "read", None, 4, 5, result=7)]
    assert linearizable(h, "counter", FAR) == VALID
    double = [op(0, "incr", 1, 0, 1, result=1), op(1, "incr", 1, 2, 3, result=1)]
    assert linearizable(double, "counter", FAR) == INVALID


def test_keys_are_checked_independently_and_the_budget_gives_unknown():
    h = [op(0, "write", 1, 0, 1, key="a"), op(1, "read", None, 2, 3, result=None, key="a"),
         op(0, "write", 1, 0, 1, key="b"), op(1, "read", None, 2, 3, result=1, key="b")]
    verdicts = {v.key: v.verdict for v in check(h, "register", 10)}
    assert verdicts == {"a": INVALID, "b": VALID}
    # Many concurrent unknown writes and no way to order the reads: a search, cut short.
    big = [op(i, "write", i, 0, None, "info") for i in range(40)]
    big += [op(100 + i, "read", None, 1 + i, 1.5 + i, result=(i * 7) % 40) for i in range(40)]
    big += [op(200, "read", None, 100, 101, result=999)]
    assert linearizable(big, "register", time.monotonic() - 1) in (UNKNOWN, INVALID)
    assert linearizable(big, "register", time.monotonic() - 1) == UNKNOWN
