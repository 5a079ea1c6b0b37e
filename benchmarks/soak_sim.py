"""Soak the simulator: ``quorumkv sim --faults all --swarm`` over many seeds.

Each seed draws which faults are on and how hard they hit (swarm testing); even
seeds run primary-only requests (where R + W > N promises no stale read), odd
seeds the sloppy default. Reports what issue 10 asks for: seeds run, client ops,
faults injected by kind, lost acknowledged writes, resurrections, strict stale
reads, and the seeds that failed (each with its reproducing command)::

    python benchmarks/soak_sim.py                      # 1,000 seeds from 0
    python benchmarks/soak_sim.py --seeds 200 --start 5000 --json /tmp/soak.json
    python benchmarks/soak_sim.py --faults skew --seeds 100   # one fault family
    python benchmarks/soak_sim.py --merge /tmp/soak_*.json     # add up chunks run separately

Exit status 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from quorumkv.sim import SimConfig, parse_faults, run

#: Failing seeds listed in full (the counts are always complete).
FAILED_LISTED_MAX = 50
#: A progress line on stderr every this many seeds (a soak runs for many minutes).
PROGRESS_EVERY_SEEDS = 50


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1_000, help="how many seeds (default 1000)")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--ops", type=int, default=1_000, help="client operations per seed")
    ap.add_argument("--faults", default="all", help="faults each seed may draw from (default all)")
    ap.add_argument("--no-swarm", action="store_true", help="every fault on in every seed")
    ap.add_argument("--json", help="also write the report as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no line per failing seed while running")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="add up reports written by --json, run nothing")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge)

    faults = parse_faults(args.faults)
    totals: Counter = Counter()
    injected: Counter = Counter()
    failed: list[dict] = []
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        cfg = SimConfig(seed=seed, ops=args.ops, faults=faults, swarm=not args.no_swarm,
                        primary_only=seed % 2 == 0)
        result = run(cfg)
        s = result.summary()
        totals["seeds"] += 1
        totals["ops"] += s["ops"]
        totals["acked_writes"] += s["acked_writes"]
        totals["reads"] += s["reads"]
        for name in ("lost_acked_writes", "resurrections", "strict_stale_reads", "stale_reads",
                     "final_reads_failed", "unknown_values", "lost_cross_session",
                     "resurrections_cross_session", "stale_cross_session"):
            totals[name] += s[name]
        totals["diverged_seeds"] += not s["converged"]
        totals["strict_stale_cross_session"] += s["stale_cross_session"] if s["strict_stale_reads"] else 0
        skewed = "skew" in s["knobs"].get("on", "")
        for name in ("lost_acked_writes", "resurrections", "strict_stale_reads"):
            totals[name + ("_with_skew" if skewed else "_without_skew")] += s[name]
        totals["ring_changes_unfinished"] += s["ring_changes_unfinished"]
        totals["departed_in_ring_seeds"] += bool(s["departed_in_ring"])
        injected.update(s["faults_injected"])
        if result.failed:
            row = {"seed": seed, "lost": s["lost_acked_writes"], "resurrected": s["resurrections"],
                   "strict_stale": s["strict_stale_reads"], "converged": s["converged"],
                   "final_reads_failed": s["final_reads_failed"],
                   "ring_changes_unfinished": s["ring_changes_unfinished"],
                   "departed_in_ring": s["departed_in_ring"], "skew": "skew" in s["knobs"].get("on", ""),
                   "lost_cross_session": s["lost_cross_session"],
                   "resurrections_cross_session": s["resurrections_cross_session"],
                   "faults": s["faults_injected"], "command": s["command"]}
            failed.append(row)
            if not args.quiet:
                print(f"FAILED seed {seed}: {json.dumps(row, sort_keys=True)}", file=sys.stderr, flush=True)
        if not args.quiet and totals["seeds"] % PROGRESS_EVERY_SEEDS == 0:
            print(f"{totals['seeds']}/{args.seeds} seeds, {len(failed)} failed, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    wall_s = time.perf_counter() - started
    report = {
        "command": "python benchmarks/soak_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": f"{args.start}..{args.start + args.seeds - 1}",
        "totals": dict(totals),
        "faults_injected": dict(sorted(injected.items())),
        "failed_seeds": len(failed),
        "failed": failed[:FAILED_LISTED_MAX],
        "wall_s": round(wall_s, 1),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "failed"}, indent=1, sort_keys=True))
    print("failed seeds:", " ".join(str(row["seed"]) for row in failed) or "none")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
    return 1 if failed else 0


def merge(paths: list[str]) -> int:
    totals: Counter = Counter()
    injected: Counter = Counter()
    failed: list = []
    seeds: list[str] = []
    for path in paths:
        with open(path) as fh:
            part = json.load(fh)
        totals.update(part["totals"])
        injected.update(part["faults_injected"])
        failed += part["failed"]
        seeds.append(part["seeds"])
    print(json.dumps({"seeds": seeds, "totals": dict(sorted(totals.items())),
                      "faults_injected": dict(sorted(injected.items())),
                      "failed_seeds": len(failed)}, indent=1))
    print("failed seeds:", " ".join(str(row["seed"]) for row in sorted(failed, key=lambda r: r["seed"])))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
