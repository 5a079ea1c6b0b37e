"""The simulator and the PBS/WARS math agree on t-visibility.

Tolerance: 0.03 absolute at 4,000 trials (the simulated fraction's standard error
is at most 0.0079, so 0.03 is > 3.7 sigma; the math side uses 400,000 trials).
``measure_staleness`` also applies its own 4-sigma + 0.005 bound (``agrees``).
"""

from __future__ import annotations

import random

import pytest

from quorumkv.sim import measure_staleness

TOLERANCE = 0.03
TRIALS = 4_000
FRESH_SEED = random.SystemRandom().randrange(2**32)


@pytest.mark.parametrize("seed", [3, FRESH_SEED])
@pytest.mark.parametrize("profile,n,r,w,t_ms", [
    ("lnkd-disk", 3, 1, 1, 0.0),   # p ~ 0.44: the widest binomial spread
    ("lnkd-disk", 3, 1, 1, 5.0),   # p ~ 0.82
    ("lnkd-disk", 3, 1, 2, 2.0),
    ("ymmr", 3, 1, 1, 10.0),       # heavy-tailed write delays
])
def test_simulated_staleness_matches_pbs(seed, profile, n, r, w, t_ms) -> None:
    rep = measure_staleness(profile, n, r, w, t_ms, trials=TRIALS, seed=seed)
    cmd = (f"quorumkv sim --seed {seed} --profile {profile} --n {n} --r {r} --w {w} "
           f"--pbs-t {t_ms:g} --trials {TRIALS} -o json")
    assert rep["errors"] == 0, cmd
    assert rep["abs_diff"] <= TOLERANCE, f"{rep}\nreproduce: {cmd}"
    assert rep["agrees"], f"{rep}\nreproduce: {cmd}"


def test_strict_quorum_is_never_stale_in_measurement_mode() -> None:
    rep = measure_staleness("lnkd-disk", 3, 2, 2, 0.0, trials=1_000, seed=4)
    assert rep["stale_reads"] == 0 and rep["p_consistent_math"] == 1.0
