"""Hinted-handoff policy: admission by bytes, expiry by age, replay token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.core.hints import HintSettings, TokenBucket, admit, expired, record_size, safe_with_gc
from quorumkv.core.version import Record, Version, pack_ts

HS = HintSettings(bytes_max_per_target=1_000, age_ms_max=60_000, replay_per_s=10)


@pytest.mark.parametrize(
    "held,size,ok",
    [
        (0, 1_000, True),  # exactly the cap
        (0, 1_001, False),
        (999, 1, True),
        (1_000, 1, False),
        (1_000, 0, True),
        (400, 600, True),  # held + size == max
        (400, 601, False),  # + 1
        (0, 0, True),
    ],
)
def test_admit_boundary(held, size, ok):
    assert admit(HS, held, size) is ok


@pytest.mark.parametrize(
    "age,is_expired",
    [(0, False), (59_999, False), (60_000, False), (60_001, True), (10**9, True), (-5, False)],
)
def test_expired_boundary(age, is_expired):
    written = 1_700_000_000_000
    record = Record(Version(pack_ts(written, 7), "n1"), b"v")
    assert expired(HS, record, written + age) is is_expired


@pytest.mark.parametrize(
    "grace,age,skew,ok",
    [
        (4 * 3600_000, 3 * 3600_000, 500, True),  # the defaults
        (1_000, 499, 500, True),  # grace = age + skew + 1: the smallest safe grace
        (1_000, 500, 500, False),  # grace = age + skew: a replay may land just as GC purges
        (1_000, 1_000, 0, False),  # grace == age (what config allowed before issue 10's fix)
        (1_000, 999, 0, True),  # max-offset rule off: clocks assumed synchronised
    ],
)
def test_safe_with_gc_boundary(grace, age, skew, ok):
    assert safe_with_gc(grace, age, skew) is ok


def test_defaults_follow_cassandra():
    d = HintSettings()
    assert d.age_ms_max == 3 * 3600 * 1000
    assert d.bytes_max_per_target == 64 * 1024 * 1024


@pytest.mark.parametrize(
    "key,value,size",
    [(b"k", b"vv", 1 + 2 + 64), (b"key", None, 3 + 64), (b"k", b"", 1 + 64)],
)
def test_record_size(key, value, size):
    assert record_size(key, value) == size


# ------------------------------------------------------------ token bucket
def test_bucket_starts_full_with_one_second_burst():
    b = TokenBucket(10, 0)
    assert b.take(25, 0) == 10
    assert b.take(1, 0) == 0


@pytest.mark.parametrize(
    "wait_ms,got",
    [(0, 0), (99, 0), (100, 1), (250, 2), (500, 5), (1_000, 10), (5_000, 10), (10**9, 10)],
)
def test_bucket_refill_and_burst_cap(wait_ms, got):
    b = TokenBucket(10, 0)
    assert b.take(10, 0) == 10
    assert b.take(100, wait_ms) == got


def test_bucket_partial_takes_keep_remainder():
    b = TokenBucket(10, 0)
    assert b.take(3, 0) == 3
    assert b.take(3, 0) == 3
    assert b.take(10, 0) == 4
    # Fractions accumulate across frequent small refills (10/s, polled every 25 ms).
    total = sum(b.take(1, t) for t in range(25, 3_025, 25))
    assert total == 30


@pytest.mark.parametrize("back_ms", [1, 10, 5_000, 3_600_000])
def test_bucket_never_gives_negative_tokens_when_clock_goes_back(back_ms):
    b = TokenBucket(10, 1_000_000)
    assert b.take(10, 1_000_000) == 10
    got = b.take(5, 1_000_000 - back_ms)
    assert got == 0
    # ... and refills normally once time moves forward again.
    assert b.take(5, 1_000_000 - back_ms + 300) == 3


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(min_value=1, max_value=5_000),
       steps=st.lists(st.tuples(st.integers(min_value=-2_000, max_value=3_000),
                                st.integers(min_value=0, max_value=10_000)), max_size=40))
def test_bucket_bounds(rate, steps):
    """Never negative, never more than asked, never more than the burst, and over any
    forward-moving run no more than burst + rate x elapsed."""
    t0 = 10**12
    b = TokenBucket(rate, t0)
    t = t0
    total = 0
    forward = 0
    for dt, want in steps:
        t += dt
        forward += max(dt, 0)
        got = b.take(want, t)
        assert 0 <= got <= min(want, rate)
        total += got
    assert total <= rate + rate * forward / 1000 + 1e-9
