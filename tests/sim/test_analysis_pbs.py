"""PBS / WARS Monte Carlo: closed forms, exactness, definitions and profiles."""

from __future__ import annotations

import json
import math
from math import comb
from pathlib import Path

import numpy as np
import pytest

from quorumkv.analysis.pbs import (
    PROFILES,
    Constant,
    Empirical,
    Exponential,
    Mixture,
    Pareto,
    WarsProfile,
    evaluate_wars,
    get_profile,
    load_latency_file,
    pbs_report,
    profile_from_samples,
    sample,
    sample_wars,
    simulate,
    simulate_many,
)

TRIALS = 200_000
#: Monte Carlo tolerance on a probability: > 5 standard errors at TRIALS trials.
PROB_TOL = 0.006
ZERO = Constant(0.0)


def five_sigma(p: float, trials: int = TRIALS) -> float:
    return 5 * math.sqrt(max(p * (1 - p), 1e-12) / trials) + 1e-9


# --------------------------------------------------------------------------- #
# Closed forms                                                                 #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n", [2, 3, 5])
def test_memoryless_closed_form_r1_w1(n: int) -> None:
    """W ~ Exp(λ), A = R = S = 0: the read asks replica 0 (ties -> lowest index).

    It is consistent at t iff W_0 <= min_i W_i + t, so
    P(consistent at t) = 1 - (n-1)/n * exp(-λ t) and
    t_visibility(target) = ln((n-1) / (n (1 - target))) / λ.
    """
    rate = 0.5
    prof = WarsProfile("memoryless", Exponential(rate), ZERO, ZERO, ZERO)
    res = simulate(prof, n, 1, 1, trials=TRIALS, seed=7)
    for t in (0.0, 0.5, 1.0, 2.0, 5.0):
        expected = 1 - (n - 1) / n * math.exp(-rate * t)
        assert res.p_consistent(t) == pytest.approx(expected, abs=five_sigma(expected))
    target = 0.99
    expected_t = math.log((n - 1) / (n * (1 - target))) / rate
    assert res.t_visibility(target) == pytest.approx(expected_t, rel=0.03)


@pytest.mark.parametrize("n,r,w", [(3, 1, 1), (3, 1, 2), (5, 2, 2), (5, 1, 3), (6, 2, 3)])
def test_t0_matches_uniform_quorum_closed_form(n: int, r: int, w: int) -> None:
    """With A = R = 0 and W, S i.i.d. continuous, at t = 0 the read quorum is a uniform
    R-subset independent of the W replicas holding the write: P = 1 - C(N-W,R)/C(N,R)."""
    prof = WarsProfile("iid", Exponential(1.0), ZERO, ZERO, Exponential(2.0))
    res = simulate(prof, n, r, w, trials=TRIALS, seed=11)
    expected = 1 - comb(n - w, r) / comb(n, r)
    assert res.p_consistent(0.0) == pytest.approx(expected, abs=five_sigma(expected))


@pytest.mark.parametrize("profile", ["lnkd-ssd", "lnkd-disk", "ymmr", "pareto:1,1.2"])
def test_strict_quorums_are_exactly_consistent(profile: str) -> None:
    prof = get_profile(profile)
    pairs = [(2, 2), (1, 3), (3, 1), (3, 3)]
    for res in simulate_many(prof, 3, pairs, trials=50_000, seed=3):
        assert res.p_consistent(0.0) == 1.0
        assert res.t_visibility(0.999999) == 0.0


def test_strict_exact_even_with_ties() -> None:
    prof = profile_from_samples(w=[0, 1, 1, 5], a=[0, 2], r=[0, 3], s=[1, 1, 2])
    res = simulate(prof, 4, 2, 3, trials=20_000, seed=1)
    assert res.p_consistent(0.0) == 1.0


def test_deterministic_delays() -> None:
    # Every replica receives the write at 5 ms, so it commits at c = 5 + 1 and any
    # read arriving later than that sees it: always consistent, fixed latencies.
    prof = WarsProfile("fixed", Constant(5.0), Constant(1.0), Constant(2.0), Constant(3.0))
    res = simulate(prof, 3, 1, 1, trials=1_000, seed=0)
    assert res.p_consistent(0.0) == 1.0
    assert res.write_latency_ms == {"p50": 6.0, "p99": 6.0, "p99.9": 6.0}
    assert res.read_latency_ms == {"p50": 5.0, "p99": 5.0, "p99.9": 5.0}


# --------------------------------------------------------------------------- #
# The shortcut agrees with the definition                                      #
# --------------------------------------------------------------------------- #
def _direct_consistent(s, r: int, w: int, t: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per-trial check straight from the WARS definition (slow, for small batches)."""
    out = []
    for i in range(s.w.shape[0]):
        c = sorted(s.w[i] + s.a[i])[w - 1]
        first = sorted(range(s.w.shape[1]), key=lambda j: (s.r[i, j] + s.s[i, j], j))[:r]
        out.append(any(s.w[i, j] <= c + t + s.r[i, j] for j in first))
    return np.array(out)


@pytest.mark.parametrize("profile,n,r,w", [("ymmr", 5, 2, 2), ("lnkd-disk", 3, 1, 1), ("lnkd-ssd", 4, 1, 2)])
def test_t_needed_matches_definition(profile: str, n: int, r: int, w: int) -> None:
    samples = sample_wars(get_profile(profile), n, 1_500, np.random.default_rng(5))
    out = evaluate_wars(samples, r, w)
    for t in (0.0, 0.3, 2.0, 20.0, 300.0):
        direct = _direct_consistent(samples, r, w, t)
        fast = out.t_needed <= t
        disagree = direct != fast
        # Only float rounding exactly at the threshold may differ.
        assert np.all(np.abs(out.t_needed[disagree] - t) < 1e-9)
    ack = np.sort(samples.w + samples.a, axis=1)[:, w - 1]
    resp = np.sort(samples.r + samples.s, axis=1)[:, r - 1]
    np.testing.assert_allclose(out.write_latency, ack)
    np.testing.assert_allclose(out.read_latency, resp)


# --------------------------------------------------------------------------- #
# Properties of results                                                        #
# --------------------------------------------------------------------------- #
def test_monotone_in_t_and_visibility_consistent() -> None:
    res = simulate(get_profile("lnkd-disk"), 3, 1, 1, trials=TRIALS, seed=2)
    ts = np.linspace(0, 200, 401)
    ps = res.p_consistent(ts)
    assert np.all(np.diff(ps) >= 0)
    assert 0 < ps[0] < 1 and ps[-1] <= 1
    for target in (0.5, 0.9, 0.99, 0.999):
        tv = res.t_visibility(target)
        assert res.p_consistent(tv) >= target
        if tv > 0:
            assert res.p_consistent(np.nextafter(tv, -np.inf)) < target


def test_seeded_reproducibility() -> None:
    prof = get_profile("ymmr")
    a = simulate(prof, 3, 1, 2, trials=20_000, seed=42)
    b = simulate(prof, 3, 1, 2, trials=20_000, seed=42)
    c = simulate(prof, 3, 1, 2, trials=20_000, seed=43)
    np.testing.assert_array_equal(a.t_needed, b.t_needed)
    assert a.read_latency_ms == b.read_latency_ms
    assert not np.array_equal(a.t_needed, c.t_needed)
    fresh = simulate(prof, 3, 1, 2, trials=1_000)  # seed=None draws entropy and records it
    again = simulate(prof, 3, 1, 2, trials=1_000, seed=fresh.seed)
    np.testing.assert_array_equal(fresh.t_needed, again.t_needed)


def test_common_random_numbers_across_pairs() -> None:
    prof = get_profile("lnkd-ssd")
    alone = simulate(prof, 3, 1, 1, trials=10_000, seed=9)
    many = simulate_many(prof, 3, [(1, 1), (1, 2), (2, 1)], trials=10_000, seed=9)
    np.testing.assert_array_equal(alone.t_needed, many[0].t_needed)
    # A larger W or R can only help (same samples).
    assert np.all(many[1].t_needed <= many[0].t_needed + 1e-12)
    assert np.all(many[2].t_needed <= many[0].t_needed + 1e-12)


def test_disk_needs_longer_than_ssd() -> None:
    """Bailis et al. (VLDB 2012): slow disk-bound writes (LNKD-DISK) take far longer to
    become visible than LNKD-SSD for N=3, R=W=1; YMMR longer still."""
    tv = {
        name: simulate(get_profile(name), 3, 1, 1, trials=TRIALS, seed=4)
        for name in ("lnkd-ssd", "lnkd-disk", "ymmr")
    }
    ssd, disk, ymmr = (tv[k].t_visibility(0.999) for k in ("lnkd-ssd", "lnkd-disk", "ymmr"))
    assert 0 < ssd < disk < ymmr
    assert disk > 5 * ssd
    assert tv["lnkd-ssd"].p_consistent(0.0) > tv["lnkd-disk"].p_consistent(0.0)


def test_report_keys() -> None:
    res = simulate(get_profile("lnkd-ssd"), 3, 1, 1, trials=10_000, seed=1)
    rep = pbs_report(res, t=1.0, target=0.99)
    for key in ("p_consistent", "t_visibility_ms", "n", "r", "w", "profile", "trials", "seed", "t"):
        assert key in rep
    assert set(rep["read_latency_ms"]) == {"p50", "p99", "p99.9"}
    assert rep["write_latency_ms"]["p50"] <= rep["write_latency_ms"]["p99"] <= rep["write_latency_ms"]["p99.9"]
    json.dumps(rep)
    with pytest.raises(ValueError):
        pbs_report(res, t=-1.0)


# --------------------------------------------------------------------------- #
# Distributions and profiles                                                   #
# --------------------------------------------------------------------------- #
def test_distribution_shapes() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    exp = sample(Exponential(2.0), rng, n)
    assert exp.min() >= 0 and exp.mean() == pytest.approx(0.5, rel=0.02)
    par = sample(Pareto(3.0, 2.5), rng, n)
    assert par.min() >= 3.0 and np.median(par) == pytest.approx(3.0 * 2 ** (1 / 2.5), rel=0.02)
    mix = Mixture(0.3, Exponential(1.66), Pareto(0.235, 10.0))
    x = sample(mix, rng, n)
    for q in (0.1, 0.3, 1.0, 3.0):
        cdf = 0.3 * (1 - math.exp(-1.66 * q)) + 0.7 * (1 - (0.235 / q) ** 10 if q >= 0.235 else 0.0)
        assert np.mean(x <= q) == pytest.approx(cdf, abs=0.006)
    coin = sample(Mixture(0.25, Constant(0.0), Constant(1.0)), rng, n)
    assert np.mean(coin == 0.0) == pytest.approx(0.25, abs=0.006)


def test_empirical_resampling() -> None:
    dist = Empirical(np.array([1.0, 2.0, 3.0, 10.0]))
    x = sample(dist, np.random.default_rng(1), 100_000)
    values, counts = np.unique(x, return_counts=True)
    assert values.tolist() == [1.0, 2.0, 3.0, 10.0]
    assert np.allclose(counts / x.size, 0.25, atol=0.01)
    with pytest.raises(ValueError):
        Empirical(np.array([]))
    with pytest.raises(ValueError):
        Empirical(np.array([1.0, -1.0]))


def test_profile_parsing() -> None:
    assert set(PROFILES) == {"lnkd-ssd", "lnkd-disk", "ymmr"}
    assert get_profile("exponential:2").w == Exponential(2.0)
    assert get_profile("pareto:1.5,3").s == Pareto(1.5, 3.0)
    assert get_profile("constant:4").a == Constant(4.0)
    assert get_profile("LNKD-SSD") is PROFILES["lnkd-ssd"]
    for bad in ("nope", "exponential:", "exponential:-1", "pareto:1", "pareto:a,b", "constant:-2"):
        with pytest.raises(ValueError):
            get_profile(bad)


def test_latency_file(tmp_path: Path) -> None:
    good = tmp_path / "lat.json"
    good.write_text(json.dumps({"w": [1, 2, 3], "a": [0.5], "r": [0.2, 0.3], "s": [0.1]}))
    prof = load_latency_file(good)
    assert prof.name == "empirical:lat.json"
    res = simulate(prof, 3, 1, 1, trials=5_000, seed=0)
    assert 0 < res.p_consistent(0.0) <= 1
    cases = {
        "missing.json": {"w": [1], "a": [1], "r": [1]},
        "negative.json": {"w": [1], "a": [-1], "r": [1], "s": [1]},
        "empty.json": {"w": [], "a": [1], "r": [1], "s": [1]},
        "strings.json": {"w": ["x"], "a": [1], "r": [1], "s": [1]},
        "list.json": [1, 2, 3],
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(payload))
        with pytest.raises(ValueError):
            load_latency_file(path)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError):
        load_latency_file(bad_json)
    with pytest.raises(ValueError):
        load_latency_file(tmp_path / "absent.json")


def test_invalid_simulation_arguments() -> None:
    prof = get_profile("lnkd-ssd")
    for kwargs in ({"r": 4}, {"w": 0}, {"trials": 0}, {"seed": -1}):
        args = {"r": 1, "w": 1, "trials": 10, "seed": 0, **kwargs}
        with pytest.raises(ValueError):
            simulate(prof, 3, args["r"], args["w"], trials=args["trials"], seed=args["seed"])
    res = simulate(prof, 3, 1, 1, trials=10, seed=0)
    with pytest.raises(ValueError):
        res.t_visibility(1.5)
