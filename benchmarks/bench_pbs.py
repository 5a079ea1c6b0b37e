"""Throughput of the PBS / WARS Monte Carlo simulator (trials per second).

Run: ``PYTHONPATH=src python benchmarks/bench_pbs.py [--trials 2000000] [--repeat 3]``

Each figure is the best of ``--repeat`` runs of :func:`quorumkv.analysis.pbs.simulate`
(sampling W, A, R, S for every replica, commit time, first-R responders,
per-trial ``t_needed`` and latency percentiles), followed by one
``t_visibility`` query (a sort of the per-trial thresholds), timed separately.
Single-threaded; numpy only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from quorumkv.analysis.pbs import get_profile, simulate, simulate_many

#: (profile, N, R, W) cases timed by default.
CASES: tuple[tuple[str, int, int, int], ...] = (
    ("lnkd-ssd", 3, 1, 1),
    ("lnkd-disk", 3, 1, 1),
    ("ymmr", 3, 1, 1),
    ("exponential:1", 3, 1, 1),
    ("lnkd-disk", 3, 2, 2),
    ("lnkd-disk", 5, 2, 2),
)
#: Target for the t-visibility query.
TARGET = 0.999
#: The brief's throughput floor.
REQUIRED_TRIALS_PER_SECOND = 1_000_000


def bench_case(profile: str, n: int, r: int, w: int, trials: int, repeat: int) -> tuple[float, float, float]:
    """Return (best trials/s for simulate, seconds for one t_visibility query, t_visibility)."""
    prof = get_profile(profile)
    best = float("inf")
    res = None
    for i in range(repeat):
        start = time.perf_counter()
        res = simulate(prof, n, r, w, trials=trials, seed=i)
        best = min(best, time.perf_counter() - start)
    assert res is not None
    start = time.perf_counter()
    tv = res.t_visibility(TARGET)
    query = time.perf_counter() - start
    return trials / best, query, tv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPU(s), single thread")
    print(f"{args.trials:,} trials per run, best of {args.repeat}\n")
    print(f"{'profile':<15}{'N':>3}{'R':>3}{'W':>3}{'M trials/s':>13}{'t_vis query':>13}{'t_vis(0.999)':>15}")
    worst = float("inf")
    for profile, n, r, w in CASES:
        rate, query, tv = bench_case(profile, n, r, w, args.trials, args.repeat)
        worst = min(worst, rate)
        print(f"{profile:<15}{n:>3}{r:>3}{w:>3}{rate / 1e6:>13.2f}{query * 1e3:>11.0f}ms{tv:>13.3f}ms")

    pairs = [(1, 1), (1, 2), (2, 1)]
    start = time.perf_counter()
    simulate_many(get_profile("lnkd-disk"), 3, pairs, trials=args.trials, seed=0)
    rate = args.trials / (time.perf_counter() - start)
    print(f"\nsimulate_many lnkd-disk N=3, {len(pairs)} (R,W) pairs on shared samples: {rate / 1e6:.2f} M trials/s")
    verdict = "OK" if worst >= REQUIRED_TRIALS_PER_SECOND else "BELOW TARGET"
    print(f"slowest single case: {worst / 1e6:.2f} M trials/s (floor {REQUIRED_TRIALS_PER_SECOND / 1e6:.0f} M/s: {verdict})")


if __name__ == "__main__":
    main()
