"""Closed-form quorum math checked against brute-force enumeration (exact fractions)."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations, product
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkv.analysis.quorum import (
    is_strict,
    k_of_n_report,
    k_staleness,
    p_stale_immediate,
    quorum_availability,
    quorum_report,
    quorum_unavailability,
    writes_overlap,
)

MAX_N = 7


@st.composite
def n_r_w(draw: st.DrawFn, max_n: int = MAX_N) -> tuple[int, int, int]:
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(1, n)), draw(st.integers(1, n))


probabilities = st.fractions(min_value=0, max_value=1, max_denominator=50)


def brute_availability(n: int, k: int, p: Fraction) -> Fraction:
    """Sum the probability of every up/down pattern with at least k replicas up."""
    total = Fraction(0)
    for pattern in product((True, False), repeat=n):  # True = up
        up = sum(pattern)
        if up >= k:
            total += (1 - p) ** up * p ** (n - up)
    return total


def brute_miss(n: int, r: int, w: int, k: int = 1) -> Fraction:
    """P(a uniform read quorum misses k independent uniform write quorums)."""
    replicas = range(n)
    writes = list(combinations(replicas, w))
    reads = list(combinations(replicas, r))
    misses = total = 0
    for write_sets in product(writes, repeat=k):
        written = set().union(*write_sets)
        for read in reads:
            total += 1
            misses += written.isdisjoint(read)
    return Fraction(misses, total)


@settings(max_examples=60, deadline=None)
@given(n_r_w(), probabilities)
def test_availability_matches_enumeration(nrw: tuple[int, int, int], p: Fraction) -> None:
    n, k, _ = nrw
    exact = quorum_availability(n, k, p)
    assert isinstance(exact, Fraction)
    assert exact == brute_availability(n, k, p)
    assert quorum_unavailability(n, k, p) == 1 - exact


@settings(max_examples=60, deadline=None)
@given(n_r_w())
def test_strict_and_overlap_match_enumeration(nrw: tuple[int, int, int]) -> None:
    n, r, w = nrw
    reads = [set(s) for s in combinations(range(n), r)]
    writes = [set(s) for s in combinations(range(n), w)]
    assert is_strict(n, r, w) == all(a & b for a in reads for b in writes)
    assert writes_overlap(n, w) == all(a & b for a in writes for b in writes)


@settings(max_examples=60, deadline=None)
@given(n_r_w())
def test_p_stale_immediate_matches_enumeration(nrw: tuple[int, int, int]) -> None:
    n, r, w = nrw
    stale = p_stale_immediate(n, r, w)
    assert stale == brute_miss(n, r, w)
    assert (stale == 0) == is_strict(n, r, w)


@settings(max_examples=30, deadline=None)
@given(n_r_w(max_n=5))
def test_k_staleness_matches_enumeration(nrw: tuple[int, int, int]) -> None:
    n, r, w = nrw
    assert k_staleness(n, r, w, 1) == p_stale_immediate(n, r, w)
    assert k_staleness(n, r, w, 2) == brute_miss(n, r, w, k=2)
    assert k_staleness(n, r, w, 3) == p_stale_immediate(n, r, w) ** 3


def test_seed_case_n5_quorum3() -> None:
    """The seed article's worked case, with correct formulas."""
    rep = quorum_report(5, 3, 3, p=0.01)
    assert rep.strict and rep.write_overlap
    assert rep.read_failures_tolerated == rep.write_failures_tolerated == 2
    assert rep.p_stale_immediate == 0.0
    # P(>= 3 of 5 up) at p = 1/100, exactly:
    exact = sum(Fraction(comb(5, i)) * Fraction(99, 100) ** i * Fraction(1, 100) ** (5 - i) for i in range(3, 6))
    assert quorum_availability(5, 3, Fraction(1, 100)) == exact == Fraction(9_999_901_494, 10**10)
    assert rep.read_available == pytest.approx(float(exact), rel=1e-15)
    assert rep.write_unavailable == pytest.approx(float(1 - exact), rel=1e-12)


def test_partial_quorum_report() -> None:
    rep = quorum_report(3, 1, 1, p=0.1, k_versions=3)
    assert not rep.strict and not rep.write_overlap
    assert rep.p_stale_immediate == pytest.approx(2 / 3)
    assert rep.p_stale_immediate_exact == "2/3"
    assert [row.k for row in rep.k_staleness] == [1, 2, 3]
    assert rep.k_staleness[1].p_stale == pytest.approx(4 / 9)
    assert rep.read_available == pytest.approx(1 - 0.1**3)
    d = rep.to_dict()
    assert d["k_staleness"][2] == {"k": 3, "p_stale": pytest.approx(8 / 27)}


def test_k_of_n_report_and_edges() -> None:
    rep = k_of_n_report(3, 2, 0.5)
    assert rep.available == 0.5 and rep.failures_tolerated == 1
    assert quorum_availability(4, 4, 0.0) == 1.0
    assert quorum_availability(4, 1, 1.0) == 0.0
    assert quorum_availability(4, 1, Fraction(1)) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: quorum_report(3, 0, 1),
        lambda: quorum_report(3, 1, 4),
        lambda: quorum_report(0, 1, 1),
        lambda: quorum_report(3, 1, 1, p=1.5),
        lambda: quorum_report(3, 1, 1, p=float("nan")),
        lambda: quorum_availability(3, 4, 0.1),
        lambda: k_staleness(3, 1, 1, 0),
    ],
)
def test_invalid_inputs_raise(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        call()
