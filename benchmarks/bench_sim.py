"""Speed of the deterministic simulator: simulated client operations per wall second.

Run: ``PYTHONPATH=src python benchmarks/bench_sim.py [--ops 5000] [--repeat 3]``

Each case is one full run (workload, nemesis, heal, final reads at ALL, checkers)
of :func:`quorumkv.sim.run`; the figure is client operations / wall seconds of the
best of ``--repeat`` runs, plus simulator events per second. Single-threaded; the
machine is shared, so compare cases within one run. The PBS measurement mode is
timed as write+read trials per second.
"""

from __future__ import annotations

import argparse
import time

from quorumkv.sim import SimConfig, measure_staleness, parse_faults, run

CASES = (
    ("no faults, R=W=2", dict()),
    ("no faults, R=W=1, lnkd-disk", dict(r=1, w=1, profile="lnkd-disk")),
    ("all faults, R=W=2", dict(faults=parse_faults("all"))),
    ("10 nodes, N=5, R=W=3", dict(nodes=10, n=5, r=3, w=3)),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"{'case':<32} {'ops':>7} {'ops/s':>9} {'events/s':>10} {'virtual s':>10}")
    for name, kw in CASES:
        best = None
        for _ in range(args.repeat):
            res = run(SimConfig(seed=args.seed, ops=args.ops, **kw))
            if best is None or res.wall_s < best.wall_s:
                best = res
        s = best.summary()
        print(f"{name:<32} {s['ops']:>7} {s['ops'] / best.wall_s:>9,.0f} "
              f"{s['events'] / best.wall_s:>10,.0f} {s['virtual_ms'] / 1000:>10.2f}")
    started = time.perf_counter()
    rep = measure_staleness("lnkd-disk", 3, 1, 1, 5.0, trials=4_000, seed=args.seed, math_trials=1)
    wall = time.perf_counter() - started
    print(f"{'PBS mode (write+read trials)':<32} {4000:>7} {4000 / wall:>9,.0f} "
          f"{rep['events'] / wall:>10,.0f}")


if __name__ == "__main__":
    main()
